"""torch's initialisers that return before asking for an override, given the check the others make.

``nn.init.uniform_(ptr)`` asks ``torch.overrides`` first, so a pointer's call runs on its worker as one op.
``orthogonal_``, ``trunc_normal_``, ``sparse_`` and ``dirac_`` test ``tensor.is_meta`` first and return the tensor
untouched, and a pointer's wrapper lives on the meta device: they did nothing, silently (helper-77). :func:`install`
gives each the check torch's other initialisers make, so a pointer's call goes to the worker as one op (the
worker's allowlist runs torch's function there, on the real tensor); a local tensor's call runs torch's function as
before.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch.nn.init
from torch.overrides import handle_torch_function, has_torch_function_unary

#: The in-place initialisers of torch 2.x without the override check: four return at ``is_meta`` (``orthogonal_``,
#: ``trunc_normal_``, ``sparse_``, ``dirac_``), ``eye_`` writes through ``out=`` (refused on a pointer), the others ran
#: as several ops of their own; each is now one op on the worker.
LACKING = ("orthogonal_", "trunc_normal_", "sparse_", "dirac_", "eye_", "ones_", "zeros_", "xavier_uniform_",
           "xavier_normal_", "kaiming_normal_")


def _overridable(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def init(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        if has_torch_function_unary(tensor):
            return handle_torch_function(init, (tensor,), tensor, *args, **kwargs)
        return fn(tensor, *args, **kwargs)

    setattr(init, "_syft_overridable", True)
    return init


def install() -> None:
    """Give :data:`LACKING` the override check (once per process)."""
    for name in LACKING:
        fn = getattr(torch.nn.init, name, None)
        if fn is not None and not getattr(fn, "_syft_overridable", False):
            setattr(torch.nn.init, name, _overridable(fn))
