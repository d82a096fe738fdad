"""What training ops cost before they run: a model's forward, an optimizer's step, a backward.

:mod:`~syft_magics.owner.costs` prices a tensor op by running it on fake tensors. The ops of training
take objects that cannot simply be faked (a model, an optimizer) or whose cost lies in a graph the
worker built earlier (``loss.backward()``), so until now they all ran unpriced on the client's lane: a
thread hand-off per op, four per training step, which made remote training several times slower than
local. Each gets a real estimate here, so that a cheap one runs at once like any cheap op, and a heavy
one still goes to the lane (and counts against the client's time budget):

* a model's forward (``syft.module_call``): the model run on fake copies of its weights
  (``torch.func.functional_call`` under the same counting fake mode), plus Python's overhead per layer;
  cached per model and input shapes like any signature (a model built on a worker never changes shape);
* an optimizer's ``step()`` and ``zero_grad()``: their Python overhead per parameter, measured once per
  optimizer class on this machine, plus passes over the parameters' bytes at the measured memory rate;
* a backward (``loss.backward()``, ``torch.autograd.grad``): from the work recorded behind the tensors
  it starts from. Every op that returns a tensor with a ``grad_fn`` records, on the result's store entry,
  the seconds it took plus the work behind its inputs (:func:`work_of`), so a backward through a graph of
  cheap ops is known cheap, and one through a long or heavy graph is not. Priced per call, never cached:
  the same loss shape may stand on graphs of any size.
"""
from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils._pytree import tree_flatten

from . import autograd, costs, graphs, models, optimizers
from .costs import Cost, Unestimable, WorkCounter, rates
from .store import Entry

#: A backward costs about this many times the forward work recorded behind it.
BACKWARD_FACTOR = 3.0
#: Python's overhead per layer of a model's forward (a submodule's ``__call__`` and hooks).
PER_LAYER_SECONDS = 5e-6
#: Passes an optimizer's step makes over its parameters' bytes (Adam: parameter, grad, two moments, ...).
STEP_PASSES = 8
#: The functions whose cost lies in the graph behind their tensor arguments.
THROUGH_GRAPH = frozenset({autograd.backward, autograd.autograd_backward, autograd.grad})


def work_of(seconds: float, used: Iterable[Entry]) -> Optional[float]:
    """The autograd work behind a new tensor with a ``grad_fn``: ``seconds``, its op's estimate, plus the
    work behind its inputs (counted once each); None if some input stands on a graph the worker did not
    record (an owner's tensor shared with its ``grad_fn``)."""
    total = seconds
    seen = set()
    for e in used:
        if id(e) in seen:
            continue
        seen.add(id(e))
        t = e.tensor
        if graphs.has_graph(t):
            if e.work is None:
                return None
            total += e.work
    return total


def of_graph(used: Iterable[Entry]) -> Optional[Cost]:
    """A backward's estimate from the work recorded behind its tensors; None (unpriced: it runs on the
    lane, and is never refused up front) when unknown or too heavy to run at once."""
    work = work_of(0.0, used)
    if work is None or BACKWARD_FACTOR * work > costs.INLINE_SECONDS:
        return None
    return Cost(BACKWARD_FACTOR * work, 0, 0)


def estimate(fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], grad: bool = True) -> Cost:
    """``fn``'s estimate: by the rules above for a model's forward and an optimizer's step or
    ``zero_grad``, else :func:`~syft_magics.owner.costs.estimate`; raises :class:`Unestimable`."""
    rule = _RULES.get(fn)
    if rule is None:
        return costs.estimate(fn, args, kwargs, grad)
    try:
        return rule(args, kwargs, grad)
    except Unestimable:
        raise
    except Exception as exc:  # a wrong argument: the op itself will say what is wrong
        raise Unestimable(f"{type(exc).__name__}: {exc}") from None


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _forward(args: Any, kwargs: Dict[str, Any], grad: bool) -> Cost:
    from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

    if not args or not isinstance(args[0], nn.Module):
        raise Unestimable("not a model")
    model, inputs = args[0], args[1:]
    mode = FakeTensorMode()
    try:
        with FakeCopyMode(mode):  # a copy with fake weights: the live model is never touched
            fake_model = copy.deepcopy(model)
        fake_args, fake_kwargs = costs.fakes(mode, (inputs, kwargs))
        counter = WorkCounter()
        with mode, counter, (torch.enable_grad() if grad else torch.no_grad()):
            result = fake_model(*fake_args, **fake_kwargs)
    except Exception as exc:  # a layer fake tensors cannot run: it runs unpriced, on the lane
        raise Unestimable(f"{type(exc).__name__}: {exc}") from None
    out = _nbytes(t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor))
    flop_rate, byte_rate = rates()
    layers = sum(1 for _ in model.modules())
    seconds = counter.flops / flop_rate + counter.moved / byte_rate + counter.calls * 2e-6 \
        + layers * PER_LAYER_SECONDS
    return Cost(seconds, out, max(out, counter.peak), counter.flops, counter.moved)


def _params(opt: Optimizer) -> list:
    return [p for group in opt.param_groups for p in group["params"]]


_per_param: Dict[type, float] = {}
_per_param_lock = threading.Lock()


def per_param_seconds(cls: type) -> float:
    """Seconds an optimizer of class ``cls`` spends per parameter in ``step()`` beyond moving bytes (its
    Python loop), measured once per class on this machine with eight small parameters."""
    with _per_param_lock:
        known = _per_param.get(cls)
        if known is None:
            params = optimizers.probe_params(8, 4)
            opt = cls(params, lr=1e-3)
            best = float("inf")
            with torch.no_grad():
                for _ in range(4):
                    t0 = time.perf_counter()
                    opt.step()
                    best = min(best, time.perf_counter() - t0)
            known = _per_param[cls] = best / len(params)
        return known


def _step(args: Any, kwargs: Dict[str, Any], grad: bool) -> Cost:
    obj = args[0] if args else None
    if isinstance(obj, LRScheduler):
        obj = obj.optimizer  # a scheduler's step sets each group's rate: less than one pass of its optimizer
    if not isinstance(obj, Optimizer):
        raise Unestimable("not an optimizer")
    params = _params(obj)
    nbytes = _nbytes(params)
    byte_rate = rates()[1]
    seconds = len(params) * per_param_seconds(type(obj)) + STEP_PASSES * nbytes / byte_rate
    # (its state, Adam's moments, was charged when the optimizer was made: optimizers.state_bytes; what may
    # be allocated here is a temporary the size of its largest parameter)
    return Cost(seconds, 0, max((_nbytes([p]) for p in params), default=0))


def _zero_grad(args: Any, kwargs: Dict[str, Any], grad: bool) -> Cost:
    opt = args[0] if args else None
    if not isinstance(opt, Optimizer):
        raise Unestimable("not an optimizer")
    params = _params(opt)
    set_to_none = bool(args[1]) if len(args) > 1 else bool(kwargs.get("set_to_none", True))
    nbytes = 0 if set_to_none else _nbytes(params)  # (the grads, once made, are the parameters' size)
    return Cost(len(params) * 2e-6 + nbytes / rates()[1], 0, 0)


def _train(args: Any, kwargs: Dict[str, Any], grad: bool) -> Cost:
    if not args or not isinstance(args[0], nn.Module):
        raise Unestimable("not a model")
    return Cost(sum(1 for _ in args[0].modules()) * 1e-6, 0, 0)


def _option_ops(args: Any, kwargs: Dict[str, Any], grad: bool) -> Cost:
    # (an optimizer's options read or set, a scheduler made over one: a few dict reads and writes per group;
    # setting an option may first measure its class's state once. Never priced by running them: a scheduler
    # made to price it would step the live optimizer, a second time with last_epoch=n). Bytes: none that count
    # (a scheduler's milestones are bounded by optimizers.MAX_OPTION_ITEMS), since the estimate of a signature
    # is doubled per number it holds (costs.scaled): a few milestones would price 4 GiB
    return Cost(1e-6, 0, 0)


_RULES: Dict[Callable[..., Any], Callable[[Any, Dict[str, Any], bool], Cost]] = {
    models.module_call: _forward,
    models.module_train: _train,
    optimizers.step: _step,
    optimizers.zero_grad: _zero_grad,
    optimizers.settings: _option_ops,
    optimizers.set_option: _option_ops,
    **{make: _option_ops for make in optimizers.SCHEDULER_FACTORIES},
}
