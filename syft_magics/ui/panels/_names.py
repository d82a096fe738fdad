"""The user's names for pointers: ``z``, ``x_set[0]``, ``params['w']``, found in the IPython namespace.

Only identity is used (``id()`` of objects kept alive by the caller during the scan):
a pointer's ``==`` or ``bool()`` would run remote ops, so nothing here calls them. The
scan copies each container with C-level calls, so a cell running at the same time
cannot break it, and it looks one or two levels deep into lists, tuples and dicts.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

__all__ = ["find_names", "user_namespace", "name_of"]

#: IPython's own names and history: never user variables.
_SKIP = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_MAX_ITEMS = 1000  # elements looked at per container


def user_namespace() -> Optional[Mapping[str, Any]]:
    """The running IPython shell's ``user_ns``, or ``None`` outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    return getattr(shell, "user_ns", None) if shell is not None else None


def name_of(value: Any, default: str) -> str:
    """The notebook's variable for ``value`` (e.g. ``bob`` for a worker), for hints; ``default`` if none."""
    for name, item in list((user_namespace() or {}).items()):
        if item is value and isinstance(name, str) and not name.startswith("_") and name not in _SKIP:
            return name
    return default


def _items(value: Any) -> Optional[List[Tuple[str, Any]]]:
    """``[(suffix, item)]`` of a list, tuple or dict (first items only); ``None`` for anything else."""
    if isinstance(value, list):
        items = list.__getitem__(value, slice(0, _MAX_ITEMS))
        return [(f"[{i}]", v) for i, v in enumerate(items)]
    if isinstance(value, tuple):
        items = tuple.__getitem__(value, slice(0, _MAX_ITEMS))
        return [(f"[{i}]", v) for i, v in enumerate(items)]
    if isinstance(value, dict):
        out = []
        for k, v in list(dict.items(value))[:_MAX_ITEMS]:
            if isinstance(k, (str, int)) and not isinstance(k, bool):
                out.append((f"[{k!r}]", v))
        return out
    return None


def find_names(namespace: Optional[Mapping[str, Any]], pointers: Iterable[Any],
               depth: int = 2) -> Dict[int, List[str]]:
    """``{pointer.id: [names]}`` for the pointers that some user variable reaches.

    Plain variables come first, then the shortest expressions (``z`` before ``x_set[0]``).
    """
    wanted = {id(p): p.id for p in pointers}
    found: Dict[int, List[str]] = {}
    if not namespace or not wanted:
        return found
    try:
        pairs = list(dict.items(namespace)) if isinstance(namespace, dict) else list(namespace.items())
    except RuntimeError:  # changed size while being copied (not a plain dict)
        return found

    def visit(expr: str, value: Any, level: int) -> None:
        local_id = wanted.get(id(value))
        if local_id is not None:
            found.setdefault(local_id, []).append(expr)
            return
        if level >= depth:
            return
        items = _items(value)
        if items:
            for suffix, item in items:
                visit(expr + suffix, item, level + 1)

    for name, value in pairs:
        if not isinstance(name, str) or name.startswith("_") or name in _SKIP:
            continue
        visit(name, value, 0)
    for names in found.values():
        names.sort(key=lambda s: (s.count("["), len(s), s))
    return found
