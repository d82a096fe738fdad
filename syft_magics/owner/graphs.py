"""The memory an autograd graph keeps alive, charged to the client whose ops built it.

A result that requires grad keeps, through its ``grad_fn``, every tensor its graph saved for the
backward: inputs, the intermediates of a model's forward, results. A client may drop its pointers to
all of those and keep only the last result: ``for _ in range(n): z = z * 1.0 + z.exp()`` held 600 MB
under a 16 MB quota before this module, the quota counting only the objects the client pointed to.

So an op that can build a graph (grad enabled, and an input that requires grad or a model) runs under
torch's ``saved_tensors_hooks`` (:class:`Recorder`), which see each tensor autograd saves, and the op's
client is charged for the memory blocks of those tensors while torch keeps any of them
(:meth:`.ObjectStore.keep_saved`: each block once, however many of the client's objects and graphs hold
it): until the graph nodes that saved them are gone, or a backward without ``retain_graph`` freed them.
Nothing is guessed from the op or the graph's shape. A graph also points to the leaves it differentiates
(torch's ``AccumulateGrad`` nodes keep the tensors that require grad, a model's parameters, and after a
backward their ``.grad``), saved or not: ``y = x.sum()`` saves nothing yet keeps ``x``. So the op's leaf
inputs stay charged while its result's nodes live (:func:`keep_with_nodes`), after their pointers are
freed.

What this does not count: ``.grad`` tensors (one per leaf, no larger than the leaf, which stays charged
while a graph keeps it: requires_grad_ is refused on a tensor with more elements than memory), and the
saved tensors of a graph the worker did not build (an owner's shared tensor with a ``grad_fn``).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, cast

import torch

from ..wire.results import autograd_leaf
from .blocks import storage_key

__all__ = ["MAX_DEPTH", "Graph", "Recorder", "builds_graph", "depth_of", "has_graph", "is_leaf_input",
           "keep_with_nodes"]


#: The deepest autograd graph a client may build (ops on its longest path, a model's forward counting its
#: layers): a deep enough chain of nodes that Python has seen (``grad_fn`` read, as :func:`keep_with_nodes`
#: does) is freed by recursion, which overflowed the serving thread's stack and killed the worker process (a
#: probe: 50,000 ``b = b * w``, or ``total.add_(1.0)``, then ``del``; 20,000 passed).
MAX_DEPTH = 10_000


#: The attribute, on a tensor written in place through views, of its graph's depth: an in-place op on
#: ``b[0:1]`` deepens ``b``'s graph (``CopySlices``), and ``b``'s stored entry is not among the op's inputs (a
#: probe: a fresh view each time, 60,000 writes, then ``del b`` crashed the worker past the depth cap). On the
#: tensor itself, so it lives as long as the tensor (a mapping keyed by tensors would compare them with ``==``).
_BASE_DEPTH = "_syft_magics_depth"
#: Where in a graph node's ``metadata`` the :class:`Graph` objects that live as long as the node are kept.
_KEY = "syft_magics.graph"


#: The number of modules of each model a client used (walking them on every forward cost a training step ~10 us;
#: a worker's models are built from its allowlist and no op adds modules to them).
_LAYERS: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()


def _layers(model: torch.nn.Module) -> int:
    n = _LAYERS.get(model)
    if n is None:
        n = _LAYERS[model] = sum(1 for _ in model.modules())
    return n


def depth_of(used: Iterable[Any], check: bool = True) -> int:
    """The depth of the graph an op over the stored objects ``used`` makes: one more than its deepest input's
    (a view's: its base's too), plus a model's layers; ``check``: :class:`ValueError` (before the op runs) if
    that is over :data:`MAX_DEPTH`."""
    depth = 0
    for e in used:
        v = e.tensor
        if isinstance(v, torch.Tensor):
            d = max(e.depth, getattr(v._base if v._is_view() else v, _BASE_DEPTH, 0))
        elif isinstance(v, torch.nn.Module):
            d = e.depth + _layers(v)
        else:
            d = e.depth
        depth = max(depth, d)
    depth += 1
    if check and depth > MAX_DEPTH:
        raise ValueError(f"this op would make an autograd graph {depth:,} ops deep, over the worker's "
                         f"{MAX_DEPTH:,}: call .backward() on it, or .detach() or .item() what you keep "
                         "(e.g. a running loss), before going on")
    return depth


def written_through(t: torch.Tensor, depth: int) -> None:
    """Record that an in-place write deepened the graph of ``t``'s base to ``depth``, if ``t`` is a view."""
    base = t._base if t._is_view() else None
    if base is not None:
        setattr(base, _BASE_DEPTH, max(getattr(base, _BASE_DEPTH, 0), depth))


def has_graph(t: Any) -> bool:
    """Whether ``t`` is a tensor with an autograd node behind it (without reading ``grad_fn``, which gives
    the node a Python object: see :data:`MAX_DEPTH`)."""
    return isinstance(t, torch.Tensor) and t.requires_grad and autograd_leaf(t) is False


def is_leaf_input(value: Any) -> bool:
    """Whether an op's graph may point to ``value`` itself (a leaf that requires grad, or a model's parameters),
    through the node that accumulates its gradient: kept alive by the graph, saved or not."""
    return isinstance(value, torch.nn.Module) or isinstance(value, torch.Tensor) and value.requires_grad \
        and autograd_leaf(value) is True


def keep_with_nodes(results: Iterable[Any], written: Iterable[Any], graph: "Graph") -> bool:
    """Make ``graph`` live as long as the autograd nodes an op left on its ``results`` and on the tensors it
    wrote into (``z[i] = leaf`` returns nothing), and on the base of each of those that is a view (an in-place
    write through a view gives its base the node: ``CopySlices``); False if there are none."""
    nodes = [t.grad_fn for t in results if has_graph(t)]
    for t in written:
        if has_graph(t):
            nodes.append(t.grad_fn)
            base = t._base if t._is_view() else None
            if base is not None and base.grad_fn is not None:
                nodes.append(base.grad_fn)
    for node in nodes:
        cast(Dict[str, Any], node.metadata).setdefault(_KEY, []).append(graph)
    return bool(nodes)


def builds_graph(entries: Iterable[Any]) -> bool:
    """Whether an op over ``entries`` (the stored objects it uses), with grad asked for, may save tensors for a
    backward: grad is on here and one of them requires grad or is a model (whose parameters may). Runs for
    every op: the common case (no tensor that requires grad) costs a loop over its inputs."""
    for e in entries:
        v = e.tensor
        if isinstance(v, torch.Tensor):
            if v.requires_grad:
                return torch.is_grad_enabled()
        elif isinstance(v, torch.nn.Module):
            return torch.is_grad_enabled()
    return False


class Graph:
    """What one op's autograd graph saved: torch keeps each saved tensor with a reference to this object, so
    it is freed (``__del__``) when torch has freed the last of them (the graph's nodes dropped, or a backward
    without ``retain_graph`` run through them); ``on_freed`` is then called with :attr:`key` (any thread, at
    any point of the code: it should only queue)."""

    __slots__ = ("key", "on_freed")

    def __init__(self) -> None:
        self.key = 0
        self.on_freed: Optional[Callable[[int], None]] = None

    def __del__(self) -> None:
        if self.on_freed is not None:
            self.on_freed(self.key)


class Recorder(torch.autograd.graph.saved_tensors_hooks):
    """While active (``with``), each tensor autograd saves is kept in :attr:`saved` too (until the op's results
    are stored), and saved by torch with a reference to :attr:`graph` and its version.

    Saved detached, as torch itself keeps a saved tensor: a tensor saved as itself makes a reference cycle
    through its ``grad_fn`` that no garbage collection frees, if it is the node's own result or gets a
    ``grad_fn`` later (``y = x * w; x.add_(y)``: the memory outlived its session, found by a probe); torch
    gives a saved result back its ``grad_fn`` when the backward unpacks it.

    With a hook, torch leaves to it the check that a saved tensor was not written since it was saved
    (:func:`_unpack` makes it, with torch's own words): without it, ``b.copy_(x[i])`` into a tensor the client's
    own loss saved made that loss's backward put ``#X`` into the client's own, untainted ``a.grad`` (helper-70).
    The running statistics a training-mode batch norm writes are the one write the worker itself makes after an
    op (it moves their version counters, where torch moves none: see ``.side_writes``): :meth:`rebase` takes their
    versions then as the saved ones, before any other op can write."""

    def __init__(self) -> None:
        self.saved: List[torch.Tensor] = []
        self.graph = graph = Graph()
        #: each saved tensor as torch keeps it: ``[graph, tensor, its version when saved]``
        self.packs: List[List[Any]] = []
        keep, packs = self.saved.append, self.packs.append

        def pack(t: torch.Tensor) -> List[Any]:
            d = t.detach()  # (shares t's version counter)
            keep(d)
            packed = [graph, d, d._version]
            packs(packed)
            return packed

        super().__init__(pack, _unpack)

    def rebase(self, written: Iterable[torch.Tensor]) -> None:
        """Take the versions the worker gave ``written`` after the op as those saved (see above)."""
        keys = {storage_key(t) for t in written}
        for packed in self.packs:
            if storage_key(packed[1]) in keys:
                packed[2] = packed[1]._version


def _unpack(packed: List[Any]) -> torch.Tensor:
    saved = packed[1]
    if saved._version != packed[2]:
        raise RuntimeError(f"one of the variables needed for gradient computation has been modified by an inplace "
                           f"operation: [{torch.typename(saved)} {list(saved.shape)}] is at version "
                           f"{saved._version}; expected version {packed[2]} instead")
    return saved
