"""What every checked kernel uses: the room a client's quota leaves (while its value-sized op runs), and checks of
arguments read as torch reads them."""
from __future__ import annotations

import contextlib
import inspect
import operator
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch._subclasses.fake_tensor import FakeTensor

from .. import quotas as quota_rules

#: The client's quota, its name and the bytes it holds, while one of its value-sized ops runs on this thread.
_room: ContextVar[Optional[Tuple[Any, str, int]]] = ContextVar("syft_magics_room", default=None)


@contextlib.contextmanager
def room(quotas: Any, client: str, held: int) -> Iterator[None]:
    """Run the block as ``client``'s (``quotas``, ``held`` bytes held): a :data:`VALUE_SIZED` op refuses a result
    that would take it over ``max_bytes`` before it makes it."""
    token = _room.set((quotas, client, held))
    try:
        yield
    finally:
        _room.reset(token)


def fits(op: str, elements: int, itemsize: int, always: bool = False) -> None:
    """Refuse a result of ``elements`` that would not fit the room of the client whose op runs (see :func:`room`;
    none: not checked, as for an op over the owner's data under a guarding policy, whose results are charged by
    public bounds and whose values must not decide a refusal). ``always``: memory whose size follows from shapes
    alone, checked without a room too, against the default quota's bytes."""
    held = _room.get()
    if held is None and always:
        held = (quota_rules.Quotas(), "a client", 0)
    if held is not None:
        quota_rules.check_bytes(held[0], held[1], held[2], max(elements, 0) * itemsize,
                                f"{op}'s result (its size read from the values)" if not always else f"{op}'s work")


def real(*tensors: Any) -> bool:
    """Whether none of ``tensors`` is a value-free stand-in (a fake or meta tensor): the kernel will run."""
    return not any(isinstance(t, torch.Tensor) and (isinstance(t, FakeTensor) or t.is_meta) for t in tensors)


def fail(op: str, why: str) -> None:
    raise ValueError(f"{op}: {why}")


def ints(x: Any) -> Optional[torch.Tensor]:
    """A sequence of ints or an integer tensor, as an int64 tensor (None: neither)."""
    if isinstance(x, torch.Tensor):
        return x.long() if not x.is_floating_point() and not x.is_complex() else None
    if isinstance(x, (list, tuple)) and all(type(i) is int for i in x):
        return torch.tensor(x, dtype=torch.long) if x else torch.zeros(0, dtype=torch.long)
    return None


def indices(x: Any) -> Optional[Tuple[int, ...]]:
    """``x`` (an int, or a list or tuple of them) as torch reads an ``int[]`` argument: bools and one-element integer
    tensors are integers too (helper-66: ``(-5, True)``, ``torch.tensor(0)`` passed a check of ``type(n) is int``);
    None where torch would not read it so (it then refuses it itself)."""
    try:
        return tuple(operator.index(n) for n in (x if isinstance(x, (list, tuple)) else (x,)))
    except TypeError:
        return None


def within(op: str, name: str, x: Any, low: int, high: int) -> None:
    """``x``'s values in ``[low, high)``."""
    t = ints(x)
    if t is None:
        fail(op, f"{name} must be integers")
    elif t.numel() and (int(t.min()) < low or int(t.max()) >= high):
        fail(op, f"{name} must be in [{low}, {high})")


def by_name(fn: Callable[..., Any], like: Optional[Callable[..., Any]] = None) -> Callable[..., Dict[str, Any]]:
    """``(*args, **kwargs)`` -> ``fn``'s arguments by name, defaults applied (``like``: whose signature)."""
    signature = inspect.signature(like or fn)

    def bind(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    return bind
