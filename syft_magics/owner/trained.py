"""Whether a model holds what training put there, or the owner's data copied in: what a model rule releases.

``bob.policy.allow_get(kind="model")`` lets trained weights leave without a click. helper-57 (session 20) showed
how little that took: ``remote.load_state_dict({"weight": x})`` (or ``w.copy_(x)``, ``w.data = x``,
``w.grad = x.clone()`` then a step), then ``remote.get()``, released ``#X`` verbatim, no click. So every object
carries an ``untrained`` mark: the first op that put the owner's data into it *other than by training*.

* A result is marked by its first marked input's mark, else by its own op when an input is the owner's own data
  (``x * 2``, a model's output, a model built from a pointer to ``#X``): values derived from the data.
* A write from an input that carries the data (marked, or the data itself) marks what it wrote with its op (and
  every object holding the memory written: a weight's model, a gradient's tensor and optimizers), unless the op is
  **training**: a model's forward writing its running statistics (not its weights: an embedding's ``max_norm``
  renormalises the rows its indices name, helper-58), a backward, an optimizer's ``zero_grad`` and ``step``, an
  average of models. ``w.grad = g`` is not training.
* Marks are never cleared (a zeroed weight stays marked: each get of the model is the owner's click).

A model rule releases a model only when neither it nor anything holding its weights' memory is marked; otherwise
the model goes to the policy (a request under ``review``), whose text names the weight and the op
(:func:`weights_text`). What training writes is released as training: a loss of the scientist's design can
still steer the data into the weights through gradients (``(w * x).sum().backward()``, or ``(w * 1).backward(x)``
with the data as its seed, then a step of ``lr=1`` writes ``-#X`` into a zeroed ``w``; helper-58 had seeds marked,
helper-62 found honest per-sample weights ``loss.backward(weights)`` waiting for a click, and a seed is a loss in
another form), and a batch norm's running mean is its batch's mean (``#X`` flattened into
one feature per element, a batch of two copies, ``momentum=1``: all of ``#X`` in one forward, helper-58). The rule
trusts the scientist's training code; SECURITY.md says so. Refused as not training, though honest: a data-driven
``Embedding(max_norm=...)``, a custom module's own running average (``self.mu.mul_(0.9).add_(x.mean(0))``), a bias
initialised from the data: the owner clicks.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from .aggregate import average_models
from .autograd import autograd_backward, backward, grad, set_grad_
from .blocks import storage_key
from .models import module_call, module_train
from .optimizers import step, zero_grad
from .side_writes import writes_running_stats

if TYPE_CHECKING:
    from .store import Entry, ObjectStore

#: Ops whose writes are training (see the module's text); ``set_grad_`` (``w.grad = g``) is not one of them, nor a
#: forward's writes into its model's weights (:func:`forward_wrote`).
TRAINING = frozenset({module_call, module_train, backward, autograd_backward, step, zero_grad, average_models})

#: Ops whose results are training's: gradients (``torch.autograd.grad``), as a backward writes them.
TRAINING_RESULTS = frozenset({grad})

#: Ops whose results' values do not depend on their first argument's values (``torch.ones_like(y)`` as a backward's
#: seed); another tensor argument (``full_like``'s ``fill_value``, helper-59) marks the result as any input does.
VALUE_FREE = frozenset({torch.ones_like, torch.zeros_like, torch.full_like, torch.rand_like, torch.randn_like,
                        torch.randint_like, torch.Tensor.new_ones, torch.Tensor.new_zeros, torch.Tensor.new_full})


def is_training(fn: Any) -> bool:
    """Whether what ``fn`` writes is written by training: the ops of :data:`TRAINING`, and functions that update
    running statistics in training mode (``F.batch_norm`` in a custom module's forward run on the client)."""
    try:
        return fn in TRAINING or writes_running_stats(fn)
    except TypeError:  # (unhashable)
        return False


def _carries(e: "Entry") -> bool:
    """Whether ``e`` carries the owner's data in a way training did not put there: marked, or the data itself."""
    return bool(e.untrained) or e.session is None


def of_result(call: Tuple[Any, Any, Any], op: str, used: Iterable["Entry"]) -> str:
    """The mark of what op ``op`` (``call``: its function and arguments) makes of ``used``: its first marked
    input's, or ``op`` over the owner's data; none for values that do not depend on the inputs' and for gradients
    (a manual step, ``w.sub_(lr * g)``, is training)."""
    fn, args, kwargs = call
    try:
        if fn in VALUE_FREE:
            rest = {id(t) for t in pytree.tree_leaves((args[1:], kwargs)) if isinstance(t, torch.Tensor)}
            return _from(op, [e for e in used if id(e.tensor) in rest])
        if fn in TRAINING_RESULTS:
            return ""
    except TypeError:  # (unhashable)
        pass
    return _from(op, used)


def _from(op: str, used: Iterable["Entry"]) -> str:
    """The first mark among ``used``, or ``op`` if one is the owner's data."""
    found = ""
    for e in used:
        if e.untrained:
            return e.untrained
        if not found and e.session is None:
            found = op
    return found


def _carried(used: Iterable["Entry"], but: Iterable["Entry"] = ()) -> bool:
    """Whether any of ``used`` but ``but`` carries the owner's data (:func:`_carries`)."""
    skip = {id(e) for e in but}
    return any(_carries(e) for e in used if id(e) not in skip)


def written(store: "ObjectStore", call: Tuple[Any, Any, Any], op: str, used: List["Entry"],
            targets: List["Entry"]) -> None:
    """After op ``op`` (``call``) wrote into ``targets`` (and everything holding their memory): mark them, unless
    it is training or read nothing marked besides them. ``w.grad = g`` writes into ``w`` (no memory of ``w``
    changes: :func:`~.autograd.set_grad_` makes a copy)."""
    if targets and not is_training(call[0]) and _carried(used, targets):
        _spread(store, targets, op)


def grads_set(store: "ObjectStore", call: Tuple[Any, Any, Any], op: str, used: List["Entry"],
              entries: List["Entry"]) -> None:
    """After op ``op`` (``call``) gave ``entries`` a new gradient: ``w.grad = g`` (a copy: no memory of ``w``
    changes) put the data there other than by training; a step then writes it into ``w``."""
    if call[0] is set_grad_ and _carried(used, entries):
        _spread(store, entries, op)


def forward_wrote(store: "ObjectStore", session: bytes, used: List["Entry"], tensors: List[torch.Tensor]) -> None:
    """A model's forward over ``used`` wrote ``tensors`` inside it besides its running statistics: not training."""
    if _carried(used):
        _spread(store, store.holding(session, {storage_key(t) for t in tensors}),
                "a forward writing its weights (not statistics)", tensors)


def _spread(store: "ObjectStore", targets: List["Entry"], mark: str,
            reached: Optional[List[torch.Tensor]] = None) -> None:
    """Mark ``targets`` (or, of those, the ones holding the memory of ``reached``) and every object holding memory
    they hold that the write reached: a model's weights may share one block, so only those overlapping what was
    written are marked, and the models and optimizers holding it."""
    if not mark:
        return
    hit = {id(e) for e in targets} if reached is None else set()
    spans = _Spans(_span(t) for t in (reached if reached is not None else
                                      (e.tensor for e in targets if isinstance(e.tensor, torch.Tensor))))
    for e in store.sharing(targets):
        if e.session is not None and not e.untrained and (id(e) in hit or not isinstance(e.tensor, torch.Tensor)
                                                          or spans.reach(_span(e.tensor))):
            e.untrained = mark


Span = Tuple[int, int, int]


def _span(t: torch.Tensor) -> Span:
    """The bytes of memory ``t`` reaches: (storage, first, end)."""
    if t.numel() == 0:
        return (storage_key(t), 0, 0)
    first = t.data_ptr()
    last = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return (storage_key(t), first, first + (last + 1) * t.element_size())


class _Spans:
    """Spans of memory, merged by storage: whether another overlaps any, in log time (a model of thousands of
    weights, thousands of them marked, was compared pair by pair, seconds per get on the serving thread:
    helper-60)."""

    def __init__(self, spans: Iterable[Span]) -> None:
        by: Dict[int, List[Tuple[int, int]]] = {}
        for key, first, end in spans:
            if end > first:
                by.setdefault(key, []).append((first, end))
        self._by: Dict[int, Tuple[List[int], List[int]]] = {}
        for key, found in by.items():
            found.sort()
            starts, ends = [found[0][0]], [found[0][1]]
            for first, end in found[1:]:
                if first <= ends[-1]:
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(first)
                    ends.append(end)
            self._by[key] = (starts, ends)

    def reach(self, span: Span) -> bool:
        key, first, end = span
        found = self._by.get(key)
        if found is None or end <= first:
            return False
        i = bisect.bisect_left(found[0], end) - 1  # (the last one starting before ``end``)
        return i >= 0 and found[1][i] > first


def _tensors(model: torch.nn.Module) -> List[tuple]:
    return list(model.state_dict().items())


#: How :func:`warning` starts, and how :func:`why_not`'s text (so the warning) ends.
_WARNING, _WHY_END = "NOT TRAINED: ", ", not by training"


def why_not(store: "ObjectStore", entry: "Entry") -> Optional[str]:
    """Why a model rule does not release the model ``entry``: which of its weights holds the owner's data put there
    by which op (not by training); None when none does."""
    model = entry.tensor
    if not isinstance(model, torch.nn.Module) or entry.session is None:
        return None
    tensors = _tensors(model)
    marked = [h for h in store.holding(entry.session, {storage_key(t) for _, t in tensors})
              if h.untrained and isinstance(h.tensor, torch.Tensor)]
    spans = _Spans(_span(h.tensor) for h in marked)
    for name, t in tensors:
        span = _span(t)
        if spans.reach(span):
            holder = next(h for h in marked if _Spans([_span(h.tensor)]).reach(span))
            return f"{_shown(name)} holds the owner's data put there by {holder.untrained}{_WHY_END}"
    if entry.untrained:
        return f"a weight holds the owner's data put there by {entry.untrained}{_WHY_END}"
    return None


#: The weights a model's request names with their shapes; past them, how many more.
SHOWN_WEIGHTS = 8


def warning(store: "ObjectStore", entry: "Entry") -> str:
    """What a model's request says first when a weight holds the owner's data put there other than by training
    (helper-62: after 750 characters of the model's history it went unread)."""
    why = why_not(store, entry) if isinstance(entry.tensor, torch.nn.Module) else None
    return f"{_WARNING}{why}. " if why else ""


def split_warning(text: str) -> Tuple[str, str]:
    """A request's text as its :func:`warning` (``""`` if none) and the rest (a weight's name may hold ``". "``,
    so the warning ends where :func:`why_not`'s text does)."""
    head, sep, rest = text.partition(f"{_WHY_END}. ") if text.startswith(_WARNING) else ("", "", text)
    return (head + _WHY_END, rest) if sep else ("", text)


def weights_text(store: "ObjectStore", entry: "Entry") -> str:
    """A model's weights as its request shows them after its history: names and shapes (a model's shape reads
    ``()``; helper-57: the owner saw only the model's own history), and its layers' telling settings."""
    model = entry.tensor
    if not isinstance(model, torch.nn.Module):
        return ""
    tensors = _tensors(model)
    shown = ", ".join(f"{_shown(name)} {tuple(t.shape)}" for name, t in tensors[:SHOWN_WEIGHTS])
    more = f", +{len(tensors) - SHOWN_WEIGHTS} more" if len(tensors) > SHOWN_WEIGHTS else ""
    return f"; weights: {shown}{more}" + _settings(model)


#: Layer settings a request names when they differ from torch's defaults: how much of a batch a forward writes
#: into a running statistic (``momentum=1``: the last batch's mean itself), whether a forward writes its weights.
_NOTED = ((torch.nn.modules.batchnorm._NormBase, "momentum", 0.1), (torch.nn.Embedding, "max_norm", None))


def _settings(model: torch.nn.Module) -> str:
    """A model's layer settings that say how its forwards write what it holds (:data:`_NOTED`), 4 at most."""
    found = [f"layer {_shown(name)} {attr}={getattr(m, attr)}" if name else f"{attr}={getattr(m, attr)}"
             for name, m in model.named_modules()
             for kind, attr, default in _NOTED if isinstance(m, kind) and getattr(m, attr) != default]
    if not found:
        return ""
    return "; settings: " + ", ".join(found[:4]) + (f", +{len(found) - 4} more" if len(found) > 4 else "")


def _shown(name: str) -> str:
    """A weight's name as a request shows it: plain printable text (else escaped), cut at 40 characters (a custom
    module's names are the scientist's choice: helper-51's tags hid the owner's data behind 134 KB of blanks)."""
    text = name if name.isascii() and name.isprintable() else ascii(name)[1:-1]
    return text if len(text) <= 40 else f"{text[:40]}…"
