"""Worker-side operations for remote autograd: gradients, ``.data``, ``backward``.

A client reaches these by name (``"syft.grad"``, ``"Tensor.backward"``...) like any op; they are on
every worker's default allowlist (:func:`ops`). Names ending in ``_`` write into their first argument,
so the serving loop refuses them on the owner's data exactly as it refuses ``add_``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch


def grad_of(t: torch.Tensor) -> torch.Tensor:
    """``t.grad`` itself (not a copy: ``ptr.grad.zero_()`` zeroes the worker's gradient)."""
    g = t.grad
    if g is None:
        raise RuntimeError("this tensor has no gradient yet: it needs requires_grad=True (or retain_grad() for a "
                           "non-leaf) and a loss.backward() that reaches it")
    return g


def set_grad_(t: torch.Tensor, g: Optional[torch.Tensor]) -> None:
    """``t.grad = g`` (``g`` may be None, as in ``ptr.grad = None``); a copy, so it never aliases the owner's data."""
    t.grad = None if g is None else g.detach().clone()


def set_data_(t: torch.Tensor, d: torch.Tensor) -> None:
    """``t.data = d`` for a ``d`` of ``t``'s shape and dtype (what the client allows): ``d``'s values copied into
    ``t``'s own memory, so ``t`` never aliases the owner's data, and never takes memory of another size than the
    one its client was charged for (a raw message could otherwise swap a small tensor's memory for a copy of a
    large one, any number of times)."""
    if not isinstance(d, torch.Tensor) or d.shape != t.shape or d.dtype != t.dtype or d.device != t.device:
        raise ValueError("assigning .data of another shape, dtype or device is not supported; make a new tensor "
                         "instead")
    t.data.copy_(d.detach())


def requires_grad_(t: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    return t.requires_grad_(requires_grad)


def backward(t: torch.Tensor, gradient: Optional[torch.Tensor] = None, retain_graph: Optional[bool] = None,
             create_graph: bool = False, inputs: Any = None) -> None:
    """``t.backward(...)``: accumulates into the ``.grad`` of the worker's leaves."""
    t.backward(gradient, retain_graph, create_graph, inputs=inputs)


#: The largest permutation a client may ask a worker to draw.
MAX_RANDPERM = 1 << 28


def randperm(n: int, seed: Optional[int] = None) -> torch.Tensor:
    """A permutation for shuffling mini-batches on the worker (``seed`` for reproducible runs)."""
    if type(n) is not int or not 0 <= n <= MAX_RANDPERM:
        raise ValueError(f"randperm needs 0 <= n <= {MAX_RANDPERM}")
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return torch.randperm(n, generator=generator)


def ops() -> Dict[str, Callable]:
    """These operations under the names clients send."""
    return {
        "syft.grad": grad_of,
        "syft.set_grad_": set_grad_,
        "syft.set_data_": set_data_,
        "Tensor.requires_grad_": requires_grad_,
        "Tensor.retain_grad": torch.Tensor.retain_grad,
        "Tensor.backward": backward,
        "torch.autograd.backward": torch.autograd.backward,
        "torch.autograd.grad": torch.autograd.grad,
        "Tensor.detach_": torch.Tensor.detach_,
        "syft.randperm": randperm,
    }
