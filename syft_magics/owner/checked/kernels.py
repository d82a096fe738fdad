"""Kernels that crashed the worker or read its heap on arguments torch does not check (helper-64, -65, -66): each
checked first, then torch's called."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import torch
import torch.nn.functional as F

from .common import by_name, fail, indices, ints, real, within


def weight_norm(v: Any, g: Any, dim: Any = 0) -> torch.Tensor:
    """``torch._weight_norm(v, g, dim)``, once ``g`` is what torch's own parametrization makes: the shape of
    ``torch.norm_except_dim(v, 2, dim)``, ``v``'s dtype and device."""
    if not isinstance(v, torch.Tensor) or not isinstance(g, torch.Tensor) or type(dim) is not int:
        raise TypeError("_weight_norm(v, g, dim) takes two tensors and an int")
    if not -1 <= dim < max(v.dim(), 1):
        fail("_weight_norm", f"dim {dim} for a tensor of {v.dim()} dimensions (-1: the whole tensor)")
    if g.dtype != v.dtype or g.device != v.device:
        fail("_weight_norm", f"g is {g.dtype} on {g.device}, v {v.dtype} on {v.device}: they must agree")
    if v.numel() == 0 and real(v):  # (its kernel divides by a size of 0: SIGFPE, helper-66)
        fail("_weight_norm", "v has no elements")
    want = norm_shape(tuple(v.shape), dim)
    if tuple(g.shape) != want:
        fail("_weight_norm", f"g has shape {tuple(g.shape)}, not {want}, the shape of v's norm over all "
                             f"dimensions but {dim} (torch.norm_except_dim(v, 2, {dim}))")
    return torch._weight_norm(v, g, dim)


def norm_shape(shape: Tuple[int, ...], dim: int) -> Tuple[int, ...]:
    """The shape of ``torch.norm_except_dim(v, 2, dim)`` for a ``v`` of ``shape``: ``()`` for ``dim == -1``."""
    if dim == -1:
        return ()
    return tuple(n if i == dim else 1 for i, n in enumerate(shape))


_ctc_args = by_name(F.ctc_loss)


def ctc_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.ctc_loss`` once every target is a class of ``log_probs`` and the lengths fit."""
    a = _ctc_args(*args, **kwargs)
    log_probs, targets = a["log_probs"], a["targets"]
    if isinstance(log_probs, torch.Tensor) and isinstance(targets, torch.Tensor) and log_probs.dim() in (2, 3) \
            and real(log_probs, targets, a["input_lengths"], a["target_lengths"]):
        classes, steps = log_probs.size(-1), log_probs.size(0)
        blank = a["blank"]
        if type(blank) is not int or not 0 <= blank < classes:
            fail("ctc_loss", f"blank must be a class in [0, {classes})")
        within("ctc_loss", "targets", targets, 0, classes)
        within("ctc_loss", "input_lengths", a["input_lengths"], 0, steps + 1)
        lengths = ints(a["target_lengths"])
        room = targets.size(-1) if targets.dim() == 2 else targets.numel()
        within("ctc_loss", "target_lengths", lengths, 0, room + 1)
        if targets.dim() == 1 and lengths is not None and int(lengths.sum()) > targets.numel():
            fail("ctc_loss", "target_lengths add up to more than the targets given")
    return F.ctc_loss(*args, **kwargs)


_bag_args = by_name(F.embedding_bag)


def embedding_bag(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.embedding_bag`` once its offsets start bags within the input, in order, as many as its mode needs."""
    a = _bag_args(*args, **kwargs)
    source, offsets = a["input"], a["offsets"]
    if isinstance(source, torch.Tensor) and isinstance(offsets, torch.Tensor) and real(source, offsets):
        if offsets.dim() != 1 or offsets.numel() < (2 if a["include_last_offset"] else 1):
            fail("embedding_bag", "offsets must be one-dimensional, with at least "
                                  f"{2 if a['include_last_offset'] else 1} (include_last_offset="
                                  f"{a['include_last_offset']})")
        within("embedding_bag", "offsets", offsets, 0, source.numel() + 1)
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            fail("embedding_bag", "offsets must not decrease")
    return F.embedding_bag(*args, **kwargs)


def matrix_power(matrix: Any, n: Any) -> torch.Tensor:
    """``torch.linalg.matrix_power`` (and ``torch.matrix_power``, the method) of a power within +-2**62: of -2**63
    (whose negation overflows) it never returned, nor did its price (helper-66). Checked before anything runs."""
    if type(n) is int and not -(1 << 62) <= n <= 1 << 62:
        fail("matrix_power", "n must be within +-2**62")
    return torch.linalg.matrix_power(matrix, n)


def eigvals(matrix: Any, **kwargs: Any) -> torch.Tensor:
    """``torch.linalg.eigvals`` of a finite matrix (of NaN or infinite entries, float32 or complex64, it crashed:
    ``linalg.eig`` refuses them itself)."""
    if isinstance(matrix, torch.Tensor) and real(matrix) and matrix.numel() \
            and not bool(torch.isfinite(matrix).all()):
        fail("linalg.eigvals", "the matrix must be finite")
    return torch.linalg.eigvals(matrix, **kwargs)


_grid_args = by_name(F.grid_sample)
#: The largest grid coordinate ``grid_sample`` takes (3.4e38, finite, crashed its backward with reflection padding:
#: helper-66); a coordinate is -1 to 1 across the input.
GRID_BOUND = 1e6


def grid_sample(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.grid_sample`` once its grid is finite (its backward crashed on NaN or infinite points)."""
    grid = _grid_args(*args, **kwargs)["grid"]
    if isinstance(grid, torch.Tensor) and real(grid) and grid.is_floating_point() and grid.numel() \
            and not bool((torch.isfinite(grid) & (grid.abs() <= GRID_BOUND)).all()):
        fail("grid_sample", f"the grid must be finite, within +-{GRID_BOUND:g} (it is in [-1, 1] for the input)")
    return F.grid_sample(*args, **kwargs)


def pdist(source: Any, p: float = 2) -> torch.Tensor:
    """``F.pdist`` of at least one row (its backward of none crashed)."""
    if isinstance(source, torch.Tensor) and real(source) and source.dim() == 2 and source.size(0) == 0:
        fail("pdist", "the input needs at least one row")
    return F.pdist(source, p)


_pad_args = by_name(F.pad)


def pad(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.pad``, in ``circular`` mode once what its negative pads leave can be wrapped as its positive pads ask
    (else torch left the output unwritten: uninitialised memory)."""
    a = _pad_args(*args, **kwargs)
    source, sizes = a["input"], indices(a["pad"])
    if a["mode"] == "circular" and isinstance(source, torch.Tensor) and real(source) and sizes is not None:
        for i, (before, after) in enumerate(zip(sizes[::2], sizes[1::2])):
            if i >= source.dim():
                break
            left = source.size(-1 - i) + min(before, 0) + min(after, 0)
            if left <= 0 or max(before, after) > left:
                fail("pad", f"circular pads {before, after} of dimension {-1 - i} wrap around what is left of it "
                            f"({max(left, 0)}) more than once")
    return F.pad(*args, **kwargs)


def _fractional(fn: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    bind = by_name(fn, like)

    def checked(*args: Any, **kwargs: Any) -> Any:
        """``F.fractional_max_pool2d/3d`` once its kernel is at least 1 (else its indices pointed past the
        input)."""
        kernel = indices(bind(*args, **kwargs)["kernel_size"])
        if kernel is not None and any(k < 1 for k in kernel):
            fail(like.__name__.replace("_with_indices", ""), "kernel_size must be >= 1")
        return fn(*args, **kwargs)

    return checked


fractional_max_pool2d = _fractional(F.fractional_max_pool2d, F.fractional_max_pool2d_with_indices)
fractional_max_pool3d = _fractional(F.fractional_max_pool3d, F.fractional_max_pool3d_with_indices)
