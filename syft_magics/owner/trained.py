"""Whether a model holds what training put there, or the owner's data copied in: what a model rule releases.

``bob.policy.allow_get(kind="model")`` lets trained weights leave without a click. helper-57 (session 20) showed
how little that took: ``remote.load_state_dict({"weight": x})`` (or ``w.copy_(x)``, ``w.data = x``,
``w.grad = x.clone()`` then a step), then ``remote.get()``, released ``#X`` verbatim, no click. So every object
carries an ``untrained`` mark: the first op that put the owner's data into it *other than by training*.

* A result is marked by its first marked input's mark, else by its own op when an input is the owner's own data
  (``x * 2``, a model's output, a model built from a pointer to ``#X``): values derived from the data.
* A write marks what it wrote (and every object holding that memory: a weight's model, a gradient's tensor and
  optimizers) the same way, from its other inputs, unless the op is **training**: a forward (its batch
  statistics), a backward (gradients), an optimizer's ``zero_grad`` and ``step``, an average of models.
* Marks are never cleared (a zeroed weight stays marked: the owner reviews it once).

A model rule releases a model only when neither it nor anything holding its weights' memory is marked; otherwise
the model goes to the policy (a request under ``review``), whose text names the weight and the op
(:func:`weights_text`). What training writes is released as training: a loss of the scientist's design can
still steer the data into the weights through gradients (``(w * x).sum().backward()`` then a step of ``lr=1``
writes ``-#X`` into a zeroed ``w``), and a batch norm's running mean over one row is that row. The rule trusts
the scientist's training code; SECURITY.md says so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, List, Optional

import torch

from .aggregate import average_models
from .autograd import autograd_backward, backward, set_grad_
from .blocks import storage_key
from .models import module_call, module_train
from .optimizers import step, zero_grad
from .side_writes import writes_running_stats

if TYPE_CHECKING:
    from .store import Entry, ObjectStore

#: Ops whose writes are training (see the module's text); ``set_grad_`` (``w.grad = g``) is not one of them.
TRAINING = frozenset({module_call, module_train, backward, autograd_backward, step, zero_grad, average_models})


def is_training(fn: Any) -> bool:
    """Whether what ``fn`` writes is written by training: the ops of :data:`TRAINING`, and functions that update
    running statistics in training mode (``F.batch_norm`` in a custom module's forward run on the client)."""
    try:
        return fn in TRAINING or writes_running_stats(fn)
    except TypeError:  # (unhashable)
        return False


def _mark(e: "Entry") -> str:
    """``e``'s mark, or what marks whatever is made of it: the owner's own data is the data itself."""
    return e.untrained or ("" if e.session is not None else "the data itself")


#: Ops whose results are training's: gradients (``torch.autograd.grad``), as a backward writes them.
TRAINING_RESULTS = frozenset({torch.autograd.grad})


def of_result(fn: Any, op: str, used: Iterable["Entry"]) -> str:
    """The mark of what op ``op`` (``fn``) makes of ``used``: its first marked input's, or ``op`` over the owner's
    data; none for gradients (a manual step, ``w.sub_(lr * g)``, is training)."""
    if fn in TRAINING_RESULTS:
        return ""
    for e in used:
        if e.untrained:
            return e.untrained
    for e in used:
        if e.session is None:
            return op
    return ""


def written(store: "ObjectStore", fn: Any, op: str, used: List["Entry"], targets: List["Entry"]) -> None:
    """After op ``op`` (``fn``) wrote into ``targets`` (and everything holding their memory): mark them, unless
    it is training or read nothing marked besides them. ``w.grad = g`` writes into ``w`` (no memory of ``w``
    changes: :func:`~.autograd.set_grad_` makes a copy)."""
    if is_training(fn):
        return
    if fn is set_grad_:
        targets = [*targets, *used[:1]]
    if not targets:
        return
    hit = {id(e) for e in targets}
    mark = ""
    for e in used:
        if id(e) not in hit and _mark(e):
            mark = e.untrained or op
            break
    if not mark:
        return
    spans = [_span(e.tensor) for e in targets if isinstance(e.tensor, torch.Tensor)]
    for e in store.sharing(targets):
        # (a model's weights may share one block of memory: only those the write reached are marked, and models
        # and optimizers holding it)
        if e.session is not None and not e.untrained and (id(e) in hit or not isinstance(e.tensor, torch.Tensor)
                                                          or _overlaps(_span(e.tensor), spans)):
            e.untrained = mark


def _span(t: torch.Tensor) -> tuple:
    """The bytes of memory ``t`` reaches: (storage, first, end)."""
    if t.numel() == 0:
        return (storage_key(t), 0, 0)
    first = t.data_ptr()
    last = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return (storage_key(t), first, first + (last + 1) * t.element_size())


def _overlaps(span: tuple, spans: List[tuple]) -> bool:
    return any(span[0] == s[0] and span[1] < s[2] and s[1] < span[2] for s in spans)


def _tensors(model: torch.nn.Module) -> List[tuple]:
    return list(model.state_dict().items())


def why_not(store: "ObjectStore", entry: "Entry") -> Optional[str]:
    """Why a model rule does not release the model ``entry``: which of its weights holds the owner's data put there
    by which op (not by training); None when none does."""
    model = entry.tensor
    if not isinstance(model, torch.nn.Module) or entry.session is None:
        return None
    tensors = _tensors(model)
    marked = [h for h in store.holding(entry.session, {storage_key(t) for _, t in tensors})
              if h.untrained and isinstance(h.tensor, torch.Tensor)]
    for name, t in tensors:
        span = _span(t)
        for holder in marked:
            if _overlaps(span, [_span(holder.tensor)]):
                return f"{name} holds the owner's data put there by {holder.untrained}, not by training"
    if entry.untrained:
        return f"a weight holds the owner's data put there by {entry.untrained}, not by training"
    return None


#: The weights a model's request names with their shapes; past them, how many more.
SHOWN_WEIGHTS = 8


def weights_text(store: "ObjectStore", entry: "Entry") -> str:
    """A model's weights as its request shows them: names and shapes (a model's shape reads ``()``), then, if a
    weight holds the owner's data put there other than by training, which and by what (helper-57: the owner saw
    only the model's own history)."""
    model = entry.tensor
    if not isinstance(model, torch.nn.Module):
        return ""
    tensors = _tensors(model)
    shown = ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors[:SHOWN_WEIGHTS])
    more = f", +{len(tensors) - SHOWN_WEIGHTS} more" if len(tensors) > SHOWN_WEIGHTS else ""
    why = why_not(store, entry)
    return f"; weights: {shown}{more}" + (f"; NOT TRAINED: {why}" if why else "")
