"""Worker-side operations for remote autograd: gradients, ``.data``, ``backward``.

A client reaches these by name (``"syft.grad"``, ``"Tensor.backward"``...) like any op; they are on
every worker's default allowlist (:func:`ops`). Names ending in ``_`` write into their first argument,
so the serving loop refuses them on the owner's data exactly as it refuses ``add_``.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .models import parameters_of
from .plain import flag, integer, maybe_flag


def grad_of(t: torch.Tensor) -> Optional[torch.Tensor]:
    """``t.grad`` itself (not a copy: ``ptr.grad.zero_()`` zeroes the worker's gradient), or None (the client
    asks for a description of the result: ``ptr.grad`` is None there too)."""
    return t.grad


def set_grad_(t: torch.Tensor, g: Optional[torch.Tensor]) -> None:
    """``t.grad = g`` (``g`` may be None, as in ``ptr.grad = None``); a copy, so it never aliases the owner's data.
    Not on a tensor with more elements than memory: the gradient would be the uncharged part (see
    :func:`_dense_gradient`)."""
    if g is not None:
        _dense_gradient(t, "setting .grad")
    t.grad = None if g is None else g.detach().clone()


def set_data_(t: torch.Tensor, d: torch.Tensor) -> None:
    """``t.data = d`` for a ``d`` of ``t``'s shape and dtype (what the client allows): ``d``'s values copied into
    ``t``'s own memory, so ``t`` never aliases the owner's data, and never takes memory of another size than the
    one its client was charged for (a raw message could otherwise swap a small tensor's memory for a copy of a
    large one, any number of times)."""
    if not isinstance(d, torch.Tensor) or d.shape != t.shape or d.dtype != t.dtype:
        raise ValueError("assigning .data of another shape or dtype is not supported; make a new tensor instead")
    if d.device != t.device:  # (a device the worker allows, as d is there: a client-side model's .to(device))
        t.data = d.detach().clone()  # (new memory: recorded anew, see .recorded)
    else:
        t.data.copy_(d.detach())
    # (``t.data`` has a version counter of its own: without this the write went unseen, by the approval of ``t``
    # it changed and by what ``t`` derives from: helper-36 read #X's values in error text, with no request)
    torch.autograd.graph.increment_version(t)


def _dense_gradient(t: torch.Tensor, what: str) -> None:
    """Refuse ``what`` on a tensor with more elements than memory (``x.expand(n)``): its gradient would be a
    full tensor of them, which no quota charges (a client's ``.grad`` is bounded by its tensors' own memory)."""
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        raise ValueError(f"{what} on a tensor whose elements share memory (e.g. made by expand) is not supported: "
                         "its gradient would take more memory than the tensor; use .contiguous() or .clone() first")


def _dense_inputs(inputs: Any, what: str) -> None:
    """:func:`_dense_gradient` for each tensor a backward gives a gradient of its own (helper-63: ``big.sum()
    .backward(inputs=[big])`` on ``big = w.expand(N)`` kept an N-element ``big.grad``, 1.9 GiB a round, charged
    16 bytes)."""
    for t in inputs if isinstance(inputs, (list, tuple)) else (inputs,):
        if isinstance(t, torch.Tensor):
            _dense_gradient(t, what)


def requires_grad_(t: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    if flag(requires_grad, "requires_grad_()"):
        _dense_gradient(t, "requires_grad_()")
    return t.requires_grad_(requires_grad)


def retain_grad(t: torch.Tensor) -> None:
    _dense_gradient(t, "retain_grad()")
    t.retain_grad()


_CREATE_GRAPH = ("backward(create_graph=True) is not supported on a worker: the graph it builds behind each leaf's "
                 ".grad refers back to the leaf, a reference cycle that keeps their memory after the pointers are "
                 "freed (torch warns of it); use torch.autograd.grad(loss, inputs, create_graph=True), which "
                 "returns the gradients")


def backward(t: torch.Tensor, gradient: Optional[torch.Tensor] = None, retain_graph: Optional[bool] = None,
             create_graph: bool = False, inputs: Any = None) -> None:
    """``t.backward(...)``: accumulates into the ``.grad`` of the worker's leaves."""
    retain_graph = maybe_flag(retain_graph, "backward(retain_graph=...)")
    if flag(create_graph, "backward(create_graph=...)"):
        raise ValueError(_CREATE_GRAPH)
    _dense_inputs(inputs, "backward(inputs=...)")
    t.backward(gradient, retain_graph, create_graph, inputs=inputs)


def autograd_backward(tensors: Any, grad_tensors: Any = None, retain_graph: Optional[bool] = None,
                      create_graph: bool = False, grad_variables: Any = None, inputs: Any = None) -> None:
    """``torch.autograd.backward(...)``, without ``create_graph`` (see :func:`backward`) nor torch's deprecated
    ``grad_variables`` (``grad_tensors`` under an old name: one name for the seed, which :mod:`.trained` reads)."""
    retain_graph = maybe_flag(retain_graph, "torch.autograd.backward(retain_graph=...)")
    if flag(create_graph, "torch.autograd.backward(create_graph=...)"):
        raise ValueError(_CREATE_GRAPH)
    if grad_variables is not None:
        raise ValueError("torch.autograd.backward's grad_variables is deprecated: pass grad_tensors")
    _dense_inputs(inputs, "torch.autograd.backward(inputs=...)")
    torch.autograd.backward(tensors, grad_tensors, retain_graph, False, inputs=inputs)


@functools.wraps(torch.autograd.grad)
def grad(*args: Any, **kwargs: Any) -> Any:
    """``torch.autograd.grad(...)`` without ``is_grads_batched``: its gradients are as many times its inputs as its
    seed's first dimension, which an expanded seed of a few bytes makes any number (helper-61: 4.5 GiB under a 64 MB
    quota from one small message, before any charge); the worker prices a backward by its graph alone."""
    bound = _GRAD.bind(*args, **kwargs)
    for name in ("retain_graph", "allow_unused"):
        maybe_flag(bound.arguments.get(name), f"torch.autograd.grad({name}=...)")
    for name in ("create_graph", "only_inputs", "is_grads_batched", "materialize_grads"):
        if name in bound.arguments:
            flag(bound.arguments[name], f"torch.autograd.grad({name}=...)")
    if bound.arguments.get("is_grads_batched"):
        raise ValueError("torch.autograd.grad(is_grads_batched=True) is not supported on a worker (its memory is its "
                         "seed's batch times its inputs, unknown before it runs): compute the gradients one seed at "
                         "a time")
    _dense_inputs(bound.arguments.get("inputs"), "torch.autograd.grad")
    return torch.autograd.grad(*args, **kwargs)


_GRAD = inspect.signature(torch.autograd.grad)

#: Backwards that build no graph (``create_graph`` is refused): nothing to record while they run (see .graphs).
SAVES_NOTHING = frozenset({backward, autograd_backward})
#: The operations that write gradients into objects their arguments do not name (the leaves' ``.grad``): what
#: they write derives from what they read (see ``side_writes.Watch``).
WRITES_GRADS = frozenset({backward, autograd_backward, set_grad_})

#: The largest permutation a client may ask a worker to draw.
MAX_RANDPERM = 1 << 28


def randperm(n: int, seed: Optional[int] = None) -> torch.Tensor:
    """A permutation for shuffling mini-batches on the worker (``seed`` for reproducible runs)."""
    if type(n) is not int or not 0 <= n <= MAX_RANDPERM:
        raise ValueError(f"randperm needs 0 <= n <= {MAX_RANDPERM}")
    generator = torch.Generator().manual_seed(integer(seed, "randperm(seed=...)")) if seed is not None else None
    return torch.randperm(n, generator=generator)


def ops() -> Dict[str, Callable]:
    """These operations under the names clients send."""
    return {
        "syft.grad": grad_of,
        "syft.set_grad_": set_grad_,
        "syft.set_data_": set_data_,
        "Tensor.requires_grad_": requires_grad_,
        "Tensor.retain_grad": retain_grad,
        "Tensor.backward": backward,
        "torch.autograd.backward": autograd_backward,
        "torch.autograd.grad": grad,
        "Tensor.detach_": torch.Tensor.detach_,
        "syft.randperm": randperm,
    }


def grads_of(value: Any) -> Tuple[torch.Tensor, ...]:
    """The gradients ``value`` holds now: a tensor's own (whatever ``requires_grad`` says now: torch keeps a
    gradient when it is turned off, helper-44; a non-leaf's only if it retains it, torch warns when one is read
    otherwise), a model's or an optimizer's (a scheduler's) parameters'."""
    if isinstance(value, torch.Tensor):
        try:
            g = value.grad if value.is_leaf or value.retains_grad else None
        except RuntimeError:  # (a view made under no_grad whose base was written since: no autograd question)
            return ()
        return () if g is None else (g,)
    if isinstance(value, LRScheduler):
        value = value.optimizer
    params = parameters_of(value) if isinstance(value, torch.nn.Module) else \
        [p for group in value.param_groups for p in group["params"]] if isinstance(value, Optimizer) else ()
    return tuple(p.grad for p in params if p.grad is not None)


def grads_stamp(grads: Tuple[torch.Tensor, ...]) -> Tuple[Tuple[int, int], ...]:
    """Which gradients these are and their version counters: any write into one, or a new one, changes it."""
    return tuple((id(g), g._version) for g in grads)
