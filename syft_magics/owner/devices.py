"""Where a worker keeps its tensors and models: ``Worker(device="cuda")``, ``%syft_worker Bob 3000 --device cuda``.

Shared tensors, tensors a client sends, models it sends and objects moved in from another worker are
placed on the worker's device; ops on them run there. Values leave on the CPU (the wire carries host
memory), so a client's ``.get()`` returns a CPU tensor. ``ptr.to(device)`` and ``remote.to(device)``
may name only the devices the worker allows: the CPU and its own device. Each worker binds its own
``Tensor.to``, ``syft.module_to`` and ``syft.build_module`` (:meth:`Devices.ops`), so two workers in one
process can keep different devices.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import torch
import torch.nn as nn

from . import models
from .plain import flag


class Devices:
    """A worker's device and the devices its clients may move tensors to."""

    def __init__(self, device: Any = None) -> None:
        try:
            self.device = torch.device(device if device is not None else "cpu")
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"unknown device {device!r}: {exc}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no CUDA device (torch.cuda.is_available() is "
                             "False); start the worker with --device cpu")
        if self.device.type not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"device {device!r} is not supported: use cpu or cuda")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        #: device types ``.to()`` may name here
        self.allowed: Tuple[str, ...] = tuple(dict.fromkeys(("cpu", self.device.type)))
        #: the CUDA devices whose random generators its ops draw from (see .randomness)
        self.generators: Tuple[int, ...] = (self.device.index,) if self.device.type == "cuda" else ()

    def check(self, device: Any) -> None:
        """Refuse a device this worker does not allow (a clear error naming the allowed ones)."""
        if device is None:
            return
        kind = torch.device(device).type
        if kind not in self.allowed:
            raise PermissionError(f"device {device!s} is not allowed on this worker "
                                  f"(allowed: {', '.join(self.allowed)})")

    def place(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the worker's device (a leaf still, with its ``requires_grad``)."""
        if t.device == self.device:
            return t
        return t.detach().to(self.device).requires_grad_(t.requires_grad)

    def place_module(self, m: nn.Module) -> nn.Module:
        return m.to(self.device) if self.device.type != "cpu" else m

    def ops(self) -> Dict[str, Callable]:
        """This worker's ``.to`` for tensors and models, and its model builder (placing the model here)."""
        check = self.check

        def safe_to(t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
            check(device)
            return t.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=flag(kwargs.get("copy", False),
                                                                                         ".to(copy=...)"),
                        memory_format=memory_format or torch.preserve_format)

        def module_to(m: Any, device: Any) -> None:
            check(device)
            models.module_of(m).to(device)

        @functools.wraps(models.build_module)
        def build_module(spec: Any, state: Dict[str, torch.Tensor], names: Any) -> tuple:
            module = self.place_module(models.build_module(spec, state, names)[0])
            found = {**dict(module.named_parameters()), **dict(module.named_buffers())}
            return (module, *[found[n] for n in names])

        return {"Tensor.to": safe_to, "syft.module_to": module_to, "syft.build_module": build_module}
