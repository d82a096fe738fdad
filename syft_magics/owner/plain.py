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
from typing import Any, Dict, List, Optional, Tuple

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


#: Where each function takes a Python value: ``(position or None for keyword-only, name)`` of each parameter whose
#: default is a bool or a number, or whose annotation says ``bool``, ``int`` or ``float`` and not ``Tensor``
#: (``inplace``, ``training``, ``align_corners``, ``size_average``, ``p``, ``return_indices``...).
_FLAGS: Dict[Any, Tuple[Tuple[Optional[int], str], ...]] = {}

_NUMBERS = ("bool", "int", "float", "Number")

#: Parameters torch's Python functions read as numbers though their signatures do not say so (helper-73:
#: ``x.split(t)`` reads ``int(t)``; ``einsum``'s sublists, in its ``*args``, each item compared and made a letter).
_UNSAID: Dict[Any, Tuple[Tuple[Optional[int], str], ...]] = {torch.Tensor.split: ((1, "split_size"),)}


def check_flags(fn: Any, op: str, args: Any, kwargs: Dict[str, Any]) -> None:
    """Refuse a tensor given as a flag or a number of ``fn`` (see :data:`_FLAGS`), before it runs: the same refusal
    whatever the tensor holds. torch's C++ functions refuse one for a bool themselves; its Python functions, and
    the worker's own, would read its truth or its number (helper-71: dropout's ``p`` from ``#X``, in place, wrote
    ``b`` or not as the owner's value said, which the version check of a saved ``b`` then told)."""
    try:
        where = _FLAGS[fn]
    except KeyError:
        inner = checked.unwrapped(fn)
        where = _FLAGS[fn] = _flags_of(inner) + _UNSAID.get(inner, ())
    except TypeError:  # (unhashable: not a function of the allowlist)
        return
    if fn is torch.einsum and args and not isinstance(args[0], str) and any(
            isinstance(a, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in a) for a in args):
        raise Reject(ErrorCode.BAD_ARGS, f"{op}'s sublists take a Python value (an integer), not a tensor")
    for position, name in where:
        value: Any = args[position] if position is not None and position < len(args) else kwargs.get(name)
        if isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple)) and any(
                isinstance(v, torch.Tensor) for v in value)):  # (a list of numbers too: tensordot's dims)
            raise Reject(ErrorCode.BAD_ARGS, f"{op}'s {name} takes a Python value (True or False, a number), not a "
                                             "tensor")


def _flags_of(fn: Any, depth: int = 0) -> Tuple[Tuple[Optional[int], str], ...]:
    found: List[Tuple[Optional[int], str]] = []
    dispatch = _boolean_dispatch(fn)
    if dispatch is not None:  # (helper-71: max_pool2d(..., return_indices=x > t) read it in torch's dispatcher)
        index, name, branches = dispatch
        found.append((index, name))
        for branch in branches if depth < 4 else ():
            found.extend(f for f in _flags_of(branch, depth + 1) if f not in found)
        return tuple(found)
    if not inspect.isfunction(fn):  # (a builtin: torch's argument parser refuses a tensor for a bool)
        return ()
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return ()
    for i, p in enumerate(parameters):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = str(p.annotation)
        if "Tensor" not in hint and (isinstance(p.default, (bool, int, float)) or any(n in hint for n in _NUMBERS)):
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            found.append((i if positional else None, p.name))
    return tuple(found)


def _boolean_dispatch(fn: Any) -> Optional[Tuple[int, str, Tuple[Any, Any]]]:
    """``(position, name, the two functions it chooses between)`` of the flag of one of torch's ``boolean_dispatch``
    functions (``F.max_pool2d``, ``torch.unique``...: ``(*args, **kwargs)``, the flag read inside)."""
    try:
        found = inspect.getclosurevars(fn).nonlocals if inspect.isfunction(fn) and fn.__closure__ else {}
    except (TypeError, ValueError):
        return None
    if isinstance(found.get("arg_index"), int) and isinstance(found.get("arg_name"), str) and "if_true" in found:
        return found["arg_index"], found["arg_name"], (found["if_true"], found.get("if_false"))
    return None
