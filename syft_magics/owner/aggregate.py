"""Federated averaging on a worker (a trusted aggregator): the models come in by ``move``, only the average leaves.

``syft.average_models(weights, names, *models)`` averages models of one architecture held by this worker
(rebuilt from allowlisted layers, or the weights of a client-side model), weighted by ``weights``
(samples per worker), into a new model here, and returns it with its tensors ``names`` (so the
scientist's :class:`~syft_magics.scientist.remote_module.RemoteModule` can point at them). The
scientist never sees the models averaged; the average leaves only as this worker's policy allows.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from .models import ModelWeights


def check_weights(weights: Sequence[float]) -> float:
    """Their sum, once checked to be sample counts: finite, non-negative numbers with a positive sum."""
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ValueError("weights (sample counts) must be finite numbers")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights (sample counts) must be non-negative with a positive sum")
    return total


#: A batch norm's count of the batches its running statistics have seen (an integer buffer).
BATCH_COUNT = "num_batches_tracked"


def average_state(states: Sequence[Dict[str, torch.Tensor]], weights: Sequence[float]) -> Dict[str, torch.Tensor]:
    """The weighted average of state dicts with the same keys and shapes (integer buffers: the first's)."""
    if not states or len(states) != len(weights):
        raise ValueError("average_state needs one weight per state dict, and at least one")
    total = check_weights(weights)
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape or s[k].dtype != states[0][k].dtype
                                  for k in keys):
            raise ValueError("the models differ in architecture; FedAvg averages models of one architecture")
    out: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key in keys:
            first = states[0][key]
            if not (first.is_floating_point() or first.is_complex()):
                # (a batch norm's count of batches: an average of models trained on different numbers of batches has
                # none of theirs, 0; any other integer tensor: the first's, see .guests)
                differ = key.endswith(BATCH_COUNT) and not all(torch.equal(s[key], first) for s in states[1:])
                out[key] = torch.zeros_like(first) if differ else first.detach().clone()
                continue
            acc = torch.zeros_like(first, requires_grad=False)
            for state, w in zip(states, weights):
                acc.add_(state[key].to(acc.device), alpha=w / total)
            out[key] = acc
    return out


def tensors_of(m: nn.Module) -> Dict[str, torch.Tensor]:
    """A model's tensors by name: its parameters and buffers (a client-side model's weights)."""
    if isinstance(m, ModelWeights):
        return m.state_dict()
    return {**dict(m.named_parameters()), **dict(m.named_buffers())}


def average_models(weights: List[float], names: List[str], *models: Any) -> tuple:
    """A new model here, the average of ``models`` weighted by ``weights``, and its tensors ``names``."""
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("average_models averages models held by this worker")
    if not isinstance(weights, list) or not isinstance(names, list):
        raise TypeError("average_models needs a list of weights and a list of tensor names")
    kinds = {type(m) is ModelWeights for m in models}
    if len(kinds) != 1:
        raise ValueError("the models differ in kind (rebuilt here, or weights of a client-side model)")
    states = [tensors_of(m) for m in models]
    if any(set(s) != set(names) for s in states):
        raise ValueError("the models differ in architecture; FedAvg averages models of one architecture")
    avg = average_state([{n: s[n] for n in names} for s in states], weights)
    first = models[0]
    if isinstance(first, ModelWeights):
        grads = first.state_dict()
        made: nn.Module = ModelWeights({n: avg[n].requires_grad_(grads[n].requires_grad and avg[n].is_floating_point())
                                        for n in names})
    else:
        made = copy.deepcopy(first)  # built here from allowlisted layers: no client code
        with torch.no_grad():
            for n, t in tensors_of(made).items():
                t.copy_(avg[n])
                if t.grad is not None:
                    t.grad = None
    found = tensors_of(made)
    return (made, *[found[n] for n in names])


def ops() -> Dict[str, Any]:
    return {"syft.average_models": average_models}
