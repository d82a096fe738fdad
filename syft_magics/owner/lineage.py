"""How an object was made, as the owner is shown it in a request, the log and the panels.

``add(#X, #Y)``, then each write into it (``, then .add_(#X)``), and a write through a view or an alias of
it. The ops name their inputs one level deep; the owner's objects the value derives from, further back, are
named at the end (``.sum(a1b2c3d4…) (from #X)``): helper-37's probe had requests that never named ``#X``
once its data had gone through two ops, a model's weights or an optimizer step.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, List, Optional, Set, Tuple

from .provenance import of_entry

if TYPE_CHECKING:
    from .store import Entry, ObjectStore


#: Writes kept in an object's history; those after are counted (a loop of ``z.add_(x)`` or an optimizer's steps
#: would grow it, and the request's text, without bound).
MAX_HISTORY = 16


#: Inputs an object's record keeps of the op that made or wrote it (the first): an op naming one object 100,000
#: times, failing, left that many ids in the history of every object it wrote (helper-38).
MAX_INPUTS = 16


def inputs_of(used: List["Entry"], but: Optional["Entry"] = None) -> Tuple[bytes, ...]:
    """The ids of an op's first :data:`MAX_INPUTS` inputs (``used``), but ``but``."""
    return tuple(itertools.islice((e.id for e in used if e is not but), MAX_INPUTS))


def record(entry: "Entry", op: str, inputs: Tuple[bytes, ...]) -> None:
    """A write of ``op`` (with its other ``inputs``) into ``entry``, in its history."""
    if len(entry.history) < MAX_HISTORY:
        entry.history.append((op, inputs))
    else:
        entry.more_writes += 1


def lineage(store: "ObjectStore", entry: "Entry") -> str:
    """How ``entry`` was made, e.g. ``add(#X, #Y)``; its label if it was shared or sent; then the owner's
    objects it derives from that the text has not named."""
    named: Set[str] = set()
    text = f"{entry.op}({_labels(store, entry.inputs, named)})" if entry.op else entry.label
    named.add(entry.label)
    for op, inputs in entry.history:
        text += f", then {op}({_labels(store, inputs, named)})"
    if entry.more_writes:
        text += f", then {entry.more_writes} more writes"
    if entry.version != entry.seen_version:
        text += ", then written through a view or alias"
    prov = of_entry(entry)
    missing = [s for s in prov.sources if s not in named] if prov.owner else []
    if missing:
        text += f" (from {', '.join(missing)})"
    return text


def _labels(store: "ObjectStore", ids: Tuple[bytes, ...], named: Set[str]) -> str:
    labels: List[str] = [store.label_of(oid) for oid in ids]
    named.update(labels)
    return ", ".join(labels)
