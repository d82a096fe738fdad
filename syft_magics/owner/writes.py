"""Which arguments an op writes into, so the worker can refuse writes into the owner's data.

In-place ops (``add_``, ``__setitem__``) write into their first argument; some functional
ops write when asked to (``F.relu(x, inplace=True)``) or as a side effect (the running
statistics of ``F.batch_norm`` in training mode). Ops that can never write are remembered,
so the common case costs one dictionary lookup.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from .allowlist import is_inplace

#: Functional ops that write into tensor arguments without being named in place:
#: the parameter written, and the condition (a parameter that must be truthy / not None) under which it is.
_WRITES_WHEN = {
    "batch_norm": (("running_mean", "training"), ("running_var", "training")),
    "instance_norm": (("running_mean", "use_input_stats"), ("running_var", "use_input_stats")),
    "embedding": (("weight", "max_norm"),),
}
_SIGNATURES: Dict[Any, Optional[inspect.Signature]] = {}


def _signature(fn: Callable) -> Optional[inspect.Signature]:
    try:
        return _SIGNATURES[fn]
    except KeyError:
        pass
    except TypeError:
        return None
    try:
        sig: Optional[inspect.Signature] = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    _SIGNATURES[fn] = sig
    return sig


_NEVER_WRITES: Dict[Tuple[str, Any], bool] = {}


def written_args(name: str, fn: Callable, args: Any, kwargs: dict) -> List[Any]:
    """The arguments an op writes into: its first for in-place ops (``add_``, ``__setitem__``), the
    input of ``F.relu(x, inplace=True)`` and the like, running statistics of ``F.batch_norm``..."""
    try:
        never = _NEVER_WRITES[(name, fn)]
    except KeyError:
        sig = _signature(fn)
        never = _NEVER_WRITES[(name, fn)] = not is_inplace(name) and (
            sig is None or ("inplace" not in sig.parameters and name.rsplit(".", 1)[-1] not in _WRITES_WHEN))
    except TypeError:  # an unhashable callable
        never = False
    if never:
        return []
    if is_inplace(name):
        return [args[0]] if args else list(kwargs.values())[:1]
    sig = _signature(fn)
    if sig is None:
        return []
    params = sig.parameters
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return []
    given = bound.arguments
    written = []
    if given.get("inplace"):
        written.append(next(iter(given.values()), None))
    for param, condition in _WRITES_WHEN.get(name.rsplit(".", 1)[-1], ()):
        flag = given.get(condition, params[condition].default if condition in params else None)
        if flag is not None and flag is not False and flag is not inspect.Parameter.empty:
            written.append(given.get(param))
    return written
