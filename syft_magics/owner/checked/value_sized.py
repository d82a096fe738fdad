"""Ops whose result's size is read from values, so that no price foresees it: each refuses, before it makes it, a
result larger than the room its client's quota leaves (:func:`.common.fits`)."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from .common import fail, fits, indices, ints, real


def repeat_interleave(source: Any, repeats: Any = None, dim: Optional[int] = None, *,
                      output_size: Optional[int] = None) -> torch.Tensor:
    """``torch.repeat_interleave`` (and the method) once its repeats are counts whose sum fits, and equals
    ``output_size`` where given. ``repeat_interleave(repeats)`` alone repeats each index that many times."""
    counts = source if repeats is None else repeats
    if isinstance(counts, torch.Tensor) and real(source, counts):
        t = ints(counts)
        if t is None:
            fail("repeat_interleave", "repeats must be integers")
        elif t.numel():
            if int(t.min()) < 0:
                fail("repeat_interleave", "repeats must not be negative")
            total = _total(source, t, repeats is None, dim)  # (exact: Python's integers, broadcast included)
            if total > 1 << 62:
                fail("repeat_interleave", "repeats add up to more than 2**62")
            if output_size is not None and output_size != total:
                fail("repeat_interleave", "output_size must be the sum of the repeats")
            inner = 1 if repeats is None or dim is None else source.numel() // max(source.size(dim), 1)
            fits("repeat_interleave", total * inner, 8 if repeats is None else source.element_size())
    elif type(counts) is int and counts < 0:
        fail("repeat_interleave", "repeats must not be negative")
    extra = {} if output_size is None else {"output_size": output_size}
    if repeats is None:
        return torch.repeat_interleave(source, **extra)
    return torch.repeat_interleave(source, repeats, dim, **extra)


def _total(source: Any, counts: torch.Tensor, alone: bool, dim: Optional[int]) -> int:
    """How many elements ``repeat_interleave`` makes along its dimension (repeats broadcast to it)."""
    if alone or counts.numel() != 1:
        return sum(int(n) for n in counts.flatten().tolist())
    along = source.numel() if dim is None else source.size(dim)
    return int(counts.reshape(())) * along


def bincount(source: Any, weights: Any = None, minlength: Any = 0) -> torch.Tensor:
    """``torch.bincount`` (and the method) once its result, as long as the largest value, fits the room."""
    least = indices(minlength)
    if isinstance(source, torch.Tensor) and real(source, weights, minlength) and source.dim() == 1 \
            and not source.is_floating_point() and least is not None and len(least) == 1:
        fits("bincount", max(int(source.max()) + 1 if source.numel() else 0, least[0]), 8)
    return torch.bincount(source, weights, minlength)


def one_hot(source: Any, num_classes: Any = -1) -> torch.Tensor:
    """``F.one_hot`` once its result (a row per element, as wide as the largest value by default) fits the room."""
    classes = indices(num_classes)
    if isinstance(source, torch.Tensor) and real(source, num_classes) and source.numel() \
            and not source.is_floating_point() and classes is not None and len(classes) == 1:
        fits("one_hot", source.numel() * (int(source.max()) + 1 if classes[0] == -1 else classes[0]), 8)
    return F.one_hot(source, num_classes)


def nonzero(source: Any, *, as_tuple: bool = False) -> Any:
    """``torch.nonzero`` (and ``argwhere``, the methods) once its result, a row of indices per nonzero element,
    fits the room (helper-66: of a 4-byte tensor expanded, 1.8 GiB)."""
    if isinstance(source, torch.Tensor) and real(source):
        fits("nonzero", int(torch.count_nonzero(source)) * max(source.dim(), 1), 8)
    return torch.nonzero(source, as_tuple=True) if as_tuple else torch.nonzero(source)


def argwhere(source: Any) -> torch.Tensor:
    """``torch.argwhere``: :func:`nonzero`'s result."""
    return nonzero(source)


def masked_select(source: Any, mask: Any) -> torch.Tensor:
    """``torch.masked_select`` (and the method) once its result, an element per selected one, fits the room."""
    if isinstance(source, torch.Tensor) and isinstance(mask, torch.Tensor) and real(source, mask):
        try:
            picked = int(torch.count_nonzero(mask.expand(torch.broadcast_shapes(source.shape, mask.shape))))
        except RuntimeError:  # (torch says why)
            picked = 0
        fits("masked_select", picked, source.element_size())
    return torch.masked_select(source, mask)


def unique(source: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.unique`` (and the method) once its result at most (every element, with its inverse and count)
    fits the room (helper-66: of a tensor expanded, 7.9 GiB and a minute)."""
    if isinstance(source, torch.Tensor) and real(source):
        fits("unique", source.numel(), source.element_size() + 16)
    return torch.unique(source, *args, **kwargs)


def unique_consecutive(source: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.unique_consecutive`` (and the method): :func:`unique`'s bound (helper-67: of a tensor expanded, 6.7 GB
    before its result was refused)."""
    if isinstance(source, torch.Tensor) and real(source):
        fits("unique_consecutive", source.numel(), source.element_size() + 16)
    return torch.unique_consecutive(source, *args, **kwargs)


#: Bytes torch's ``combinations`` makes per element of its ``n ** r`` grids before it picks the combinations
#: (measured: 18.5 at n=10, r=8).
_COMBINATION_BYTES = 24


def combinations(source: Any, r: Any = 2, with_replacement: bool = False) -> torch.Tensor:
    """``torch.combinations`` once the grids its kernel makes, ``n ** r`` elements whatever the result, fit the room
    (helper-67: ``combinations(arange(9.), r=9)``, 72 bytes, made 6.8 GB; with replacement at r=9, 20 s and more).
    The grids' size follows from the shape alone: checked against the room where one is set, else against the
    default quota's bytes."""
    k = indices(r)
    if isinstance(source, torch.Tensor) and real(source) and k is not None and len(k) == 1 and k[0] > 1:
        fits("combinations", source.numel() ** k[0], _COMBINATION_BYTES, always=True)
    return torch.combinations(source, r, with_replacement)
