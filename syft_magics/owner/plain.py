"""The worker's own ops read their control arguments by type: a flag is a bool, a seed an int, never a tensor's value.

torch's C++ functions refuse a tensor where they take a bool (``sum(keepdim=t)`` is a ``TypeError``), but Python
code reads a tensor's truth (``if create_graph:``), and some of torch's Python functions pass it on as one
(``backward(retain_graph=t)`` runs). A flag read from a pointer to the owner's data decides what an op does to the
client's own objects, which the client can see without any get: helper-69's ``zero_grad(opt, set_to_none=x[i, j] >
t)`` read all of ``#X`` by whether the gradients were then None, and ``backward(retain_graph=...)`` would tell by
whether the next backward of the client's own loss failed. So each control argument of the worker's own ops is
checked here by its type before anything reads it.
"""
from __future__ import annotations

from typing import Any, Optional


def flag(value: Any, what: str) -> bool:
    """``value``, a bool (else a ``TypeError`` naming ``what``)."""
    if type(value) is not bool:
        raise TypeError(f"{what} takes True or False, not {type(value).__name__}")
    return value


def maybe_flag(value: Any, what: str) -> Optional[bool]:
    """``value``, a bool or None."""
    return None if value is None else flag(value, what)


def integer(value: Any, what: str) -> int:
    """``value``, an int (not a bool, not a tensor)."""
    if type(value) is not int:
        raise TypeError(f"{what} takes an integer, not {type(value).__name__}")
    return value
