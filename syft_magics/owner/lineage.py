"""How an object was made, as the owner is shown it in a request, the log and the panels.

``add(#X, #Y)``, then each write into it (``, then .add_(#X)``), and a write through a view or an alias of
it. The ops name their inputs one level deep; the owner's objects the value derives from, further back, are
named at the end (``.sum(a1b2c3d4…) (from #X)``): helper-37's probe had requests that never named ``#X``
once its data had gone through two ops, a model's weights or an optimizer step.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from .guests import PREFIX
from .provenance import MORE_OWN, MORE_SOURCES, of_entry

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


#: A label as a request shows it (an object's tags, joined: up to 32 of 128 characters), and the ops of its history
#: (up to 16 writes of 16 inputs): helper-51's request, 134 KB of the scientist's own tags padded with blank-looking
#: characters, named the owner's data in its last three characters, 17,600 pixels below the owner's Approve button.
MAX_LABEL_CHARS = 40
MAX_OPS_CHARS = 600


def lineage(store: "ObjectStore", entry: "Entry") -> str:
    """How ``entry`` was made, e.g. ``add(#X, #Y)``; its label if it was shared or sent; then the owner's
    objects it derives from that the text has not named. The ops are cut at :data:`MAX_OPS_CHARS` (each label at
    :data:`MAX_LABEL_CHARS`), never the owner's objects: they are named after them unless shown whole before
    (:func:`sources_text`)."""
    steps = [(entry.op, entry.inputs)] if entry.op else []
    steps += [(f", then {op}", inputs) for op, inputs in entry.history]
    parts = [(f"{op}({', '.join(_clip(label) for label in labels)})", labels)
             for op, labels in ((op, [store.label_of(oid) for oid in ids]) for op, ids in steps)]
    if not entry.op:
        parts.insert(0, (_clip(entry.label), [entry.label]))
    if entry.more_writes:
        parts.append((f", then {entry.more_writes} more writes", []))
    if entry.version != entry.seen_version:
        parts.append((", then written through a view or alias", []))
    text, named = "", {entry.label}
    for i, (part, labels) in enumerate(parts):
        if i and len(text) + len(part) > MAX_OPS_CHARS:
            text += f", … ({len(parts) - i} more not shown)"
            break
        text += part
        named.update(label for label in labels if len(label) <= MAX_LABEL_CHARS)
    prov = of_entry(entry)
    missing = [s for s in prov.sources if s not in named] if prov.owner else []
    if missing:
        text += f" (from {sources_text(missing)})"
    return text


#: The owner's objects a request names one by one; past them, how many more.
SHOWN_OWN = 16


def sources_text(sources: Sequence[str]) -> str:
    """The owner's data behind a value as a request names it: the owner's own objects first, whole (labels the owner
    chose: two of 40 characters in common read alike, helper-53), :data:`SHOWN_OWN` of them then how many more;
    other owners' data moved here after them, each label cut."""
    own = [s for s in sources if not s.startswith(PREFIX) and s not in (MORE_OWN, MORE_SOURCES)]
    names = own[:SHOWN_OWN]
    more = len(own) - len(names)
    if more or MORE_OWN in sources:
        names.append(f"{more}{'+' if MORE_OWN in sources else ''} more of yours")
    names += [_clip(s) for s in sources if s.startswith(PREFIX)]
    if MORE_SOURCES in sources:
        names.append(MORE_SOURCES)
    return ", ".join(names)


def shown_tags(tags: Tuple[str, ...]) -> Tuple[str, ...]:
    """An object's tags as a request shows them: as many as fit :data:`MAX_LABEL_CHARS`, each cut there, then how
    many more."""
    shown: List[str] = []
    for tag in tags:
        if shown and sum(len(t) + 1 for t in shown) + len(tag) > MAX_LABEL_CHARS:
            return (*shown, f"(+{len(tags) - len(shown)} tags)")
        shown.append(_clip(tag))
    return tuple(shown)


def _clip(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else f"{label[:MAX_LABEL_CHARS]}…"
