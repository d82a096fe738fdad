"""Torch functions whose CPU kernels trust their arguments, run on the worker only after the checks torch skips.

The worker runs torch's kernels on arguments its clients chose; a kernel that does not check them is a crash of
the worker (the owner's kernel, for a client in its process) or a read of its heap into a result. Found by
helper-64 and helper-65 (a fuzz of the default allowlist), each reproduced in plain torch 2.13:

- ``torch._weight_norm(v, g, dim)`` (``parametrizations.weight_norm``'s weight): for ``dim`` 0 or the last, a fused
  kernel sizes its output by ``g`` and reads ``g`` once per slice of ``v``, in ``v``'s dtype: a one-element ``g``
  crashed the worker, a few elements read heap pointers into a result a rule of sizes released;
- ``F.ctc_loss`` with a target outside ``[0, C)``: a garbage loss, or SIGSEGV;
- ``F.embedding_bag`` with an offset outside the input (a heap word in torch's error text, or SIGSEGV), or
  ``include_last_offset`` with one offset (SIGSEGV);
- ``repeat_interleave`` with negative repeats and ``output_size``, or repeats whose sum overflows: heap corruption;
- ``F.grid_sample`` with a grid not finite: its backward (bilinear, border or reflection) crashes;
- ``F.pdist`` of no rows: its backward crashes;
- ``F.pad(mode="circular")`` whose negative pads leave nothing to wrap: an output of uninitialised memory;
- ``F.fractional_max_pool2d/3d`` with a kernel below 1: indices past the input;
- (helper-66) ``linalg.eigvals`` of NaN or infinite entries: SIGSEGV; ``matrix_power(m, -2**63)``: endless, its
  price too.

Each is replaced on the default allowlist by a function that checks, then calls torch's, reading integers as torch
does (a bool or a one-element tensor is one: helper-66 passed the first checks so). Value-free stand-ins (the fake
tensors of a trace or a price) are not checked: no kernel runs on them.

And any torch operator given an integer (a size, a kernel, a stride, an offset) beyond the bytes the client may
hold is refused (:func:`bounded`): such numbers overflowed ``max_pool1d``, ``unfold`` and the adaptive pools
(helper-66).

And some ops read their result's size from values, so no price foresees it: ``bincount`` (the largest value),
``F.one_hot`` (the same, by default), ``repeat_interleave`` (the sum of the repeats), ``nonzero``,
``argwhere``, ``masked_select`` (how many are picked), ``unique`` (how many differ; at most all: of an expanded view
too). They ran, then were charged:
``repeat_interleave(tensor([2**31]))``, 40 bytes, allocated 16 GiB under a 2 GiB quota before its refusal. They are
:data:`VALUE_SIZED`: the worker runs them inside :func:`room`, and they refuse a result larger than the room the
client's quota leaves before they make it.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
from contextvars import ContextVar
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode

from . import quotas as quota_rules

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


def _fits(op: str, elements: int, itemsize: int) -> None:
    """Refuse a result of ``elements`` that would not fit the room of the client whose op runs (see :func:`room`;
    none: not checked, as for an op over the owner's data under a guarding policy, whose results are charged by
    public bounds and whose values must not decide a refusal)."""
    held = _room.get()
    if held is not None:
        quota_rules.check_bytes(held[0], held[1], held[2], max(elements, 0) * itemsize,
                                f"{op}'s result (its size read from the values)")


def edge_run(args: Any, kwargs: Any) -> ContextManager[Any]:
    """The bounds of a trace's real runs at withheld sizes of 0, 1 and 2 (:mod:`.fake_trace`), whose client is not
    known there: :func:`bounded` by the default quota, in its room (the owner's tensors stand as zeros)."""
    stack = contextlib.ExitStack()
    stack.enter_context(room(quota_rules.Quotas(), "a client", 0))
    stack.enter_context(bounded(args, kwargs))
    return stack


def _real(*tensors: Any) -> bool:
    """Whether none of ``tensors`` is a value-free stand-in (a fake or meta tensor): the kernel will run."""
    return not any(isinstance(t, torch.Tensor) and (isinstance(t, FakeTensor) or t.is_meta) for t in tensors)


def _fail(op: str, why: str) -> None:
    raise ValueError(f"{op}: {why}")


def _ints(x: Any) -> Optional[torch.Tensor]:
    """A sequence of ints or an integer tensor, as an int64 tensor (None: neither)."""
    if isinstance(x, torch.Tensor):
        return x.long() if not x.is_floating_point() and not x.is_complex() else None
    if isinstance(x, (list, tuple)) and all(type(i) is int for i in x):
        return torch.tensor(x, dtype=torch.long) if x else torch.zeros(0, dtype=torch.long)
    return None


def _indices(x: Any) -> Optional[Tuple[int, ...]]:
    """``x`` (an int, or a list or tuple of them) as torch reads an ``int[]`` argument: bools and one-element integer
    tensors are integers too (helper-66: ``(-5, True)``, ``torch.tensor(0)`` passed a check of ``type(n) is int``);
    None where torch would not read it so (it then refuses it itself)."""
    try:
        return tuple(operator.index(n) for n in (x if isinstance(x, (list, tuple)) else (x,)))
    except TypeError:
        return None


def _within(op: str, name: str, x: Any, low: int, high: int) -> None:
    """``x``'s values in ``[low, high)``."""
    t = _ints(x)
    if t is None:
        _fail(op, f"{name} must be integers")
    elif t.numel() and (int(t.min()) < low or int(t.max()) >= high):
        _fail(op, f"{name} must be in [{low}, {high})")


def weight_norm(v: Any, g: Any, dim: Any = 0) -> torch.Tensor:
    """``torch._weight_norm(v, g, dim)``, once ``g`` is what torch's own parametrization makes: the shape of
    ``torch.norm_except_dim(v, 2, dim)``, ``v``'s dtype and device."""
    if not isinstance(v, torch.Tensor) or not isinstance(g, torch.Tensor) or type(dim) is not int:
        raise TypeError("_weight_norm(v, g, dim) takes two tensors and an int")
    if not -1 <= dim < max(v.dim(), 1):
        _fail("_weight_norm", f"dim {dim} for a tensor of {v.dim()} dimensions (-1: the whole tensor)")
    if g.dtype != v.dtype or g.device != v.device:
        _fail("_weight_norm", f"g is {g.dtype} on {g.device}, v {v.dtype} on {v.device}: they must agree")
    if v.numel() == 0 and _real(v):  # (its kernel divides by a size of 0: SIGFPE, helper-66)
        _fail("_weight_norm", "v has no elements")
    want = norm_shape(tuple(v.shape), dim)
    if tuple(g.shape) != want:
        _fail("_weight_norm", f"g has shape {tuple(g.shape)}, not {want}, the shape of v's norm over all "
                              f"dimensions but {dim} (torch.norm_except_dim(v, 2, {dim}))")
    return torch._weight_norm(v, g, dim)


def norm_shape(shape: Tuple[int, ...], dim: int) -> Tuple[int, ...]:
    """The shape of ``torch.norm_except_dim(v, 2, dim)`` for a ``v`` of ``shape``: ``()`` for ``dim == -1``."""
    if dim == -1:
        return ()
    return tuple(n if i == dim else 1 for i, n in enumerate(shape))


def _bound(fn: Callable[..., Any], like: Optional[Callable[..., Any]] = None) -> Callable[..., Dict[str, Any]]:
    """``(*args, **kwargs)`` -> ``fn``'s arguments by name, defaults applied (``like``: whose signature)."""
    signature = inspect.signature(like or fn)

    def bind(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    return bind


_ctc_args = _bound(F.ctc_loss)


def ctc_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.ctc_loss`` once every target is a class of ``log_probs`` and the lengths fit."""
    a = _ctc_args(*args, **kwargs)
    log_probs, targets = a["log_probs"], a["targets"]
    if isinstance(log_probs, torch.Tensor) and isinstance(targets, torch.Tensor) and log_probs.dim() in (2, 3) \
            and _real(log_probs, targets, a["input_lengths"], a["target_lengths"]):
        classes, steps = log_probs.size(-1), log_probs.size(0)
        blank = a["blank"]
        if type(blank) is not int or not 0 <= blank < classes:
            _fail("ctc_loss", f"blank must be a class in [0, {classes})")
        _within("ctc_loss", "targets", targets, 0, classes)
        _within("ctc_loss", "input_lengths", a["input_lengths"], 0, steps + 1)
        lengths = _ints(a["target_lengths"])
        room = targets.size(-1) if targets.dim() == 2 else targets.numel()
        _within("ctc_loss", "target_lengths", lengths, 0, room + 1)
        if targets.dim() == 1 and lengths is not None and int(lengths.sum()) > targets.numel():
            _fail("ctc_loss", "target_lengths add up to more than the targets given")
    return F.ctc_loss(*args, **kwargs)


_bag_args = _bound(F.embedding_bag)


def embedding_bag(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.embedding_bag`` once its offsets start bags within the input, in order, as many as its mode needs."""
    a = _bag_args(*args, **kwargs)
    source, offsets = a["input"], a["offsets"]
    if isinstance(source, torch.Tensor) and isinstance(offsets, torch.Tensor) and _real(source, offsets):
        if offsets.dim() != 1 or offsets.numel() < (2 if a["include_last_offset"] else 1):
            _fail("embedding_bag", "offsets must be one-dimensional, with at least "
                                   f"{2 if a['include_last_offset'] else 1} (include_last_offset="
                                   f"{a['include_last_offset']})")
        _within("embedding_bag", "offsets", offsets, 0, source.numel() + 1)
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            _fail("embedding_bag", "offsets must not decrease")
    return F.embedding_bag(*args, **kwargs)


def repeat_interleave(source: Any, repeats: Any = None, dim: Optional[int] = None, *,
                      output_size: Optional[int] = None) -> torch.Tensor:
    """``torch.repeat_interleave`` (and the method) once its repeats are counts whose sum fits, and equals
    ``output_size`` where given. ``repeat_interleave(repeats)`` alone repeats each index that many times."""
    counts = source if repeats is None else repeats
    if isinstance(counts, torch.Tensor) and _real(source, counts):
        t = _ints(counts)
        if t is None:
            _fail("repeat_interleave", "repeats must be integers")
        elif t.numel():
            if int(t.min()) < 0:
                _fail("repeat_interleave", "repeats must not be negative")
            total = _total(source, t, repeats is None, dim)  # (exact: Python's integers, broadcast included)
            if total > 1 << 62:
                _fail("repeat_interleave", "repeats add up to more than 2**62")
            if output_size is not None and output_size != total:
                _fail("repeat_interleave", "output_size must be the sum of the repeats")
            inner = 1 if repeats is None or dim is None else source.numel() // max(source.size(dim), 1)
            _fits("repeat_interleave", total * inner, 8 if repeats is None else source.element_size())
    elif type(counts) is int and counts < 0:
        _fail("repeat_interleave", "repeats must not be negative")
    extra = {} if output_size is None else {"output_size": output_size}
    if repeats is None:
        return torch.repeat_interleave(source, **extra)
    return torch.repeat_interleave(source, repeats, dim, **extra)


def _total(source: Any, counts: torch.Tensor, alone: bool, dim: Optional[int]) -> int:
    """How many elements ``repeat_interleave`` makes along its dimension (repeats broadcast to it)."""
    if alone or counts.numel() != 1:
        return sum(int(n) for n in counts.flatten().tolist())
    along = source.numel() if dim is None else source.size(dim)
    return int(counts.reshape(())) * along


def bincount(source: Any, weights: Any = None, minlength: Any = 0) -> torch.Tensor:
    """``torch.bincount`` (and the method) once its result, as long as the largest value, fits the room."""
    least = _indices(minlength)
    if isinstance(source, torch.Tensor) and _real(source, weights, minlength) and source.dim() == 1 \
            and not source.is_floating_point() and least is not None and len(least) == 1:
        _fits("bincount", max(int(source.max()) + 1 if source.numel() else 0, least[0]), 8)
    return torch.bincount(source, weights, minlength)


def one_hot(source: Any, num_classes: Any = -1) -> torch.Tensor:
    """``F.one_hot`` once its result (a row per element, as wide as the largest value by default) fits the room."""
    classes = _indices(num_classes)
    if isinstance(source, torch.Tensor) and _real(source, num_classes) and source.numel() \
            and not source.is_floating_point() and classes is not None and len(classes) == 1:
        _fits("one_hot", source.numel() * (int(source.max()) + 1 if classes[0] == -1 else classes[0]), 8)
    return F.one_hot(source, num_classes)


def nonzero(source: Any, *, as_tuple: bool = False) -> Any:
    """``torch.nonzero`` (and ``argwhere``, the methods) once its result, a row of indices per nonzero element,
    fits the room (helper-66: of a 4-byte tensor expanded, 1.8 GiB)."""
    if isinstance(source, torch.Tensor) and _real(source):
        _fits("nonzero", int(torch.count_nonzero(source)) * max(source.dim(), 1), 8)
    return torch.nonzero(source, as_tuple=True) if as_tuple else torch.nonzero(source)


def argwhere(source: Any) -> torch.Tensor:
    """``torch.argwhere``: :func:`nonzero`'s result."""
    return nonzero(source)


def masked_select(source: Any, mask: Any) -> torch.Tensor:
    """``torch.masked_select`` (and the method) once its result, an element per selected one, fits the room."""
    if isinstance(source, torch.Tensor) and isinstance(mask, torch.Tensor) and _real(source, mask):
        try:
            picked = int(torch.count_nonzero(mask.expand(torch.broadcast_shapes(source.shape, mask.shape))))
        except RuntimeError:  # (torch says why)
            picked = 0
        _fits("masked_select", picked, source.element_size())
    return torch.masked_select(source, mask)


def unique(source: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.unique`` (and the method) once its result at most (every element, with its inverse and count)
    fits the room (helper-66: of a tensor expanded, 7.9 GiB and a minute)."""
    if isinstance(source, torch.Tensor) and _real(source):
        _fits("unique", source.numel(), source.element_size() + 16)
    return torch.unique(source, *args, **kwargs)


def matrix_power(matrix: Any, n: Any) -> torch.Tensor:
    """``torch.linalg.matrix_power`` (and ``torch.matrix_power``, the method) of a power within +-2**62: of -2**63
    (whose negation overflows) it never returned, nor did its price (helper-66). Checked before anything runs."""
    if type(n) is int and not -(1 << 62) <= n <= 1 << 62:
        _fail("matrix_power", "n must be within +-2**62")
    return torch.linalg.matrix_power(matrix, n)


def eigvals(matrix: Any, **kwargs: Any) -> torch.Tensor:
    """``torch.linalg.eigvals`` of a finite matrix (of NaN or infinite entries, float32 or complex64, it crashed:
    ``linalg.eig`` refuses them itself)."""
    if isinstance(matrix, torch.Tensor) and _real(matrix) and matrix.numel() \
            and not bool(torch.isfinite(matrix).all()):
        _fail("linalg.eigvals", "the matrix must be finite")
    return torch.linalg.eigvals(matrix, **kwargs)


_grid_args = _bound(F.grid_sample)
#: The largest grid coordinate ``grid_sample`` takes (3.4e38, finite, crashed its backward with reflection padding:
#: helper-66); a coordinate is -1 to 1 across the input.
GRID_BOUND = 1e6


def grid_sample(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.grid_sample`` once its grid is finite (its backward crashed on NaN or infinite points)."""
    grid = _grid_args(*args, **kwargs)["grid"]
    if isinstance(grid, torch.Tensor) and _real(grid) and grid.is_floating_point() and grid.numel() \
            and not bool((torch.isfinite(grid) & (grid.abs() <= GRID_BOUND)).all()):
        _fail("grid_sample", f"the grid must be finite, within +-{GRID_BOUND:g} (it is in [-1, 1] for the input)")
    return F.grid_sample(*args, **kwargs)


def pdist(source: Any, p: float = 2) -> torch.Tensor:
    """``F.pdist`` of at least one row (its backward of none crashed)."""
    if isinstance(source, torch.Tensor) and _real(source) and source.dim() == 2 and source.size(0) == 0:
        _fail("pdist", "the input needs at least one row")
    return F.pdist(source, p)


_pad_args = _bound(F.pad)


def pad(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.pad``, in ``circular`` mode once what its negative pads leave can be wrapped as its positive pads ask
    (else torch left the output unwritten: uninitialised memory)."""
    a = _pad_args(*args, **kwargs)
    source, sizes = a["input"], _indices(a["pad"])
    if a["mode"] == "circular" and isinstance(source, torch.Tensor) and _real(source) and sizes is not None:
        for i, (before, after) in enumerate(zip(sizes[::2], sizes[1::2])):
            if i >= source.dim():
                break
            left = source.size(-1 - i) + min(before, 0) + min(after, 0)
            if left <= 0 or max(before, after) > left:
                _fail("pad", f"circular pads {before, after} of dimension {-1 - i} wrap around what is left of it "
                             f"({max(left, 0)}) more than once")
    return F.pad(*args, **kwargs)


def _fractional(fn: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bound(fn, like)

    def checked(*args: Any, **kwargs: Any) -> Any:
        """``F.fractional_max_pool2d/3d`` once its kernel is at least 1 (else its indices pointed past the
        input)."""
        kernel = _indices(bind(*args, **kwargs)["kernel_size"])
        if kernel is not None and any(k < 1 for k in kernel):
            _fail(like.__name__.replace("_with_indices", ""), "kernel_size must be >= 1")
        return fn(*args, **kwargs)

    return checked


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
    if isinstance(x, torch.Tensor) and x.dim() == 0 and not x.is_floating_point() and not x.is_complex() \
            and x.dtype is not torch.bool and _real(x):
        return not -limit <= int(x) <= limit
    return False


def numbers_in_tensors(args: Any, kwargs: Any) -> bool:
    """Whether an op's arguments hold a one-element integer tensor, which torch reads as a number where it takes an
    ``int``: a size no price can see (``x.new_zeros(tensor(2**30))`` ran unpriced: 1.8 GiB from a few bytes)."""
    return any(isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point() and not t.is_complex()
               and t.dtype is not torch.bool for t in (*_leaves(args), *_leaves(kwargs)))


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
                        _fail(name, f"{arg.name}={value!r} is beyond any size, index or count here "
                                    f"({self.limit:,}: the bytes the client may hold)")
        return func(*args, **kwargs)


#: The ops whose result's size is read from values: run inside :func:`room`.
VALUE_SIZED = frozenset({repeat_interleave, bincount, one_hot, nonzero, argwhere, masked_select, unique})


fractional_max_pool2d = _fractional(F.fractional_max_pool2d, F.fractional_max_pool2d_with_indices)
fractional_max_pool3d = _fractional(F.fractional_max_pool3d, F.fractional_max_pool3d_with_indices)

#: The torch function each checked one stands for: tables keyed by torch's functions (whether an op writes into
#: its arguments, by its schema; which ops count nonzero elements) look through a checked one (:func:`unwrapped`).
STANDS_FOR: Dict[Callable[..., Any], Callable[..., Any]] = {
    weight_norm: torch._weight_norm, ctc_loss: F.ctc_loss, embedding_bag: F.embedding_bag,
    repeat_interleave: torch.repeat_interleave, bincount: torch.bincount, one_hot: F.one_hot, nonzero: torch.nonzero,
    argwhere: torch.argwhere, masked_select: torch.masked_select, unique: torch.unique, eigvals: torch.linalg.eigvals,
    matrix_power: torch.matrix_power, grid_sample: F.grid_sample, pdist: F.pdist, pad: F.pad,
    fractional_max_pool2d: F.fractional_max_pool2d, fractional_max_pool3d: F.fractional_max_pool3d}


def unwrapped(fn: Any) -> Any:
    """The torch function ``fn`` stands for, if it is a checked one; else ``fn``."""
    try:
        return STANDS_FOR.get(fn, fn)
    except TypeError:  # unhashable
        return fn


def ops() -> Dict[str, Callable[..., Any]]:
    """The checked functions, by the names clients send (replacing torch's own on the allowlist)."""
    return {"torch._weight_norm": weight_norm,
            "torch.nn.functional.ctc_loss": ctc_loss,
            "torch.nn.functional.embedding_bag": embedding_bag,
            "torch.repeat_interleave": repeat_interleave, "Tensor.repeat_interleave": repeat_interleave,
            "torch.bincount": bincount, "Tensor.bincount": bincount, "torch.nn.functional.one_hot": one_hot,
            "torch.nonzero": nonzero, "Tensor.nonzero": nonzero, "torch.argwhere": argwhere,
            "Tensor.argwhere": argwhere, "torch.masked_select": masked_select, "Tensor.masked_select": masked_select,
            "torch.unique": unique, "Tensor.unique": unique, "torch.linalg.eigvals": eigvals,
            "torch.linalg.matrix_power": matrix_power, "torch.matrix_power": matrix_power,
            "Tensor.matrix_power": matrix_power,
            "torch.nn.functional.grid_sample": grid_sample,
            "torch.nn.functional.pdist": pdist,
            "torch.nn.functional.pad": pad,
            "torch.nn.functional.fractional_max_pool2d": fractional_max_pool2d,
            "torch.nn.functional.fractional_max_pool3d": fractional_max_pool3d}
