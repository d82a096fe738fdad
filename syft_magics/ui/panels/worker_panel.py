"""The data owner's live panel: header counters, registry, command log, requests (Approve / Deny),
a graph of who holds what, and the connected clients.

The worker's serving thread only appends its events to this panel's deques (one
Python call per event); everything else happens on the refresh timer
(:mod:`._refresh`) or on a click, never once per message.

*Held by* counts client sessions, which is what the worker can know honestly: a
result or a sent tensor is held by the session that created it (it is freed when
that session ends); the owner's data is held by each connected session whose
search returned it (the worker is not told when such a pointer dies, so this is
an upper bound until that session ends).
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

import ipywidgets as widgets

from ...display import short_id
from ...events import Event
from ...owner.store import Entry
from ...owner.trained import split_warning
from . import _html as H
from . import graph as G
from . import owner_tables as T
from ._inspector import RegistryInspector
from ._refresh import LivePanel, close_tree
from .connection_panel import _shell

__all__ = ["WorkerPanel"]

LOG_ROWS = 500  # rows kept in the command log's ring
SHOW_LOG_ROWS = 100  # rows shown (newest first); older ones stay in the ring (text, repr)
SHOW_OBJECTS = 300  # registry rows shown
GRAPH_NODES = 50
_LOGGED = ("command", "get", "request", "decision")
#: The kinds kept (besides commands) until the next render: the log's, and what the holders count needs.
#: Others only mark the panel dirty, so a loop of frees keeps no event alive here.
_KEPT = frozenset({"get", "request", "decision", "search", "disconnect", "start", "stop"})


class WorkerPanel(LivePanel):
    """A live view of one :class:`~syft_magics.Worker`; ``worker.panel()`` or ``%syft_panel NAME``."""

    def __init__(self, worker: Any, *, log_rows: int = LOG_ROWS, graph_nodes: int = GRAPH_NODES) -> None:
        super().__init__()
        self._init_live()
        self.worker = worker
        self.graph_nodes = graph_nodes
        self._stopped = not worker.running
        # the log's ring, newest last: [event, row html, text]; rows are formatted when first shown
        self._log: Deque[Event] = deque(maxlen=log_rows)
        self._row_cache: Dict[int, Tuple[Event, str, str]] = {}  # id(event) -> (event, row html, text)
        self._dirty = False
        self._commands: Deque[Event] = deque(maxlen=log_rows)
        self._others: Deque[Event] = deque(maxlen=100_000)  # only the kinds in _KEPT
        self._search_ids: Dict[str, Set[str]] = {}  # client label -> hex ids (when events carry them)
        self._known: Dict[str, Dict[str, Any]] = {}  # hex -> snapshot (no tensor) of an entry the graph drew
        self._freed: Deque[Dict[str, Any]] = deque(maxlen=GRAPH_NODES)
        self._seen_commands = 0
        self._note_text = ""
        self._note_error = False
        self._request_rows: Dict[int, widgets.HBox] = {}
        self.last_graph: Optional[G.Graph] = None  # every node known
        self.shown_graph: Optional[G.Graph] = None  # what is drawn (older nodes folded)

        self.header = widgets.HTML()
        self.registry = widgets.HTML()
        self.commands = widgets.HTML()
        self.pending_title = widgets.HTML()
        self.pending_box = widgets.VBox()
        self.history = widgets.HTML()
        self.requests_box = widgets.VBox([self.pending_title, self.pending_box, self.history])
        self.graph = widgets.HTML()
        self.clients_html = widgets.HTML()
        self.footer = widgets.HTML()
        for w, cls in ((self.registry, "syft-registry"), (self.commands, "syft-commands"),
                       (self.requests_box, "syft-requests"), (self.graph, "syft-graph-view"),
                       (self.clients_html, "syft-clients"), (self.header, "syft-header"),
                       (self.footer, "syft-footer")):
            w.add_class(cls)
        self.inspector = RegistryInspector(worker)  # choose an object: the owner's card for it
        self.tabs = widgets.Tab(children=[widgets.VBox([self.registry, self.inspector]), self.commands,
                                          self.requests_box, self.graph, self.clients_html])
        self.tabs.titles = ("Registry", "Commands", "Requests", "Graph", "Clients")
        self.tabs.observe(lambda change: self.request_refresh(), "selected_index")
        self.children = [self.header, self.tabs, self.footer]
        self.add_class("syft-panel")
        self.add_class("syft-worker-panel")
        self.layout = widgets.Layout(width="100%")

        # what happened before the panel opened (the recent ring), then the live stream
        for event in list(worker.events.recent):
            self._on_event(event)
        self._unsubscribe = worker.events.subscribe(self._on_event)
        self._running_cell = False  # Approve / Deny clicks wait while a cell of this kernel runs
        self._shell = _shell()  # the owner's notebook, if any
        if self._shell is not None:
            self._shell.events.register("pre_run_cell", self._cell_started)
            self._shell.events.register("post_run_cell", self._cell_finished)
        self.refresh()
        if not self._stopped:
            self._start_live()

    # -- the serving path: append only -----------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "command":
            self._commands.append(event)
        elif kind in _KEPT:
            self._others.append(event)
        else:  # "free", "share", "connect"...: the store and the sessions are read when rendering
            self._dirty = True

    def _changed(self) -> bool:
        return self._dirty or bool(self._commands) or bool(self._others)

    # -- actions ----------------------------------------------------------------------------------
    def approve(self, n: int) -> None:
        """What the Approve button does: let request ``n`` through."""
        try:
            self.worker.approve(n)
            self._note(f"approved request #{n}")
        except Exception as exc:
            self._note(f"could not approve #{n}: {exc}", error=True)
        self.refresh()

    def deny(self, n: int, reason: str = "") -> None:
        """What the Deny button does: refuse request ``n`` (with the reason typed next to it)."""
        try:
            self.worker.deny(n, reason)
            self._note(f"denied request #{n}" + (f": {reason}" if reason else ""))
        except Exception as exc:
            self._note(f"could not deny #{n}: {exc}", error=True)
        self.refresh()

    def _cell_started(self, *_: Any) -> None:
        self._running_cell = True
        self.request_refresh()

    def _cell_finished(self, *_: Any) -> None:
        self._running_cell = False
        self.request_refresh()

    def _note(self, text: str, error: bool = False) -> None:
        self._note_text, self._note_error = text, error

    def request_buttons(self, n: int) -> Tuple[widgets.Button, widgets.Text, widgets.Button]:
        """The Approve button, reason box and Deny button of pending request ``n`` (for tests and scripts)."""
        row = self._request_rows[n]
        return row.children[1], row.children[2], row.children[3]

    # -- rendering (timer thread or click) ---------------------------------------------------------
    def _render(self, full: bool = True) -> None:
        if self._closed:
            return
        self._dirty = False
        tab = self.tabs.selected_index
        shows = [full or tab == i for i in range(5)]  # registry, commands, requests, graph, clients
        stop_seen = False
        others: List[Event] = []
        while self._others:
            others.append(self._others.popleft())
        commands: List[Event] = []
        while self._commands:
            commands.append(self._commands.popleft())
        for e in others:
            self._absorb(e)
            if e.kind == "stop":
                stop_seen = True
        # the log in time order (commands and the other logged kinds interleaved); formatted when shown
        for e in sorted([*commands, *(o for o in others if o.kind in _LOGGED)], key=lambda e: e.time):
            self._log.append(e)
        self._seen_commands += len(commands)

        w = self.worker
        entries = w.store.entries()
        sessions = list(w.clients)
        owner = sorted((e for e in entries if e.session is None), key=lambda e: e.created)
        newest = heapq.nlargest(max(SHOW_OBJECTS, 2 * self.graph_nodes),
                                (e for e in entries if e.session is not None), key=lambda e: e.created)
        shown = (owner + newest)[:SHOW_OBJECTS]
        drawn = sorted(owner, key=lambda e: not e.tags)[: self.graph_nodes // 3] + newest[: 2 * self.graph_nodes]
        holders = self._holders((shown if shows[0] else []) + (drawn if shows[3] else []), sessions)
        self.header.value = T.header_html(w, entries, sessions)
        if shows[0]:
            self.registry.value = T.registry_html(w, shown, len(entries), holders)
            self.inspector.update(shown)
        if shows[1]:
            self.commands.value = self._commands_html()
        self._render_requests()  # always: a new request must show at once (its rows change rarely)
        if shows[3]:
            self.last_graph = self._graph(drawn, len(entries), sessions, holders)
            self.shown_graph = G.collapse(self.last_graph, self.graph_nodes)
            self.graph.value = (H.STYLE + '<div class="syft-scroll" style="max-height:520px">'
                                + G.to_svg(G.layout(self.shown_graph), local_title="clients", empty="no objects yet")
                                + "</div>" + G.legend())
        if shows[4]:
            self.clients_html.value = T.clients_html(w, sessions)
        pending = len(w.requests.pending)
        self.tabs.titles = ("Registry", "Commands", f"Requests ({pending})" if pending else "Requests", "Graph",
                            "Clients")
        note = H.esc(self._note_text)
        self.footer.value = (f'<span style="color:#c62828">{note}</span>' if self._note_error
                             else f'<span class="syft-muted" style="font-size:12px">{note}</span>')
        if stop_seen or not w.running:
            self._stopped = True
            self._stop_live()

    def _absorb(self, e: Event) -> None:
        d = e.data
        if e.kind == "search":
            client = d.get("session") or d.get("client", "?")  # a session id, where the event carries one
            self._search_ids.setdefault(client, set()).update(
                i.hex() if isinstance(i, bytes) else str(i) for i in d.get("ids") or ())
        elif e.kind == "disconnect":
            for key in (d.get("session"), d.get("client", "?")):
                self._search_ids.pop(str(key), None)
        elif e.kind == "start":
            self._stopped = False

    def _label(self, oid: Any) -> str:
        raw = oid if isinstance(oid, bytes) else bytes.fromhex(str(oid)) if T.is_hex(oid) else None
        entry = self.worker.store.get(raw) if raw is not None else None
        if entry is not None:
            return entry.label
        known = self._known.get(raw.hex() if raw is not None else str(oid))
        if known is not None:
            return known["label"]
        text = raw.hex() if raw is not None else str(oid)
        return text[:8] + "…"

    def _formatted(self, event: Event, cache: Optional[Dict[int, Tuple[Event, str, str]]] = None) -> Tuple[str, str]:
        hit = self._row_cache.get(id(event))
        if hit is None or hit[0] is not event:
            html, text = T.log_row(self.worker, event, self._label)
            hit = (event, html, text)
        if cache is not None:
            cache[id(event)] = hit
        return hit[1], hit[2]

    def _snapshots(self, drawn: List[Entry]) -> List[Dict[str, Any]]:
        """Snapshots (no tensors) of the entries to draw; those drawn last time and gone since are freed."""
        store = self.worker.store
        for hexid, gone in list(self._known.items()):
            if bytes.fromhex(hexid) not in store:
                del self._known[hexid]
                gone["state"] = G.FREED
                self._freed.append(gone)
        now: Dict[str, Any] = {}
        for e in drawn:
            snap = self._known.get(e.hex)
            if snap is None:
                snap = {"hex": e.hex, "label": e.label, "shape": tuple(e.shape), "dtype": e.dtype, "op": e.op,
                        "inputs": tuple(i.hex() for i in e.inputs), "origin": e.origin, "session": e.session,
                        "created": e.created, "tags": e.tags, "state": G.ERROR if e.error else G.LIVE,
                        "error": e.error or ""}
            now[e.hex] = snap
        self._known = now
        return list(now.values())

    def _holders(self, entries: List[Entry], sessions: List[Any]) -> Dict[str, List[str]]:
        """hex id -> the labels of the connected sessions that hold it (see the module doc)."""
        live = {s.ident: s.label for s in sessions}
        # searches are keyed by session id when the worker's events carry it, else by client label
        # (two clients of one process on one host share a label: they then count once)
        labels = {**{s.short: s.label for s in sessions}, **{s.label: s.label for s in sessions}}
        out: Dict[str, List[str]] = {}
        for e in entries:
            if e.session is not None and e.session in live:
                out[e.hex] = [live[e.session]]  # (an entry may be listed twice: shown and drawn)
        for client, ids in self._search_ids.items():
            if client in labels:
                for hexid in ids:
                    if labels[client] not in out.get(hexid, ()):
                        out.setdefault(hexid, []).append(labels[client])
        return out

    def _commands_html(self) -> str:
        cache: Dict[int, Tuple[Event, str, str]] = {}  # only the rows on screen stay formatted
        rows = [self._formatted(e, cache)[0] for e in list(self._log)[-SHOW_LOG_ROWS:][::-1]]
        self._row_cache = cache
        return T.commands_html(self.worker, rows, len(self._log))

    def _render_requests(self) -> None:
        book = self.worker.requests
        pending = book.pending
        want = {r.n: r for r in pending}
        for n in [n for n in self._request_rows if n not in want]:
            row = self._request_rows.pop(n)
            close_tree(row)
        for n, req in want.items():
            if n not in self._request_rows:
                self._request_rows[n] = self._request_row(req)
        rows = [self._request_rows[n] for n in sorted(self._request_rows)]
        if list(self.pending_box.children) != rows:
            self.pending_box.children = rows
        busy = ('<div class="syft-busy syft-badge syft-warn" style="white-space:normal;margin:2px 0">This notebook '
                'is running a cell: Approve and Deny take effect when it finishes (Jupyter delivers button clicks '
                'between cells).</div>') if pending and self._running_cell else ""
        self.pending_title.value = (H.STYLE + f'<div style="font-weight:600;margin:4px 0">'
                                    f'{"Pending requests" if pending else "No pending requests"}</div>' + busy)
        decided = sorted(book.history, key=lambda r: r.decided or 0, reverse=True)[:100]
        rows_html = [H.row((f"#{r.n}", r.status, r.client, " ".join(r.tags) or r.object_id[:8], r.lineage,
                            str(tuple(r.shape)), r.reason or "-", H.clock(r.decided)),
                           cls=f"syft-decided syft-{r.status}" + (" syft-err" if r.status == "denied" else ""))
                     for r in decided]
        self.history.value = (H.STYLE + '<div style="font-weight:600;margin:10px 0 4px">History</div>'
                              + H.table(("n", "status", "client", "object", "lineage", "shape", "reason", "decided"),
                                        rows_html, empty="no decided requests yet"))

    def _request_row(self, req: Any) -> widgets.HBox:
        what = " ".join(req.tags) or short_id(req.object_id)
        # a move to another worker reads "wants to move z to Alice at tcp://..."
        verb, where = ("wants to move", f" to {req.to}") if req.what == "move" else ("wants", "")
        # (a model whose weights hold the owner's data put there other than by training: said first, as a warning)
        warning, lineage = split_warning(req.lineage)
        badge = f'<div class="syft-badge syft-warn" style="white-space:normal;margin:2px 0">{H.esc(warning)}</div>' \
            if warning else ""
        desc = widgets.HTML(
            H.STYLE + f'<div style="font-size:12px;line-height:1.35">{badge}<b>#{req.n}</b> '
            f'<span class="syft-muted">{H.esc(H.clock(req.created))}</span> {H.esc(req.client)} {verb} '
            f'<b>{H.esc(what)}</b>{H.esc(where)} = <code>{H.esc(lineage)}</code><br><span class="syft-muted">shape '
            f'{H.esc(tuple(req.shape))}, {H.esc(req.dtype)}, id {H.esc(req.object_id[:12])}…</span></div>')
        desc.layout = widgets.Layout(flex="1 1 auto", width="auto")
        approve = widgets.Button(description="Approve", button_style="success", icon="check",
                                 tooltip=f"let request #{req.n} through", layout=widgets.Layout(width="112px",
                                                                                               min_width="112px"))
        reason = widgets.Text(placeholder="reason (optional)", layout=widgets.Layout(width="180px"))
        deny = widgets.Button(description="Deny", button_style="danger", icon="times",
                              tooltip=f"refuse request #{req.n} (with the reason, if any)",
                              layout=widgets.Layout(width="84px", min_width="84px"))
        approve.add_class("syft-approve")
        deny.add_class("syft-deny")
        reason.add_class("syft-reason")
        n = req.n
        approve.on_click(lambda _: self.approve(n))
        deny.on_click(lambda _: self.deny(n, reason.value.strip()))
        row = widgets.HBox([desc, approve, reason, deny],
                           layout=widgets.Layout(align_items="center", border="1px solid #e0c36a",
                                                 padding="4px", margin="2px 0"))
        row.add_class("syft-request")
        row.add_class(f"syft-request-{n}")
        return row

    def _graph(self, drawn: List[Entry], total: int, sessions: List[Any], holders: Dict[str, List[str]]) -> G.Graph:
        """Who holds what and what was made from what: the drawn entries, recently freed ones (faded), and
        the connected sessions; the other ``total - len(drawn)`` objects are counted as ``+N older``."""
        nodes: List[G.Node] = []
        edges: List[G.Edge] = []
        group = self.worker.name
        live = self._snapshots(drawn)
        present_live = {s["hex"] for s in live}
        snaps = live + [s for s in self._freed if s["hex"] not in present_live]
        present = {s["hex"] for s in snaps}
        for s in snaps:
            kind = "owner" if s["session"] is None else ("result" if s["op"] else "sent")
            title = (f"{s['label']}  {s['hex']}\nshape {s['shape']}, {s['dtype']}\norigin {s['origin']}"
                     + (f"\nmade by {s['op']}" if s["op"] else "") + ("\nfreed" if s["state"] == G.FREED else "")
                     + (f"\nerror: {s['error']}" if s["error"] else ""))
            nodes.append(G.Node(f"o:{s['hex']}", s["label"], G.REMOTE, group=group, detail=T.shape_text(s["shape"]),
                                state=s["state"], title=title, order=s["created"],
                                pinned=bool(s["tags"]) and s["session"] is None, kind=kind))
            for inp in s["inputs"]:
                if inp in present:
                    edges.append(G.Edge(f"o:{inp}", f"o:{s['hex']}", G.LINEAGE, s["op"]))
        hidden = total - len(live)
        if hidden > 0:
            more = G.more_key(G.REMOTE, group)
            store = self.worker.store
            for s in snaps:
                if any(i not in present and bytes.fromhex(i) in store for i in s["inputs"]):
                    edges.append(G.Edge(more, f"o:{s['hex']}", G.LINEAGE, s["op"]))  # an input not drawn
        graph_hidden = {(G.REMOTE, group): max(0, hidden)}
        for s in sessions:
            nodes.append(G.Node(f"c:{s.short}", s.label, G.LOCAL, detail=s.short,
                                title=f"{s.label}\nsession {s.short}, since {H.clock(s.created)}",
                                order=s.created, kind="client", pinned=True))
        by_label = {s.label: f"c:{s.short}" for s in sessions}
        for hexid, labels in holders.items():
            if hexid in present:
                for label in labels:
                    if label in by_label:
                        edges.append(G.Edge(by_label[label], f"o:{hexid}", G.POINTS))
        return G.Graph(nodes, edges, hidden=graph_hidden)

    def _broken(self, text: str) -> None:
        self._note(f"panel stopped refreshing: {text.strip().splitlines()[-1]}", error=True)
        super()._broken(text)

    # -- lifecycle ------------------------------------------------------------------------------------
    def _release(self) -> None:
        try:
            self._unsubscribe()
        finally:
            if self._shell is not None:
                for name, hook in (("pre_run_cell", self._cell_started), ("post_run_cell", self._cell_finished)):
                    try:
                        self._shell.events.unregister(name, hook)
                    except ValueError:
                        pass
            close_tree(self.inspector)
            for row in list(self._request_rows.values()):
                close_tree(row)
            self._request_rows.clear()

    # -- text, where no widget front end is present -------------------------------------------------
    def text(self) -> str:
        """A plain-text summary: counters, registry, the last commands, pending requests."""
        w = self.worker
        entries = sorted(w.store.entries(), key=lambda e: e.created)
        holders = self._holders(entries, list(w.clients))
        stats = w.stats
        state = f"serving at {w.address}" if w.running else "stopped"
        lines = [f"WorkerPanel of {w.name} ({state}, policy {w.policy.summary}): {H.plural(len(w.clients), 'client')}, "
                 f"{H.plural(len(entries), 'object')} ({H.human_bytes(sum(e.nbytes for e in entries))}), "
                 f"{H.plural(w.events.totals.get('command', 0), 'command')}, "
                 f"{H.plural(stats.get('errors', 0), 'error')}, "
                 f"tensors sent in {H.human_bytes(stats.get('bytes_in', 0))}, "
                 f"values out {H.human_bytes(stats.get('bytes_out', 0))}, "
                 f"{H.plural(len(w.requests.pending), 'pending request')}"]
        if stats.get("refused"):
            lines.append(f"refused {stats['refused']:,}: {T.refusals_text(stats)}")
        if entries:
            lines.append("registry:")
            for e in entries[:20]:
                lines.append(f"  {e.hex[:8]}  {' '.join(e.tags) or '-':10} {str(tuple(e.shape)):12} {e.dtype:8} "
                             f"{H.human_bytes(e.nbytes):>9}  {e.origin}  held by {len(holders.get(e.hex, []))}")
            if len(entries) > 20:
                lines.append(f"  ... {len(entries) - 20} more")
        recent = [self._formatted(e)[1] for e in list(self._log)[-5:][::-1]]
        if recent:
            lines.append("last commands:")
            lines.extend("  " + t for t in recent)
        for req in w.requests.pending:
            lines.append("  " + req.describe())
        return "\n".join(lines)

