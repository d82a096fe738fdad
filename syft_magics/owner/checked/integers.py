"""Integer division that traps: the quotient of a dtype's smallest integer by -1 does not fit the dtype, and the CPU's
division instruction raises SIGFPE on it, which kills the process (helper-67: ``torch.div(a, b,
rounding_mode="trunc")`` of int32 or int64, the methods and in place; ``torch.lcm``, whose gcd of the smallest integer
is -1). torch's other integer divisions (floor mode, ``floor_divide``, ``remainder``, ``fmod``, ``//``, ``%``) check
it themselves."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .common import fail, real

#: The dtypes whose kernels trap (int8 and int16 are computed wider, and wrap).
_TRAPPING = (torch.int32, torch.int64)


def _as(x: Any, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=dtype)


def _smallest_by_minus_one(op: str, a: Any, b: Any) -> None:
    """Refuse ``a / b`` if, where they broadcast together, ``a`` holds its result dtype's smallest integer over a
    ``b`` of -1. Arguments torch itself refuses (shapes that do not broadcast, a number that does not fit the dtype)
    are left to torch."""
    try:
        dtype = torch.result_type(a, b)
        if dtype not in _TRAPPING or not real(a, b):
            return
        trap = (_as(a, dtype) == torch.iinfo(dtype).min) & (_as(b, dtype) == -1)
    except (RuntimeError, TypeError, OverflowError):
        return
    if bool(trap.any()):
        fail(op, f"the smallest {dtype} divided by -1 does not fit {dtype} (the kernel would crash the worker)")


def _div(fn: Callable[..., Any]) -> Callable[..., Any]:
    def div(a: Any, b: Any, *args: Any, rounding_mode: Any = None, **kwargs: Any) -> Any:
        """``torch.div`` (``divide``, the methods, in place, and the operators ``/``, ``/=``, which take a
        ``rounding_mode`` too), checked first in ``trunc`` mode (see the module)."""
        if rounding_mode is None:
            return fn(a, b, *args, **kwargs)
        if rounding_mode == "trunc":
            _smallest_by_minus_one("div", a, b)
        return fn(a, b, *args, rounding_mode=rounding_mode, **kwargs)

    return div


div = _div(torch.div)
tensor_div = _div(torch.Tensor.div)
tensor_div_ = _div(torch.Tensor.div_)
#: (helper-69: ``a.__idiv__(b, rounding_mode="trunc")`` reached the same division, unchecked)
tensor_truediv = _div(torch.Tensor.__truediv__)
tensor_itruediv = _div(torch.Tensor.__itruediv__)
tensor_div_operator = _div(torch.Tensor.__div__)
tensor_idiv = _div(torch.Tensor.__idiv__)


def _lcm(fn: Callable[..., Any]) -> Callable[..., Any]:
    def lcm(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
        """``torch.lcm`` (the methods, in place) of no smallest integer: its gcd with anything is then -1, by which
        torch divides it (see the module)."""
        try:
            dtype = torch.result_type(a, b)
            low = torch.iinfo(dtype).min if dtype in _TRAPPING else None
            smallest = low is not None and real(a, b) and any(
                bool((x.to(dtype) == low).any()) for x in (a, b) if isinstance(x, torch.Tensor))
        except (RuntimeError, TypeError):
            smallest = False
        if smallest:
            fail("lcm", f"the smallest {dtype} has no least common multiple in {dtype} (the kernel would crash "
                        "the worker)")
        return fn(a, b, *args, **kwargs)

    return lcm


lcm = _lcm(torch.lcm)
tensor_lcm = _lcm(torch.Tensor.lcm)
tensor_lcm_ = _lcm(torch.Tensor.lcm_)
