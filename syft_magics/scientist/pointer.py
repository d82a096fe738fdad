"""PointerTensor: a local stand-in for a tensor that lives on a worker.

A pointer is a ``torch.Tensor`` wrapper subclass with the remote tensor's shape
and dtype and no data. Torch hands every function, operator and method applied
to it to :meth:`PointerTensor.__torch_function__` (torch's own protocol: nothing
is patched), which sends the op to the pointer's worker and returns new pointers
at once. Metadata (``.shape``, ``.dtype``, ``len()``, ``.size()``, ``.dim()``) is
answered locally; values (``.get()``, ``.item()``, ``.tolist()``, ``bool()``)
come from the worker, as its policy allows.

A result whose shape depends on the owner's values (``nonzero``, ``unique``, a mask, sizes
read from a tensor) has an **unknown shape** under the ``review`` and ``closed`` policies: its
repr says ``shape=unknown until Bob approves``, ``ptr.shape`` (``size()``, ``dim()``,
``len()``...) raises :class:`~syft_magics.errors.ShapeUnknown`, and ops on it still run on the
worker (one round trip each: the worker says what came out). ``ptr.request_shape()`` asks the
owner for it like a get; an approved ``.get()`` tells it too.
"""
from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import torch
from torch.overrides import get_default_nowrap_functions

from ..errors import OpNotAllowed, ShapeUnknown
from ..wire.names import wire_name
from ..wire.protocol import ref_ext
from .autograd import SPECIAL
from .inits import install as _install_inits

if TYPE_CHECKING:
    from .client import Client

_NOWRAP = get_default_nowrap_functions()
_local_ids = itertools.count(1)

#: Functions whose answer is the data itself: they fetch the value (policy applies), then run locally.
_VALUE_FUNCS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
    torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.__complex__, torch.Tensor.numpy,
    torch.Tensor.__array__, torch.Tensor.__contains__, torch.equal, torch.Tensor.equal,
    torch.allclose, torch.Tensor.allclose,
}

#: Property getters that read the shape (answered from what the client knows of it).
_SHAPE_GETTERS = {torch.Tensor.shape.__get__, torch.Tensor.ndim.__get__}  # type: ignore[attr-defined]

#: Properties that compute a new tensor rather than read metadata, and the ops they stand for.
_COMPUTED_PROPERTIES: Dict[Any, Callable[[Any], Any]] = {
    torch.Tensor.T.__get__: lambda t: t.permute(*reversed(range(t.dim()))),  # type: ignore[attr-defined]
    torch.Tensor.mT.__get__: lambda t: t.transpose(-2, -1),  # type: ignore[attr-defined]
    torch.Tensor.H.__get__: lambda t: t.permute(*reversed(range(t.dim()))).conj(),  # type: ignore[attr-defined]
    torch.Tensor.mH.__get__: lambda t: t.transpose(-2, -1).conj(),  # type: ignore[attr-defined]
}


_META = torch.device("meta")


class _Owned:
    """Frees the remote object when the pointer dies: queues the id, no I/O here."""

    __slots__ = ("queue", "id")

    def __init__(self, queue: Any, oid: bytes) -> None:
        self.queue = queue
        self.id = oid

    def __del__(self) -> None:
        self.queue.append(self.id)


class _Discard:
    """A queue that drops what is appended (for handles already freed explicitly)."""

    @staticmethod
    def append(item: Any) -> None:
        pass


_install_inits()  # (torch's initialisers that skip the override check: given it, see .inits)


class PointerTensor(torch.Tensor):
    """A tensor on a worker, used like a local one; ``.get()`` brings its value back."""

    #: the remote object's 16-byte id
    oid: bytes
    #: its packed wire form (an argument of an op), built once
    wire_ref: Any
    #: what shape inference needs: ``(shape, dtype, requires_grad)``; the shape is ``None`` while unknown
    signature: Tuple[Optional[Tuple[int, ...]], torch.dtype, bool]
    _client: "Client"
    _handle: Optional[_Owned]
    _local_id: int
    #: numpy's operators (``np.float32(2) * ptr``) leave the op to the pointer's, which runs it on the worker,
    #: rather than fetch its value to compute here (helper-80)
    __array_ufunc__ = None
    # (defaults on the class: a pointer sets only what differs, one attribute fewer per op each)
    _tags: Tuple[str, ...] = ()
    _deleted: bool = False
    _placeholder: bool = False
    #: whether the worker's tensor is an autograd leaf: sent, found and moved tensors are; an op's result that
    #: requires grad is not (it has a grad_fn there). Known from shape inference, which follows torch.
    leaf: bool = True

    @staticmethod
    def __new__(cls, client: "Client", oid: bytes, shape: Optional[Tuple[int, ...]], dtype: torch.dtype,
                requires_grad: bool = False, owned: bool = True, tags: Tuple[str, ...] = (),
                leaf: bool = True) -> "PointerTensor":
        # an unknown shape (None): the wrapper gets a placeholder, never shown (see _SHAPE_GETTERS)
        ptr = torch.Tensor._make_wrapper_subclass(cls, () if shape is None else shape, dtype=dtype,
                                                  device=_META, requires_grad=requires_grad)
        if shape is None:
            ptr._placeholder = True
        ptr._client = client
        ptr.oid = oid
        ptr.wire_ref = ref_ext(oid)
        if tags:
            ptr._tags = tags
        ptr.signature = (None if shape is None else tuple(shape), dtype, requires_grad)
        ptr._handle = _Owned(client.free_queue, oid) if owned else None
        ptr._local_id = next(_local_ids)
        if not leaf and requires_grad:
            ptr.leaf = False
        client.track(ptr)
        return ptr

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    # -- what users call ---------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> torch.Tensor:
        """The value, fetched from the worker (waits for the owner's approval under ``review``).

        Never deletes anything on the worker.
        """
        return self._client.get(self, timeout=timeout)

    def move(self, target: "Client", timeout: Optional[float] = None) -> "PointerTensor":
        """Send this tensor from its worker straight to ``target``'s (worker to worker, never through here);
        returns the pointer there. Both owners' policies apply (see :mod:`syft_magics.scientist.moves`)."""
        from .moves import move

        return move(self, target, timeout=timeout)

    @property
    def known_shape(self) -> Optional[Tuple[int, ...]]:
        """The shape, or ``None`` while the owner withholds it (unlike ``.shape``, never raises)."""
        return self.signature[0]

    def request_shape(self, timeout: Optional[float] = None) -> torch.Size:
        """The shape, asked of the owner when it is withheld (it depends on the owner's values): under
        ``review`` the owner sees "shape of <this object>" and approves or denies, like a get."""
        if self.signature[0] is None:
            self.learn_shape(self._client.shape_of(self, timeout=timeout))
        return torch.Size(self.signature[0] or ())

    def learn_shape(self, shape: Any) -> None:
        """The owner released this pointer's shape (its value, or the shape alone)."""
        if self.signature[0] is None:
            self.signature = (tuple(int(s) for s in shape), self.signature[1], self.signature[2])

    def shape_unknown(self) -> ShapeUnknown:
        """The error for reading a shape the owner withholds."""
        owner = self._client.name
        return ShapeUnknown(f"the shape of {self._label()} on {owner} depends on {owner}'s data and is unknown until "
                            f"{owner} approves: ask with ptr.request_shape() (or .get() the value); ops on it "
                            "still run on the worker")

    def _label(self) -> str:
        return " ".join(self._tags) if self._tags else self.oid.hex()[:8]

    def delete(self) -> None:
        """Forget this pointer now; frees the remote object if this session made it.

        Pointers from ``search`` only forget: the owner's data is never deleted.
        """
        if self._deleted:
            return
        self._deleted = True
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.queue = _Discard  # the explicit free below replaces the one at garbage collection
            self._client.free_queue.append(self.oid)
        self._client.forget(self)

    @property
    def deleted(self) -> bool:
        """Whether :meth:`delete` was called (the pointer can no longer be used)."""
        return self._deleted

    @property
    def freed(self) -> bool:
        """Whether the remote object is out of reach: the pointer was deleted or its client closed."""
        return self._deleted or self._client.closed

    @property
    def location(self) -> str:
        """The name of the worker holding the tensor."""
        return self._client.name

    @property
    def id_at_location(self) -> str:
        """The remote object's id (hex)."""
        return self.oid.hex()

    @property
    def id(self) -> int:
        """This pointer's local id (distinct for every pointer object)."""
        return self._local_id

    @property
    def owned(self) -> bool:
        """Whether this session created the remote object (and frees it when the pointer dies)."""
        return self._handle is not None

    @property
    def tags(self) -> Tuple[str, ...]:
        return self._tags

    @property
    def client(self) -> "Client":
        return self._client

    def __repr__(self, **kwargs: Any) -> str:  # type: ignore[override]  # (torch's has keyword-only extras)
        at = " ".join(self._tags) if self._tags else self.oid.hex()[:12]
        freed = ", freed" if self.freed else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        shape = self.signature[0]
        shown = f"unknown until {self._client.name} approves" if shape is None else str(tuple(shape))
        return (f"PointerTensor(id={self._local_id}, location={self._client.name}, id@loc={at}, "
                f"shape={shown}, dtype={self.dtype}{grad}{freed})")

    __str__ = __repr__

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        """In a notebook: the pointer's card (:mod:`syft_magics.ui.card`); the text repr stays for the rest."""
        from ..ui.card import mimebundle

        return mimebundle(self, include, exclude)

    def __format__(self, spec: str) -> str:
        """``f"{loss:.4f}"``: as torch, the number of a one-element pointer (its value fetched, as ``float(loss)``
        does; helper-77: the spec was ignored and the pointer's repr printed); ``f"{ptr}"``: its repr."""
        if not spec:
            return repr(self)
        if self.signature[0] != ():
            raise TypeError(f"unsupported format string passed to {type(self).__name__}.__format__ (a format "
                            "spec applies to one number, as for a tensor: .get() the values first)")
        return format(self.item(), spec)

    def __hash__(self) -> int:
        return id(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a PointerTensor cannot be pickled or copied; .get() its value, or keep the pointer")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("a PointerTensor cannot be deep-copied; use ptr.clone() for a remote copy")

    # -- torch's protocols ---------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if _forked and _first_pointer(args, kwargs)._client.pid != os.getpid():
            raise OpNotAllowed("pointers cannot be used in a process forked from the one that made them (a "
                               "DataLoader's num_workers > 0): their connection is that process's; use "
                               "num_workers=0, or syft_magics.data.DataLoader, which cuts batches on the worker")
        kwargs = kwargs or {}
        special = SPECIAL.get(func)
        if special is not None:
            # autograd, .data, .to: run on the worker, or refused (never a local no-op)
            return special(*args, **kwargs)
        prop = _COMPUTED_PROPERTIES.get(func)
        if prop is not None:
            # .T, .mT, .H, .mH compute a new tensor: run them as the ops they stand for
            return prop(args[0])
        if func in _SHAPE_GETTERS and args[0]._placeholder:
            shape = args[0].signature[0]
            if shape is None:
                raise args[0].shape_unknown()
            return torch.Size(shape) if func == torch.Tensor.shape.__get__ else len(shape)
        if func in _NOWRAP or getattr(func, "__name__", None) in ("__get__", "__set__"):
            # attribute access (shape, dtype, requires_grad...): metadata held by the wrapper itself
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func in _VALUE_FUNCS:
            local = [a.get() if isinstance(a, PointerTensor) else a for a in args]
            return func(*local, **kwargs)
        if func is torch.Tensor.__iter__:
            return iter(args[0].unbind(0))
        name = wire_name(func)
        if name is None:
            qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise OpNotAllowed(f"{qual} cannot run on a pointer: it has no public torch name")
        first = args[0] if args and type(args[0]) is PointerTensor else _first_pointer(args, kwargs)
        try:
            return first._client.run(func, name, args, kwargs)
        except Exception as exc:
            # raised at the user's line (torch's shape error from inference, a freed pointer...):
            # without the frames of the client and of torch's shape inference it came through
            raise exc.with_traceback(None)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args and type(args[0]) is PointerTensor:
            # torch turned a pointer into a Python number below the torch-function layer (torch.arange(ptr),
            # torch.eye(ptr): their size arguments are numbers): the value is fetched, as int(ptr) does
            return args[0].get().item()
        raise RuntimeError(f"{func} reached PointerTensor below the torch-function layer; "
                           "this operation is not supported on pointers")


_forked = False  # (set in a child of fork(): a DataLoader's worker processes; its own new clients' pointers work)


def _in_forked_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_in_forked_child)


def _first_pointer(args: Any, kwargs: Any) -> PointerTensor:
    stack = [args, kwargs]
    while stack:
        obj = stack.pop()
        if isinstance(obj, PointerTensor):
            return obj
        if isinstance(obj, (list, tuple)):
            stack.extend(reversed(obj))
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    raise TypeError("no pointer among the arguments")
