"""The data scientist's live panel: the pointers this kernel holds and the pointer graph.

Built from the client's own knowledge: its live pointers (``client.pointers``,
a weak map, so the panel never keeps a pointer alive) and its events (``op``
gives lineage, ``error`` marks failed results, ``search``/``send`` origins,
``waiting`` an approval in progress). The user's variable names come from the
IPython namespace (:mod:`._names`). A pointer that disappears from the weak map
was garbage-collected: it shows as freed, and so does the remote object when
this session owned it.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

import ipywidgets as widgets

from ...display import dtype_text, short_id
from ...events import Event
from . import _html as H
from . import graph as G
from ._names import find_names, user_namespace
from ._refresh import LivePanel

__all__ = ["ConnectionPanel"]

GRAPH_NODES = 50
MAX_RECORDS = 1000  # pointer and object records kept (freed ones are dropped oldest first)
_order = itertools.count()


class _Obj:
    __slots__ = ("hex", "worker", "tags", "shape", "dtype", "op", "inputs", "order", "error", "owned", "origin")

    def __init__(self, hexid: str, worker: str, order: float) -> None:
        self.hex, self.worker, self.order = hexid, worker, order
        self.tags: Tuple[str, ...] = ()
        self.shape: Optional[Tuple[int, ...]] = None
        self.dtype = ""
        self.op = ""
        self.inputs: Tuple[str, ...] = ()
        self.error = ""
        self.owned = True
        self.origin = ""


class _Ptr:
    __slots__ = ("local_id", "hex", "worker", "shape", "dtype", "tags", "owned", "alive", "order", "names", "client")

    def __init__(self, ptr: Any, worker: str, order: float, client: Any) -> None:
        self.local_id = ptr.id
        self.hex = ptr.id_at_location
        self.worker = worker
        self.shape = ptr.known_shape  # None while the owner withholds it
        self.dtype = dtype_text(ptr.dtype)
        self.tags = tuple(ptr.tags)
        self.owned = ptr.owned
        self.alive = True
        self.order = order
        self.names: List[str] = []
        self.client = client

    @property
    def name(self) -> str:
        return self.names[0] if self.names else f"ptr {self.local_id}"


class ConnectionPanel(LivePanel):
    """A live view of one or more :class:`~syft_magics.Client` connections; ``client.panel()``."""

    def __init__(self, client: Any, *, namespace: Optional[Mapping[str, Any]] = None,
                 graph_nodes: int = GRAPH_NODES) -> None:
        super().__init__()
        self._init_live()
        self.clients = [client]
        self.client = client
        self.graph_nodes = graph_nodes
        self._namespace = namespace
        # what the client's events append to (the user's thread: one call per event, no more): op events
        # in a ring as long as the records kept (older lineage could not be drawn anyway), the rest apart
        # (one pair of deques per client, holding the events themselves: no object is made per event, so
        # the panel adds nothing for the garbage collector to track in a loop of millions of ops)
        self._ops: List[Deque[Event]] = [deque(maxlen=MAX_RECORDS) for _ in self.clients]
        self._inbox: List[Deque[Event]] = [deque(maxlen=20_000) for _ in self.clients]
        self._objs: "OrderedDict[Tuple[str, str], _Obj]" = OrderedDict()  # (worker, hex) -> record
        self._ptrs: "OrderedDict[Tuple[int, int], _Ptr]" = OrderedDict()  # (client idx, local id) -> record
        self._seq_out: Dict[Tuple[int, Any], Tuple[str, ...]] = {}  # (client idx, seq) -> out hex ids
        self._early_errors: Dict[Tuple[int, Any], str] = {}
        self._errors: Deque[str] = deque(maxlen=20)
        self._waiting: Dict[int, Tuple[Any, float]] = {}  # client idx -> (request n, since)
        self._live_sig: Tuple = ()
        self.last_graph: Optional[G.Graph] = None  # every node known
        self.shown_graph: Optional[G.Graph] = None  # what is drawn (older nodes folded)

        self.header = widgets.HTML()
        self.pointers_html = widgets.HTML()
        self.graph = widgets.HTML()
        self.footer = widgets.HTML()
        self.pointers_html.add_class("syft-pointers")
        self.graph.add_class("syft-graph-view")
        self.header.add_class("syft-header")
        self.footer.add_class("syft-footer")
        self.tabs = widgets.Tab(children=[self.graph, self.pointers_html])
        self.tabs.titles = ("Graph", "Pointers")
        self.tabs.observe(lambda change: self.request_refresh(), "selected_index")
        self.children = [self.header, self.tabs, self.footer]
        self.add_class("syft-panel")
        self.add_class("syft-connection-panel")
        self.layout = widgets.Layout(width="100%")

        self._unsubscribe = []
        for i, c in enumerate(self.clients):
            for event in list(c.events.recent):
                (self._ops[i] if event.kind == "op" else self._inbox[i]).append(event)
            self._unsubscribe.append(c.events.subscribe(_appender(self._ops[i].append, self._inbox[i].append)))
        self._shell = _shell()
        if self._shell is not None:
            self._shell.events.register("post_run_cell", self._after_cell)
        self.refresh()
        if any(not c.closed for c in self.clients):
            self._start_live()

    # -- the user's thread: append only -----------------------------------------------------------
    def _changed(self) -> bool:
        return any(self._ops) or any(self._inbox)

    def _after_cell(self, *_: Any) -> None:
        # a cell finished: names may have changed, and a .get() that was waiting has returned or raised
        self._waiting.clear()
        self.request_refresh()

    # -- rendering -----------------------------------------------------------------------------------
    def _render(self, full: bool = True) -> None:
        if self._closed:
            return
        tab = self.tabs.selected_index
        events = []
        for i in range(len(self.clients)):
            for queue in (self._inbox[i], self._ops[i]):
                while queue:
                    events.append((i, queue.popleft()))
        events.sort(key=lambda ie: ie[1].time)
        for i, e in events:
            self._absorb(i, e)
        live: List[Any] = []
        for i, c in enumerate(self.clients):
            closed = c.closed
            for p in ([] if closed else c.pointers):
                if not p.freed:
                    live.append((i, p))
        live_keys = set()
        for i, p in live:
            key = (i, p.id)
            live_keys.add(key)
            rec = self._ptrs.get(key)
            if rec is None:
                rec = self._ptrs[key] = _Ptr(p, self.clients[i].name, next(_order), self.clients[i])
                obj = self._obj(i, rec.hex)
                obj.shape, obj.dtype = rec.shape, rec.dtype
                if rec.tags and not obj.tags:
                    obj.tags = rec.tags
                if not rec.owned:
                    obj.owned = False
                    obj.origin = obj.origin or "search"
        namespace = self._namespace if self._namespace is not None else user_namespace()
        names = find_names(namespace, [p for _, p in live])
        for key, rec in self._ptrs.items():
            rec.alive = key in live_keys
            if rec.alive:
                rec.names = names.get(rec.local_id, [])
        live = []  # no pointer outlives the render
        self._trim()
        self.header.value = self._header_html()
        if full or tab == 1:
            self.pointers_html.value = self._pointers_html()
        if full or tab == 0:
            self._render_graph()
        errors = list(self._errors)[-3:]
        self.footer.value = "".join(f'<div style="color:#c62828;font-size:12px">{H.esc(t)}</div>' for t in errors)
        if all(c.closed for c in self.clients):
            self._stop_live()

    def _render_graph(self) -> None:
        self.last_graph = self.build_graph(limit=2 * self.graph_nodes)
        self.shown_graph = G.collapse(self.last_graph, self.graph_nodes)
        self.graph.value = (H.STYLE + '<div class="syft-scroll" style="max-height:560px">'
                            + G.to_svg(G.layout(self.shown_graph), local_title="this kernel",
                                       empty="no pointers yet: search(...) or send(...) on the connection")
                            + "</div>" + G.legend())

    def _obj(self, i: int, hexid: str) -> _Obj:
        key = (self.clients[i].name, hexid)
        obj = self._objs.get(key)
        if obj is None:
            obj = self._objs[key] = _Obj(hexid, self.clients[i].name, next(_order))
        return obj

    def _absorb(self, i: int, e: Event) -> None:
        d = e.data
        if e.kind == "op":
            outs = tuple(o.hex() for o in d.get("out", ()))
            ins = tuple(o.hex() for o in d.get("inputs", ()))
            for o in ins:  # inputs are older than the result, even when first seen here (a panel opened late)
                self._obj(i, o)
            for o in outs:
                obj = self._obj(i, o)
                obj.op, obj.inputs, obj.origin = d.get("op", "?"), ins, "op"
            seq = d.get("seq")
            if seq is not None:
                self._seq_out[(i, seq)] = outs
                message = self._early_errors.pop((i, seq), None)
                if message is not None:
                    self._mark_error(i, outs, message)
            if len(self._seq_out) > 4 * MAX_RECORDS:
                for k in list(self._seq_out)[: 2 * MAX_RECORDS]:
                    del self._seq_out[k]
        elif e.kind == "error":
            seq = d.get("seq")
            message = str(d.get("message", "error"))
            self._errors.append(f"{self.clients[i].name}: {message}")
            failed = self._seq_out.get((i, seq))
            if failed is None:
                if seq is not None and len(self._early_errors) < 1000:
                    self._early_errors[(i, seq)] = message
            else:
                self._mark_error(i, failed, message)
        elif e.kind == "send":
            oid = d.get("id")
            if isinstance(oid, bytes):
                obj = self._obj(i, oid.hex())
                obj.origin = "send"
        if e.kind == "waiting":
            self._waiting[i] = (d.get("n"), e.time)
        elif e.kind in ("get", "op", "search", "send", "delete", "disconnect", "error"):
            # the main thread moved on: the .get() that waited has returned (or raised)
            self._waiting.pop(i, None)

    def _mark_error(self, i: int, outs: Tuple[str, ...], message: str) -> None:
        for o in outs:
            self._obj(i, o).error = message

    def _trim(self) -> None:
        """Forget the oldest freed records beyond :data:`MAX_RECORDS`."""
        if len(self._ptrs) > MAX_RECORDS:
            for key in [k for k, r in self._ptrs.items() if not r.alive][: len(self._ptrs) - MAX_RECORDS]:
                del self._ptrs[key]
        if len(self._objs) > MAX_RECORDS:
            held = {(r.worker, r.hex) for r in self._ptrs.values()}
            for obj_key in [k for k in self._objs if k not in held][: len(self._objs) - MAX_RECORDS]:
                del self._objs[obj_key]

    # -- views ------------------------------------------------------------------------------------------
    def _obj_state(self, obj: _Obj, ptrs: List[_Ptr], closed: bool) -> str:
        if obj.error:
            return G.ERROR
        if closed:
            return G.FREED
        if obj.owned and not any(p.alive for p in ptrs):
            # this session made it and no pointer to it lives (the last one died, or a temporary's
            # pointer was collected before the panel saw it): the worker has freed it
            return G.FREED
        return G.LIVE

    def _labels(self) -> Dict[Tuple[str, str], str]:
        """(worker, hex) -> how an object reads: tags, else the name of a live pointer, else a short id."""
        out: Dict[Tuple[str, str], str] = {}
        for rec in self._ptrs.values():
            key = (rec.worker, rec.hex)
            if rec.alive and rec.names and key not in out:
                out[key] = rec.names[0]
        for key, obj in self._objs.items():
            if obj.tags:
                out[key] = " ".join(obj.tags)
            elif key not in out:
                out[key] = short_id(obj.hex)
        return out

    def build_graph(self, limit: Optional[int] = None) -> G.Graph:
        """The pointer graph: pointers (left) -> objects (right, per worker), inputs -> results (by op).

        With ``limit``, only the owner's tagged data and the newest ``limit`` objects (and the pointers to
        them) become nodes; the others are counted in ``Graph.hidden`` (drawn as ``+N older``).
        """
        by_obj: Dict[Tuple[str, str], List[_Ptr]] = {}
        for rec in self._ptrs.values():
            by_obj.setdefault((rec.worker, rec.hex), []).append(rec)
        closed = {c.name: c.closed for c in self.clients}
        labels = self._labels()
        nodes: List[G.Node] = []
        edges: List[G.Edge] = []
        candidates = [key for key, obj in self._objs.items() if key in by_obj or obj.op or obj.error]
        if limit is not None and len(candidates) > limit:
            pinned = [k for k in candidates if not self._objs[k].owned and self._objs[k].tags][: limit // 3]
            chosen = set(pinned) | set(candidates[-(limit - len(pinned)):])
        else:
            chosen = set(candidates)
        candidate_set = set(candidates)
        hidden: Dict[Tuple[str, str], int] = {}
        for key in candidates:
            if key not in chosen:
                hidden[(G.REMOTE, key[0])] = hidden.get((G.REMOTE, key[0]), 0) + 1
                hidden[(G.LOCAL, "")] = hidden.get((G.LOCAL, ""), 0) + len(by_obj.get(key, ()))
        shown = set()
        for key, obj in self._objs.items():
            if key not in chosen:
                continue
            ptrs = by_obj.get(key, [])
            shown.add(key)
            state = self._obj_state(obj, ptrs, closed.get(obj.worker, False))
            kind = "owner" if not obj.owned else ("result" if obj.op else "sent")
            made = f"{obj.op}({', '.join(labels.get((obj.worker, i), i[:8] + '…') for i in obj.inputs)})" \
                if obj.op else ("the owner's data" if not obj.owned else "sent from here")
            title = (f"{labels[key]} on {obj.worker}\nid@loc {obj.hex}\nshape {obj.shape}, {obj.dtype}\n{made}"
                     + (f"\nstate: {state}") + (f"\nerror: {obj.error}" if obj.error else ""))
            nodes.append(G.Node(f"o:{obj.worker}:{obj.hex}", _obj_label(obj), G.REMOTE, group=obj.worker,
                                detail=_shape(obj.shape), state=state, title=title, order=obj.order,
                                pinned=not obj.owned and bool(obj.tags), kind=kind))
        for key, obj in self._objs.items():
            if key in shown:
                for inp in obj.inputs:
                    if (obj.worker, inp) in shown:
                        edges.append(G.Edge(f"o:{obj.worker}:{inp}", f"o:{obj.worker}:{obj.hex}", G.LINEAGE, obj.op))
                    elif (obj.worker, inp) in candidate_set:  # an input not drawn: from "+N older"
                        edges.append(G.Edge(G.more_key(G.REMOTE, obj.worker), f"o:{obj.worker}:{obj.hex}",
                                            G.LINEAGE, obj.op))
        for (ci, lid), rec in self._ptrs.items():
            if (rec.worker, rec.hex) not in chosen:
                continue  # counted in hidden, with its object
            state = G.LIVE if rec.alive and not closed.get(rec.worker, False) else G.FREED
            title = (f"{', '.join(rec.names) or 'no variable refers to it'}\nPointerTensor(id={lid}, "
                     f"location={rec.worker}, id@loc={rec.hex[:12]}…)\nshape {rec.shape}, {rec.dtype}"
                     + ("" if rec.alive else "\nfreed"))
            nodes.append(G.Node(f"p:{ci}:{lid}", rec.name, G.LOCAL, detail=_shape(rec.shape), state=state,
                                title=title, order=rec.order, kind="pointer"))
            if (rec.worker, rec.hex) in shown:
                edges.append(G.Edge(f"p:{ci}:{lid}", f"o:{rec.worker}:{rec.hex}", G.POINTS))
        return G.Graph(nodes, edges, hidden=hidden)

    def _header_html(self) -> str:
        parts = [H.STYLE]
        alive = sum(1 for r in self._ptrs.values() if r.alive)
        freed = len(self._ptrs) - alive
        for i, c in enumerate(self.clients):
            state = ('<span class="syft-badge syft-good">connected</span>' if c.connected
                     else '<span class="syft-badge syft-bad">disconnected</span>')
            totals = c.events.totals
            ops = f"{totals.get('op', 0):,}"
            waiting = self._waiting.get(i)
            wait = (H.badge("waiting for approval of request", f"#{waiting[0]}", "warn") if waiting else "")
            parts.append(f'<div><span class="syft-title">{H.esc(c.name)}</span>{state}'
                         f'<span class="syft-muted" style="font-size:12px">{H.esc(c.address)}</span> '
                         f'{H.badge("policy", c.policy)}{H.badge("ops sent", ops)}'
                         f'{H.badge("errors", totals.get("error", 0), "bad" if totals.get("error") else "")}'
                         f'{H.badge("gets", totals.get("get", 0))}{wait}</div>')
        parts.append(f'<div style="margin-top:4px">{H.badge("live pointers", alive)}{H.badge("freed", freed)}</div>')
        return "".join(parts)

    def _pointers_html(self) -> str:
        labels = self._labels()
        closed = {c.name: c.closed for c in self.clients}
        rows = []
        recs = sorted(self._ptrs.items(), key=lambda kv: (not kv[1].alive, -kv[1].order))[:300]
        for (ci, lid), rec in recs:
            obj = self._objs.get((rec.worker, rec.hex))
            if obj is not None and obj.op:
                made = f"{obj.op}({', '.join(labels.get((rec.worker, i), i[:8] + '…') for i in obj.inputs)})"
            elif not rec.owned:
                made = f"search {' '.join(rec.tags)}" if rec.tags else "owner's data"
            else:
                made = "send"
            alive = rec.alive and not closed.get(rec.worker, False)
            error = obj.error if obj is not None else ""
            state = "error" if error else ("alive" if alive else "freed")
            cls = "syft-ptr" + ("" if alive else " syft-freed") + (" syft-err" if error else "")
            rows.append(H.row((", ".join(rec.names) or "-", rec.worker, f"{rec.hex[:12]}…@{rec.worker}",
                               _shape(rec.shape), rec.dtype, made, state),
                              cls=cls, attrs=f'data-id="{H.esc(rec.hex)}"',
                              titles=["", "", rec.hex, "", "", "", error]))
        return (H.STYLE + '<div class="syft-scroll">'
                + H.table(("name", "location", "id@loc", "shape", "dtype", "made by", "state"), rows,
                          empty="no pointers yet") + "</div>")

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _release(self) -> None:
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:
                pass
        if self._shell is not None:
            try:
                self._shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass

    # -- text -----------------------------------------------------------------------------------------------
    def text(self) -> str:
        """A plain-text summary: connections, pointers (by name) and the graph's edges."""
        lines = []
        for c in self.clients:
            lines.append(f"ConnectionPanel of {c.name} at {c.address} "
                         f"({'connected' if c.connected else 'disconnected'}, policy {c.policy}): "
                         f"{H.plural(c.events.totals.get('op', 0), 'op')} sent")
        recs = [r for r in self._ptrs.values()]
        alive = [r for r in recs if r.alive]
        lines.append(f"{H.plural(len(alive), 'live pointer')}, {len(recs) - len(alive)} freed")
        for r in sorted(alive, key=lambda r: r.order)[:20]:
            lines.append(f"  {r.name:12} {r.hex[:12]}…@{r.worker}  {_shape(r.shape)} {r.dtype}")
        graph = self.last_graph if self.last_graph is not None else self.build_graph()
        edges = G.summary(graph)
        if edges:
            lines.append("graph:")
            lines.append(edges)
        return "\n".join(lines)


def _appender(ops: Any, others: Any) -> Any:
    """The subscriber: one comparison and one deque append per event, in the user's thread."""
    def append(event: Event) -> None:
        if event.kind == "op":
            ops(event)
        else:
            others(event)
    return append


def _obj_label(obj: _Obj) -> str:
    return " ".join(obj.tags) if obj.tags else short_id(obj.hex)


def _shape(shape: Optional[Tuple[int, ...]]) -> str:
    if shape is None:
        return ""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    return shell if shell is not None and hasattr(shell, "events") else None

