"""An op's argument and result trees on the scientist's side.

Arguments become their wire form (pointers as references, local tensors as values) and a
signature for the shape-inference cache (:func:`walk`), or meta stand-ins for inference
(:func:`to_meta`). A result comes back as pointers built from the inferred template
(:func:`build`, ids chosen by :func:`out_ids`) or from the worker's description of a
data-dependent result (:func:`build_described`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch

from ..errors import ProtocolError
from ..wire.protocol import DTYPES
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client


def wire_dtype(name: str) -> torch.dtype:
    """The dtype a worker named (only those the wire carries)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ProtocolError(f"unknown dtype {name!r} from the worker") from None


_SCALARS = (int, float, bool, str, type(None), complex)


def walk(obj: Any, pointers: List[PointerTensor], locals_: List[torch.Tensor]) -> Tuple[Any, Any]:
    """The wire form of an argument and its cache signature; collects pointers and local tensors."""
    t = type(obj)
    if t is PointerTensor:
        pointers.append(obj)
        return obj.wire_ref, ("P", obj.signature)
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
    if obj is Ellipsis or isinstance(obj, torch.dtype):
        return obj, obj
    if isinstance(obj, torch.Size):
        return obj, ("S", tuple(obj))
    for base in (bool, int, float):  # numpy scalars and other subclasses
        if isinstance(obj, base):
            return base(obj), (base, base(obj))
    if isinstance(obj, tuple):
        return walk(tuple(obj), pointers, locals_)
    raise TypeError(f"a {t.__name__} cannot be sent to a worker as an argument")


def to_meta(obj: Any, memo: Dict[int, torch.Tensor], found: List[torch.Tensor], local_ids: List[int]) -> Any:
    if isinstance(obj, PointerTensor):
        s = memo.get(id(obj))
        if s is None:
            with torch._C.DisableTorchFunctionSubclass():
                shape, dtype, requires_grad = obj.signature
                s = torch.empty(shape, dtype=dtype, device="meta", requires_grad=requires_grad)
            memo[id(obj)] = s
        found.append(s)
        return s
    if isinstance(obj, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            s = obj.detach().to("meta").requires_grad_(obj.requires_grad)
        local_ids.append(id(s))
        return s
    if type(obj) in (list, tuple):
        return type(obj)(to_meta(o, memo, found, local_ids) for o in obj)
    if isinstance(obj, dict):
        return {k: to_meta(v, memo, found, local_ids) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(*(to_meta(o, memo, found, local_ids) for o in (obj.start, obj.stop, obj.step)))
    return obj


def out_ids(template: tuple, out: List[Optional[bytes]], new_id: Callable[[], bytes]) -> None:
    kind = template[0]
    if kind == "T":
        out.append(new_id())
    elif kind == "C":
        for child in template[2]:
            out_ids(child, out, new_id)
    else:
        out.append(None)


def build(client: "Client", template: tuple, ids: Any, pointers: List[PointerTensor]) -> Any:
    kind = template[0]
    if kind == "T":
        return PointerTensor(client, next(ids), template[1], template[2], requires_grad=template[3],
                             leaf=template[4] if len(template) > 4 else not template[3])
    if kind == "in":
        next(ids, None)
        return pointers[template[1]]
    if kind == "V":
        next(ids, None)
        return template[1]
    ctor, children = template[1], template[2]
    items = [build(client, c, ids, pointers) for c in children]
    return _construct(ctor, items)


def _construct(ctor: type, items: List[Any]) -> Any:
    if ctor is list:
        return items
    if ctor is tuple:
        return tuple(items)
    if hasattr(ctor, "n_fields"):  # torch.return_types.* (structseq)
        return ctor(items)
    if hasattr(ctor, "_fields"):  # namedtuple
        return ctor(*items)
    return ctor(items)


def build_described(client: "Client", desc: list) -> Any:
    kind = desc[0]
    if kind == "T":
        _, oid, shape, dtype, requires_grad = desc
        # an op's result that requires grad has a grad_fn on the worker (torch's rule for op outputs)
        return PointerTensor(client, oid, tuple(shape), wire_dtype(dtype), requires_grad=requires_grad,
                             leaf=not requires_grad)
    if kind == "L":
        items = [build_described(client, d) for d in desc[2]]
        return items if desc[1] == "list" else tuple(items)
    return None
