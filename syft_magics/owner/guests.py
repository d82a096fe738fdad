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
at least :data:`MIN_SHARE` of an even share. The aggregate is this worker's own result, which its rules release.

What this cannot stop: a scientist who knows every model in an average but one (a model it trained with no
data, or zeroed, on a worker of an owner that lets models go to the aggregator) learns that one from the
average. FedAvg hides a model among others only as far as the others are unknown to whoever reads the average.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .aggregate import check_weights

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
            or min(weights) < MIN_SHARE * total / n:
        return sources
    return (f"average of models from {', '.join(sorted(str(o) for o in owners))}",)
