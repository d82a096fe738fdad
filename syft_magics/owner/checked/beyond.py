"""Integers beyond any size: refused wherever a torch operator takes one as an ``int`` (a size, a kernel, a stride,
an offset), in a dispatch mode entered only for ops whose arguments hold one (helper-66: sizes of 2**62 crashed
``max_pool1d``, read the heap through ``unfold`` and looped forever in the adaptive pools)."""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import quotas as quota_rules
from .common import fail, real

#: The schema types of torch's integer arguments: sizes, dimensions, kernels, strides, offsets, counts (a value is a
#: ``number``).
_INT_TYPES = frozenset({"int", "List[int]", "Optional[int]", "Optional[List[int]]"})
#: Ops whose integer arguments bound values, not sizes (``x.random_(0, 2**40)``).
_VALUE_BOUNDS = frozenset({"random_", "randint", "randint_like"})


def bounded(args: Any, kwargs: Any, limit: Optional[int] = None) -> ContextManager[Any]:
    """For an op whose arguments hold an integer beyond ``limit`` (the bytes its client may hold, at least 2**31;
    the default quota's where None), a dispatch mode that refuses it wherever torch takes it as an integer: sizes of
    2**62 crashed ``max_pool1d``, read the heap through ``unfold`` and looped forever in an adaptive pool, whose
    shape-only kernels refused them, so that nothing priced the op (helper-66). Else a no-op: most ops pay one look
    at their arguments."""
    limit = max(int(quota_rules.Quotas().max_bytes) if limit is None else limit, 1 << 31)
    return _Sizes(limit) if _beyond(args, limit) or _beyond(kwargs, limit) else _NO_BOUND


_NO_BOUND = contextlib.nullcontext()


def _beyond(x: Any, limit: int) -> bool:
    """Whether ``x`` holds an integer (a Python one, or a one-element integer tensor, as torch reads ``int``
    arguments) beyond ``limit``, in lists, tuples and dicts as the decoder makes them."""
    kind = type(x)
    if kind is int:
        return not -limit <= x <= limit
    if kind is list or kind is tuple:
        for v in x:
            if _beyond(v, limit):
                return True
        return False
    if kind is dict:
        return _beyond(list(x.values()), limit)
    if _integer_scalar(x) and real(x):
        return not -limit <= int(x) <= limit
    return False


def _integer_scalar(x: Any) -> bool:
    """Whether ``x`` is a 0-d integer tensor (not a bool): a number, where torch takes an ``int``."""
    return isinstance(x, torch.Tensor) and x.dim() == 0 and not x.is_floating_point() and not x.is_complex() \
        and x.dtype is not torch.bool


def numbers_in_tensors(args: Any, kwargs: Any) -> bool:
    """Whether an op's arguments hold a one-element integer tensor, which torch reads as a number where it takes an
    ``int``: a size no price can see (``x.new_zeros(tensor(2**30))`` ran unpriced: 1.8 GiB from a few bytes)."""
    return any(_integer_scalar(t) for t in (*_leaves(args), *_leaves(kwargs)))


def _leaves(x: Any) -> Iterator[Any]:
    if type(x) is list or type(x) is tuple:
        for v in x:
            yield from _leaves(v)
    elif type(x) is dict:
        yield from _leaves(list(x.values()))
    else:
        yield x


class _Sizes(TorchDispatchMode):
    """Refuses an integer argument of a torch operator (see :data:`_INT_TYPES`) beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if name not in _VALUE_BOUNDS:
            for i, arg in enumerate(func._schema.arguments):
                if str(arg.type) in _INT_TYPES:
                    value = args[i] if i < len(args) else kwargs.get(arg.name)
                    if _beyond(value, self.limit):
                        fail(name, f"{arg.name}={value!r} is beyond any size, index or count here "
                                   f"({self.limit:,}: the bytes the client may hold)")
        return func(*args, **kwargs)
