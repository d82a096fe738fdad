"""Keeping the owner's data unwritten: torch's op schemas decide, version counters check.

Every way a client's op could write (a method named in place, ``out=`` given by keyword
or by position, ``inplace=True``, running statistics, writes through a view or an alias)
ends in an ATen operator whose schema marks the written argument (``Tensor(a!)``). While an
op that reads the owner's data runs, :class:`WriteGuard` (a ``TorchDispatchMode``) sees each
ATen call and refuses, before it runs, any whose written argument shares memory with the
owner's data. No hand-kept list of op names is involved, so ops we never thought of are
covered the same way. The one gap in torch's schemas we know of: ``native_batch_norm`` and
its backend variants write ``running_mean``/``running_var`` in training mode without saying
so; they are recognised by those argument names.

After every op, :func:`changed` compares the version counters of the objects it used: a
write to the owner's data that slipped through anyway is reported (not silently kept), and
a write to a client's own object is recorded in that object's history (see approvals).
Only ops that touch the owner's data run under the guard; the others pay nothing.
"""
from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import autograd, checked, side_writes
from .blocks import storage_key
from .models import ModelWeights

if TYPE_CHECKING:
    from .store import Entry, ObjectStore

#: Argument names that ops write in training mode without a write annotation in their schema.
_UNANNOTATED_WRITES = ("running_mean", "running_var")


class OwnerDataWrite(Exception):
    """An op tried to write into the owner's data; raised before the write happens."""

    def __init__(self, op: str, argument: str, label: str) -> None:
        super().__init__(f"{op} would write into {label} (its argument '{argument}')")
        self.op, self.argument, self.label = op, argument, label


class WithheldWrite(OwnerDataWrite):
    """An op tried to write into a result of an op over a withheld shape (``Entry.read_only``): its memory
    is of withheld size, or a copy that a write would set apart from what it was taken from."""


def _write_plan(func: Any) -> Tuple[Tuple[int, str, bool], ...]:
    """(position, name, keyword-only) of each argument ``func`` may write into, from its schema; for the
    ops that write running statistics unannotated, those arguments with position -1 (see :func:`_written`)."""
    plan = _PLANS.get(func)
    if plan is None:
        schema = func._schema
        arguments = schema.arguments
        names = [a.name for a in arguments]
        found = [(i, a.name, a.kwarg_only) for i, a in enumerate(arguments)
                 if schema.is_mutable and a.alias_info is not None and a.alias_info.is_write]
        if "training" in names and any(n in names for n in _UNANNOTATED_WRITES):
            found.append((-1, "training", False))
        plan = _PLANS[func] = tuple(found)
    return plan


_PLANS: Dict[Any, Tuple[Tuple[int, str, bool], ...]] = {}


def _written(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Iterable[Tuple[str, Any]]:
    """(argument name, value) of each argument ``func`` writes into, from its schema."""
    plan = _write_plan(func)
    if not plan:
        return
    arguments = func._schema.arguments
    for i, name, kwarg_only in plan:
        if i >= 0:
            yield name, args[i] if i < len(args) and not kwarg_only else kwargs.get(name)
            continue
        names = [a.name for a in arguments]
        t = names.index("training")
        if (args[t] if t < len(args) else kwargs.get("training")):
            for name in _UNANNOTATED_WRITES:
                if name in names:
                    j = names.index(name)
                    yield name, args[j] if j < len(args) else kwargs.get(name)


def keyword_writes(fn: Any) -> Optional[FrozenSet[str]]:
    """For a torch builtin bound to the ATen operator of its name: the keyword arguments through which
    any of that operator's overloads writes (``out`` and the like); ``None`` when ``fn`` might write
    otherwise (a written positional argument, running statistics, a Python function, an unknown name).

    An op whose every write goes through a keyword argument the call does not pass writes nothing, by
    its schema (the same schemas :class:`WriteGuard` trusts): it needs no guard, which saves a dispatch
    mode (tens of microseconds) on most ops. A checked op (:mod:`.checked`) writes as the torch function it
    checks and then calls. Cached per function."""
    try:
        return _KEYWORD_WRITES[fn]
    except KeyError:
        pass
    except TypeError:  # unhashable
        return None
    key, fn = fn, checked.unwrapped(fn)
    found: Optional[FrozenSet[str]] = None
    packets: List[Any] = []
    if fn is torch.Tensor.__getitem__:  # (no operator of its name: those Python indexing dispatches to)
        packets = [getattr(torch.ops.aten, name) for name in _INDEXING]
    elif type(fn) in _BUILTIN_TYPES:
        name = getattr(fn, "__name__", "")
        packet = getattr(torch.ops.aten, name, None) if name else None
        if packet is None and name.startswith("__") and not name.startswith(("__i", "__r")):
            packet = getattr(torch.ops.aten, name.strip("_"), None)  # Tensor.__mul__ is aten::mul
        packets = [packet] if isinstance(packet, torch._ops.OpOverloadPacket) else []
    if packets:
        writes = [w for packet in packets for overload in packet.overloads()
                  for w in _write_plan(getattr(packet, overload))]
        if all(i >= 0 and kwarg_only for i, _, kwarg_only in writes):
            found = frozenset({"out", *(arg_name for _, arg_name, _ in writes)})
    _KEYWORD_WRITES[key] = found
    return found


_BUILTIN_TYPES = (type(torch.add), type(torch.Tensor.add))
#: The ATen operators ``x[...]`` dispatches to (basic and advanced indexing, ``None``, ``...``).
_INDEXING = ("slice", "select", "index", "unsqueeze", "alias", "lift_fresh")
_KEYWORD_WRITES: Dict[Any, Optional[FrozenSet[str]]] = {}


class WriteGuard(TorchDispatchMode):
    """Refuses every ATen call that would write into memory of the owner's data.

    ``storages`` are the storage keys of the owner's data, ``tensors`` the owner's tensor objects
    themselves (an empty tensor has no memory to recognise, but ``out=`` would resize it), and
    ``labels`` name them in the error (storage key -> label).
    """

    def __init__(self, storages: Set[int], tensors: Set[int], labels: Dict[int, str],
                 frozen: Optional[Set[int]] = None, frozen_tensors: Optional[Set[int]] = None) -> None:
        super().__init__()
        self.storages, self.tensors, self.labels = storages, tensors, labels
        #: the same for read-only results (see ``Entry.read_only``): refused as :class:`WithheldWrite`
        self.frozen, self.frozen_tensors = frozen or set(), frozen_tensors or set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for name, value in _written(func, args, kwargs):
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(t, torch.Tensor) and self._protected(t):
                    raise OwnerDataWrite(str(func.overloadpacket.__name__), name,
                                         self.labels.get(storage_key(t), "the owner's data"))
                if isinstance(t, torch.Tensor) and (id(t) in self.frozen_tensors or storage_key(t) in self.frozen):
                    raise WithheldWrite(str(func.overloadpacket.__name__), name, "a read-only result")
        return func(*args, **kwargs)

    def _protected(self, t: torch.Tensor) -> bool:
        if id(t) in self.tensors:
            return True
        return storage_key(t) in self.storages


def positional_out(fn: Any, args: Any) -> bool:
    """Whether ``args`` give ``fn`` an ``out`` argument by position (``torch.norm``, ``torch.tensordot`` and
    ``F.normalize`` take one): refused as ``out=`` is, by keyword. torch resizes an ``out`` in place: an empty view
    of a tensor grew that tensor's memory, charged nothing (160 MiB under a 64 MiB quota), and one of ``#X`` wrote
    into it or moved it (helper-39, helper-40)."""
    try:
        where = _OUT_POSITIONS[fn]
    except KeyError:
        names = side_writes.parameter_names(fn)
        where = _OUT_POSITIONS[fn] = names.index("out") if "out" in names else -1
    except TypeError:  # unhashable
        return False
    return 0 <= where < len(args) and args[where] is not None


_OUT_POSITIONS: Dict[Any, int] = {}


def writes_nothing(fn: Any, kwargs: Dict[str, Any]) -> bool:
    """Whether ``fn(*args, **kwargs)`` writes into none of its arguments, by the schemas of the ATen
    operator it is bound to (see :func:`keyword_writes`): such an op needs no guard and leaves every
    version counter as it was, which spares most ops tens of microseconds."""
    by_keyword = keyword_writes(fn)
    return by_keyword is not None and not (kwargs and by_keyword.intersection(kwargs))


#: An op given at most this many bytes of the owner's data runs on copies of it rather than under the guard:
#: :class:`WriteGuard` costs every ATen call inside the op a trip through Python (a third of a training step
#: on a batch of the owner's rows, measured), a copy of a batch a microsecond.
COPY_MAX_BYTES = 1 << 20


class Copies:
    """The owner's tensors an op is given, copied for it (:func:`copies_for`): the op cannot reach the owner's
    memory, so it runs without the guard; a write it made into a copy is refused after it, as the guard refuses
    one into the owner's data before it. A result that is a copy or a view of one is returned as that view of the
    owner's tensor (:meth:`_restore`): what the op returns is what it would return without copies."""

    def __init__(self, owned: List["Entry"]) -> None:
        self._owned = {id(e.tensor): e for e in owned}
        self._made: Dict[int, Tuple[torch.Tensor, int, "Entry"]] = {}

    def call(self, op: str, fn: Any, args: Any, kwargs: Dict[str, Any]) -> Any:
        """``fn(*args, **kwargs)`` on copies of the owner's tensors (one per tensor, however often it appears, made
        under the op's grad mode: gradients still flow to them); refused before it runs if it would write running
        statistics into one (torch moves no version counter for those: see :mod:`.side_writes`), after it if it
        wrote into one otherwise."""
        args, kwargs = _mapped(self._copy, args), _mapped(self._copy, kwargs)
        copies = {id(made[0]): made[2] for made in self._made.values()}
        for t in side_writes.running_stats_written(fn, args, kwargs):
            if id(t) in copies:
                raise OwnerDataWrite(op, "running statistics", copies[id(t)].label)
        result = fn(*args, **kwargs)
        self._check(op)
        return _mapped(self._restore, result)

    def _restore(self, x: Any) -> Any:
        """A result that is a copy, or a view of one, as the same view of the owner's tensor (what the op returns
        without copies: ``F.dropout(x, training=False)`` is ``x``, ``nn.Flatten()(x)`` a view of it, which stays
        read-only); a view that cannot be mapped back (the copy's strides differ, or it has a graph) stays the
        client's own copy."""
        if not isinstance(x, torch.Tensor) or not self._made:
            return x
        key = storage_key(x)
        for copy, _, entry in self._made.values():
            if storage_key(copy) != key or x.requires_grad or x.dtype != copy.dtype:
                continue
            owner = entry.tensor
            if copy.stride() != owner.stride():  # (clone() keeps the strides of a dense tensor only)
                return x
            offset = owner.storage_offset() + x.storage_offset() - copy.storage_offset()
            return owner.as_strided(x.shape, x.stride(), offset)
        return x

    def _copy(self, x: Any) -> Any:
        entry = self._owned.get(id(x)) if isinstance(x, torch.Tensor) else None
        if entry is None:
            return x
        made = self._made.get(id(x))
        if made is None:
            copy = x.clone()
            made = self._made[id(x)] = (copy, copy._version, entry)
        return made[0]

    def _check(self, op: str) -> None:
        """Refuse the op if it wrote into a copy: it would have written into the owner's data."""
        for copy, version, entry in self._made.values():
            if copy._version != version:
                raise OwnerDataWrite(op, "an argument", entry.label)


def _mapped(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``tree`` (lists, tuples and dicts, as the decoder makes them and ops return them) with ``fn`` applied to
    each leaf (``torch.utils._pytree.tree_map`` costs tens of microseconds per op for this: 7% of a training step)."""
    kind = type(tree)
    if kind is list or kind is tuple:
        return kind(_mapped(fn, x) for x in tree)
    if kind is dict:
        return {k: _mapped(fn, v) for k, v in tree.items()}
    return fn(tree)


def copies_for(store: "ObjectStore", used: List["Entry"], fn: Any = None) -> Optional[Copies]:
    """:class:`Copies` of the owner's data among ``used``, when they can stand for :func:`guard`: at most
    :data:`COPY_MAX_BYTES` of it, no read-only result among ``used`` (the guard keeps those), and no model that
    holds live tensors (``syft.model_weights``, which may hold the owner's data out of reach of a copy). None:
    nothing of the owner's, or the guard. A backward (``fn``) always gets copies, whatever their size: torch
    adopts the gradient it is given, or a fresh view of it, as a leaf's ``.grad`` without a copy (no ATen write
    for the guard to see), and the next backward adds into it in place (helper-41 wrote into a 2 MiB ``#B`` so)."""
    owned = [e for e in used if owner_view(store, e)]
    if not owned:
        return None
    if fn in autograd.WRITES_GRADS:
        return Copies(owned)
    if sum(e.tensor.numel() * e.tensor.element_size() for e in owned) > COPY_MAX_BYTES or any(
            e.read_only or isinstance(e.tensor, ModelWeights) for e in used):
        return None
    return Copies(owned)


def guard(store: "ObjectStore", used: List["Entry"]) -> ContextManager[Any]:
    """A :class:`WriteGuard` if any object in ``used`` is (or aliases) the owner's data or is read-only,
    else a no-op."""
    owned = [e for e in used if owner_view(store, e)]
    frozen = [e for e in used if e.read_only and isinstance(e.tensor, torch.Tensor)]
    if not owned and not frozen:
        return _NO_GUARD
    storages = store.owner_storages() if owned else set()
    labels = {storage_key(e.tensor): e.label for e in owned}
    return WriteGuard(storages, {id(e.tensor) for e in owned}, labels,
                      {storage_key(e.tensor) for e in frozen} - {0}, {id(e.tensor) for e in frozen})


_NO_GUARD = contextlib.nullcontext()


_warming = threading.Lock()


def warm_up() -> Optional[threading.Thread]:
    """Run the guard once, in a background thread (returned; None if one ran already): the first dispatch
    mode of a process makes torch import its compiler stack (seconds), which would otherwise delay a
    client's first op on the owner's data."""
    if not _warming.acquire(blocking=False):
        return None

    def run() -> None:
        with WriteGuard(set(), set(), {}):
            torch.zeros(1).add_(1)

    # not a daemon: a daemon thread still importing when the interpreter exits crashes it
    thread = threading.Thread(target=run, name="torch-dispatch-warm-up", daemon=False)
    thread.start()
    return thread


def versions(used: List["Entry"]) -> List[Tuple["Entry", int]]:
    """The version counter of each tensor an op is about to use (read again by :func:`changed`)."""
    return [(e, e.version) for e in used if isinstance(e.tensor, torch.Tensor)]


def changed(before: List[Tuple["Entry", int]]) -> List["Entry"]:
    """The entries whose tensor was written since :func:`versions` (each once)."""
    seen: Set[int] = set()
    out: List["Entry"] = []
    for e, v in before:
        if id(e) not in seen and e.version != v:
            seen.add(id(e))
            out.append(e)
    return out


def owner_view(store: "ObjectStore", entry: "Entry") -> bool:
    """Whether ``entry`` is the owner's data or a view of it."""
    t = entry.tensor
    return isinstance(t, torch.Tensor) and (entry.session is None or store.aliases_owner_data(t))
