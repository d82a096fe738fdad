"""What a remote model's forward returns, known here: meta-device copies of the model, one per architecture
and state, shared by every remote model that has them.

``remote(x)`` is one op on the worker; its result's shape, dtype and ``requires_grad`` are inferred here
by running the model's meta copy on meta stand-ins (:mod:`.inference`), cached by the function that runs
it and its arguments' signature. That function is the same for every remote model of one architecture in
one state, so:

- **State.** The state is the modes of its layers (training or evaluation: dropout, batch statistics) and
  which parameters require grad, read from the model's parameter pointers at each call: a model frozen
  on the worker (``remote.requires_grad_(False)``, ``remote.fc1.weight.requires_grad_(False)``) gives
  results that do not require grad, as there (its meta copy once kept requiring grad: a result the
  client said required grad, the worker's did not).
- **Shared.** A model sent again each round (federated averaging: ``client.send(model)`` per worker and
  round) finds the forward of the earlier ones' inferred: a meta forward costs a millisecond or more
  (a linear layer on the meta device goes through torch's decompositions), per new model and batch shape.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Tuple

import torch
import torch.nn as nn

#: the state of a model: its layers' training modes, and which of its parameters require grad
State = Tuple[Tuple[bool, ...], Tuple[bool, ...]]

_STANDINS: Dict[Tuple[str, State], Callable[..., Any]] = {}
#: models of different architectures and states kept at most (each a meta copy: no data)
MAX_STANDINS = 256


def modes(meta: nn.Module) -> Tuple[bool, ...]:
    """The training mode of each of ``meta``'s layers."""
    return tuple(m.training for m in meta.modules())


def standin(arch: str, state: State, meta: nn.Module) -> Callable[..., Any]:
    """The forward, on the meta device, of the model of architecture ``arch`` (``meta`` is one) in ``state``:
    ``standin(handle, *args, **kwargs)``, as ``syft.module_call`` takes them."""
    key = (arch, state)
    found = _STANDINS.get(key)
    if found is not None:
        return found
    with torch.inference_mode(False):  # (kept for every later call: made under the caller's inference mode, its
        copied = copy.deepcopy(meta)   # tensors were inference tensors, and training's forwards failed, helper-77)
        for m, training in zip(copied.modules(), state[0]):
            m.training = training
        for p, grad in zip(copied.parameters(), state[1]):
            p.requires_grad_(grad)

    def forward(handle: Any, *args: Any, **kwargs: Any) -> Any:
        return copied(*args, **kwargs)

    if len(_STANDINS) >= MAX_STANDINS:
        _STANDINS.clear()
    _STANDINS[key] = forward
    return forward
