"""Torch functions whose CPU kernels trust their arguments, run on the worker only after the checks torch skips.

``torch._weight_norm(v, g, dim)`` (what ``nn.utils.parametrizations.weight_norm`` computes a weight with) takes,
for ``dim`` 0 or the last, a fused kernel that sizes its output by ``g`` and reads ``g`` once per slice of ``v``
as ``v``'s dtype, without a check: a one-element ``g`` beside a ``(1000, 10)`` ``v`` wrote past a heap buffer and
crashed the worker, and a few elements more read heap memory into a result a rule of sizes released (helper-64).
Its shape-only kernel broadcasts, so the worker's price and trace saw nothing wrong.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch


def weight_norm(v: Any, g: Any, dim: Any = 0) -> torch.Tensor:
    """``torch._weight_norm(v, g, dim)``, once ``g`` is what torch's own parametrization makes: the shape of
    ``torch.norm_except_dim(v, 2, dim)``, ``v``'s dtype and device."""
    if not isinstance(v, torch.Tensor) or not isinstance(g, torch.Tensor) or type(dim) is not int:
        raise TypeError("_weight_norm(v, g, dim) takes two tensors and an int")
    if not -1 <= dim < max(v.dim(), 1):
        raise ValueError(f"_weight_norm: dim {dim} for a tensor of {v.dim()} dimensions (-1: the whole tensor)")
    if g.dtype != v.dtype or g.device != v.device:
        raise ValueError(f"_weight_norm: g is {g.dtype} on {g.device}, v {v.dtype} on {v.device}: they must agree")
    want = norm_shape(tuple(v.shape), dim)
    if tuple(g.shape) != want:
        raise ValueError(f"_weight_norm: g has shape {tuple(g.shape)}, not {want}, the shape of v's norm over all "
                         f"dimensions but {dim} (torch.norm_except_dim(v, 2, {dim}))")
    return torch._weight_norm(v, g, dim)


def norm_shape(shape: Tuple[int, ...], dim: int) -> Tuple[int, ...]:
    """The shape of ``torch.norm_except_dim(v, 2, dim)`` for a ``v`` of ``shape``: ``()`` for ``dim == -1``."""
    if dim == -1:
        return ()
    return tuple(n if i == dim else 1 for i, n in enumerate(shape))


def ops() -> Dict[str, Callable[..., Any]]:
    """The checked functions, by the names clients send (replacing torch's own on the allowlist)."""
    return {"torch._weight_norm": weight_norm}
