"""Knowing a remote result's shape and dtype without asking the worker.

The op runs on meta-device stand-ins (no data, only metadata), so torch itself
computes the result's shape and dtype, and raises its own shape errors at the
user's line. Meta kernels are slow (tens of microseconds), so results are cached
by the op and its arguments' signature (shapes, dtypes, scalar values).

The result is a :class:`~syft_magics.wire.results.Tree` (the one encoding of a result
tree, shared with the worker's descriptions): leaves are a new tensor (``"T"``), one of
the op's pointer inputs returned again (``"in"``, in-place ops), or a plain value
(``"V"``, e.g. ``x.size()``). Ops whose result shape depends on the data (``nonzero``,
boolean masks, ``unique``, sizes read from a tensor) cannot be inferred: torch's
``FakeTensorMode`` says so with its typed exceptions, and :data:`REMOTE` tells the client
to ask the worker.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedOperatorException,
)
from torch.utils import _pytree as pytree

from ..wire.results import Leaf, Tree, quiet_tracing, tree_of

_CACHE: Dict[Any, "Template"] = {}
_CACHE_LIMIT = 8192


class _Remote:
    """The result cannot be known here: the worker runs the op and says what came out."""

    def __repr__(self) -> str:
        return "REMOTE"


REMOTE = _Remote()
Template = Union[Tree, _Remote]

#: FakeTensorMode's typed verdicts: the output's shape (or the op's answer) depends on the values,
#: or the op has no meta kernel; either way only the worker can say what came out.
_NOT_INFERABLE = (DynamicOutputShapeException, DataDependentOutputException, UnsupportedOperatorException)


def infer(func: Callable, key: Any, make_standins: Callable[[], Tuple[tuple, dict, List[torch.Tensor], List[int]]]
          ) -> Template:
    """The result template of ``func`` for arguments with signature ``key``.

    ``make_standins`` is called only on a cache miss; it returns meta stand-in
    args and kwargs, the stand-ins of the pointer inputs in order, and the ids
    of the local tensors' stand-ins.
    """
    cache_key = (func, key) if key is not None else None
    if cache_key is not None:
        cached = _CACHE.get(cache_key)
        if cached is not None:
            return cached
    args, kwargs, standins, local_ids = make_standins()
    shapes = [s.shape for s in standins]
    try:
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as exc:
        # meta kernels do not say why they fail; FakeTensorMode does, with a type
        if not _data_dependent(func, args, kwargs, exc):
            raise
        template: Template = REMOTE
    else:
        if any(s.shape != shape for s, shape in zip(standins, shapes)):
            raise NotImplementedError(f"{getattr(func, '__name__', func)} changes a pointer's shape in place, "
                                      "which pointers do not support; use the out-of-place form (ptr = ptr.op())")
        _reject_local_inplace(func, args, result, set(local_ids))
        # a pointer passed twice (``p.add_(p)``) has one stand-in: name its first position, so the cached
        # template also fits ``a.add_(b)`` (the last position would make that return ``b``)
        positions: Dict[int, int] = {}
        for k, s in enumerate(standins):
            positions.setdefault(id(s), k)
        template = _template(result, positions, func in _MAY_COPY)
    if cache_key is not None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[cache_key] = template
    return template


_warming = threading.Lock()


def warm_up() -> Optional[threading.Thread]:
    """Run one op on meta stand-ins in a background thread (returned; None if one ran already), when a client
    connects: torch imports its meta kernels' machinery on the first (some 800 modules, 0.8 s here), which
    would otherwise land on the scientist's first op."""
    if not _warming.acquire(blocking=False):
        return None

    def run() -> None:
        with torch._C.DisableTorchFunctionSubclass():
            torch.add(torch.empty(2, device="meta"), 1)

    # not a daemon: a daemon thread still importing when the interpreter exits crashes it
    thread = threading.Thread(target=run, name="syft-inference-warm-up", daemon=False)
    thread.start()
    return thread


def _data_dependent(func: Callable, args: tuple, kwargs: dict, exc: Exception) -> bool:
    """Whether ``func`` failed on meta stand-ins because its result depends on the data (or it has
    no meta kernel), as FakeTensorMode's typed exceptions tell; ``False``: ``exc`` is a real error."""
    if isinstance(exc, NotImplementedError):
        return True  # no meta kernel: the worker describes the result
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with quiet_tracing(), mode:
            fake_args, fake_kwargs = pytree.tree_map_only(torch.Tensor, mode.from_tensor, (args, kwargs))
            with torch._C.DisableTorchFunctionSubclass():
                func(*fake_args, **fake_kwargs)
    except _NOT_INFERABLE:
        return True
    except Exception:
        return False
    return True  # fake tensors manage where meta kernels do not: the worker describes the result


def _reject_local_inplace(func: Callable, args: tuple, result: Any, local_ids: set) -> None:
    """Refuse an in-place op on a local tensor given a pointer: it returns that tensor, or, for ``t[i] = ptr``
    (``__setitem__``), None (helper-77: it wrote nothing, silently)."""
    leaves = result if isinstance(result, (tuple, list)) else (result,)
    if any(id(leaf) in local_ids for leaf in leaves) or (
            func is torch.Tensor.__setitem__ and args and id(args[0]) in local_ids):
        if func is torch.Tensor.copy_:  # (e.g. local_model.load_state_dict(remote.state_dict()))
            raise TypeError("an in-place op on a local tensor cannot take a pointer argument: a local tensor "
                            "cannot be filled from a pointer; bring the value here first (ptr.get(), or "
                            "remote.get() for a whole model)")
        raise TypeError("an in-place op on a local tensor cannot take a pointer argument "
                        "(the result would live on the worker); write local = local + ptr, or ptr + local, "
                        "or bring the value here first (ptr.get())")


#: Ops that return their input or a copy depending on its strides, which a stand-in does not have: on the
#: worker ``x.expand(n).contiguous()`` is a new tensor, on the stand-in ``x`` itself.
_MAY_COPY = frozenset({torch.Tensor.contiguous})


def _template(result: Any, inputs: Dict[int, int], may_copy: bool = False) -> Tree:
    def leaf(x: Any) -> Leaf:
        if isinstance(x, torch.Tensor):
            k = inputs.get(id(x))
            if k is not None and not may_copy:
                return ("in", k)
            if x.device.type != "meta":
                return ("V", x)
            return ("T", tuple(x.shape), x.dtype, x.requires_grad, x.is_leaf)  # is_leaf: torch's rule
        return ("V", x)

    return tree_of(result, leaf)


def has_tensors(template: Tree) -> bool:
    """Whether the result holds any tensor (new or returned input)."""
    return template.has_tensors


def clear_cache() -> None:
    _CACHE.clear()
