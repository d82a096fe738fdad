"""What an op will cost before it runs: time, and bytes it allocates, estimated from its inputs' shapes.

A worker must know which ops are cheap (run at once, on the serving thread) and which are heavy
(run on the client's lane, :mod:`~syft_magics.owner.lanes`), and refuse up front an op over the
client's time budget or byte quota (:mod:`~syft_magics.owner.quotas`): ``matrix_power(m, 2**40)``
is 84 bytes on the wire and hours of work; ``zeros(2**40)`` is a few bytes and 4 TiB.

The estimate runs the op on fake tensors (torch's ``FakeTensorMode``: shapes, no data, no memory)
under a dispatch mode that sums, over the ATen calls the op decomposes into, the FLOPs of the matrix
products and convolutions (``torch.utils.flop_counter``), an n^3 term for dense linear algebra, and
the bytes every call reads and writes; seconds come from rates measured once on this machine. A fake
run costs about a millisecond, so estimates are cached by the op's *signature* (its name, the shape
and dtype of every tensor, every other argument's value): the common small op, repeated with the same
shapes, costs one dictionary look-up. An op that took longer than estimated raises its cached
estimate to what it took (an estimate is a guide, a budget overrun is reported, not prevented).
"""
from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only

#: Estimated seconds at or under which an op runs on the serving thread (if its lane is idle).
INLINE_SECONDS = 0.002
#: How much longer than twice its estimate an op may take before it counts as slow (see :func:`observe`).
SLOW_SECONDS = 5 * INLINE_SECONDS
#: Signatures whose estimate is kept.
CACHE_SIZE = 4096


@dataclass
class Cost:
    """An op's estimate: ``seconds`` on this machine, ``out_bytes`` of new tensors it returns,
    ``peak_bytes`` of its largest single allocation (its results or an intermediate)."""

    seconds: float
    out_bytes: int
    peak_bytes: int
    flops: float = 0.0
    moved: int = 0
    #: consecutive runs much slower than estimated (see :func:`observe`)
    slow: int = 0
    #: False: this signature cannot be faked (remembered so it is not tried again); the op runs unpriced
    priced: bool = True


#: What is remembered of a signature that cannot be priced.
UNPRICED = Cost(0.0, 0, 0, priced=False)


class Unestimable(Exception):
    """The op cannot be run on fake tensors (an argument that is no tensor, a data-dependent shape...)."""


# -- signatures -------------------------------------------------------------------------------------
_PLAIN = frozenset({str, complex, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})


def _num(value: Any, acc: List[int]) -> Any:
    """A number's key: its sign and binary magnitude, not its value (``x + i`` for a thousand ``i`` is one
    signature); each one above 1 doubles the cached estimate (:func:`scaled`), so the estimate still
    bounds every value of its bucket (a size within it is at most twice the one priced)."""
    if type(value) is bool:
        return (bool, value)
    if type(value) is int:
        if -2 <= value <= 2:
            return (int, value)
        acc[0] += 1
        return (int, value < 0, abs(value).bit_length())
    if value != value or value in (math.inf, -math.inf) or value == 0:
        return (float, repr(value))
    acc[0] += 1
    return (float, value < 0, math.frexp(value)[1])


def _sig(value: Any, acc: List[int]) -> Any:
    t = type(value)  # exact types first: this runs for every op the serving thread handles
    if t is torch.Tensor:
        return (value.shape, value.dtype)
    if t is int or t is float or t is bool:
        return _num(value, acc)
    if t in _PLAIN:
        if t is str:  # (a key holds it: counted by its length, as a list by its items)
            _count(acc, len(value) // 4)
        return (t, value)
    if t is tuple or t is list or t is torch.Size:
        _count(acc, len(value))
        return (t, tuple([_sig(v, acc) for v in value]))
    if isinstance(value, torch.Tensor):  # parameters
        return (value.shape, value.dtype)
    if t is slice:
        return (slice, _sig(value.start, acc), _sig(value.stop, acc), _sig(value.step, acc))
    if value is Ellipsis:
        return Ellipsis
    if t is dict:
        _count(acc, len(value))
        return (dict, tuple([(_sig(k, acc), _sig(v, acc)) for k, v in value.items()]))
    if isinstance(value, _OBJECTS):
        return (object, serial(value))
    raise Unestimable(t.__name__)


#: The most items an op's arguments may hold in lists, tuples and maps and still be keyed: a key holds a small
#: tuple per item, about 95x the message's size, and the cache kept them (three 2 MB messages: 570 MB, charged
#: nothing, after the client and the worker had gone; a probe). Beyond, the op runs unpriced, on its lane.
MAX_KEY_ITEMS = 1024


def _count(acc: List[int], n: int) -> None:
    acc[1] += n
    if acc[1] > MAX_KEY_ITEMS:
        raise Unestimable(f"arguments of more than {MAX_KEY_ITEMS} items are not keyed")


#: Objects built on a worker that ops take (models, optimizers, schedulers): keyed by a serial number,
#: never by ``id()``, which a new object may reuse once the old one is freed (with a different cost).
_OBJECTS = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
_serials: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_next_serial = itertools.count()


def serial(obj: Any) -> int:
    """A number for a model, an optimizer or a scheduler, unique for the life of the process (a key that
    does not keep it alive)."""
    n = _serials.get(obj)
    if n is None:
        n = _serials[obj] = next(_next_serial)
    return n


def signature(name: str, args: Any, kwargs: Dict[str, Any], grad: bool) -> Optional[Tuple[Any, ...]]:
    """A hashable key for everything an op's cost depends on (numbers by magnitude, a model or an
    optimizer by which one it is; its last item is how many numbers were bucketed), or None if it holds
    something else that cannot be keyed (such ops always run on the lane)."""
    try:
        acc = [0, 0]  # numbers bucketed, items in lists, tuples and maps
        key: List[Any] = [name, grad]
        for value in args:  # the usual arguments first (the serving thread's hot path)
            key.append((value.shape, value.dtype) if type(value) is torch.Tensor else _sig(value, acc))
        if kwargs:
            key.append(_sig(kwargs, acc))
        key.append(acc[0])
        return tuple(key)
    except Unestimable:
        return None


def small(args: Any) -> bool:
    """Whether an op's tensor arguments are small (at most 65,536 elements in all): before estimates are
    ready (:func:`warm`), such an op runs at once rather than pay a lane's thread per op."""
    n = 0
    for value in args:
        if isinstance(value, torch.Tensor):
            n += value.numel()
        elif isinstance(value, (list, tuple)):
            n += sum(v.numel() for v in value if isinstance(v, torch.Tensor))
    return n <= 1 << 16


def scaled(cost: Cost, key: Optional[Tuple[Any, ...]]) -> Cost:
    """``cost`` made to bound every op of its signature: doubled per number keyed by magnitude."""
    k = min(int(key[-1]), 16) if key else 0
    if k:
        f = 2 ** k
        cost.seconds, cost.out_bytes, cost.peak_bytes = cost.seconds * f, cost.out_bytes * f, cost.peak_bytes * f
    return cost


# -- the cache --------------------------------------------------------------------------------------
_cache: "OrderedDict[Tuple[Any, ...], Cost]" = OrderedDict()
_cache_lock = threading.Lock()


def cached(key: Optional[Tuple[Any, ...]]) -> Optional[Cost]:
    """The cached estimate of an op's signature (the serving thread's fast path)."""
    return _cache.get(key) if key is not None else None


def forget() -> None:
    """Drop every cached estimate (they are re-learnt: the next op of each signature is priced again)."""
    with _cache_lock:
        _cache.clear()


def remember(key: Optional[Tuple[Any, ...]], cost: Cost) -> None:
    if key is None:
        return
    with _cache_lock:
        _cache[key] = cost
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def observe(key: Optional[Tuple[Any, ...]], cost: Optional[Cost], seconds: float) -> None:
    """An op with this signature took ``seconds``: an estimate that was much too low is raised to it
    once it happened twice in a row (one slow run may be a busy machine's scheduling, not the op)."""
    if cost is None:
        return
    if seconds <= 2 * cost.seconds + SLOW_SECONDS:
        cost.slow = 0
        return
    cost.slow += 1
    if cost.slow >= 2:
        cost.seconds = seconds
        remember(key, cost)


# -- estimating -------------------------------------------------------------------------------------
#: Dense linear algebra: ATen names with one of these words (split at ``_``: ``linalg_inv_ex``, ``_linalg_det``;
#: not ``detach``, ``relu_`` or ``sqrt``, which a substring test priced as n**3), or ``matrix_exp``; about
#: ``CUBIC_FACTOR * batch * n**3``.
_CUBIC = frozenset({"cholesky", "det", "slogdet", "logdet", "eig", "eigh", "eigvals", "eigvalsh", "svd", "svdvals",
                    "inv", "inverse", "solve", "lstsq", "qr", "geqrf", "orgqr", "ormqr", "lu", "ldl", "householder"})


def _cubic(name: str) -> bool:
    """Whether the ATen op ``name`` is dense linear algebra (see :data:`_CUBIC`)."""
    return not _CUBIC.isdisjoint(name.split("_")) or "matrix_exp" in name


CUBIC_FACTOR = 10
#: Sorts and selections: ``n log2 n`` element moves.
_NLOGN = ("sort", "topk", "kthvalue", "median", "mode", "unique", "fft")


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class WorkCounter(TorchDispatchMode):
    """Sums the work of every ATen call made under it (on fake tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0.0
        self.moved = 0
        self.peak = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls += 1
        packet = func._overloadpacket
        name = packet.__name__
        count = flop_registry.get(packet)
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if count is not None:
            flops = float(count(*args, **kwargs, out_val=out))
            scale = 1.0 if ins and ins[0].is_floating_point() else 16.0  # integer products skip BLAS
            self.flops += flops * scale * max(1, ins[0].element_size() // 4 if ins else 1)
        elif ins and ins[0].dim() >= 2 and _cubic(name):
            a = ins[0]
            n = max(a.shape[-1], a.shape[-2])
            self.flops += CUBIC_FACTOR * (a.numel() // max(1, a.shape[-1] * a.shape[-2])) * float(n) ** 3
        # a view (slice, reshape, transpose) or a query (prim.device) moves no data
        view = getattr(func, "is_view", False)
        moved = 0 if view or not outs else \
            sum(_bytes(t) for t in ins) + sum(_bytes(t) for t in outs)
        if ins and any(c in name for c in _NLOGN):
            moved = int(moved * max(1.0, math.log2(max(2, ins[0].numel()))))
        self.moved += moved
        if not view:
            for t in outs:
                self.peak = max(self.peak, _bytes(t))
        return out


def fakes(mode: Any, tree: Any) -> Any:
    """``tree`` with its tensors made fake in ``mode``; a tensor on the 'meta' device stands for one whose shape
    is withheld (:meth:`.provenance.Disclosure.standins`: the same dtype, its public bound for a shape), on the
    device it names."""
    def fake(x: torch.Tensor) -> torch.Tensor:
        if not x.is_meta:
            return mode.from_tensor(x)
        with mode:
            f = torch.empty(x.shape, dtype=x.dtype, device=getattr(x, "standing_for", "cpu"))
            return f.requires_grad_(True) if x.requires_grad else f

    return tree_map_only(torch.Tensor, fake, tree)


def estimate(fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], grad: bool = True) -> Cost:
    """Run ``fn`` on fake copies of its arguments and price what it did; raises :class:`Unestimable`."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if any(isinstance(a, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
           for a in tree_flatten((args, kwargs))[0]):  # (fake tensors would not keep it from changing its state)
        raise Unestimable("an op over a live optimizer is not run to be priced")
    mode = FakeTensorMode()
    try:
        fargs, fkwargs = fakes(mode, (args, kwargs))
        counter = WorkCounter()
        with mode, counter, (torch.enable_grad() if grad else torch.no_grad()):
            result = fn(*fargs, **fkwargs)
    except Exception as exc:  # data-dependent shapes, unsupported ops, bad arguments
        raise Unestimable(f"{type(exc).__name__}: {exc}") from None
    inputs = {id(t) for t in tree_flatten((fargs, fkwargs))[0] if isinstance(t, torch.Tensor)}
    out_bytes = sum(_bytes(t) for t in tree_flatten(result)[0]
                    if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view())
    flop_rate, byte_rate = rates()
    seconds = counter.flops / flop_rate + counter.moved / byte_rate + counter.calls * 2e-6
    return Cost(seconds, out_bytes, max(out_bytes, counter.peak), counter.flops, counter.moved)


# -- this machine's rates ---------------------------------------------------------------------------
#: Floors of the measured rates (a laptop core does better): FLOP/s and bytes/s.
MIN_FLOPS = 10e9
MIN_BYTES_PER_S = 2e9
_rates: Optional[Tuple[float, float]] = None
_rates_lock = threading.Lock()


def rates() -> Tuple[float, float]:
    """(FLOP/s of a float32 matrix product, bytes/s of an elementwise op) here, measured once (~50 ms),
    never taken below :data:`MIN_FLOPS` and :data:`MIN_BYTES_PER_S` (measured on a busy machine, the
    rates would make the budget refuse ops that fit: an estimate errs towards running the op)."""
    global _rates
    with _rates_lock:
        if _rates is None:
            # (not torch.rand: the timings need no random values, and the owner's seeded draws must stay theirs)
            a = torch.full((384, 384), 0.5)
            x, y = torch.full((1 << 21,), 0.25), torch.full((1 << 21,), 0.75)
            best_mm = best_add = math.inf
            for _ in range(4):
                t0 = time.perf_counter()
                torch.mm(a, a)
                t1 = time.perf_counter()
                torch.add(x, y)
                t2 = time.perf_counter()
                best_mm, best_add = min(best_mm, t1 - t0), min(best_add, t2 - t1)
            _rates = (max(MIN_FLOPS, 2 * 384 ** 3 / max(best_mm, 1e-7)),
                      max(MIN_BYTES_PER_S, 3 * 4 * (1 << 21) / max(best_add, 1e-7)))
        return _rates


_warming = threading.Lock()
_warm = threading.Event()


def wait_warm(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for :func:`warm_up` to finish; whether estimates are ready."""
    return _warm.wait(timeout) if _warming.locked() else True


def warm() -> bool:
    """Whether estimates are ready: :func:`warm_up` finished (or was never started in this process).
    Until then an op runs unpriced on its lane rather than wait seconds for torch's fake-tensor stack."""
    return _warm.is_set() or not _warming.locked()


def warm_up() -> Optional[threading.Thread]:
    """Measure the rates and load the fake-tensor machinery once, in a background thread (returned; None
    if one ran already): seconds on a busy machine, which would otherwise delay a client's first heavy op."""
    if not _warming.acquire(blocking=False):
        return None

    def run() -> None:
        try:
            rates()
            estimate(torch.add, (torch.zeros(2), torch.zeros(2)), {})
        except Unestimable:
            pass
        finally:
            _warm.set()

    # not a daemon: a daemon thread still importing when the interpreter exits crashes it
    thread = threading.Thread(target=run, name="torch-cost-warm-up", daemon=False)
    thread.start()
    return thread
