"""The data scientist's side: a Client connected to one worker, and ``connect()``.

Ops on pointers are pipelined: the client picks the result ids, sends the op
and returns new pointers at once. Only ``.get()``, :meth:`Client.sync` and
:meth:`Client.search` wait for the worker; that is also where an op that failed
remotely surfaces, as a :class:`RemoteError` naming the op and the line that
issued it.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union, cast

import torch

from ..collector import freezer
from ..config import defaults
from ..errors import (
    CrossWorkerError,
    OpNotAllowed,
    PointerFreed,
    RemoteError,
    ReplyTimeout,
    SyftError,
    TagError,
)
from ..events import EventStream
from ..traces import user_site
from ..wire import auth, buffers, samehost
from ..wire.names import check_tag, id_source, is_inplace, short_name
from ..wire.protocol import Kind, encode
from ..wire.results import TEXT_OPS, Tree, from_wire, wire_dtype
from . import cell_end, inference, transfers
from .autograd import LOCAL_ANSWERS, local_answer
from .direct import DirectLink
from .inference import REMOTE, infer
from .link import LARGE_FRAME_BYTES, Link
from .outs import write_out
from .pointer import PointerTensor
from .requests import Requests
from .search import SearchResult
from .transport import LinkBase
from .trees import build, check_locals, to_meta, walk

_LIVE: "weakref.WeakSet[Client]" = weakref.WeakSet()
log = logging.getLogger(__name__)

#: How long (s) ``disconnect()`` waits for the ops sent before it, to report a failure among them.
DISCONNECT_SYNC_SECONDS = 5.0


class Client(Requests):
    """A connection to one worker: search its data, send tensors, run ops through pointers."""

    def __init__(self, address: str, key: str, *, timeout: Optional[float] = None,
                 context: Any = None, connection_file: Optional[str] = None, worker: Any = None,
                 curve: Optional[auth.CurveKeys] = None) -> None:
        name = f"{_user()}:{os.getpid()}"
        self._link: LinkBase
        if worker is not None and defaults.in_process_direct:
            # a worker of this process: its handlers run on our thread, no socket in between
            self._link = DirectLink(worker, key, client_name=name)
        else:
            self._link = Link(address, key, timeout=timeout if timeout is not None else defaults.connect_timeout,
                              context=context, client_name=name, curve=curve)
        self.name = self._link.worker_name
        self.address = address
        self.connection_file = connection_file
        self.events = EventStream(defaults.event_history)
        #: ids of remote objects whose pointers died, freed with the next message that leaves
        self.free_queue = self._link.free_queue
        self._origins: Dict[int, Tuple[str, Optional[Tuple[str, int]]]] = {}
        #: the pointers made or found, by local id, as weak references: dead ones are dropped when the dict has
        #: doubled since the last sweep (a WeakValueDictionary's callback per pointer cost a chain ~1 us per op)
        self._pointers: Dict[int, "weakref.ref[PointerTensor]"] = {}
        self._sweep_at = 1024
        self._new_id = id_source()
        #: the process that made this connection (a forked child's copy cannot use it: see pointer.py)
        self.pid = os.getpid()
        self._link.on_error = self._emit_error
        _LIVE.add(self)
        cell_end.install(live_clients)  # (in a notebook, a cell's failed op shows in that cell)
        freezer.acquire([inference.warm_up()])
        #: gives the collector back its objects once, at disconnect or when this client is dropped
        self._thaw = weakref.finalize(self, freezer.release)

    # -- public API ------------------------------------------------------------------
    @property
    def policy(self) -> str:
        """The worker's policy for gets: ``open``, ``review`` or ``closed``."""
        return self._link.policy

    @property
    def devices(self) -> Tuple[str, ...]:
        """The device types the worker allows ``ptr.to(...)`` to name (the CPU, and its ``--device``)."""
        return self._link.devices

    def where(self, other: "Client") -> str:
        """How an error names this connection and ``other``'s: their workers, or two sessions of one worker."""
        if other.name != self.name:
            return f"on {self.name} and on {other.name}"
        return (f"of two connections to {self.name} (each is a session of its own, whose objects the other "
                "cannot use)")

    @property
    def same_host(self) -> bool:
        """Whether large tensors take the same-host path to this worker (verified at the handshake)."""
        return self._link.pool is not None

    @property
    def connected(self) -> bool:
        """Whether the link is open and the worker still serves this session."""
        return not self._link.closed and self._link.broken is None

    @property
    def closed(self) -> bool:
        """Whether :meth:`disconnect` was called (or the link closed): nothing more can be sent."""
        return self._link.closed

    @property
    def pointers(self) -> List[PointerTensor]:
        """The live pointers this client made or found (for panels and inspection).

        Safe to read from another thread (a panel's timer) while pointers are being made: the
        weak references are copied in one step before they are followed.
        """
        refs = list(self._pointers.values())
        return [p for p in (ref() for ref in refs) if p is not None]

    def search(self, *tags: Union[str, Iterable[str]]) -> SearchResult:
        """Pointers to the owner's objects carrying all of ``tags`` (``"#X"``, or a list of tags)."""
        flat: List[str] = []
        for tag in tags:
            if isinstance(tag, (list, tuple, set)):
                flat.extend(tag)
            else:
                flat.append(cast(str, tag))  # checked below: anything else is a TagError
        if not flat:
            raise TagError("search() needs at least one tag, e.g. bob.search('#X')")
        for tag in flat:
            check_tag(tag)
        reply = self._request({"t": Kind.SEARCH, "tags": flat})
        found = [PointerTensor(self, oid, tuple(shape), wire_dtype(dtype), owned=False, tags=tuple(t))
                 for oid, shape, dtype, t in reply["r"]]
        self.events.emit("search", tags=tuple(flat), found=len(found))
        return SearchResult(found, self.name, tuple(flat), list(reply.get("all_tags") or []))

    def send(self, tensor: Any, *tags: str) -> Any:
        """Send a local tensor to the worker; returns a pointer to it (owned by this session).

        An ``nn.Module`` becomes a :class:`RemoteModule` (see :mod:`syft_magics.scientist.remote_module`).
        """
        if isinstance(tensor, torch.nn.Module) and not tags:
            from .remote_module import send_module

            return send_module(self, tensor)
        if isinstance(tensor, PointerTensor):
            raise TypeError("this is already a pointer; send() takes a local tensor")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"send() takes a torch.Tensor, not {type(tensor).__name__}")
        tags = tuple(check_tag(t) for t in tags)
        oid = self._new_id()
        header: Dict[str, Any] = {"t": Kind.SEND, "id": oid, "x": tensor.detach(), "tags": list(tags)}
        if tensor.requires_grad:
            header["rg"] = True  # send keeps requires_grad
        nbytes = tensor.numel() * tensor.element_size()
        pool = self._link.pool if samehost.SHARED_MIN_BYTES <= nbytes <= samehost.POOL_MAX_BYTES else None
        if pool is not None and nbytes >= LARGE_FRAME_BYTES:
            # same host: lent (one copy) or copied into the link's memory file; the caller waits until the
            # worker acknowledges that it read it, as a zero-copy TCP send does
            header["ack"] = True
            pool.written.clear()
            try:
                self._request(header, op="send", pool=pool)
            finally:
                pool.release(pool.written)
        elif pool is None and nbytes >= defaults.stream_min_bytes and self._link.streams_values:
            # streamed in chunks (wire/chunks.py): returns once the worker holds every byte
            self._request(transfers.put_header(oid, tensor, list(tags)), op="send", upload=tensor)
        elif pool is None and nbytes >= LARGE_FRAME_BYTES:
            # sent zero-copy: the worker's acknowledgement says when the tensor may change again
            header["ack"] = True
            self._request(header, op="send")
        else:  # pipelined: copied now (the caller may change the tensor at once)
            seq = self._link.next_seq()
            header["s"] = seq
            self._origins[seq] = ("send", user_site())
            if pool is not None:
                # same host: into the link's memory file, never lent; its region is free again once a later
                # request is answered (the worker handles messages in order). A full pool: by TCP instead
                pool.written.clear()
                parts = encode(header, pool, lend=False)
                self._link.hold(seq, pool.written[:])
            else:
                parts = encode(header)
            # a tagged tensor is meant to be found, perhaps by another client: send it now
            self._link.send(parts, flush=bool(tags))
        ptr = PointerTensor(self, oid, tuple(tensor.shape), tensor.dtype, owned=True, tags=tags,
                            requires_grad=tensor.requires_grad)
        self.events.emit("send", id=oid, shape=tuple(tensor.shape))
        return ptr

    @property
    def optim(self) -> Any:
        """Optimizers that live on the worker: ``client.optim.SGD(remote.parameters(), lr=0.1)``."""
        from .optim import optim

        return optim(self)

    @property
    def lr_scheduler(self) -> Any:
        """Schedulers that live on the worker: ``client.lr_scheduler.StepLR(opt, step_size=10)``."""
        from .optim import lr_scheduler

        return lr_scheduler(self)

    def sync(self, timeout: Optional[float] = None) -> None:
        """Wait until the worker has run every op sent so far; raise the first remote error, if any."""
        self._request({"t": Kind.SYNC}, timeout)

    def get(self, ptr: PointerTensor, timeout: Optional[float] = None) -> torch.Tensor:
        """The value behind ``ptr`` (same as ``ptr.get()``)."""
        self._check_pointer(ptr)
        shape, dtype, _ = ptr.signature
        small = shape is not None and math.prod(shape) * dtype.itemsize < defaults.stream_min_bytes
        plan = {"c": transfers.plan()} if self._link.streams_values and not small else {}  # (may stream)
        value = self._release({"t": Kind.GET, "id": ptr.oid, **plan}, timeout, f"get of {_label(ptr)}")
        self.events.emit("get", id=ptr.oid)
        if isinstance(value, torch.Tensor):
            ptr.learn_shape(value.shape)
        return value

    def shape_of(self, ptr: PointerTensor, timeout: Optional[float] = None) -> Tuple[int, ...]:
        """The shape of ``ptr``; one the owner withholds is released like a value (``ptr.request_shape()``)."""
        self._check_pointer(ptr)
        shape = self._release({"t": Kind.GET, "id": ptr.oid, "what": "shape"}, timeout, f"shape of {_label(ptr)}")
        return tuple(int(s) for s in shape)

    def error_message(self, n: int, timeout: Optional[float] = None) -> str:
        """The text of error #``n``, withheld (it came from the owner's data); released like a value."""
        return str(self._release({"t": Kind.GET, "what": "error", "n": int(n)}, timeout, f"message of error #{n}"))

    def _release(self, header: dict, timeout: Optional[float], what: str) -> Any:
        """Ask for something the owner may have to release; wait for the decision (``approved``: ask again)."""
        approval_timeout = timeout if timeout is not None else defaults.approval_timeout
        while True:
            reply = self._request(dict(header), timeout, approval_timeout=approval_timeout, what=what)
            if reply["t"] == Kind.VALUE:
                return reply["x"]

    def panel(self):
        """A live ipywidgets panel of this connection: its pointers and the pointer graph."""
        from ..ui.panels import ConnectionPanel

        return ConnectionPanel(self)

    def disconnect(self) -> None:
        """Close the link; the worker frees this session's objects (never the owner's). A failure of an op sent
        before it, not reported yet, is raised here once the link is closed (helper-77: a script whose last ops
        failed ended with no word of it); the ops get :data:`DISCONNECT_SYNC_SECONDS` to run."""
        failed: Optional[RemoteError] = None
        if not self.closed:
            if self.connected:
                try:
                    self.sync(timeout=DISCONNECT_SYNC_SECONDS)
                except RemoteError as exc:
                    failed = exc
                except ReplyTimeout:
                    warnings.warn(f"{self.name} was still running ops this client sent when it disconnected (after "
                                  f"{DISCONNECT_SYNC_SECONDS:g} s): they end with the session, and whether they "
                                  "failed is unknown (call sync() first to wait for them)", RuntimeWarning,
                                  stacklevel=2)
                except SyftError:  # (the worker gone or restarted: nothing more to learn from it)
                    pass
            self._link.close()
            buffers.trim(everything=True, key=None)  # (its housekeeping trimmed what its receives kept)
            self.events.emit("disconnect")
        _LIVE.discard(self)
        self._thaw()
        if failed is not None:
            raise failed

    close = disconnect

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            self.disconnect()
        except RemoteError as failed:
            if kind is None:
                raise
            log.warning("an op sent to %s before leaving the block failed: %s", self.name, failed)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return (f"<Client of {self.name} at {self.address}, {state}, policy={self.policy}, "
                f"{len(self.pointers)} live pointers>")

    # -- ops on pointers -------------------------------------------------------------------
    def run(self, func: Any, name: str, args: tuple, kwargs: dict, described: bool = False) -> Any:
        """Run ``func`` (wire name ``name``) on this worker; called by :class:`PointerTensor` for every op.

        Returns new pointers at once (their shapes inferred locally); the op itself is pipelined.
        ``described``: wait for the worker to say what came out instead (a result only it knows:
        ``ptr.grad`` may be None there, ``torch.autograd.grad(..., create_graph=True)`` may or may
        not require grad).
        """
        self._link.check()  # a dead link fails before the (first-time costly) shape inference
        if "out" in kwargs:  # out=None (torch's collate) writes nothing; a pointer is written after the op
            out = kwargs["out"]
            kwargs = {k: v for k, v in kwargs.items() if k != "out"}
            if out is not None:
                return write_out(short_name(name), self.run(func, name, args, kwargs, described), out,
                                 torch.is_grad_enabled())
        if torch._C._is_any_autocast_enabled():
            raise OpNotAllowed(f"{short_name(name)} on pointers under torch.autocast: the worker runs ops in their "
                               "own dtypes and would ignore it (a float32 result where you expect bfloat16); cast "
                               "instead: client.send(model.to(torch.bfloat16)), x.to(torch.bfloat16)")
        pointers: List[PointerTensor] = []
        locals_: List[torch.Tensor] = []
        wire_args, key_args = walk(args, pointers, locals_)
        wire_kwargs, key_kwargs = walk(kwargs, pointers, locals_) if kwargs else ({}, ())
        check_locals(name, locals_)
        unknown = None
        for ptr in pointers:
            if ptr.signature[0] is None:
                unknown = ptr
            if ptr.client is not self:
                raise CrossWorkerError(
                    f"{short_name(name)} mixes pointers {self.where(ptr.client)}; move one side first "
                    "(ptr.move(other_worker), worker to worker; or .get() it and send it)")
            if ptr.deleted:
                raise PointerFreed(f"{ptr!r} was deleted and cannot be used")
        grad = torch.is_grad_enabled()

        def standins() -> Tuple[tuple, dict, List[torch.Tensor], List[int]]:
            memo: Dict[int, torch.Tensor] = {}
            found: List[torch.Tensor] = []
            local_ids: List[int] = []
            meta_args = to_meta(args, memo, found, local_ids)
            meta_kwargs = to_meta(kwargs, memo, found, local_ids)
            return meta_args, meta_kwargs, found, local_ids

        if unknown is not None or described:  # e.g. a shape the owner withholds: only the worker knows
            if unknown is not None and name in LOCAL_ANSWERS:
                raise unknown.shape_unknown()
            return self._run_remote(name, wire_args, wire_kwargs)
        template = infer(func, (key_args, key_kwargs, grad), standins)
        if template is REMOTE:
            return self._run_remote(name, wire_args, wire_kwargs)
        assert isinstance(template, Tree)
        inplace = is_inplace(name)
        if not inplace and not template.has_tensors:
            if local_answer(name, template):
                return build(self, template, (), pointers)
            # a side effect on the worker (backward, retain_grad...): sent like any op, never skipped
        out = template.out_ids(self._new_id)
        seq = self._link.next_seq()
        origins = self._origins
        origins[seq] = (name, user_site())
        if len(origins) > 200_000:
            for old in list(origins)[:100_000]:
                del origins[old]
        header: Dict[str, Any] = {"t": Kind.OP, "s": seq, "f": name, "a": list(wire_args), "k": wire_kwargs, "o": out}
        if not grad:
            header["g"] = False
        self._link.send(encode(header))
        result = build(self, template, out, pointers)
        self.events.emit("op", seq=seq, op=short_name(name), inputs=[p.oid for p in pointers],
                         out=out if None not in out else [o for o in out if o is not None])
        return result

    def _run_remote(self, name: str, wire_args: Any, wire_kwargs: Any) -> Any:
        """A data-dependent op: the worker runs it and says what came out."""
        header: Dict[str, Any] = {"t": Kind.OP, "f": name, "a": list(wire_args), "k": wire_kwargs, "o": [], "m": True}
        if not torch.is_grad_enabled():
            header["g"] = False
        reply = self._request(header, op=name)
        tree, ids = from_wire(reply["r"], text=name in TEXT_OPS)
        return build(self, tree, ids, [])

    # -- pointer bookkeeping (called by PointerTensor) ----------------------------------------
    def track(self, ptr: PointerTensor) -> None:
        """List a new pointer among :attr:`pointers`."""
        refs = self._pointers
        refs[ptr._local_id] = weakref.ref(ptr)
        if len(refs) >= self._sweep_at:
            self._pointers = refs = {k: r for k, r in refs.items() if r() is not None}
            self._sweep_at = max(1024, 2 * len(refs))

    def untrack(self, ptr: PointerTensor) -> None:
        """Not listed among :attr:`pointers`: a handle standing for a model or optimizer on the worker."""
        self._pointers.pop(ptr.id, None)

    def forget(self, ptr: PointerTensor) -> None:
        """A pointer was deleted: no longer listed."""
        self._pointers.pop(ptr.id, None)
        self.events.emit("delete", id=ptr.oid)

    def _check_pointer(self, ptr: Any) -> None:
        if not isinstance(ptr, PointerTensor):
            raise TypeError(f"expected a PointerTensor, got {type(ptr).__name__}")
        if ptr.client is not self:
            raise CrossWorkerError(f"this pointer lives on {ptr.client.name}, not on {self.name}")
        if ptr.deleted:
            raise PointerFreed(f"{ptr!r} was deleted and cannot be used")


def _user() -> str:
    """This user's login name, as the client's name (the worker refuses '@' in it: it shows ``name@address``)."""
    try:
        name = os.getlogin()
    except OSError:
        name = os.environ.get("USER", "client")
    return name.replace("@", "_")


def _label(ptr: PointerTensor) -> str:
    return " ".join(ptr.tags) if ptr.tags else ptr.oid.hex()[:8]


def live_clients() -> List[Client]:
    """The clients of this process that are still connected or not yet closed."""
    return [c for c in list(_LIVE) if not c.closed]
