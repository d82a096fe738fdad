"""Optimizers and schedulers that live on the worker: ``client.optim.SGD(...)``, ``client.lr_scheduler.StepLR(...)``.

They mirror ``torch.optim`` (an allowlist: SGD, Adam, AdamW, RMSprop, Adagrad; StepLR, MultiStepLR,
ExponentialLR, CosineAnnealingLR). The optimizer is built on the worker over the parameters the
pointers name; ``zero_grad()`` and ``step()`` are one pipelined message each, whatever the number of
parameters (PySyft sent one per parameter), so a training step costs a constant number of messages.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

import torch

from ..errors import CrossWorkerError, ProtocolError
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")
SCHEDULERS = ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR")


def _handle_standin(*args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.empty(0, device="meta")


def _none(*args: Any, **kwargs: Any) -> None:
    return None


def _text(*args: Any, **kwargs: Any) -> str:
    return ""


class RemoteObject:
    """An optimizer or scheduler on a worker, reached through a handle the worker frees when it dies."""

    def __init__(self, client: "Client", kind: str, name: str, args: tuple, kwargs: dict) -> None:
        for t in _tensors((args, kwargs)):
            if not isinstance(t, PointerTensor):  # a copy would be trained on the worker and this tensor never
                raise TypeError("an optimizer on a worker takes pointers to its parameters (remote.parameters(), "
                                "or sent tensors), not local tensors: send the model first, remote = "
                                "client.send(model)")
            if t.client is not client:
                raise CrossWorkerError(f"{kind}.{name} was given pointers {client.where(t.client)}; an optimizer "
                                       "updates parameters of one connection to one worker only")
        self._client = client
        self.name = name
        self._kwargs = dict(kwargs)
        self._handle: PointerTensor = client.run(_handle_standin, f"syft.{kind}.{name}", args, kwargs)
        client.untrack(self._handle)  # a handle, not a tensor to list
        client.sync()  # (torch refuses bad options at this line: so does the worker, one round trip)

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One message, run on the worker. ``closure`` (torch's optional argument): called first, with grad
        on, to compute the loss again (its ops run on the worker as any); its result is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._client.run(_none, "syft.optim_step", (self._handle,), {})
        return loss

    def _settings(self) -> Dict[str, Any]:
        """What the worker says of this object's options now (after every op sent before): one round trip,
        its answer in the reply (the client's own choices: no get to approve)."""
        text = self._client.run(_text, "syft.optim_settings", (self._handle,), {}, described=True)
        if not isinstance(text, str):
            raise ProtocolError(f"{self._client.name} did not describe the optimizer's options")
        return json.loads(text)

    @property
    def location(self) -> str:
        return self._client.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self._client.name}>"


class RemoteOptimizer(RemoteObject):
    """``torch.optim.<name>`` on the worker."""

    def __init__(self, client: "Client", kind: str, name: str, args: tuple, kwargs: dict) -> None:
        super().__init__(client, kind, name, args, kwargs)
        first = args[0] if args else []
        #: the pointers of each parameter group, as given (``param_groups[i]["params"]``)
        self._params: List[List[torch.Tensor]] = [_tensors(g.get("params", ())) for g in first] \
            if first and isinstance(first[0], dict) else [_tensors(first)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """One message, run on the worker."""
        self._client.run(_none, "syft.optim_zero_grad", (self._handle, bool(set_to_none)), {})

    @property
    def param_groups(self) -> List["ParamGroup"]:
        """Each parameter group, as ``torch.optim`` has them: ``opt.param_groups[0]["lr"]`` reads the
        worker's current learning rate (schedulers' steps included), ``... = 0.01`` sets it there."""
        return _Fixed([ParamGroup(self, i) for i in range(len(self._settings()["groups"]))],
                      f"the parameter groups of an optimizer on {self._client.name}")

    @property
    def defaults(self) -> Dict[str, Any]:
        """The options the optimizer was made with (torch's defaults for those not given), as torch keeps them:
        unchanged by schedulers and by setting ``param_groups``."""
        cls = getattr(torch.optim, self.name)
        found = {n: p.default for n, p in inspect.signature(cls).parameters.items()
                 if n != "params" and p.default is not inspect.Parameter.empty}
        return {**found, **self._kwargs}

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError(
            f"state_dict() of an optimizer on {self._client.name} is not available: its state (momentum, "
            "Adam's moments) is computed from the owner's data and stays on the worker; checkpoint the model "
            "(remote.get() where the owner allows it) and make a new optimizer to resume")

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        raise NotImplementedError(f"load_state_dict() of an optimizer on {self._client.name} is not available: "
                                  "make a new optimizer with the options you want (client.optim...)")

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        raise NotImplementedError(f"add_param_group() of an optimizer on {self._client.name} is not available: "
                                  "make the optimizer with every group at once (a list of dicts, as torch takes)")


class _Fixed(list):
    """A list read from a remote optimizer: a copy, so changing it would change nothing on the worker (helper-77:
    ``opt.param_groups[0] = {...}`` and ``.append(...)`` did nothing); each change raises instead."""

    def __init__(self, items: Any, what: str) -> None:
        super().__init__(items)
        self._what = what

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self._what} cannot be changed: set an option with opt.param_groups[i][key] = value, or "
                        "make a new optimizer with every group and parameter (a list of dicts, as torch takes)")

    def __reduce_ex__(self, protocol: Any) -> Any:  # (a copy is a plain list of the same items)
        return list, (list(self),)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


class ParamGroup(MutableMapping):
    """One parameter group of a :class:`RemoteOptimizer`: reads ask the worker (each one current, after the
    ops sent before it), writes set the option there and wait for its answer (an unknown option, a value
    of the wrong kind or one that would need more optimizer state raise here)."""

    def __init__(self, optimizer: RemoteOptimizer, index: int) -> None:
        self._opt, self._index = optimizer, index

    def _options(self) -> Dict[str, Any]:
        return self._opt._settings()["groups"][self._index]

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return _Fixed(self._opt._params[self._index] if self._index < len(self._opt._params) else [],
                          f"a parameter group's params on {self._opt._client.name}")
        value = self._options()[key]
        return tuple(value) if isinstance(value, list) else value

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "params":
            raise TypeError("a parameter group's params cannot be changed on a worker: make a new optimizer")
        values = value if isinstance(value, tuple) else (value,)
        if not all(v is None or type(v) in (bool, int, float) for v in values):
            raise TypeError(f"{key} must be a number, a bool or a tuple of numbers, not a {type(value).__name__} "
                            "(a tensor's value would have to come from the worker first)")
        self._opt._client.run(_none, "syft.optim_set", (self._opt._handle, self._index, key, value), {},
                              described=True)

    def __delitem__(self, key: str) -> None:
        raise TypeError("an optimizer's options cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(["params", *self._options()])

    def __len__(self) -> int:
        return 1 + len(self._options())

    def __repr__(self) -> str:
        return f"<param group {self._index} of {self._opt!r}: {self._options()}>"


class RemoteScheduler(RemoteObject):
    """``torch.optim.lr_scheduler.<name>`` on the worker, over a :class:`RemoteOptimizer`."""

    def get_last_lr(self) -> List[float]:
        """The learning rate of each parameter group after the scheduler's last step (one round trip)."""
        return list(self._settings()["last_lr"])

    @property
    def last_epoch(self) -> int:
        return int(self._settings()["last_epoch"])

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError(f"state_dict() of a scheduler on {self._client.name} is not available: to resume, "
                                  "set opt.param_groups[i]['initial_lr'] (as torch needs) and make a new one with "
                                  "last_epoch=<the epoch reached>")


class _Namespace:
    def __init__(self, client: "Client", kind: str, names: tuple, cls: type, first: Callable[[Any], Any]) -> None:
        self._client, self._kind, self._names, self._cls, self._first = client, kind, names, cls, first

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_") or name not in self._names:
            instead = ("otherwise set the learning rate yourself (opt.param_groups[0]['lr'] = ...), or use torch's own "
                       "torch.optim over remote.parameters() with any torch scheduler (its steps run op by op on the "
                       "worker: one message per parameter)" if self._kind == "lr_scheduler" else
                       "torch's own torch.optim over remote.parameters() also works, op by op (one message per "
                       "parameter per step)")
            raise AttributeError(f"{self._kind}.{name} is not available on workers (available: "
                                 f"{', '.join(self._names)}); {instead}")

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
    """An optimizer's parameters as torch takes them: pointers, groups (dicts), or ``named_parameters()``'s pairs, whose
    names are dropped (helper-77: the pairs reached the worker, which refused a tuple, not at the user's line)."""
    if isinstance(params, (PointerTensor, dict)):
        return [params]
    return [dict(p) if isinstance(p, dict) else p[1] if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
            else p for p in params]


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
