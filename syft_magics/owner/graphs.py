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

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, cast

import torch

__all__ = ["Graph", "Recorder", "builds_graph", "is_leaf_input", "keep_with_nodes"]


def is_leaf_input(value: Any) -> bool:
    """Whether an op's graph may point to ``value`` itself (a leaf that requires grad, or a model's parameters),
    through the node that accumulates its gradient: kept alive by the graph, saved or not."""
    return isinstance(value, torch.nn.Module) or isinstance(value, torch.Tensor) and value.requires_grad \
        and value.grad_fn is None


def keep_with_nodes(tensors: Iterable[Any], graph: "Graph") -> bool:
    """Make ``graph`` live as long as the autograd nodes an op left on ``tensors`` (its results, and the
    tensors it wrote into: ``z[i] = leaf`` returns nothing), and on the base of each that is a view (an
    in-place write through a view gives its base the node: ``CopySlices``); False if there are none."""
    kept = False
    for t in tensors:
        if isinstance(t, torch.Tensor):
            base = t._base if t._is_view() else None
            for node in (t.grad_fn, base.grad_fn if base is not None else None):
                if node is not None:
                    cast(Dict[str, Any], node.metadata).setdefault(_KEY, []).append(graph)
                    kept = True
    return kept


_KEY = "syft_magics.graph"


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
    are stored), and saved by torch with a reference to :attr:`graph`.

    Saved detached, as torch itself keeps a saved tensor: a tensor saved as itself makes a reference cycle
    through its ``grad_fn`` that no garbage collection frees, if it is the node's own result or gets a
    ``grad_fn`` later (``y = x * w; x.add_(y)``: the memory outlived its session, found by a probe); torch
    gives a saved result back its ``grad_fn`` when the backward unpacks it."""

    def __init__(self) -> None:
        self.saved: List[torch.Tensor] = []
        self.graph = graph = Graph()
        keep = self.saved.append

        def pack(t: torch.Tensor) -> Tuple[Graph, torch.Tensor]:
            d = t.detach()
            keep(d)
            return graph, d

        super().__init__(pack, _unpack)


def _unpack(packed: Tuple[Graph, torch.Tensor]) -> torch.Tensor:
    return packed[1]
