"""Federated averaging: models trained on several workers, averaged into one (FedAvg, McMahan et al. 2017).

Two ways, chosen by ``on``:

* ``fedavg(models, weights=counts, on=carol)``: **on a trusted aggregator worker**. Each model moves
  from its worker straight to Carol's (``remote.move(carol)``: each source owner's policy decides, as
  for a get; Carol's accept rule decides whether she takes it), concurrently, one thread per source
  worker; Carol averages them (weighted by ``weights``, samples per worker) into a new model there.
  Returns that average as a :class:`RemoteModule` on Carol: the scientist never sees the models, and
  sees the average only if Carol's policy lets it (``carol.policy.allow_get(kind="model")``, then
  ``avg.get()``). Move it back for the next round (``avg.move(bob)``) or fetch it.
* ``fedavg(models, weights=counts)``: pulled to the scientist, where each owner's policy allows it
  (``bob.policy.allow_get(kind="model")``): each model is fetched concurrently and the average is a
  local module. Send it back (``client.send(avg)``) for the next round.
"""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .owner.aggregate import average_state, check_weights
from .scientist.moves import Move
from .scientist.remote_module import RemoteModule

if TYPE_CHECKING:
    from .scientist.client import Client

__all__ = ["average_state", "fedavg", "fetch"]


def fetch(models: Sequence[RemoteModule], timeout: Optional[float] = None) -> List[nn.Module]:
    """Each remote model's local copy, fetched concurrently (one thread per model)."""
    with ThreadPoolExecutor(max_workers=max(1, len(models)), thread_name_prefix="fedavg-fetch") as pool:
        return list(pool.map(lambda m: m.get(timeout=timeout), models))


def fedavg(models: Sequence[RemoteModule], weights: Optional[Sequence[float]] = None,
           on: Optional["Client"] = None, *, counts: Optional[Sequence[float]] = None,
           timeout: Optional[float] = None) -> Union[nn.Module, RemoteModule]:
    """The average of ``models`` (one per worker) weighted by ``weights`` (sample counts; ``counts`` is
    the same), on the aggregator ``on`` (a :class:`RemoteModule` there) or here (a local module)."""
    if weights is None:
        weights = counts
    if weights is None:
        raise TypeError("fedavg needs weights=... (the number of samples each model was trained on)")
    if not models or not all(isinstance(m, RemoteModule) for m in models):
        raise TypeError("fedavg takes RemoteModules (client.send(model)), one per worker")
    if len(weights) != len(models):
        raise ValueError(f"fedavg needs one weight per model: {len(models)} models, {len(weights)} weights")
    check_weights(weights)  # here, before any model moves or is fetched for nothing
    if on is None:
        local = fetch(models, timeout)
        averaged = local[0]
        averaged.load_state_dict(average_state([m.state_dict() for m in local], weights))
        return averaged
    return _on_aggregator(list(models), [float(w) for w in weights], on, timeout)


def _on_aggregator(models: List[RemoteModule], weights: List[float], on: "Client",
                   timeout: Optional[float]) -> RemoteModule:
    first = models[0]
    if any(m.path != first.path or m.move_names != first.move_names for m in models):
        raise ValueError("the models differ in architecture; FedAvg averages models of one architecture")
    there: List[Optional[RemoteModule]] = [m if m.client is on else None for m in models]
    moves = {i: Move(m, on, timeout) for i, m in enumerate(models) if there[i] is None}
    for move in moves.values():  # tickets from the aggregator, one after the other on its one link
        move.ticket()
    by_source: Dict[Any, List[int]] = defaultdict(list)
    for i, move in moves.items():
        by_source[move.source].append(i)

    def order(indices: List[int]) -> None:
        for i in indices:  # one link per source worker: its moves in turn; the sources all at once
            there[i] = moves[i].order()

    with ThreadPoolExecutor(max_workers=max(1, len(by_source)), thread_name_prefix="fedavg-move") as pool:
        for done in [pool.submit(order, idx) for idx in by_source.values()]:
            done.result()
    held = [m for m in there if m is not None]
    names = first.move_names
    state = first.state_dict()
    # what the stand-in needs, not the pointers: it is kept as a key of the client's inference cache, and a
    # pointer kept there kept the first model's parameters on its worker after every round
    specs = [(tuple(state[n].shape), state[n].dtype, state[n].requires_grad) for n in names]
    del state

    def standin(w: Any, n: Any, *handles: Any) -> tuple:
        with torch._C.DisableTorchFunctionSubclass():
            return (torch.empty(0, device="meta"),
                    *[torch.empty(shape, dtype=dtype, device="meta", requires_grad=grad)
                      for shape, dtype, grad in specs])

    made = on.run(standin, "syft.average_models", (weights, list(names), *[m.handle for m in held]), {})
    # the moved copies are freed on the aggregator when their pointers die, at the end of this call
    return first.twin(on, made[0], dict(zip(names, made[1:])))
