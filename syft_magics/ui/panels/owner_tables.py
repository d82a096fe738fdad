"""The HTML of the owner's panel: header counters, registry table, command log rows, clients table.

Pure functions of the worker's state (no widgets, no panel state), so the panel
(:mod:`.worker_panel`) keeps only what is live: its event rings, the request buttons, the
graph's memory of what it drew, and the refresh.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

from ...events import Event
from ...owner.store import OWNER, Entry
from . import _html as H
from ._names import name_of

if TYPE_CHECKING:
    from ...owner.worker import Worker

__all__ = ["header_html", "refusals_text", "refusals_html",
           "registry_html", "log_row", "commands_html", "clients_html", "shape_text", "is_hex"]


def header_html(w: "Worker", entries: Sequence[Entry], sessions: Sequence[Any]) -> str:
    """The title line (name, address, policy) and the counters under it."""
    stats = w.stats
    held = sum(e.nbytes for e in entries)
    commands = w.events.totals.get("command", 0)
    pending = len(w.requests.pending)
    state = (f'<span class="syft-badge syft-good">serving at {H.esc(w.address)}</span>' if w.running
             else '<span class="syft-badge syft-bad">stopped</span>')
    return (H.STYLE + f'<div><span class="syft-title">{H.esc(w.name)}</span>{state}'
            f'{H.badge("policy", w.policy.summary)}</div><div style="margin-top:4px">'
            + H.badge("clients", len(sessions))
            + H.badge("objects", len(entries))
            + H.badge("held", H.human_bytes(held))
            + H.badge("commands", f"{commands:,}")
            + H.badge("errors", f"{stats.get('errors', 0):,}", "bad" if stats.get("errors") else "")
            + H.badge("tensors sent in", H.human_bytes(stats.get("bytes_in", 0)))
            + H.badge("values out", H.human_bytes(stats.get("bytes_out", 0)))
            + H.badge("pending requests", pending, "warn" if pending else "")
            + H.badge("refused", f"{stats.get('refused', 0):,}", "warn" if stats.get("refused") else "")
            + "</div>" + refusals_html(stats))


def refusals_text(stats: Dict[str, Any]) -> str:
    """What the worker refused, by reason, most frequent first (quotas, budgets, bad messages, handshakes)."""
    by_reason = sorted((stats.get("refusals") or {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{reason} \u00d7{n:,}" for reason, n in by_reason)


def refusals_html(stats: Dict[str, Any]) -> str:
    text = refusals_text(stats)
    return f'<div style="margin-top:2px;font-size:90%">refused: {H.esc(text)}</div>' if text else ""


def registry_html(w: "Worker", shown: Sequence[Entry], total: int, holders: Dict[str, List[str]]) -> str:
    """One row per shown object (the owner's first, then the newest), and how many more there are."""
    rows = []
    for e in shown:
        held = holders.get(e.hex, [])
        origin = "owner (shared)" if e.origin == OWNER and e.session is None else e.origin
        made = w.store.lineage(e) if e.op else ("sent" if e.session is not None else "shared")
        status_cls = "syft-obj syft-err" if e.error else "syft-obj"
        cells = (e.hex[:8], " ".join(e.tags) or "-", str(tuple(e.shape)), e.dtype, H.human_bytes(e.nbytes),
                 origin, made if not e.error else f"{made}: {e.error}", str(len(held)), H.clock(e.last_access))
        titles = [e.hex, "", "", "", f"{e.nbytes:,} bytes", "", "", "\n".join(held) or "no session holds it",
                  H.clock(e.created) + " created"]
        rows.append(H.row(cells, cls=status_cls, attrs=f'data-id="{H.esc(e.hex)}"', titles=titles))
    more = total - len(shown)
    tail = f'<div class="syft-muted">… and {more:,} more</div>' if more > 0 else ""
    return (H.STYLE + '<div class="syft-scroll">'
            + H.table(("id", "tags", "shape", "dtype", "size", "origin", "made by", "held by", "last access"),
                      rows, empty=f"no objects: share one with {name_of(w, 'worker')}.share(x, '#X')")
            + tail + "</div>")


def log_row(w: "Worker", e: Event, label: Callable[[Any], str]) -> Tuple[str, str]:
    """A command-log row (html, text) for a command, get, request or decision event."""
    d = e.data
    when = H.clock(e.time, ms=True)
    if e.kind == "command":
        what = w.describe_command(e)
        status = d.get("status", "ok")
        ok = status == "ok"
        cells = (when, d.get("client", "?"), what, H.duration(d.get("duration")), status)
        cls = "syft-cmd syft-ok" if ok else "syft-cmd syft-err"
    elif e.kind == "get":
        status = d.get("status", "")
        if status == "sent":
            status = f"sent {H.human_bytes(int(d.get('bytes') or 0))}"
        cells = (when, d.get("client", "?"), f"get({label(d.get('id', ''))})", "-", status)
        cls = "syft-cmd syft-get" + (" syft-err" if d.get("status") == "denied" else "")
    elif e.kind == "request":
        # (the request's whole text, a model's kilobyte of weights and history, is on the Requests tab: once)
        lineage = str(d.get("lineage", ""))
        lineage = lineage if len(lineage) <= LOGGED_LINEAGE else lineage[:LOGGED_LINEAGE] + "… (see Requests)"
        cells = (when, d.get("client", "?"), f"get({label(d.get('id', ''))}) = {lineage}",
                 "-", f"request #{d.get('n')} waits for you")
        cls = "syft-cmd syft-request"
    else:  # decision
        reason = f": {d['reason']}" if d.get("reason") else ""
        cells = (when, "you", f"request #{d.get('n')}", "-", f"{d.get('status')}{reason}")
        cls = "syft-cmd syft-decision"
    titles = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)), "", "", "", cells[4]]
    return H.row(cells, cls=cls, titles=titles), "  ".join(str(c) for c in cells)


#: Characters of a request's text in the command log.
LOGGED_LINEAGE = 120


def commands_html(w: "Worker", rows: Sequence[str], kept: int) -> str:
    """The Commands tab: a summary of the totals, then ``rows`` (newest first) out of the ``kept`` in the ring."""
    totals = w.events.totals
    errors, shown = w.stats.get("errors", 0), len(rows)
    summary = (f'<div class="syft-muted syft-log-summary" style="font-size:12px;margin-bottom:4px">So far: '
               f'{H.plural(totals.get("command", 0), "command")} '
               f'({H.plural(errors, "error") if errors else "no errors"}), '
               f'{H.plural(totals.get("get", 0), "get")}, '
               f'{H.plural(totals.get("request", 0), "request")} for approval. Newest first: '
               + (f'all {shown}.' if shown == kept else f'{shown} of the last {kept} kept.')
               + '</div>')
    # the op column wraps, so the status column stays in view however long an op's text is
    wrap = ("<style>.syft-commands td:nth-child(3){white-space:normal;overflow-wrap:anywhere;max-width:60ch}"
            "</style>")
    return (H.STYLE + wrap + summary + '<div class="syft-scroll">'
            + H.table(("time", "client", "op", "duration", "status"), rows, empty="no commands yet")
            + "</div>")


def clients_html(w: "Worker", sessions: Sequence[Any]) -> str:
    """The Clients tab: each connected session (named by its invitation on an encrypted worker), its key's
    fingerprint, when it connected, what it created, when it was last heard."""
    now = time.monotonic()
    rows = [H.row((s.label, s.short, s.fingerprint or "-", H.clock(s.created), str(w.store.session_count(s.ident)),
                   f"{now - s.last_seen:.1f} s ago"), cls="syft-client") for s in sessions]
    return H.STYLE + H.table(("client", "session", "key", "connected", "objects created", "last heard"), rows,
                             empty="no clients connected")


def shape_text(shape: Tuple[int, ...]) -> str:
    """``(3,)`` for a 1-d shape, ``(2, 3)`` otherwise, as Python writes tuples."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def is_hex(value: Any) -> bool:
    """Whether ``value`` reads as a 32-digit hex object id."""
    try:
        bytes.fromhex(str(value))
        return len(str(value)) == 32
    except ValueError:
        return False
