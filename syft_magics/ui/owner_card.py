"""The owner's card for one object of his worker: its values (the owner may see his own data), tags,
who holds it, how often it was used, the requests for it, and how it was made.

``bob.inspect("#X")`` (a tag, or a hex id or its first characters) shows it; so does choosing an
object in the Registry tab of the owner's panel. Built only when asked for; a snapshot, refreshed
by :meth:`OwnerCard.refresh`.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional, Tuple

import ipywidgets as widgets

from .panels import _html as H
from .panels._names import name_of
from .preview import preview_html

__all__ = ["OwnerCard", "find_entry"]

LINEAGE_DEPTH = 3


def find_entry(worker: Any, what: str) -> Any:
    """The entry of ``worker`` named by a tag (``#X``) or a hex id (or a prefix of at least 4 characters)."""
    if not isinstance(what, str) or not what:
        raise TypeError("inspect() takes a tag such as '#X' or an object id (hex)")
    entries = worker.store.entries()
    if what.startswith("#"):
        found = [e for e in entries if what in e.tags]
    else:
        if len(what) < 4:
            raise ValueError(f"{what!r} is too short to name an object: give at least 4 characters of its id")
        found = [e for e in entries if e.hex.startswith(what.lower())]
    if not found:
        have = ", ".join(worker.store.all_tags()) or "none"
        raise KeyError(f"{worker.name} holds no object {what!r} (tags: {have})")
    if len(found) > 1 and not what.startswith("#"):
        raise KeyError(f"{what!r} names {len(found)} objects; give more characters of the id")
    return sorted(found, key=lambda e: e.created)[0]


class OwnerCard(widgets.VBox):
    """One object as its owner sees it."""

    def __init__(self, worker: Any, entry: Any) -> None:
        super().__init__()
        self.worker = worker
        self.entry = entry
        self.header = widgets.HTML()
        self.details = widgets.HTML()
        self.preview = widgets.HTML()
        for w, cls in ((self.header, "syft-card-header"), (self.details, "syft-card-details"),
                       (self.preview, "syft-card-value")):
            w.add_class(cls)
        self.children = [self.header, self.details, self.preview]
        self.add_class("syft-card")
        self.add_class("syft-owner-card")
        self.layout = widgets.Layout(border="1px solid #e0c36a", padding="6px 10px", margin="4px 0",
                                     max_width="760px")
        self.refresh()

    def lineage(self, depth: int = LINEAGE_DEPTH) -> str:
        """How the object was made, a few ops deep: ``mul(add(#X, #Y), 2)``."""
        store = self.worker.store

        def text(e: Any, level: int) -> str:
            if not e.op or level >= depth:
                return e.label
            parts = []
            for oid in e.inputs:
                inp = store.get(oid)
                parts.append(text(inp, level + 1) if inp is not None else oid.hex()[:8] + "…")
            return f"{e.op.lstrip('.')}({', '.join(parts)})"

        e = self.entry
        if not e.op:
            return "shared by you" if e.session is None else "sent by a client"
        return text(e, 0)

    def holders(self) -> List[str]:
        """The connected sessions that hold a pointer to it (for shared data: those whose search found it)."""
        e = self.entry
        sessions = self.worker.clients
        if e.session is not None:
            return [s.label for s in sessions if s.ident == e.session]
        shorts = {s.short: s.label for s in sessions}
        out: List[str] = []
        for ev in list(self.worker.events.recent):
            if ev.kind != "search":
                continue
            d = ev.data
            ids = d.get("ids")
            hit = (e.id in ids or e.hex in ids) if ids is not None else set(d.get("tags", ())) <= set(e.tags)
            label = shorts.get(d.get("session"))
            if hit and label and label not in out:
                out.append(label)
        return out

    def accesses(self) -> Tuple[int, int]:
        """(commands that used it, gets of it) among the worker's recent events."""
        used = gets = 0
        for ev in list(self.worker.events.recent):
            if ev.kind == "command" and self.entry.id in ev.data.get("inputs", ()):
                used += 1
            elif ev.kind == "get" and ev.data.get("id") == self.entry.hex:
                gets += 1
        return used, gets

    def requests(self) -> List[Any]:
        return [r for r in self.worker.requests if r.oid == self.entry.id or r.object_id == self.entry.hex]

    def refresh(self) -> None:
        e = self.entry
        present = e.id in self.worker.store
        state = "freed" if not present else ("failed" if e.error else "held")
        self.header.value = (H.STYLE + f'<div><span class="syft-title">{H.esc(e.label)}</span>'
                             f'<span class="syft-badge syft-card-state syft-state-{state}">{state}</span>'
                             f'<span class="syft-muted" style="font-size:12px">on <b>{H.esc(self.worker.name)}'
                             f'</b> (yours)</span></div>')
        used, gets = self.accesses()
        reqs = self.requests()
        pending = [r for r in reqs if r.pending]
        rows = [("id", e.hex), ("shape", str(tuple(e.shape))), ("dtype", e.dtype), ("size", H.human_bytes(e.nbytes)),
                ("tags", " ".join(e.tags) or "-"), ("origin", e.origin), ("made by", self.lineage()),
                ("held by", ", ".join(self.holders()) or "no connected client"),
                ("accesses", f"used by {H.plural(used, 'command')}, {H.plural(gets, 'get')} (recent); last "
                             f"{time.strftime('%H:%M:%S', time.localtime(e.last_access))}"),
                ("requests", ", ".join(f"#{r.n} {r.status} ({r.client})" for r in reqs) or "none")]
        if e.error:
            rows.append(("error", e.error))
        if pending:
            rows.append(("pending", f"{len(pending)} waiting for you: approve in the panel's Requests tab "
                                    f"or with {name_of(self.worker, 'worker')}.approve({pending[0].n})"))
        self.details.value = ('<table class="syft-tbl syft-card-table" style="width:auto">'
                              + "".join(f'<tr class="syft-card-{k.replace(" ", "-")}"><th style="position:static">'
                                        f'{H.esc(k)}</th><td style="white-space:normal">{H.esc(v)}</td></tr>'
                                        for k, v in rows) + "</table>")
        t = e.tensor
        self.preview.value = H.STYLE + preview_html(t) if (present and t is not None) else ""


    def text(self) -> str:
        e = self.entry
        return (f"{e.label} on {self.worker.name}: shape {tuple(e.shape)}, {e.dtype}, made by {self.lineage()}, "
                f"held by {', '.join(self.holders()) or 'no connected client'}")

    def __repr__(self) -> str:
        try:
            return self.text()
        except Exception as exc:  # never let a repr fail
            return f"<OwnerCard ({exc})>"

    def close(self) -> None:
        for child in (self.header, self.details, self.preview):
            child.close()
        super().close()


def show(worker: Any, what: str) -> Optional[OwnerCard]:
    """Build the owner's card for ``what`` (a tag or id) of ``worker``."""
    return OwnerCard(worker, find_entry(worker, what))
