"""Federated averaging: models trained on several workers, averaged into one (FedAvg, McMahan et al. 2017).

``fedavg(models, counts)`` fetches each worker's trained model (each owner's policy decides:
``bob.policy.allow_get(kind="model")`` lets trained weights through without a click) concurrently, one
thread per worker, and returns their average weighted by ``counts`` (samples per worker) as a local
module. Send it back (``client.send(avg)``) for the next round. The scientist sees the trained models;
averaging on a trusted aggregator worker, so that only the average is seen, is not available yet.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .scientist.remote_module import RemoteModule


def average_state(states: Sequence[Dict[str, torch.Tensor]], weights: Sequence[float]) -> Dict[str, torch.Tensor]:
    """The weighted average of state dicts with the same keys and shapes (integer buffers: the first's)."""
    if not states or len(states) != len(weights):
        raise ValueError("average_state needs one weight per state dict, and at least one")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights (sample counts) must be non-negative with a positive sum")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError("the models differ in architecture; FedAvg averages models of one architecture")
    out: Dict[str, torch.Tensor] = {}
    for key in keys:
        first = states[0][key]
        if not (first.is_floating_point() or first.is_complex()):
            out[key] = first.clone()  # e.g. BatchNorm's num_batches_tracked
            continue
        acc = torch.zeros_like(first)
        for state, w in zip(states, weights):
            acc.add_(state[key], alpha=w / total)
        out[key] = acc
    return out


def fetch(models: Sequence[RemoteModule], timeout: Optional[float] = None) -> List[nn.Module]:
    """Each remote model's local copy, fetched concurrently (one thread per model)."""
    with ThreadPoolExecutor(max_workers=max(1, len(models)), thread_name_prefix="fedavg-fetch") as pool:
        return list(pool.map(lambda m: m.get(timeout=timeout), models))


def fedavg(models: Sequence[RemoteModule], counts: Sequence[float], timeout: Optional[float] = None) -> nn.Module:
    """The average of ``models`` (one per worker) weighted by ``counts``, as a local module."""
    if not models or not all(isinstance(m, RemoteModule) for m in models):
        raise TypeError("fedavg takes RemoteModules (client.send(model)), one per worker")
    local = fetch(models, timeout)
    averaged = local[0]
    averaged.load_state_dict(average_state([m.state_dict() for m in local], counts))
    return averaged
