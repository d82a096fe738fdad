"""torch's ``out=`` on pointers: the op runs on the worker, then its result is copied into the ``out`` pointer there.

Torch's own layers write this way (``parametrizations.spectral_norm``'s power iteration calls
``F.normalize(..., out=u)``), so a model using them would fail inside torch's code, far from the user's line.
The result is copied into the target where torch would write it directly: the same values, the same rules
for the write (a write into the owner's data is refused as ``copy_`` is). Where torch would quietly resize
the target, a pointer refuses (resizing would make memory of a size the client did not ask for).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .pointer import PointerTensor


def write_out(op: str, result: Any, out: Any, grad: bool) -> Any:
    """Copy ``result`` (a pointer, or a tuple of them) into ``out`` (a pointer, or a sequence of as many) on the
    worker; returns ``out``, as torch does. ``grad``: whether the op ran with autograd on."""
    from .pointer import PointerTensor

    many = isinstance(out, (tuple, list))
    results = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    targets = tuple(out) if many else (out,)
    if len(results) != len(targets):
        raise TypeError(f"{op}: out= takes {len(results)} tensor{'s' if len(results) > 1 else ''}, "
                        f"not {len(targets)}")
    for r, t in zip(results, targets):
        if not isinstance(t, PointerTensor):
            raise TypeError(f"{op}: out= is a {type(t).__name__}; with pointers it must be a pointer on the same "
                            "worker (a local tensor would need the result fetched: .get() it instead)")
        _check(op, r, t, grad)
    for r, t in zip(results, targets):
        t.copy_(r)
    if not many:
        return targets[0]
    # (torch.max(x, 1, out=(v, i)) returns its named tuple of the out tensors: .values is v)
    return type(result)(targets) if isinstance(result, tuple) and type(result) is not tuple else out


def _check(op: str, result: "PointerTensor", target: "PointerTensor", grad: bool) -> None:
    if target.client is not result.client:
        from ..errors import CrossWorkerError

        raise CrossWorkerError(f"{op}: out= is a pointer {target.client.where(result.client)}")
    if grad and (result.requires_grad or target.requires_grad):
        # torch's own refusal, word for word
        raise RuntimeError(f"{op}(): functions with out=... arguments don't support automatic differentiation, "
                           "but one of the arguments requires grad.")
    if tuple(result.shape) != tuple(target.shape):
        raise RuntimeError(f"{op}: out= has shape {tuple(target.shape)}, the result {tuple(result.shape)}; torch "
                           "would resize out=, a pointer is not resized: give an out= of the result's shape")
    if not torch.can_cast(result.dtype, target.dtype):
        raise RuntimeError(f"{op}: the result's type {result.dtype} can't be cast to out='s {target.dtype}")
