"""The worker's own ops read their control arguments by type: a flag is a bool, a seed an int, never a tensor's value.

torch's C++ functions refuse a tensor where they take a bool (``sum(keepdim=t)`` is a ``TypeError``), but Python
code reads a tensor's truth (``if create_graph:``), and some of torch's Python functions pass it on as one
(``backward(retain_graph=t)`` runs). A flag read from a pointer to the owner's data decides what an op does to the
client's own objects, which the client can see without any get: helper-69's ``zero_grad(opt, set_to_none=x[i, j] >
t)`` read all of ``#X`` by whether the gradients were then None, and ``backward(retain_graph=...)`` would tell by
whether the next backward of the client's own loss failed. So each control argument of the worker's own ops is
checked here by its type before anything reads it, and every op's flags are (:func:`check_flags`): torch's Python
functions read theirs by truth too (helper-70: ``F.relu(b, inplace=x[i, j] > t)`` ran in place or not as the owner's
value said, and the refusal of its result told which).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch

from ..wire.protocol import ErrorCode
from . import checked
from .replies import Reject


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


#: Where each function takes a flag: ``(position or None for keyword-only, name)`` of each parameter whose default is
#: a bool or whose annotation says ``bool`` (``inplace``, ``training``, ``align_corners``, ``size_average``...).
_FLAGS: Dict[Any, Tuple[Tuple[Optional[int], str], ...]] = {}


def check_flags(fn: Any, op: str, args: Any, kwargs: Dict[str, Any]) -> None:
    """Refuse a tensor given as a flag of ``fn`` (see :data:`_FLAGS`), before it runs: the same refusal whatever the
    tensor holds. torch's C++ functions refuse one themselves; its Python functions, and the worker's own, would
    read its truth."""
    try:
        where = _FLAGS[fn]
    except KeyError:
        where = _FLAGS[fn] = _flags_of(checked.unwrapped(fn))
    except TypeError:  # (unhashable: not a function of the allowlist)
        return
    for position, name in where:
        value = args[position] if position is not None and position < len(args) else kwargs.get(name)
        if isinstance(value, torch.Tensor):
            raise Reject(ErrorCode.BAD_ARGS, f"{op}'s {name} takes True or False (a flag), not a tensor")


def _flags_of(fn: Any) -> Tuple[Tuple[Optional[int], str], ...]:
    if not inspect.isfunction(fn):  # (a builtin: torch's argument parser refuses a tensor for a bool)
        return ()
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return ()
    found = []
    for i, p in enumerate(parameters):
        hint = str(p.annotation)
        if isinstance(p.default, bool) or ("bool" in hint and "Tensor" not in hint):
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            found.append((i if positional else None, p.name))
    return tuple(found)
