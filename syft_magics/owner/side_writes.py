"""What an op over the owner's data writes besides the tensors it names.

:func:`.writes.changed` sees an op's writes through the version counters of the objects it names. An op over
the owner's data may write elsewhere too, and each such write must reach every client object that holds the
memory written: its approval is voided (``releases.stamp`` binds version counters) and it now derives from
what the op read (its error text and data-dependent shapes are withheld). helper-37's probe read all of
``#X``, with no request, through each of these:

* **tensors inside a model or an optimizer the op uses**: a step writes the optimizer's parameters, a
  forward a module's buffers; a client's ``w.detach()`` or its pointer to a buffer holds that memory but was
  never named;
* **gradients**: a backward (or ``ptr.grad = g``) writes the gradient of every leaf it reaches, in place once
  one exists; a pointer to that gradient (``w.grad``) was never named;
* **writes torch makes without moving a version counter**: the running statistics of batch norm and
  instance norm in training mode (``F.batch_norm(x, rm, rv, training=True)``, the modules' buffers; torch's
  schemas do not mark them written either: see :mod:`.writes`). They are made to move it here.

A :class:`Watch` is taken before such an op runs, only when its inputs, or what it reads through them (the
gradients an optimizer's step reads: :func:`read_through`), derive from the owner's data (an op over a client's own
objects alone writes nothing of the owner's) and the policy withholds anything; after it (also when it fails)
:meth:`Watch.written` names the memory written, and the store finds every object holding it.
"""
from __future__ import annotations

import inspect
import itertools
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Set, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from . import autograd
from .blocks import storage_key, version_of
from .models import ModelWeights, module_call, modules_of

if TYPE_CHECKING:
    from .provenance import Disclosure, Provenance
    from .store import Entry, ObjectStore

#: Arguments and buffers that ops write in training mode without a write annotation (nor a version counter).
RUNNING_STATS = ("running_mean", "running_var")
#: The arguments that say whether they are written: batch norm's ``training``, instance norm's ``use_input_stats``.
_TRAINING = ("training", "use_input_stats")

#: Ops that run a model's forward (its modules in training mode write their running statistics).
RUNS_MODULES = frozenset({module_call})


class Watch:
    """The tensors an op may write without naming them, with their version counters before it runs."""

    __slots__ = ("prov", "tensors", "forced", "grads", "forward", "weights_written", "regraded")

    def __init__(self, prov: "Provenance", fn: Any, args: Any, kwargs: Dict[str, Any], used: List["Entry"],
                 session_objects: Optional[List["Entry"]] = None) -> None:
        #: what the op's inputs derive from (what it writes derives from it too)
        self.prov = prov
        tensors: Dict[int, torch.Tensor] = {}
        for entry in used:
            if not isinstance(entry.tensor, torch.Tensor):
                for t in _inside(entry.tensor):
                    tensors.setdefault(id(t), t)
        #: for an op that writes gradients: what gradient each object of its client holds now
        self.grads: List[Tuple["Entry", Any]] = []
        if session_objects is not None:
            for entry in session_objects:
                t = entry.tensor
                if isinstance(t, torch.Tensor):
                    # (a backward adds into gradients in place: a pointer to one, or a client's tensor torch adopted
                    # as one, is written even when the leaf's own pointer is gone, its graph holding it: helper-42)
                    tensors.setdefault(id(t), t)
                    if not _may_hold_grad(t):
                        continue  # (a backward gives it no gradient: most of a training loop's objects)
                grads = autograd.grads_of(t)
                self.grads.append((entry, autograd.grads_stamp(grads)))
                for g in grads:
                    tensors.setdefault(id(g), g)
        self.tensors = [(t, version_of(t)) for t in tensors.values()]
        #: the running statistics the op writes in training mode (no version counter of torch moves for them)
        self.forced = [*running_stats_written(fn, args, kwargs),
                       *(t for e in used if fn in RUNS_MODULES for t in _module_stats(e.tensor))]
        self.forward = fn in RUNS_MODULES
        #: after a model's forward: the floating-point tensors inside it the forward wrote besides its running
        #: statistics (an embedding's ``max_norm`` renormalises rows of its weight in place: helper-58)
        self.weights_written: List[torch.Tensor] = []
        #: after it: the objects whose gradient it wrote
        self.regraded: List["Entry"] = []

    def written(self) -> Set[int]:
        """After the op: the storage keys it wrote (the running statistics' version counters are moved now).
        The objects whose gradient it wrote (a tensor's ``.grad``, a model's or an optimizer's parameters') now
        derive from what it read: the gradient itself, what an optimizer step computes from it (a probe read
        ``#X`` back through ``t.grad`` of ``(t * X).sum().backward()``, by shapes, with no approval)."""
        keys: Set[int] = set()
        for t in self.forced:
            torch.autograd.graph.increment_version(t)
            keys.add(storage_key(t))
        forced = {id(t) for t in self.forced} if self.forward else ()
        for t, version in self.tensors:
            if version_of(t) != version:
                keys.add(storage_key(t))
                if self.forward and id(t) not in forced and t.is_floating_point():  # (not a batch count)
                    self.weights_written.append(t)
        keys.discard(0)
        for entry, held in self.grads:
            if autograd.grads_stamp(autograd.grads_of(entry.tensor)) != held:
                entry.provenance = entry.provenance.merged(self.prov)
                self.regraded.append(entry)
        return keys


def watch(disclosure: "Disclosure", session: bytes, fn: Any, args: Any, kwargs: Any,
          used: List["Entry"]) -> Optional[Watch]:
    """Before an op that may write more than it names, over the owner's data: what it may write, as it is now;
    for an op that writes gradients (a backward, ``ptr.grad = g``), every tensor of its client and every gradient
    its objects hold too. None when there is nothing to withhold (its inputs are the client's own, or the policy is
    open)."""
    if not disclosure.guarded:
        return None
    store = disclosure.worker.store
    used = list({id(e): e for e in used}.values())  # (an object named 20,000 times is looked at once: helper-41)
    read = read_through(store, session, used)
    prov = disclosure.of_inputs([*used, *read] if read else used)
    if not prov.owner:
        return None
    everyone = store.of_session(session) if fn in autograd.WRITES_GRADS else None
    return Watch(prov, fn, args, kwargs, used, everyone)


def grads_written(disclosure: "Disclosure", session: bytes, used: List["Entry"],
                  shared: List["Entry"]) -> List["Entry"]:
    """A write into memory that is an object's gradient (through a pointer ``g = w.grad``) is a write into that
    object, its model and its optimizers: they derive from what the op read (helper-43: with ``g`` freed, a new
    ``w.grad`` and ``opt.step()`` read ``#X`` back, each from ``w``, the client's own). ``shared``: the objects
    holding the memory the op wrote. Returns the objects it found so."""
    if not disclosure.guarded:
        return []
    prov = disclosure.of_inputs(used)
    if not prov.owner:
        return []
    store = disclosure.worker.store
    keys = store.keys_of(shared)
    hit = [e for e in store.grad_holders(session) if any(storage_key(g) in keys for g in autograd.grads_of(e.tensor))]
    found = store.sharing(hit) if hit else []
    for entry in found:
        entry.provenance = entry.provenance.merged(prov)
    return found


def read_through(store: "ObjectStore", session: bytes, used: List["Entry"]) -> List["Entry"]:
    """The client's objects an op reads without naming them: those holding the gradients of an optimizer's
    parameters, which its step reads (helper-38: ``g = w.grad``, ``g.copy_(#X)``, then ``opt.step()`` wrote
    ``-#X`` into ``w`` while the step's one input, the optimizer, was the client's own)."""
    keys = [storage_key(g) for e in used if isinstance(e.tensor, (Optimizer, LRScheduler))
            for g in autograd.grads_of(e.tensor)]
    return store.holding(session, keys) if keys else []


def holds_grads(obj: Any) -> bool:
    """Whether ``obj`` may hold a gradient: a tensor a backward may give one or that has one, a model, an
    optimizer, a scheduler."""
    if isinstance(obj, torch.Tensor):
        return _may_hold_grad(obj) or bool(autograd.grads_of(obj))
    return isinstance(obj, (torch.nn.Module, Optimizer, LRScheduler))


def _may_hold_grad(t: torch.Tensor) -> bool:
    """Whether a backward may give ``t`` a gradient (a leaf that requires one, or a tensor retaining its own);
    True where torch refuses to answer (:func:`.autograd.grads_of` looks then)."""
    try:
        return t.requires_grad and (t.is_leaf or t.retains_grad)
    except RuntimeError:
        return True


def _inside(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors a model or an optimizer (a scheduler's) holds: weights, buffers, gradients, an optimizer's state."""
    if isinstance(obj, LRScheduler):
        obj = obj.optimizer
    if isinstance(obj, torch.nn.Module):
        # (its parameters and buffers; a model whose forward runs on the client holds its weights apart)
        held = obj.state_dict().values() if isinstance(obj, ModelWeights) else itertools.chain.from_iterable(
            (*m._parameters.values(), *m._buffers.values()) for m in modules_of(obj))
        for t in held:
            if t is not None:
                yield t
                if t.grad is not None:
                    yield t.grad
    elif isinstance(obj, Optimizer):
        for group in obj.param_groups:
            for p in group["params"]:
                yield p
                if p.grad is not None:
                    yield p.grad
        for state in obj.state.values():
            for t in state.values() if isinstance(state, dict) else ():
                if isinstance(t, torch.Tensor):
                    yield t


def _module_stats(obj: Any) -> Iterator[torch.Tensor]:
    """The running statistics of a model's modules in training mode (its forward writes them)."""
    if isinstance(obj, torch.nn.Module):
        for module in modules_of(obj):
            if module.training:
                for name in RUNNING_STATS:
                    t = module._buffers.get(name)
                    if isinstance(t, torch.Tensor):
                        yield t


def running_stats_written(fn: Any, args: Any, kwargs: Dict[str, Any]) -> List[torch.Tensor]:
    """The running statistics ``fn(*args, **kwargs)`` writes: its arguments named ``running_mean`` and
    ``running_var`` when its ``training`` (``use_input_stats``) argument is true, by its Python signature
    (``F.batch_norm``, ``F.instance_norm``) or its ATen schema (``torch.batch_norm``)."""
    where = _positions(fn)
    if where is None:
        return []
    stats, flag = where

    def arg(name_at: Tuple[str, int]) -> Any:
        name, i = name_at
        return kwargs[name] if name in kwargs else args[i] if 0 <= i < len(args) else _DEFAULT

    training = arg(flag)
    if training is _DEFAULT:
        training = _defaults(fn).get(flag[0], False)
    if not training:
        return []
    return [t for t in map(arg, stats) if isinstance(t, torch.Tensor)]


_DEFAULT: Any = object()


def writes_running_stats(fn: Any) -> bool:
    """Whether ``fn`` takes running statistics it updates in training mode (``F.batch_norm``, ``F.instance_norm``)."""
    return _positions(fn) is not None


def _positions(fn: Any) -> Optional[Tuple[List[Tuple[str, int]], Tuple[str, int]]]:
    """(name, position) of ``fn``'s running statistics and of its training flag; None when it has none. Cached."""
    try:
        return _POSITIONS[fn]
    except KeyError:
        pass
    except TypeError:  # unhashable
        return None
    names = parameter_names(fn)
    found = None
    flag = next((n for n in _TRAINING if n in names), None)
    if flag is not None and any(n in names for n in RUNNING_STATS):
        found = ([(n, names.index(n)) for n in RUNNING_STATS if n in names], (flag, names.index(flag)))
    _POSITIONS[fn] = found
    return found


_POSITIONS: Dict[Any, Optional[Tuple[List[Tuple[str, int]], Tuple[str, int]]]] = {}


def parameter_names(fn: Any) -> List[str]:
    """``fn``'s parameters, by its Python signature or (a builtin) its ATen operator's schema; empty if unknown."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin: its ATen operator's schema, if it has one of its name
        packet = getattr(torch.ops.aten, getattr(fn, "__name__", "") or "_", None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            return []
        return [a.name for a in packet.default._schema.arguments] if "default" in packet.overloads() else []


def _defaults(fn: Any) -> Dict[str, Any]:
    try:
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):
        return {}
