"""An op traced on value-free stand-ins: which result shapes follow from public facts, and how large a result
can be without anyone looking at the owner's values.

:mod:`.provenance` asks this for every op over the owner's data (under any policy but ``open``). The op runs
again under torch's ``FakeTensorMode`` with a ``ShapeEnv``: tensors have no values, and an input whose shape
is withheld has unbacked symbolic sizes, each constrained to the public upper bound it was given when it was
made. A result dimension that comes out a plain integer depends on no value; one that comes out symbolic is
withheld, and torch's value ranges (``bound_sympy``) give its public upper bound: ``nonzero(x)`` has at most
``x.numel()`` rows, ``y.repeat(1000, 1)`` of such a result 1000 times as many. The same bound of the result's
memory (its storage's bytes; its own elements' for a view) is what its client is charged (see
``ObjectStore.charge_public``), so a quota's refusal depends on public facts only (a charge of real bytes told
withheld sizes: a probe bisected ``#X`` through ``QuotaExceeded``). A result torch cannot bound (``bincount``,
``unique`` of a withheld shape, a size read from a tensor) has no public charge: :mod:`.ops` refuses it.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import re
import sys
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import AbstractSet, Any, Dict, List, Optional, Tuple, Union, cast

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from ..wire.results import flatten, quiet_tracing
from . import checked
from .costs import MAX_KEY_ITEMS, serial
from .edge_runs import runs_at, sizes_at

#: A bound above this is no bound (torch writes "unbounded" as sys.maxsize - 1 or infinity).
UNBOUNDED = 1 << 62

#: Per-dimension public upper bounds of a withheld shape (None: a tensor whose shape is public).
Bounds = Optional[Tuple[int, ...]]
#: A withheld shape as a trace sees it: its bounds, which of its dimensions are withheld (the others are
#: public: their bound is their size), and the symbol of each withheld one: sizes known to be equal (rows picked
#: by one mask: ``x[m]`` and ``y[m]``) share a symbol, numbered in order of appearance over the op's inputs
#: (see :mod:`.sizes`).
HiddenShape = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]

#: At most this many withheld dimensions over an op's inputs: each is a symbol of the trace, whose work grows
#: exponentially with them (a probe held the serving thread 17 s with 13, in a 1 KB message).
MAX_WITHHELD_DIMS = 4


@dataclass(frozen=True)
class Trace:
    """What a trace tells of an op's result, leaf by leaf (the leaves of :func:`~..wire.results.flatten`)."""

    #: the result's structure (a pytree spec)
    spec: Any
    #: each leaf's sizes as the trace found them: an int where public, None where withheld (not a tensor: ``()``)
    sizes: List[Tuple[Optional[int], ...]]
    #: each leaf's public upper bound, dimension by dimension (None: torch cannot bound it)
    bounds: List[Bounds]
    #: each leaf's public charge in bytes (None: no bound): the upper bound of its storage where the trace made
    #: new memory for it, else (a view of an input or of an earlier leaf) of its own elements. Never 0 for
    #: a view: torch may copy where the trace saw a view (``.contiguous()`` of a withheld shape whose real
    #: strides the stand-in does not have), and what is charged must not depend on which it did
    charges: List[Optional[int]]
    #: whether each leaf is a view of an input or of an earlier leaf (by the trace, whatever torch does)
    views: List[bool]
    #: where each leaf's withheld sizes come from, one per withheld dimension (see :data:`Origin`)
    origins: List[Tuple["Origin", ...]] = ()  # type: ignore[assignment]

    @cached_property
    def shapes(self) -> List[Optional[Tuple[int, ...]]]:
        """Each leaf's shape where it follows from public facts alone, else None (not a tensor: ``()``)."""
        return [cast(Tuple[int, ...], s) if None not in s else None for s in self.sizes]

    @cached_property
    def free(self) -> List[Tuple[int, ...]]:
        """Each leaf's withheld dimensions (those the trace left symbolic)."""
        return [tuple(i for i, d in enumerate(s) if d is None) for s in self.sizes]


#: Where a result's withheld size comes from: ``("in", k)``, it is the inputs' symbol ``k``; ``("count", j)``, it counts
#: the true elements of the input leaf ``j`` (``x[m]``, ``nonzero(m)``); ``("new",)``, neither (its own size).
Origin = Tuple[Any, ...]

#: Ops whose new withheld size is the count of true (nonzero) elements of one input: of the one boolean index
#: (``x[m]``: a mask must match the dimensions it picks from), or of the first input (``nonzero(m)``). Not
#: ``masked_select(x, m)``: ``m`` broadcasts, and its count can be a multiple of ``m``'s.
_COUNTS_A_MASK = frozenset({torch.Tensor.__getitem__})
_COUNTS_NONZERO = frozenset({torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere})


#: A string argument longer than this is not kept in a remembered key (the op is traced each time).
MAX_KEYED_CHARS = 64

#: An op whose client's integer tensors have more elements than this in all is not keyed by their values, nor
#: remembered: it is traced each time.
MAX_KEYED_VALUES = 4096


def signature(x: Any, withheld: Optional[HiddenShape], by_value: Optional[List[int]] = None,
              edges: bool = False) -> Any:
    """What a trace depends on of one argument (a withheld tensor by its bounds, not its shape). ``by_value``:
    an integer or boolean tensor by a digest of its values too, which the edge check's real kernels read, out of
    a room of :data:`MAX_KEYED_VALUES` elements for the op's arguments (its one item is what is left).
    ``edges``: the op is over a withheld shape (its edge check runs), so a model by its modes and shapes too."""
    if isinstance(x, torch.Tensor):
        if withheld is not None:
            return ("H", withheld, x.dtype, x.requires_grad)
        if by_value is not None and not x.dtype.is_floating_point and not x.dtype.is_complex:
            by_value[0] -= x.numel()
            if by_value[0] < 0 or x.device.type != "cpu":
                raise TypeError("not keyed")  # (read as: not remembered)
            # (by a digest: a key is remembered, and 4,096 of them must not hold the values themselves)
            digest = hashlib.blake2b(x.detach().contiguous().numpy().tobytes(), digest_size=16).digest()
            return ("V", tuple(x.shape), x.dtype, digest)
        return ("T", tuple(x.shape), x.stride(), x.dtype, x.requires_grad)
    if isinstance(x, slice):
        bounds = (x.start, x.stop, x.step)
        if all(v is None or type(v) is int for v in bounds):  # (the common case, at once)
            return ("s", *bounds)
        return ("s", *(signature(v, None) for v in bounds))
    if isinstance(x, nn.Module):  # (by which one it is, not itself; over a withheld shape, whose edge check ran
        # on its layers in their modes and on its weights' shapes, those too: a walk of its layers, not for every op)
        if not edges:
            return ("M", serial(x))
        return ("M", serial(x), tuple(m.training for m in x.modules()),
                tuple(tuple(t.shape) for t in itertools.chain(x.parameters(), x.buffers())))
    if type(x) in _KEYED or x is Ellipsis or (type(x) is str and len(x) <= MAX_KEYED_CHARS):
        return (type(x), x)
    raise TypeError("not keyed")  # (a remembered key holds small plain values only: bytes, long strings, not)


#: The plain values a remembered key may hold as they are.
_KEYED = frozenset({int, float, bool, complex, type(None), torch.dtype, torch.device, torch.layout,
                    torch.memory_format})


def spec_keyed(spec: Any) -> bool:
    """Whether an op's arguments' structure may be kept in a remembered key: the keys of its maps are short
    strings or numbers (a probe kept 8 MB per message in keys of a map)."""
    nodes = [spec]
    while nodes:
        node = nodes.pop()
        if isinstance(node.context, list) and any(
                not (type(k) is str and len(k) <= MAX_KEYED_CHARS or type(k) is int) for k in node.context):
            return False
        nodes.extend(node.children())
    return True


def trace_key(fn: Any, args: Any, kwargs: Dict[str, Any], withheld: Dict[int, HiddenShape],
              owned: AbstractSet[int]) -> Any:
    """What a trace of ``fn`` over ``(args, kwargs)`` depends on, the key it is remembered by (None: not
    remembered; long arguments are not keyed, as the cost cache's are: ``costs.MAX_KEY_ITEMS``). Over a withheld
    shape, the client's own integer tensors by their values too (see :func:`signature`). Arguments with no
    nesting (most ops: tensors, numbers, slices) are keyed as they come, without pytree's walk and its spec,
    which took a third of the look-up on the serving thread."""
    if len(args) + len(kwargs) <= MAX_KEY_ITEMS and all(pytree.tree_is_leaf(x) for x in args) \
            and all(pytree.tree_is_leaf(v) for v in kwargs.values()):
        if any(not (type(k) is str and len(k) <= MAX_KEYED_CHARS) for k in kwargs):
            return None
        leaves, layout = [*args, *kwargs.values()], (len(args), tuple(kwargs))
    else:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if len(leaves) > MAX_KEY_ITEMS or not spec_keyed(spec):
            return None
        layout = cast(Any, spec)
    try:
        room = [MAX_KEYED_VALUES] if withheld else None
        key = (fn, layout, tuple(signature(x, withheld.get(id(x)), room if id(x) not in owned else None,
                                           room is not None) for x in leaves))
        hash(key)
    except TypeError:
        return None
    return key


@dataclass(frozen=True)
class Untraced:
    """Why an op over the owner's data has no :class:`Trace`, so that it can be refused before it runs where
    whether it fails would tell a withheld size.

    ``edge``: a withheld size (0 or 1) at which the op fails though it runs at the sizes torch does not know
    (``rows.max(0)``, ``rows[0]`` fail when no row passed a filter). ``error``: what torch said on the
    stand-ins where that is not a question about values (a shape mismatch: the op fails whatever the data), as
    ``(type name, text)``. Neither: torch cannot work out the result without the values."""

    edge: Optional[int] = None
    error: Optional[Tuple[str, str]] = None
    #: the edge check ran out of time (:data:`EDGE_SECONDS`): a verdict of the machine's load, not remembered
    late: bool = False


def _about_values(exc: BaseException) -> bool:
    """Whether an error on the stand-ins asks about values or about a withheld size (it names one of the
    trace's symbols: ``u0``), or says torch cannot run the op on them at all (no meta kernel, symbolic
    strides): not the op's own failure whatever the data."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        UnsupportedOperatorException,
    )
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    if isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException, UnsupportedOperatorException,
                        GuardOnDataDependentSymNode, NotImplementedError)) \
            or not isinstance(exc, (RuntimeError, IndexError, ValueError, TypeError)):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("meta", "symbolic", "data-dependent", "data dependent", "unbacked")) \
        or _SYMBOL.search(text) is not None


#: A symbol of a trace in an error's text (torch names unbacked sizes u0, u1, ...; backed ones s0, ...).
_SYMBOL = re.compile(r"\b[us]\d+\b")


def trace(fn: Any, leaves: List[Any], spec: Any, withheld: Dict[int, HiddenShape],
          owned: AbstractSet[int] = frozenset(), may_write: bool = True) -> Union[Trace, Untraced]:
    """Trace ``fn`` over ``leaves`` (the flattened ``(args, kwargs)``, ``spec`` their structure); ``withheld``:
    ``id(tensor)`` -> the public bounds of an input whose shape is withheld, which of its dimensions are (at
    most :data:`MAX_WITHHELD_DIMS` in all) and their symbols; ``owned``: ``id``s of the owner's tensors among
    them; ``may_write``: whether the op may write into its arguments. :class:`Untraced` when torch cannot trace
    it without the values (then even the result's structure is not public), or when it fails at a withheld
    size of 0 or 1.

    Withheld sizes not known to be equal are distinct symbols: an op that needs two of them equal
    (``a * b`` of rows picked by two filters) cannot be traced, and is refused (it failed exactly when the
    counts differed: comparing the counts of two thresholds read a column's values)."""
    n = sum(len(free) for _, free, _ in withheld.values())
    if n > MAX_WITHHELD_DIMS:
        return Untraced()
    traced = _trace(fn, leaves, spec, withheld, {})
    if isinstance(traced, BaseException):
        error = None if _about_values(traced) else (type(traced).__name__, _clip(str(traced)))
        return Untraced(error=error)
    return _at_the_edges(fn, leaves, spec, withheld, owned, may_write, traced) if n else traced


#: Withheld sizes at which torch's size-oblivious reasoning may not hold (see :func:`_at_the_edges`).
EDGES = (0, 1)


def _at_the_edges(fn: Any, leaves: List[Any], spec: Any, withheld: Dict[int, HiddenShape], owned: AbstractSet[int],
                  may_write: bool, traced: Trace) -> Union[Trace, Untraced]:
    """``traced`` if what it found public (the result's structure, each leaf's rank and static sizes) holds
    when any of the withheld sizes are 0 or 1 (the others unknown), and the op runs then; else
    :class:`Untraced`.

    Torch decides some questions about a size it does not know as if it were neither (``squeeze()`` keeps the
    dimension, as for n >= 2): where that decided the result's shape, the real result differs at n = 0 or 1,
    and whether its shape was shown then told whether exactly one row passed a filter
    (``x[x[:, 0] > t].squeeze().sum(0)``: read threshold by threshold). And an op that fails at n = 0 or 1
    only (``rows[0]``, ``rows.max(0)``, ``rows.index_select(0, i)``) told by failing whether any row passed:
    a threshold search read a column's maximum. Such an op is refused before it runs, whatever the data.
    Whether it runs is asked of the real kernels too (:func:`.edge_runs.runs_at`, each unknown size as 2): torch's
    value-free ones do not check everything (``max(0)`` of no rows, an index past the end)."""
    symbols = sorted({k for _, _, ks in withheld.values() for k in ks})
    deadline = time.monotonic() + EDGE_SECONDS
    for sizes in itertools.product((*EDGES, None), repeat=len(symbols)):
        if time.monotonic() > deadline:
            return Untraced(late=True)
        fixed = {k: v for k, v in zip(symbols, sizes) if v is not None}
        if fixed:
            at_edge = _trace(fn, leaves, spec, withheld, fixed)
            if isinstance(at_edge, BaseException):
                return Untraced() if _about_values(at_edge) else Untraced(edge=min(fixed.values()))
            if at_edge.spec != traced.spec:
                return Untraced()
            for sym, real in zip(traced.sizes, at_edge.sizes):
                if len(sym) != len(real) or any(s is not None and s != r for s, r in zip(sym, real)):
                    return Untraced()
        at = {k: 2 if v is None else v for k, v in zip(symbols, sizes)}
        runs = runs_at(fn, leaves, spec, withheld, at, owned, may_write)
        if not runs:
            return Untraced(edge=min(at.values())) if runs is False else Untraced()
    return traced


#: Seconds the edge check of one op may take, at most (3^k traces and real runs for k withheld sizes: an op
#: priced at 0.1 s over four of them cost 10 s): past them, the op is refused, and the refusal not remembered. A
#: verdict of the machine's load, not of the data (four withheld sizes take 0.5 s on an idle 2-core machine).
EDGE_SECONDS = 5.0

def _clip(text: str, limit: int = 300) -> str:
    """An error's first line, at most ``limit`` characters (torch's C++ errors add their stack)."""
    text = text.strip().split("\n", 1)[0]
    return text if len(text) <= limit else text[:limit] + "..."


def _trace(fn: Any, leaves: List[Any], spec: Any, withheld: Dict[int, HiddenShape],
           fixed: Dict[int, int]) -> Union[Trace, BaseException]:
    """``fn`` on value-free stand-ins, each withheld size an unbacked symbol bounded by its public bound (one per
    symbol number), but those of ``fixed``, which have that size; the error it raised, if any."""
    from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv
    from torch.multiprocessing.reductions import StorageWeakRef

    env = ShapeEnv()
    try:
        with quiet_tracing(), FakeTensorMode(shape_env=env, allow_non_fake_inputs=True) as mode:
            # one symbol per number, bounded by the least bound of the sizes it stands for
            least: Dict[int, int] = {}
            for bounds, free, ks in withheld.values():
                for i, k in zip(free, ks):
                    least[k] = min(least.get(k, bounds[i]), bounds[i])
            symbols: Dict[int, Any] = {}
            for k, bound in least.items():
                if k in fixed:
                    symbols[k] = min(fixed[k], bound)
                else:
                    symbols[k] = env.create_unbacked_symint()
                    torch._constrain_as_size(symbols[k], min=0, max=bound)
            fakes: List[Any] = []
            for x in leaves:
                if isinstance(x, torch.Tensor):
                    hidden = withheld.get(id(x))
                    if hidden is not None:
                        f = torch.empty(sizes_at(hidden, symbols), dtype=x.dtype, device=x.device)
                        if x.requires_grad:
                            f.requires_grad_(True)
                    else:
                        f = mode.from_tensor(x, static_shapes=True)
                    fakes.append(f)
                elif isinstance(x, nn.Module):  # a copy with fake weights: the live model is never touched
                    with FakeCopyMode(mode):
                        fakes.append(_traceable(copy.deepcopy(x)))
                else:
                    fakes.append(x)
            args, kwargs = pytree.tree_unflatten(fakes, spec)
            with torch.no_grad():
                out = fn(*args, **kwargs)
            out_leaves, out_spec = flatten(out)
            # (storages of the inputs and of earlier results: a result in one of them is a view)
            held = {StorageWeakRef(f.untyped_storage()) for f in fakes if isinstance(f, torch.Tensor)}
            by_expr = {v.node.expr: k for k, v in symbols.items() if type(v) is not int}
            sizes: List[Tuple[Optional[int], ...]] = []
            all_bounds: List[Bounds] = []
            charges: List[Optional[int]] = []
            views: List[bool] = []
            origins: List[Tuple[Origin, ...]] = []
            for o in out_leaves:
                if not isinstance(o, torch.Tensor):
                    sizes.append(())
                    all_bounds.append(())
                    charges.append(0)
                    views.append(False)
                    origins.append(())
                    continue
                sizes.append(tuple(d if type(d) is int else None for d in o.shape))
                origins.append(tuple(_origin(fn, leaves, cast(Any, d).node.expr, by_expr)
                                     for d in o.shape if type(d) is not int))
                dims = [_upper(d, env) for d in o.shape]
                all_bounds.append(tuple(d for d in dims if d is not None) if None not in dims else None)
                ref = StorageWeakRef(o.untyped_storage())
                views.append(ref in held)
                charges.append(_upper(o.numel() * o.element_size(), env) if ref in held
                               else _upper(o.untyped_storage().nbytes(), env))
                held.add(ref)
    except Exception as exc:
        return exc
    return Trace(out_spec, sizes, all_bounds, charges, views, origins)


def _traceable(model: nn.Module) -> nn.Module:
    """``model`` (a fake copy) with each cumulative batch norm (``momentum=None``, which reads its count of batches
    as a number: a value a trace has not) exponential instead: the shapes are those of any momentum."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            m.momentum = 0.1
    return model


def _origin(fn: Any, leaves: List[Any], expr: Any, by_expr: Dict[Any, int]) -> Origin:
    """Where a result's withheld size ``expr`` comes from (see :data:`Origin`)."""
    k = by_expr.get(expr)
    if k is not None:
        return ("in", k)
    if getattr(expr, "is_Symbol", False):  # (a new size of its own: what does it count?)
        if checked.unwrapped(fn) in _COUNTS_NONZERO and leaves and isinstance(leaves[0], torch.Tensor):
            return ("count", 0)
        if fn in _COUNTS_A_MASK:
            masks = [j for j, x in enumerate(leaves) if j and isinstance(x, torch.Tensor) and x.dtype == torch.bool]
            if len(masks) == 1:
                return ("count", masks[0])
    return ("new",)


def _upper(value: Any, env: Any) -> Optional[int]:
    """A size's public upper bound (None: unbounded)."""
    if type(value) is int:
        return value
    from torch.utils._sympy.value_ranges import bound_sympy

    upper = bound_sympy(value.node.expr, env.var_to_range).upper
    from torch.utils._sympy.numbers import IntInfinity

    if isinstance(upper, IntInfinity) or getattr(upper, "is_finite", True) is not True:  # (torch's, sympy's)
        return None
    try:
        return n if 0 <= (n := int(upper)) < UNBOUNDED and n < sys.maxsize - 1 else None
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


_warming = threading.Lock()


def warm_up() -> Optional[threading.Thread]:
    """Trace one op in a background thread (returned; None if one ran already) at worker start: the first trace
    imports torch's symbolic shapes (sympy; seconds), which would otherwise hold the serving thread on a first op."""
    if not _warming.acquire(blocking=False):
        return None
    x = torch.zeros(2)
    # not a daemon: a daemon thread still importing when the interpreter exits crashes it
    thread = threading.Thread(target=trace, args=(torch.nonzero, [x], pytree.tree_flatten(((x,), {}))[1],
                                                  {id(x): ((2,), (0,), (0,))}),
                              name="torch-trace-warm-up", daemon=False)
    thread.start()
    return thread
