"""Optimizers and learning-rate schedulers that live on a worker, next to the parameters they update.

``client.optim.SGD(remote.parameters(), lr=0.1)`` becomes the op ``syft.optim.SGD(params, lr=0.1)``;
the worker builds a real ``torch.optim.SGD`` from an allowlist of classes, over parameters it holds
(leaves that require grad: never the owner's data, which cannot require grad). ``step()`` and
``zero_grad()`` are then one op each, whatever the number of parameters.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

OPTIMIZERS: Dict[str, type] = {name: getattr(torch.optim, name)
                               for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")}
SCHEDULERS: Dict[str, type] = {name: getattr(torch.optim.lr_scheduler, name)
                               for name in ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR")}
_SCALARS = (bool, int, float)


def _options(kwargs: Dict[str, Any], what: str) -> Dict[str, Any]:
    for key, value in kwargs.items():
        values = value if isinstance(value, tuple) else (value,)
        if not all(v is None or type(v) in _SCALARS for v in values):
            raise TypeError(f"{what} option {key}= must be a number, a bool or a tuple of numbers")
    return kwargs


def _check_param(p: Any) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"optimizer parameters must be tensors (pointers), got {type(p).__name__}")
    if not p.requires_grad or not p.is_leaf:
        raise ValueError("optimizer parameters must be leaf tensors that require grad "
                         "(e.g. remote.parameters(), or ptr.requires_grad_())")
    return p


def _params(params: Any) -> list:
    if isinstance(params, torch.Tensor):
        params = [params]
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError("an optimizer needs a non-empty list of parameters or of parameter groups")
    groups = []
    for item in params:
        if isinstance(item, dict):
            group = _options({k: v for k, v in item.items() if k != "params"}, "parameter group")
            inner = item.get("params")
            inner = [inner] if isinstance(inner, torch.Tensor) else list(inner or ())
            groups.append({**group, "params": [_check_param(p) for p in inner]})
        else:
            groups.append(_check_param(item))
    return groups


def _optimizer_factory(cls: type) -> Callable:
    def make(params: Any, **kwargs: Any) -> Optimizer:
        return cls(_params(params), **_options(kwargs, cls.__name__))
    make.__name__ = cls.__name__
    return make


def _scheduler_factory(cls: type) -> Callable:
    def make(optimizer: Any, **kwargs: Any) -> LRScheduler:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{cls.__name__} needs an optimizer on this worker")
        return cls(optimizer, **_options(kwargs, cls.__name__))
    make.__name__ = cls.__name__
    return make


def step(obj: Any) -> None:
    """``optimizer.step()`` or ``scheduler.step()``."""
    if not isinstance(obj, (Optimizer, LRScheduler)):
        raise TypeError(f"step() needs an optimizer or a scheduler, got {type(obj).__name__}")
    obj.step()


def zero_grad(opt: Any, set_to_none: bool = True) -> None:
    if not isinstance(opt, Optimizer):
        raise TypeError(f"zero_grad() needs an optimizer, got {type(opt).__name__}")
    opt.zero_grad(set_to_none=bool(set_to_none))


def ops() -> Dict[str, Callable]:
    table: Dict[str, Callable] = {"syft.optim_step": step, "syft.optim_zero_grad": zero_grad}
    table.update({f"syft.optim.{n}": _optimizer_factory(c) for n, c in OPTIMIZERS.items()})
    table.update({f"syft.lr_scheduler.{n}": _scheduler_factory(c) for n, c in SCHEDULERS.items()})
    return table


#: Objects other than tensors that an op may leave in a worker's store.
STORED_TYPES = (torch.Tensor, torch.nn.Module, Optimizer, LRScheduler)
