"""An op's argument and result trees on the scientist's side.

Arguments become their wire form (pointers as references, local tensors as values) and a
signature for the shape-inference cache (:func:`walk`), or meta stand-ins for inference
(:func:`to_meta`). A result comes back as pointers (:func:`build`) from a
:class:`~syft_magics.wire.results.Tree`: the one the client inferred, or the one the worker
described for a data-dependent result (the same encoding, :mod:`syft_magics.wire.results`).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils import _pytree as pytree

from ..errors import OpNotAllowed
from ..wire.names import short_name
from ..wire.results import Leaf, Tree, wire_dtype
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client


_SCALARS = (int, float, bool, str, type(None), complex)


def walk(obj: Any, pointers: List[PointerTensor], locals_: List[torch.Tensor]) -> Tuple[Any, Any]:
    """The wire form of an argument and its cache signature; collects pointers and local tensors.

    Hand-written rather than ``torch.utils._pytree``: this runs for every op, and building the
    signature from ``tree_flatten`` (a TreeSpec to hash, then the leaves) measured 3-5x slower here
    (see the commit that moved :func:`to_meta` and the result trees to pytree)."""
    t = type(obj)
    if t is PointerTensor:
        pointers.append(obj)
        return obj.wire_ref, ("P", obj.signature, obj.leaf)  # (leaf: in-place ops are refused on a grad leaf)
    if t in _SCALARS:
        return obj, (t, obj)
    if t is tuple or t is list:
        pairs = [walk(o, pointers, locals_) for o in obj]
        return t(p[0] for p in pairs), (t, tuple(p[1] for p in pairs))
    if isinstance(obj, PointerTensor):
        raise TypeError("subclasses of PointerTensor are not supported")
    if isinstance(obj, torch.Tensor):
        locals_.append(obj)
        return obj.detach(), ("L", tuple(obj.shape), obj.dtype, obj.requires_grad)
    if t is dict:
        walked = {k: walk(v, pointers, locals_) for k, v in obj.items()}
        return {k: p[0] for k, p in walked.items()}, ("d", tuple((k, p[1]) for k, p in walked.items()))
    if t is slice:
        parts = [walk(o, pointers, locals_) for o in (obj.start, obj.stop, obj.step)]
        return slice(*(p[0] for p in parts)), ("s", tuple(p[1] for p in parts))
    if obj is Ellipsis or isinstance(obj, (torch.dtype, torch.memory_format)):
        return obj, obj
    if isinstance(obj, torch.Size):
        return obj, ("S", tuple(obj))
    for base in (bool, int, float):  # numpy scalars and other subclasses
        if isinstance(obj, base):
            return base(obj), (base, base(obj))
    if isinstance(obj, tuple):
        return walk(tuple(obj), pointers, locals_)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, (numpy.generic, numpy.ndarray)) and obj.dtype.kind in "biufc":
        # (as torch takes them: a number, or a tensor; helper-80: np.float32(k) and np.int64(i) were refused)
        return walk(obj.item() if isinstance(obj, numpy.generic) else torch.as_tensor(obj), pointers, locals_)
    raise TypeError(f"a {t.__name__} cannot be sent to a worker as an argument")


def check_locals(name: str, locals_: List[torch.Tensor]) -> None:
    """Refuse an op given a local tensor it cannot use as the user means:

    * one on the 'meta' device: a pointer's ``.device`` is 'meta' (it holds no data here), so code that
      builds a tensor with ``device=ptr.device`` (``torch.masked.*``, some library helpers) made an empty
      local one, whose values would be garbage on the worker;
    * one that requires grad, with grad on: it travels as a copy, so the gradient a backward computes
      for it stays with the copy on the worker and never reaches it (a local model applied to a pointer:
      ``loss.backward()`` then ``opt.step()`` changed nothing, silently)."""
    for t in locals_:
        if t.device.type == "meta":
            raise OpNotAllowed(
                f"{short_name(name)} got a tensor on the 'meta' device, built here from a pointer's .device "
                "(a pointer holds no data on this side). torch.masked.* ops and code that creates tensors with "
                "device=ptr.device are not supported on pointers; create the tensor on the worker instead "
                "(e.g. ptr.new_full(...), torch.where(mask, ptr, value))")
        if t.requires_grad and torch.is_grad_enabled():
            raise OpNotAllowed(
                f"{short_name(name)} mixes pointers with a local tensor that requires grad (of shape "
                f"{tuple(t.shape)}): it would travel as a copy, and the gradient a backward computes for it "
                "would stay with the copy on the worker, never reaching it. Send the model (or the tensor) "
                "first: remote = client.send(model), then train remote with client.optim; or pass "
                "tensor.detach() if it is a constant")


def to_meta(obj: Any, memo: Dict[int, torch.Tensor], found: List[torch.Tensor], local_ids: List[int]) -> Any:
    """Meta stand-ins (no data) for an argument tree, walked with ``torch.utils._pytree``: a pointer's
    from its signature (one per pointer, ``memo``), a local tensor's from its metadata. ``found`` gets
    the pointers' stand-ins in the order :func:`walk` met the pointers; ``local_ids`` the locals'."""
    def leaf(x: Any) -> Any:
        if isinstance(x, PointerTensor):
            s = memo.get(id(x))
            if s is None:
                with torch._C.DisableTorchFunctionSubclass():
                    shape, dtype, requires_grad = x.signature
                    s = torch.empty(shape or (), dtype=dtype, device="meta", requires_grad=requires_grad)
                    if requires_grad and not x.leaf:  # a non-leaf, as on the worker: in-place ops are allowed
                        with torch.enable_grad():
                            s = s.clone()
                memo[id(x)] = s
            found.append(s)
            return s
        if isinstance(x, torch.Tensor):
            with torch._C.DisableTorchFunctionSubclass():
                s = x.detach().to("meta").requires_grad_(x.requires_grad)
            local_ids.append(id(s))
            return s
        if isinstance(x, slice):
            return slice(*(leaf(o) for o in (x.start, x.stop, x.step)))
        return x

    return pytree.tree_map(leaf, obj)


def build(client: "Client", template: Tree, ids: Sequence[Optional[bytes]], pointers: List[PointerTensor]) -> Any:
    """The op's result as pointers: new tensors get the ids ``ids`` (one per leaf), inputs returned again
    are their pointers, plain values stay. A tensor whose shape the owner withholds gets an unknown shape."""
    if template.single:  # most ops: one tensor
        leaf = template.leaves[0]
        if leaf[0] == "T":
            return _pointer(client, ids[0], leaf)
        return pointers[leaf[1]] if leaf[0] == "in" else leaf[1]
    it = iter(ids)

    def make(leaf: Leaf) -> Any:
        oid = next(it, None)
        kind = leaf[0]
        if kind == "T":
            return _pointer(client, oid, leaf)
        if kind == "in":
            return pointers[leaf[1]]
        return leaf[1]

    return template.build(make)


def _pointer(client: "Client", oid: Any, leaf: Leaf) -> PointerTensor:
    return PointerTensor(client, oid, leaf[1], leaf[2], requires_grad=leaf[3], leaf=leaf[4])


__all__ = ["build", "check_locals", "to_meta", "walk", "wire_dtype"]
