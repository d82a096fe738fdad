"""Optimizers and schedulers that live on the worker: ``client.optim.SGD(...)``, ``client.lr_scheduler.StepLR(...)``.

They mirror ``torch.optim`` (an allowlist: SGD, Adam, AdamW, RMSprop, Adagrad; StepLR, MultiStepLR,
ExponentialLR, CosineAnnealingLR). The optimizer is built on the worker over the parameters the
pointers name; ``zero_grad()`` and ``step()`` are one pipelined message each, whatever the number of
parameters (PySyft sent one per parameter), so a training step costs a constant number of messages.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..errors import CrossWorkerError
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")
SCHEDULERS = ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR")


def _handle_standin(*args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.empty(0, device="meta")


def _none(*args: Any, **kwargs: Any) -> None:
    return None


class RemoteObject:
    """An optimizer or scheduler on a worker, reached through a handle the worker frees when it dies."""

    def __init__(self, client: "Client", kind: str, name: str, args: tuple, kwargs: dict) -> None:
        for t in _tensors((args, kwargs)):
            if not isinstance(t, PointerTensor):  # a copy would be trained on the worker and this tensor never
                raise TypeError("an optimizer on a worker takes pointers to its parameters (remote.parameters(), "
                                "or sent tensors), not local tensors: send the model first, remote = "
                                "client.send(model)")
            if t.client is not client:
                raise CrossWorkerError(f"{kind}.{name} on {client.name} was given a pointer on {t.client.name}; "
                                       "an optimizer updates parameters on one worker only")
        self._client = client
        self.name = name
        self._handle: PointerTensor = client.run(_handle_standin, f"syft.{kind}.{name}", args, kwargs)
        client.untrack(self._handle)  # a handle, not a tensor to list

    def step(self) -> None:
        """One message, run on the worker."""
        self._client.run(_none, "syft.optim_step", (self._handle,), {})

    @property
    def location(self) -> str:
        return self._client.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self._client.name}>"


class RemoteOptimizer(RemoteObject):
    """``torch.optim.<name>`` on the worker."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """One message, run on the worker."""
        self._client.run(_none, "syft.optim_zero_grad", (self._handle, bool(set_to_none)), {})


class RemoteScheduler(RemoteObject):
    """``torch.optim.lr_scheduler.<name>`` on the worker, over a :class:`RemoteOptimizer`."""


class _Namespace:
    def __init__(self, client: "Client", kind: str, names: tuple, cls: type, first: Callable[[Any], Any]) -> None:
        self._client, self._kind, self._names, self._cls, self._first = client, kind, names, cls, first

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"{self._kind}.{name} is not available on workers (available: "
                                 f"{', '.join(self._names)})")

        def make(first: Any, *args: Any, **kwargs: Any) -> RemoteObject:
            if args:  # (``SGD(params, 0.1)``): by name, as torch's own signature reads them; wrong ones raise here
                torch_cls = getattr(torch.optim if self._kind == "optim" else torch.optim.lr_scheduler, name)
                given = inspect.signature(torch_cls).bind(first, *args, **kwargs).arguments
                kwargs = {k: v for i, (k, v) in enumerate(given.items()) if i}
            return self._cls(self._client, self._kind, name, (self._first(first),), kwargs)

        make.__name__ = name
        return make

    def __dir__(self) -> list:
        return list(self._names)


def _params(params: Any) -> Any:
    if isinstance(params, (PointerTensor, dict)):
        return [params]
    return [dict(p) if isinstance(p, dict) else p for p in params]


def _optimizer_handle(opt: Any) -> PointerTensor:
    if not isinstance(opt, RemoteOptimizer):
        raise TypeError(f"a scheduler on a worker needs a RemoteOptimizer (client.optim...), got {type(opt).__name__}")
    return opt._handle


def optim(client: "Client") -> _Namespace:
    """``client.optim``: ``client.optim.SGD(remote.parameters(), lr=0.1)``."""
    return _Namespace(client, "optim", OPTIMIZERS, RemoteOptimizer, _params)


def lr_scheduler(client: "Client") -> _Namespace:
    """``client.lr_scheduler``: ``client.lr_scheduler.StepLR(opt, step_size=10)``."""
    return _Namespace(client, "lr_scheduler", SCHEDULERS, RemoteScheduler, _optimizer_handle)


def _tensors(obj: Any) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []
