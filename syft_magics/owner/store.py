"""A worker's object registry: every tensor it holds, by 128-bit id and by tag.

Objects are either the owner's (shared with :meth:`Worker.share`, searchable,
never freed by a client) or a client session's (results and sent tensors,
freed when that session's pointers die or the session ends).
"""
from __future__ import annotations

import collections
import itertools
import threading
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..display import short_id
from ..wire.names import check_tag
from .blocks import Block, storage_key
from .blocks import withheld_charge as withheld_charge  # (ops' import)
from .entry import OWNER, Entry, new_id
from .graphs import Graph
from .lineage import lineage
from .optimizers import scheduler_bytes, state_bytes
from .side_writes import holds_grads

__all__ = ["OWNER", "Entry", "ObjectStore", "check_tag", "new_id"]

_FIND = object()  # (put's blocks: not given, find them)


class ObjectStore:
    """Thread-safe id -> :class:`Entry` map with a tag index and per-session ownership."""

    def __init__(self) -> None:
        self._entries: Dict[bytes, Entry] = {}
        self._tags: Dict[str, Set[bytes]] = {}
        self._by_session: Dict[bytes, Set[bytes]] = {}
        #: a session's objects that may hold a gradient (leaves that require one, models, optimizers): see grad_holders
        self._grad_holders: Dict[bytes, Set[bytes]] = {}
        self._owner_storage: Dict[int, int] = {}  # storage key -> count of owner objects in it
        self._retired: Set[int] = set()  # (keys of it no owner object holds any more, that a client's view does)
        self._held: Dict[bytes, int] = {}  # session -> bytes charged to it (its quota)
        self._charges: Dict[bytes, int] = {}  # object id -> bytes charged for it (models, optimizers)
        #: a session's tensors by memory block: (session, storage key) -> [objects in it, bytes charged once, the
        #: storage itself: held, so its address cannot be reused by another block while this one is charged]
        self._blocks: Dict[Tuple[bytes, int], List[Any]] = {}
        self._in_block: Dict[bytes, List[Tuple[bytes, int]]] = {}  # object id -> the blocks it holds
        self._holders: Dict[Tuple[bytes, int], Set[bytes]] = {}  # a session's block -> the objects holding it
        #: what the sessions' autograd graphs saved (see :meth:`keep_saved`): graph key -> (session, its blocks);
        #: the keys of those torch freed since (on any thread), to let go of here
        self._graphs: Dict[int, Tuple[bytes, List[Tuple[bytes, int]]]] = {}
        self._graph_keys = itertools.count(1)
        self._own_keys = itertools.count(1 << 62)  # (blocks of their own: never an address, nor an -id())
        self._withheld: Set[Tuple[bytes, int]] = set()  # a session's blocks of withheld size (charge_public)
        self._released: "collections.deque[int]" = collections.deque()
        self._lock = threading.RLock()

    # -- adding and removing -------------------------------------------------
    def put(self, entry: Entry, charge: Optional[int] = None, blocks: Any = _FIND) -> Entry:
        """Add ``entry``. A client's object is charged to its session by the memory blocks it keeps alive
        (:meth:`blocks_of`, or ``blocks`` as :meth:`charge` found them): each block's whole size once, however
        many of the session's objects hold it (views, a model and the parameters ``remote.parameters()`` points
        to, an optimizer over them), and while any does; nothing for the owner's data. Anything else is charged
        ``charge`` bytes (default: its size)."""
        with self._lock:
            old = self._entries.get(entry.id)
            if old is not None:
                self._forget(old)
            self._entries[entry.id] = entry
            for tag in entry.tags:
                self._tags.setdefault(tag, set()).add(entry.id)
            if entry.session is not None:
                self._by_session.setdefault(entry.session, set()).add(entry.id)
                self.note_grads(entry)
                if blocks is _FIND:
                    blocks = self.blocks_of(entry.tensor)
                if blocks is not None:
                    self._in_block[entry.id] = wheres = self._take_blocks(entry.session, blocks)
                    for where in wheres:
                        self._holders.setdefault(where, set()).add(entry.id)
                    return entry
                cost = entry.nbytes if charge is None else charge
                if cost:
                    self._charges[entry.id] = cost
                    self._held[entry.session] = self._held.get(entry.session, 0) + cost
            elif entry.tensor is not None:
                key = storage_key(entry.tensor)
                if key:  # (an empty tensor with no memory of its own names no memory: 0)
                    self._owner_storage[key] = self._owner_storage.get(key, 0) + 1
            return entry

    def _take_blocks(self, session: bytes, blocks: Iterable[Block]) -> List[Tuple[bytes, int]]:
        """Count one more holder of each of ``blocks`` for ``session``, charging those it held none of; where
        each is counted (every op's results come through here: one loop, no call per block)."""
        wheres = []
        for key, nbytes, storage in blocks:
            where = (session, key)
            held = self._blocks.get(where)
            if held is None:
                self._blocks[where] = [1, nbytes, storage]
                self._held[session] = self._held.get(session, 0) + nbytes
                if not nbytes and storage is not None:  # (memory of withheld size: charge_public)
                    self._withheld.add(where)
            else:
                held[0] += 1
            wheres.append(where)
        return wheres

    def keep_saved(self, session: bytes, graph: Graph, saved: List[torch.Tensor]) -> None:
        """Charge ``session`` for the memory blocks of the tensors one op's autograd ``graph`` saved until torch
        has freed them all (see :mod:`.graphs`): a block's bytes once, however many of the session's objects and
        graphs hold it; the owner's data is not charged. (Runs for every op that builds a graph: a training
        step's forward saves its input and every weight.)"""
        blocks: Dict[int, Block] = {}
        owner = self._owner_storage
        for t in saved:
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            key, nbytes = storage.data_ptr(), int(storage.nbytes())
            if nbytes and key not in owner:
                blocks[key] = (key, nbytes, storage)
        with self._lock:
            self._hold(graph, session, self._take_blocks(session, blocks.values()))

    def keep_leaves(self, session: bytes, graph: Graph, leaves: List[Entry]) -> None:
        """Keep ``session`` charged for what ``leaves`` (its objects: tensors that require grad, models) hold
        while ``graph`` lives: the graph nodes an op made point to them (torch's ``AccumulateGrad``), so
        freeing their pointers does not free them (see :mod:`.graphs`)."""
        with self._lock:
            wheres = [where for e in leaves for where in self._in_block.get(e.id, ())]
            for where in wheres:
                self._blocks[where][0] += 1
            self._hold(graph, session, wheres)

    def _hold(self, graph: Graph, session: bytes, wheres: List[Tuple[bytes, int]]) -> None:
        key = graph.key = next(self._graph_keys)
        self._graphs[key] = (session, wheres)
        graph.on_freed = self._released.append  # (runs on whichever thread frees it: counted at _drain)

    def _drain(self) -> None:
        """Let go the blocks of the graphs torch freed since (costs a look at the queue when there are none)."""
        if not self._released:
            return
        with self._lock:
            while self._released:
                found = self._graphs.pop(self._released.popleft(), None)
                if found is not None:
                    self._let_go(found[1], found[0], 0)

    def remove(self, oid: bytes) -> Optional[Entry]:
        with self._lock:
            entry = self._entries.pop(oid, None)
            if entry is not None:
                self._forget(entry)
            return entry

    def note_grads(self, entry: Entry) -> None:
        """Count ``entry`` among its session's objects that may hold a gradient, if it may (now)."""
        if entry.session is not None and holds_grads(entry.tensor):
            self._grad_holders.setdefault(entry.session, set()).add(entry.id)

    def grad_holders(self, session: bytes) -> List[Entry]:
        """The session's objects that may hold a gradient (an op that writes one's memory writes into them)."""
        with self._lock:
            return [self._entries[i] for i in self._grad_holders.get(session, ()) if i in self._entries]

    def keys_of(self, entries: Iterable[Entry]) -> Set[int]:
        """The keys of the memory blocks ``entries`` hold."""
        with self._lock:
            return {where[1] for e in entries for where in self._in_block.get(e.id, ())}

    def rebind(self, entries: Iterable[Entry]) -> None:
        """Record anew the memory blocks ``entries`` (a client's objects) keep alive, after an op gave them new memory
        (a model moved to another device: ``syft.module_to``): the old blocks are let go (their memory was kept by
        the records: charged twice, and invisible to the writes looked for through the new)."""
        with self._lock:
            for entry in entries:
                if entry.session is not None and self._entries.get(entry.id) is entry:
                    self.put(entry)

    def _forget(self, entry: Entry) -> None:
        if entry.session is not None:
            self._grad_holders.get(entry.session, set()).discard(entry.id)
        for tag in entry.tags:
            ids = self._tags.get(tag)
            if ids is not None:
                ids.discard(entry.id)
                if not ids:
                    del self._tags[tag]
        if entry.session is not None:
            ids = self._by_session.get(entry.session)
            if ids is not None:
                ids.discard(entry.id)
            if self._retired and isinstance(entry.tensor, torch.Tensor):  # (see below: the last such view went)
                key = storage_key(entry.tensor)
                if key in self._retired and self._owner_storage.get(key) == 0 and not self._aliased(key):
                    self._retired.discard(key)
                    del self._owner_storage[key]
            wheres = self._in_block.pop(entry.id, ())
            for where in wheres:
                holders = self._holders.get(where)
                if holders is not None:
                    holders.discard(entry.id)
                    if not holders:
                        del self._holders[where]
            self._let_go(wheres, entry.session, self._charges.pop(entry.id, 0))
        elif entry.tensor is not None:
            key = storage_key(entry.tensor)
            left = self._owner_storage.get(key, 0) - 1
            # (unshared, its memory stays the owner's, read-only, while a client's view holds it: helper-36 wrote
            # into the owner's own tensor through a view made before unshare())
            if left > 0 or self._aliased(key):
                self._owner_storage[key] = max(left, 0)
                if left <= 0:
                    self._retired.add(key)
            else:
                self._owner_storage.pop(key, None)

    def _aliased(self, key: int) -> bool:
        return any(e.session is not None and isinstance(e.tensor, torch.Tensor)  # (empty views too: helper-40)
                   and storage_key(e.tensor) == key for e in self._entries.values())

    def _let_go(self, wheres: Iterable[Tuple[bytes, int]], session: bytes, cost: int) -> None:
        """Uncharge what a holder (an object or a graph) of ``session`` was charged: ``cost`` bytes, and one
        holder of each of the blocks at ``wheres`` (every freed object comes through here: one loop)."""
        blocks = self._blocks
        for where in wheres:
            block = blocks[where]
            block[0] -= 1
            if block[0] == 0:  # the session's last holder of that block: its bytes are free again
                del blocks[where]
                cost += block[1]
                self._withheld.discard(where)
        if cost:
            left = self._held.get(session, 0) - cost
            if left > 0:
                self._held[session] = left
            else:
                self._held.pop(session, None)

    def free(self, session: bytes, ids: List[bytes]) -> int:
        """Free the objects in ``ids`` that belong to ``session``; owner data is never touched."""
        n = 0
        with self._lock:
            mine = self._by_session.get(session, ())
            for oid in ids:
                if oid in mine:
                    self.remove(oid)
                    n += 1
        return n

    def drop_session(self, session: bytes) -> int:
        """Free every object of a session (it disconnected or its lease ran out)."""
        with self._lock:
            ids = list(self._by_session.pop(session, ()))
            self._grad_holders.pop(session, None)
            for oid in ids:
                self.remove(oid)
            for key in [k for k, (s, _) in self._graphs.items() if s == session]:  # graphs still alive: let go
                self._released.append(key)
            self._drain()
            return len(ids)

    # -- looking up ----------------------------------------------------------
    def get(self, oid: bytes) -> Optional[Entry]:
        return self._entries.get(oid)

    def search(self, tags: Tuple[str, ...]) -> List[Entry]:
        """Owner objects carrying every tag in ``tags`` (AND), oldest first."""
        with self._lock:
            sets = [self._tags.get(t, set()) for t in tags]
            ids = set.intersection(*sets) if sets else set()
            found = [self._entries[i] for i in ids if self._entries[i].session is None]
        return sorted(found, key=lambda e: e.created)

    def blocks_of(self, value: Any) -> Optional[List[Block]]:
        """``(key, bytes, what holds it)`` of each memory block a client's object is charged by, i.e. keeps
        alive: a tensor's storage; a model's parameters and buffers; an optimizer's parameters and its state
        (a block of its own, keyed by the optimizer: the state its steps will keep, see
        :func:`.optimizers.state_bytes`); a scheduler's optimizer's, and a block of its own (its milestones and
        rates). None for the owner's data and empty blocks; None for anything else (charged by size) and a
        tensor without a storage."""
        if type(value) is torch.Tensor:  # most results (the hot path): one storage
            try:
                storage = value.untyped_storage()
            except (RuntimeError, NotImplementedError):
                return None
            nbytes = int(storage.nbytes())
            key = storage.data_ptr()
            found: List[Block] = [(key, nbytes, storage)] if nbytes and key not in self._owner_storage else []
            if value.requires_grad and value.numel() * value.element_size() > nbytes:
                # (a broadcast view in a graph: a backward through it allocates it whole, which nothing prices:
                # helper-63's w.expand(3e9).mean().backward() took 11.5 GiB under a 16 MB quota)
                found.append((-next(self._own_keys), value.numel() * value.element_size(), None))
            return found
        extra: List[Block] = []
        if isinstance(value, LRScheduler):
            extra.append((-id(value), scheduler_bytes(value), value))  # (its milestones, rates: its own block)
            value = value.optimizer  # (it keeps its optimizer alive)
        if isinstance(value, torch.nn.Module):
            tensors = list(value.state_dict(keep_vars=True).values())
        elif isinstance(value, torch.Tensor):
            tensors = [value]
        elif isinstance(value, Optimizer):
            tensors = [p for group in value.param_groups for p in group["params"]]
            extra.append((-id(value), state_bytes(value), value))  # (negative: never a storage's address)
        else:
            return None
        blocks: Dict[int, Block] = {key: (key, n, held) for key, n, held in extra}
        for t in tensors:
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):
                return None
            nbytes = int(storage.nbytes())  # (an empty view of a block keeps the whole block alive)
            key = storage.data_ptr()
            if nbytes and key not in self._owner_storage:
                blocks[key] = (key, nbytes, storage)
        return list(blocks.values())

    def charge(self, value: Any, session: bytes, seen: Set[int]) -> Tuple[int, Optional[List[Block]]]:
        """What storing ``value`` (a new result) would add to ``session``'s charge, and the blocks it is charged
        by (:meth:`blocks_of`, to hand to :meth:`put`): the blocks it keeps alive that the session does not hold
        yet, nor ``seen`` (the op's other results' blocks, to which they are added). This runs for every result."""
        blocks = self.blocks_of(value)
        if blocks is None:
            return Entry(b"", value).nbytes, None
        self._drain()
        more = 0
        for key, nbytes, _ in blocks:
            if (session, key) not in self._blocks and key not in seen:
                seen.add(key)
                more += nbytes
        return more, blocks

    def charge_public(self, value: torch.Tensor, session: bytes, seen: Set[int],
                      public: int) -> Tuple[int, Optional[List[Block]]]:
        """As :meth:`charge`, for a result whose shape is withheld (see :mod:`.fake_trace`): charged ``public``
        bytes, its public upper bound, in a block of its own while it lives, whatever its memory is and whether
        torch made it a view or a copy. Its memory blocks are held at no charge of their own (they count as
        withheld memory: :meth:`in_withheld_memory`): what they add or when they are freed would tell sizes
        and which results share memory."""
        self._drain()
        held = [(key, 0, storage) for key, _nbytes, storage in self.blocks_of(value) or ()]
        return public, [*held, (-next(self._own_keys), public, None)]

    def storage_keys(self, value: torch.Tensor) -> List[int]:
        """The memory blocks a tensor keeps alive (by key)."""
        return [key for key, _, _ in self.blocks_of(value) or ()]

    def in_withheld_memory(self, value: torch.Tensor, session: bytes, withheld: Set[int]) -> bool:
        """Whether ``value`` (a new result) keeps memory of withheld size alive: a block a withheld result of
        ``session`` holds, one of ``withheld`` (this op's), or a block larger than ``value`` itself."""
        for key, nbytes, _ in self.blocks_of(value) or ():
            where = (session, key)
            if key in withheld or where in self._withheld or (
                    where not in self._blocks and nbytes > value.numel() * value.element_size()):
                return True
        return False

    def sharing(self, entries: List[Entry]) -> List[Entry]:
        """``entries`` and every other object of their sessions that holds the same memory (a view's base, the
        other views of it): what a write into one of them wrote into too."""
        found = {id(e): e for e in entries}
        with self._lock:
            for e in entries:
                for where in self._in_block.get(e.id, ()):
                    for oid in self._holders.get(where, ()):
                        other = self._entries.get(oid)
                        if other is not None:
                            found.setdefault(id(other), other)
        return list(found.values())

    def holding(self, session: bytes, keys: Iterable[int]) -> List[Entry]:
        """The objects of ``session`` that hold any of the memory blocks ``keys`` (see :mod:`.side_writes`)."""
        with self._lock:
            oids = {oid for key in keys for oid in self._holders.get((session, key), ())}
            return [self._entries[oid] for oid in oids if oid in self._entries]

    def aliases_owner_data(self, t: torch.Tensor) -> bool:
        """Whether ``t`` shares memory with an object the owner shared, empty or not (helper-39: an empty view of
        ``#X`` given as a positional ``out`` was resized into ``#X``'s memory and written, counted as the client's)."""
        return bool(self._owner_storage) and storage_key(t) in self._owner_storage

    def owner_storages(self) -> Set[int]:
        """The storage keys of the owner's shared data (a copy)."""
        with self._lock:
            return set(self._owner_storage)

    def lineage(self, entry: Entry) -> str:
        """How ``entry`` was made, as the owner is shown it (see :func:`.lineage.lineage`)."""
        return lineage(self, entry)

    def label_of(self, oid: bytes) -> str:
        """An object's label (``#X``, ``a1b2c3d4…``), or its short id once it is gone."""
        entry = self._entries.get(oid)
        return entry.label if entry is not None else short_id(oid)

    def all_tags(self, owner_only: bool = False) -> List[str]:
        """Every tag in use; ``owner_only``: only those of the owner's shared objects (what clients see)."""
        with self._lock:
            if not owner_only:
                return sorted(self._tags)
            return sorted(t for t, ids in self._tags.items()
                          if any(self._entries[i].session is None for i in ids))

    def held_bytes(self, session: bytes) -> int:
        """The bytes charged to a session's objects and graphs (what its ``max_bytes`` quota bounds)."""
        self._drain()
        return self._held.get(session, 0)

    def session_count(self, session: bytes) -> int:
        return len(self._by_session.get(session, ()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, oid: object) -> bool:
        return oid in self._entries

    def of_session(self, session: bytes) -> List[Entry]:
        """The objects of one client's session."""
        with self._lock:
            return [self._entries[oid] for oid in self._by_session.get(session, ())]

    def entries(self) -> List[Entry]:
        with self._lock:
            return list(self._entries.values())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries())
