"""Models on a worker: rebuilt from a spec of standard layers (never client code), called, trained, fetched.

A client's ``send(module)`` becomes the op ``syft.build_module(spec, state, names)``: the worker
constructs the module from :data:`syft_magics.wire.modules.MODULE_TYPES` only, checks the state's
shapes on the ``meta`` device before allocating, copies the weights in, and returns the module and
the parameters and buffers named (each stored under its own id, so pointers, ``.grad`` and
optimizers reach them like any tensor). ``syft.module_call`` runs its forward; ``.get()`` of a model
sends a copy of its state dict, as the owner's policy allows (``allow_get(kind="model")``).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List

import torch
import torch.nn as nn

from ..wire.modules import export_state, load
from .plain import flag


def module_of(m: Any) -> nn.Module:
    if not isinstance(m, nn.Module):
        raise TypeError(f"expected a model on this worker, got {type(m).__name__}")
    return m


def modules_of(model: nn.Module) -> List[nn.Module]:
    """``list(model.modules())``, kept per model: a model's modules never change once the worker built it (no op
    adds or removes one; ``module_to`` replaces tensors, not modules), and walking them (``Module.parameters()``)
    is most of what the worker's per-op checks of a model cost (``.side_writes``, ``.autograd.grads_of``)."""
    found = _MODULES.get(model)
    if found is None:
        found = _MODULES[model] = list(model.modules())
    return found


def parameters_of(model: nn.Module) -> List[nn.Parameter]:
    """``list(model.parameters())`` (each once), by :func:`modules_of`."""
    found: Dict[int, nn.Parameter] = {}
    for m in modules_of(model):
        for p in m._parameters.values():
            if p is not None:
                found.setdefault(id(p), p)
    return list(found.values())


_MODULES: "weakref.WeakKeyDictionary[nn.Module, List[nn.Module]]" = weakref.WeakKeyDictionary()


def build_module(spec: Any, state: Dict[str, torch.Tensor], names: List[str]) -> tuple:
    """The module ``spec`` describes with the weights of ``state``, then the tensors ``names`` names."""
    module = load(spec, state)
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    if not isinstance(names, list) or any(n not in tensors for n in names):
        raise ValueError("names must list parameters or buffers of the model")
    return (module, *[tensors[n] for n in names])


def module_call(m: Any, *args: Any, **kwargs: Any) -> Any:
    return module_of(m)(*args, **kwargs)


def module_train(m: Any, mode: bool = True) -> None:
    module_of(m).train(flag(mode, "train(mode=...)"))


class ModelWeights(nn.Module):
    """The weights of a model whose forward runs on the client, held together so they are fetched as one
    model (``kind="model"`` for the owner's rules) rather than tensor by tensor. Holds the live tensors."""

    def __init__(self, named: Dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._named = named

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        return dict(self._named)


#: The longest dotted name of a weight of a model whose forward runs on the client (``fc.weight``).
MAX_WEIGHT_NAME = 1024


def model_weights(names: List[str], *tensors: Any) -> ModelWeights:
    if not isinstance(names, list) or len(names) != len(tensors) or not all(isinstance(n, str) for n in names) \
            or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError("model_weights needs a name for each tensor")
    if any(len(n) > MAX_WEIGHT_NAME for n in names):  # (kept with the model, uncharged: helper-60)
        raise ValueError(f"a weight's name has {MAX_WEIGHT_NAME} characters at most")
    return ModelWeights(dict(zip(names, tensors)))


def export(obj: Any) -> Any:
    """What leaves the worker when ``obj`` is fetched: a tensor itself, a model's state dict (a copy)."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_cpu else obj.detach().cpu()  # values leave on the CPU
    if isinstance(obj, nn.Module):
        return {k: v.cpu() for k, v in export_state(obj).items()}
    raise TypeError(f"a {type(obj).__name__} cannot be fetched")


#: Ops that make a model of tensors they are given (refused over a withheld shape: see ops.Ops._on_op).
MODEL_FACTORIES = frozenset({build_module, model_weights})


def makes_model(fn: Any) -> bool:
    """Whether ``fn`` is one of :data:`MODEL_FACTORIES`, or wraps one (a worker's ``syft.build_module`` places the
    model on its device: helper-58 found the withheld-shape check of ``ops`` missed it)."""
    return fn in MODEL_FACTORIES or getattr(fn, "__wrapped__", None) in MODEL_FACTORIES


def ops() -> Dict[str, Callable]:
    return {"syft.build_module": build_module, "syft.module_call": module_call,
            "syft.module_train": module_train, "syft.model_weights": model_weights}
