"""Knowing a remote result's shape and dtype without asking the worker.

The op runs on meta-device stand-ins (no data, only metadata), so torch itself
computes the result's shape and dtype, and raises its own shape errors at the
user's line. Meta kernels are slow (tens of microseconds), so results are cached
by the op and its arguments' signature (shapes, dtypes, scalar values).

A :class:`Template` describes the result: a tree whose leaves are a new tensor
(``"T"``), one of the op's pointer inputs returned again (``"in"``, in-place
ops), or a plain value (``"V"``, e.g. ``x.size()``). Data-dependent ops
(``nonzero``, boolean masks, ``unique``) cannot be inferred: :data:`REMOTE`
tells the client to ask the worker.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import torch

_CACHE: Dict[Any, "Template"] = {}
_CACHE_LIMIT = 8192

Template = Tuple  # ("T", shape, dtype, requires_grad, is_leaf) | ("in", k) | ("V", value) | ("C", ctor, [children])
REMOTE = ("REMOTE",)

_DATA_DEPENDENT_HINTS = ("meta tensor", "Meta tensor", "meta backend", "'Meta' backend", "data-dependent",
                         "data dependent", "no data!")


def infer(func: Callable, key: Any, make_standins: Callable[[], Tuple[tuple, dict, List[torch.Tensor], List[int]]]
          ) -> Template:
    """The result template of ``func`` for arguments with signature ``key``.

    ``make_standins`` is called only on a cache miss; it returns meta stand-in
    args and kwargs, the stand-ins of the pointer inputs in order, and the ids
    of the local tensors' stand-ins.
    """
    cache_key = (func, key) if key is not None else None
    if cache_key is not None:
        template = _CACHE.get(cache_key)
        if template is not None:
            return template
    args, kwargs, standins, local_ids = make_standins()
    shapes = [s.shape for s in standins]
    try:
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
    except NotImplementedError:
        template = REMOTE
    except RuntimeError as exc:
        if not any(h in str(exc) for h in _DATA_DEPENDENT_HINTS):
            raise
        template = REMOTE
    else:
        if any(s.shape != shape for s, shape in zip(standins, shapes)):
            raise NotImplementedError(f"{getattr(func, '__name__', func)} changes a pointer's shape in place, "
                                      "which pointers do not support; use the out-of-place form (ptr = ptr.op())")
        _reject_local_inplace(result, set(local_ids))
        # a pointer passed twice (``p.add_(p)``) has one stand-in: name its first position, so the cached
        # template also fits ``a.add_(b)`` (the last position would make that return ``b``)
        positions: Dict[int, int] = {}
        for k, s in enumerate(standins):
            positions.setdefault(id(s), k)
        template = _template(result, positions)
    if cache_key is not None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[cache_key] = template
    return template


def _reject_local_inplace(result: Any, local_ids: set) -> None:
    leaves = result if isinstance(result, (tuple, list)) else (result,)
    if any(id(leaf) in local_ids for leaf in leaves):
        raise TypeError("an in-place op on a local tensor cannot take a pointer argument "
                        "(the result would live on the worker); write local = local + ptr, or ptr + local")


def _template(result: Any, inputs: Dict[int, int]) -> Template:
    if isinstance(result, torch.Tensor):
        k = inputs.get(id(result))
        if k is not None:
            return ("in", k)
        if result.device.type != "meta":
            return ("V", result)
        return ("T", tuple(result.shape), result.dtype, result.requires_grad, result.is_leaf)
    if isinstance(result, (tuple, list)) and not isinstance(result, torch.Size):
        ctor = type(result)
        return ("C", ctor, tuple(_template(r, inputs) for r in result))
    return ("V", result)


def has_tensors(template: Template) -> bool:
    """Whether the result holds any tensor (new or returned input)."""
    kind = template[0]
    if kind in ("T", "in"):
        return True
    if kind == "C":
        return any(has_tensors(c) for c in template[2])
    return False


def clear_cache() -> None:
    _CACHE.clear()
