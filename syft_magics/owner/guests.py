"""Another owner's data on this worker: what it was released for, and when an average of it is this worker's own.

An object moved here (:mod:`.tickets`) is treated like this owner's data (shapes and error text withheld), and
its provenance names where it came from: ``moved from Bob``. Where Bob released it for this worker only (his
rule ``allow_get(kind="model", to="Carol")``, or his click approving that move), the label says so
(:func:`label`), and this worker's own rules (``allow_get``) do not release it, nor anything computed from it:
they speak for this owner's data, not Bob's (helper-46: Carol's ``allow_get(kind="model")``, meant for the
average, let the scientist fetch Bob's own model as it arrived). Such an object leaves only by this owner's
click (or its policy function), or as part of an **aggregate** (:func:`averaged`): the average
``syft.average_models`` makes of models that each come from one such owner, at least two owners, each proven
by its courier (the key of this machine's connection file of that worker: see :mod:`.courier`), each weighing
at least :data:`MIN_SHARE` of an even share, their integer tensors equal. The aggregate is this worker's own result,
which its rules release.

What this does not do: hide a model from a scientist who writes the training. A rule that lets models go
(``allow_get(kind="model", to="Carol")``) lets go whatever the scientist's ops put in them: weights computed from
the owner's data, scaled to swamp the other models of an average; a model never trained, moved to Carol beside
another owner's, whose average then gives the other's away; the same two models moved twice and averaged with
two sets of weights, which solve for both (helper-47). The aggregate stops the direct forms (a model fetched as it
arrived, an average of one model, of one owner twice, weighted ``[1, 0]``, with integer tensors that pass through
unaveraged) and keeps a scientist who follows the FedAvg API to the average; against one who does not, a model
rule is trust in the scientist's code, as ``allow_get(kind="model")`` on the owner's own worker is.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .aggregate import BATCH_COUNT, check_weights, tensors_of

#: Every label of an object moved here starts so; a released-for-here-only one ends with :data:`_HELD`.
PREFIX = "moved from "
_HELD = ", released to this worker only"
_UNVERIFIED = " (not proven by its courier)"
#: Each model of an aggregate weighs at least this part of an even share (1/n of the total): an average in
#: which one model weighs 1 and the others almost nothing is that model.
MIN_SHARE = 0.25


def label(source: str, held: bool, proven: bool) -> str:
    """The provenance label of an object moved here from ``source``: released for this worker only (``held``),
    by a courier that proved it is ``source`` (``proven``) or not."""
    return f"{PREFIX}{source}{'' if proven else _UNVERIFIED}{_HELD if held else ''}"


def held(sources: Sequence[str]) -> List[str]:
    """The labels among ``sources`` (a provenance's) of other owners' data released for this worker only."""
    return [s for s in sources if s.startswith(PREFIX) and s.endswith(_HELD)]


def _proven_owner(held_label: str) -> Optional[str]:
    """The owner a held label names, if its courier proved it (None: not proven)."""
    source = held_label[len(PREFIX):-len(_HELD)]
    return None if source.endswith(_UNVERIFIED) else source


def _integers_agree(models: Sequence[Any]) -> bool:
    """Whether the models' integer tensors, which an average takes from the first model as they are, are equal in
    all: else the first one's pass through unaveraged (helper-47: ``round(#x * 1e6)``). A batch norm's count of
    batches is 0 in an average where they differ (helper-62: owners that trained on different numbers of batches
    made no aggregate)."""
    states = [tensors_of(m) for m in models]
    return all(t.is_floating_point() or t.is_complex() or k.endswith(BATCH_COUNT)
               or all(torch.equal(s[k], t) for s in states[1:]) for k, t in states[0].items())


def averaged(weights: Any, models: Sequence[Any], sources_of: Dict[int, Sequence[str]],
             sources: Tuple[str, ...]) -> Tuple[str, ...]:
    """The sources of ``syft.average_models(weights, names, *models)``'s result: one label of this worker's own,
    where it is an aggregate (see the module docstring), else ``sources`` (its inputs', held labels kept).
    ``sources_of``: each model's provenance sources, by ``id`` of the model."""
    if not held(sources):
        return sources
    try:
        total = check_weights(weights)
    except (TypeError, ValueError):
        return sources
    owners = []
    for model in models:
        labels = sources_of.get(id(model), ())
        mine = held(labels)
        if len(mine) != 1 or len(labels) != 1:  # (one owner's model, as it came, or trained here on nothing else)
            return sources
        owners.append(_proven_owner(mine[0]))
    n = len(models)
    if n < 2 or None in owners or len(set(owners)) != n or len(weights) != n \
            or min(weights) < MIN_SHARE * total / n or not _integers_agree(models):
        return sources
    return (f"average of models from {', '.join(sorted(str(o) for o in owners))}",)
