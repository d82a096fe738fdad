"""The pointer graph as data and as an SVG string: pure functions, no widgets, unit-testable.

A :class:`Graph` has *local* nodes (pointers held in this kernel, or, in the worker's
panel, the client sessions), *remote* nodes (objects on a worker, grouped per
worker), ``points`` edges (local -> remote) and ``lineage`` edges (input -> result,
labelled with the op that made the result).

:func:`collapse` keeps a graph legible: past ``max_nodes`` it folds the oldest
nodes into one ``+N older`` node per side and group. :func:`layout` places the
nodes: local nodes in a column on the left, each on the row of the object it
points at; remote objects on the right in one box per worker, one row each in
creation order, shifted right by lineage depth. :func:`to_svg` draws it with
plain SVG elements (no ids, no markers, no scripts), every label escaped, so it
can sit in an ``ipywidgets.HTML`` anywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from ...display import esc

__all__ = ["Node", "Edge", "Graph", "Layout", "collapse", "layout", "to_svg", "render", "more_key"]

LOCAL, REMOTE = "local", "remote"
POINTS, LINEAGE = "points", "lineage"
LIVE, FREED, ERROR = "live", "freed", "error"


@dataclass
class Node:
    """One box of the graph."""

    key: str
    label: str
    side: str  # LOCAL (left) or REMOTE (right)
    group: str = ""  # the worker a remote node lives on
    detail: str = ""  # a short second text, e.g. the shape
    state: str = LIVE  # LIVE, FREED (faded) or ERROR (red)
    title: str = ""  # tooltip
    order: float = 0.0  # creation order: lower is older
    pinned: bool = False  # never folded into "+N older" (e.g. the owner's tagged data)
    kind: str = ""  # free-form style hint: "owner", "result", "sent", "pointer", "client", "more"
    count: int = 0  # for a "+N older" node: how many nodes it stands for


@dataclass
class Edge:
    src: str
    dst: str
    kind: str  # POINTS or LINEAGE
    label: str = ""  # the op, for lineage edges


@dataclass
class Graph:
    nodes: List[Node] = field(default_factory=list)
    edges: List[Edge] = field(default_factory=list)
    #: nodes left out before the graph was built (a panel draws only the newest): ``(side, group) -> count``;
    #: :func:`collapse` adds them to the ``+N older`` nodes, and edges may already refer to those
    #: (``more_key(side, group)``).
    hidden: Dict[Tuple[str, str], int] = field(default_factory=dict)

    def node(self, key: str) -> Node:
        for n in self.nodes:
            if n.key == key:
                return n
        raise KeyError(key)

    def keys(self, side: Optional[str] = None) -> List[str]:
        return [n.key for n in self.nodes if side is None or n.side == side]

    def edge_set(self, kind: Optional[str] = None) -> set:
        """``{(src, dst)}`` (of one kind), handy in tests."""
        return {(e.src, e.dst) for e in self.edges if kind is None or e.kind == kind}

    def __len__(self) -> int:
        return len(self.nodes)


# -- collapsing ------------------------------------------------------------------------------
def more_key(side: str, group: str = "") -> str:
    """The key of the ``+N older`` node of one side (and, for remote nodes, one worker)."""
    return f"more:{side}:{group if side == REMOTE else ''}"


def collapse(graph: Graph, max_nodes: int = 50) -> Graph:
    """A graph of at most ``max_nodes`` ordinary nodes (plus one ``+N older`` node per side and group).

    Each remote object travels with the local nodes that point at it (a *unit*), so a
    pointer is never shown without its object. Pinned units come first (up to a third of
    the budget), then units from the newest back. Edges to folded nodes go to the
    ``+N older`` node of their side and group; duplicates and edges inside a fold vanish.
    """
    if len(graph.nodes) <= max_nodes and not any(graph.hidden.values()):
        return graph
    by_key = {n.key: n for n in graph.nodes}
    anchor: Dict[str, str] = {}  # local key -> the remote key it is shown with
    for e in graph.edges:
        if e.kind == POINTS and e.src in by_key and e.dst in by_key and e.src not in anchor:
            anchor[e.src] = e.dst
    units: Dict[str, List[str]] = {}
    for n in graph.nodes:
        if n.side == REMOTE:
            units.setdefault(n.key, []).insert(0, n.key)
    for n in graph.nodes:
        if n.side == LOCAL:
            units.setdefault(anchor.get(n.key, n.key), []).append(n.key)

    def unit_order(head: str) -> float:
        return max(by_key[k].order for k in units[head])

    heads = sorted(units, key=unit_order, reverse=True)
    pinned = [h for h in heads if by_key[h].pinned]
    rest = [h for h in heads if not by_key[h].pinned]
    keep: set = set()
    budget = max_nodes
    if len(graph.nodes) <= max_nodes:
        pinned, rest = [], []
        keep = set(by_key)
    for h in pinned:
        if len(units[h]) <= budget - (max_nodes * 2) // 3 or not keep:
            keep.update(units[h])
            budget -= len(units[h])
    for h in rest:
        if len(units[h]) > budget:
            # try smaller, older units? no: keep the newest contiguous run, so "+N older" is honest
            break
        keep.update(units[h])
        budget -= len(units[h])

    folded: Dict[str, Node] = {}
    remap: Dict[str, str] = {}

    def fold_into(side: str, group: str) -> Node:
        mk = more_key(side, group)
        more = folded.get(mk)
        if more is None:
            more = folded[mk] = Node(mk, "", side, group=group if side == REMOTE else "", kind="more",
                                     order=-math.inf, state=FREED, title="")
        return more

    for (side, group), count in graph.hidden.items():
        if count:
            fold_into(side, group).count += count
    for n in graph.nodes:
        if n.key in keep:
            continue
        more = fold_into(n.side, n.group)
        more.count += 1
        if n.state != FREED:
            more.state = LIVE
        remap[n.key] = more.key
    for more in folded.values():
        more.label = f"+{more.count} older"
        more.title = (f"{more.count} older {'pointers' if more.side == LOCAL else 'objects'} folded to keep "
                      f"the graph legible")
    nodes = [n for n in graph.nodes if n.key in keep] + list(folded.values())
    edges: List[Edge] = []
    seen = set()
    for e in graph.edges:
        src, dst = remap.get(e.src, e.src), remap.get(e.dst, e.dst)
        if src == dst or (src in folded and dst in folded) or not (src in keep or src in folded) \
                or not (dst in keep or dst in folded):
            continue
        if e.kind == LINEAGE and dst in folded:
            continue  # what an old result was made from says little; its kept inputs stay visible
        ident = (src, dst, e.kind, e.label)
        if ident in seen:
            continue
        seen.add(ident)
        edges.append(replace(e, src=src, dst=dst))
    return Graph(nodes, edges)


# -- layout --------------------------------------------------------------------------------------
PAD = 12
HEADER_H = 26  # room for the column and group titles
GROUP_HEAD = 22  # a group's title inside its box
NODE_H = 24
PITCH = 36  # row height (NODE_H + the gap that holds lineage labels)
LOCAL_W = 190
REMOTE_W = 150
GAP = 110  # between the local column and the remote boxes
COL_W = REMOTE_W + 44  # one lineage-depth column inside a group box: a node, then a gap for lanes
LANE = 6  # lineage edges run down the gap left of their result's column, one lane per input node
LANES = 6
MAX_COLS = 4
ARC_ROOM = 90  # right of the last column: arcs between nodes of one column
CHAR_W = 7.3  # a 12px monospace character (DejaVu Sans Mono: 7.2 px), to cut labels to fit


@dataclass
class Layout:
    """Where everything goes: node boxes ``key -> (x, y, w, h)``, group boxes, the canvas size."""

    graph: Graph
    boxes: Dict[str, Tuple[float, float, float, float]]
    groups: Dict[str, Tuple[float, float, float, float]]
    columns: Dict[str, int]
    width: float
    height: float
    lanes: Dict[Tuple[str, int], float] = field(default_factory=dict)  # (input, column) -> lane x


def _depths(graph: Graph, remote: List[Node]) -> Dict[str, int]:
    order = {n.key: i for i, n in enumerate(remote)}
    inputs: Dict[str, List[str]] = {}
    for e in graph.edges:
        if e.kind == LINEAGE and e.dst in order and e.src in order:
            inputs.setdefault(e.dst, []).append(e.src)
    depth: Dict[str, int] = {}
    for n in remote:  # oldest first, so inputs come before results (a cycle cannot recurse)
        ins = [depth[i] for i in inputs.get(n.key, ()) if i in depth]
        depth[n.key] = 1 + max(ins) if ins else 0
    return depth


def layout(graph: Graph) -> Layout:
    remote_groups: Dict[str, List[Node]] = {}
    for n in graph.nodes:
        if n.side == REMOTE:
            remote_groups.setdefault(n.group, []).append(n)
    for nodes in remote_groups.values():
        nodes.sort(key=lambda n: (n.order, n.key))
    locals_ = sorted((n for n in graph.nodes if n.side == LOCAL), key=lambda n: (n.order, n.key))
    anchor: Dict[str, str] = {}
    remote_keys = {n.key for n in graph.nodes if n.side == REMOTE}
    for e in graph.edges:
        if e.kind == POINTS and e.dst in remote_keys and e.src not in anchor:
            anchor[e.src] = e.dst
    band: Dict[str, List[Node]] = {}
    orphans: List[Node] = []
    more_local = [n for n in locals_ if n.kind == "more"]
    for n in locals_:
        if n.kind == "more":
            continue
        if n.key in anchor:
            band.setdefault(anchor[n.key], []).append(n)
        else:
            orphans.append(n)

    boxes: Dict[str, Tuple[float, float, float, float]] = {}
    groups: Dict[str, Tuple[float, float, float, float]] = {}
    columns: Dict[str, int] = {}
    remote_x0 = PAD + LOCAL_W + GAP
    used_cols = 1
    y = PAD + HEADER_H
    for n in more_local:
        boxes[n.key] = (PAD, y, LOCAL_W, NODE_H)
        y += PITCH
    for name in sorted(remote_groups, key=lambda g: min(n.order for n in remote_groups[g])):
        nodes = remote_groups[name]
        depth = _depths(graph, nodes)
        top = y
        y += GROUP_HEAD + 6
        for n in nodes:
            col = min(depth.get(n.key, 0), MAX_COLS - 1)
            columns[n.key] = col
            used_cols = max(used_cols, col + 1)
            boxes[n.key] = (remote_x0 + col * COL_W, y, REMOTE_W, NODE_H)
            for i, p in enumerate(band.get(n.key, [])):
                boxes[p.key] = (PAD, y + i * PITCH, LOCAL_W, NODE_H)
            y += PITCH * max(1, len(band.get(n.key, ())))
        groups[name] = (remote_x0 - 10, top, 0.0, y - top)  # width filled in below
        y += 10
    for n in orphans:
        boxes[n.key] = (PAD, y, LOCAL_W, NODE_H)
        y += PITCH
    group_w = (used_cols - 1) * COL_W + REMOTE_W + 20
    for name, (gx, gy, _, gh) in groups.items():
        groups[name] = (gx, gy, group_w, gh)
    width = remote_x0 + (used_cols - 1) * COL_W + REMOTE_W + ARC_ROOM + PAD
    height = max(y, PAD + HEADER_H + PITCH) + PAD
    # one vertical lane per input node in the gap left of each column its results sit in: edges from
    # one input share its lane (they do branch from it), edges from different inputs never overlap
    feeds: Dict[int, List[str]] = {}
    for e in graph.edges:
        if e.kind == LINEAGE and e.src in boxes and e.dst in boxes:
            c_src, c_dst = columns.get(e.src, 0), columns.get(e.dst, 0)
            if e.src in columns and c_dst > c_src and e.src not in feeds.setdefault(c_dst, []):
                feeds[c_dst].append(e.src)
    lanes: Dict[Tuple[str, int], float] = {}
    for col, srcs in feeds.items():
        srcs.sort(key=lambda k: boxes[k][1])
        left = remote_x0 + col * COL_W
        for i, src in enumerate(srcs):
            lanes[(src, col)] = left - 8 - (len(srcs) - 1 - i) % LANES * LANE
    return Layout(graph, boxes, groups, columns, width, height, lanes)


# -- drawing ---------------------------------------------------------------------------------------
_STYLE = {
    # kind: (fill, stroke)
    "pointer": ("#e8f0fe", "#3f6fb5"),
    "client": ("#e8f0fe", "#3f6fb5"),
    "owner": ("#fff4e0", "#c0811a"),
    "result": ("#eaf6ec", "#3f8f4a"),
    "sent": ("#f3eefa", "#7a55b0"),
    "more": ("#f2f2f2", "#999999"),
}
_ERROR = ("#fde8e8", "#d32f2f")
_TEXT = "#1f2328"
_MUTED = "#6b6b6b"
_FREED_OPACITY = "0.35"


def _fit(text: str, width: float, keep_address: bool = False) -> str:
    """``text`` cut to ``width``; a client's ``name@address`` (``keep_address``) loses its name's end first: the
    address is the worker's, the name the client's own choice (helper-75: ``alice@10.0.0.7 (your analyst VM)``)."""
    n = max(2, int(width / CHAR_W))
    if len(text) <= n:
        return text
    name, at, address = text.rpartition("@")
    if keep_address and at and len(address) + 3 <= n:
        return name[: n - len(address) - 2] + "…@" + address
    return text[: n - 1] + "…"


def _node_svg(n: Node, box: Tuple[float, float, float, float]) -> str:
    x, y, w, h = box
    fill, stroke = _ERROR if n.state == ERROR else _STYLE.get(n.kind, _STYLE["result"])
    dash = ' stroke-dasharray="4 3"' if n.state == FREED or n.kind == "more" else ""
    opacity = f' opacity="{_FREED_OPACITY}"' if n.state == FREED and n.kind != "more" else ""
    label = _fit(n.label, w - 12, n.kind == "client")
    room = w - 12 - len(label) * CHAR_W - 8
    detail = n.detail if n.detail and len(n.detail) * CHAR_W * 0.9 <= room else ""  # whole, or not at all
    color = _ERROR[1] if n.state == ERROR else _TEXT
    style = ' font-style="italic"' if n.kind == "more" else ""
    weight = ' font-weight="600"' if n.kind in ("pointer", "client", "owner") else ""
    cls = f"syft-node syft-{n.side} syft-{n.state}" + (f" syft-kind-{n.kind}" if n.kind else "")
    title = n.title or n.label
    text = (f'<text x="{x + 6:.1f}" y="{y + h / 2 + 4:.1f}" font-size="12" fill="{color}"{style}{weight}>'
            f'{esc(label)}</text>')
    if detail:
        text += (f'<text x="{x + w - 6:.1f}" y="{y + h / 2 + 4:.1f}" font-size="10.5" fill="{_MUTED}" '
                 f'text-anchor="end">{esc(detail)}</text>')
    return (f'<g class="{cls}" data-key="{esc(n.key)}"{opacity}><title>{esc(title)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.3"{dash}/>{text}</g>')


def _arrowhead(x: float, y: float, dx: float, dy: float, color: str) -> str:
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    size, half = 7.0, 3.5
    bx, by = x - ux * size, y - uy * size
    return (f'<path d="M{x:.1f},{y:.1f} L{bx - uy * half:.1f},{by + ux * half:.1f} '
            f'L{bx + uy * half:.1f},{by - ux * half:.1f} Z" fill="{color}"/>')


def _edge_svg(e: Edge, lay: Layout, labelled: set) -> Tuple[str, str]:
    """The edge's path (drawn below the nodes) and its label (drawn above them)."""
    g = lay.graph
    src, dst = g.node(e.src), g.node(e.dst)
    sx, sy, sw, sh = lay.boxes[e.src]
    dx, dy, dw, dh = lay.boxes[e.dst]
    faded = src.state == FREED or dst.state == FREED
    label_svg = ""
    if e.kind == POINTS:
        color = "#3f6fb5" if dst.kind != "more" else "#999999"
        x0, y0 = sx + sw, sy + sh / 2
        x1, y1 = dx, dy + dh / 2
        # bend in the gap before the objects' box, then run along the target's own row (a row holds one
        # object), so an edge to a result in a later lineage column never crosses the objects before it
        gate = min(x1, PAD + LOCAL_W + GAP - 6) if x1 > x0 else x1
        mid = (x0 + gate) / 2
        path = f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {gate:.1f},{y1:.1f} H{x1:.1f}"
        head = _arrowhead(x1, y1, 1.0, 0.0, color)
        width, dash = "1.3", ""
    else:
        color = _ERROR[1] if dst.state == ERROR else "#555555"
        width, dash = "1.2", ""
        col_s, col_d = lay.columns.get(e.src, 0), lay.columns.get(e.dst, 0)
        lane = lay.lanes.get((e.src, col_d))
        if col_d > col_s and lane is not None:
            # right along the input's row to its lane (in the gap left of the result's column), along the
            # lane to just above (below) the result's row, then a hook into the result's top (bottom)
            x0, y0 = sx + sw, sy + sh / 2
            down = dy > y0
            sgn = 1 if down else -1
            ey = dy if down else dy + dh  # where the arrow enters the result
            hy = ey - sgn * 6  # the hook runs between the rows, where no node is
            ex = dx + 14
            r = min(5.0, abs(hy - y0) / 2)
            path = (f"M{x0:.1f},{y0:.1f} H{lane - r:.1f} Q{lane:.1f},{y0:.1f} {lane:.1f},{y0 + sgn * r:.1f} "
                    f"V{hy - sgn * r:.1f} Q{lane:.1f},{hy:.1f} {lane + r:.1f},{hy:.1f} H{ex - 4:.1f} "
                    f"Q{ex:.1f},{hy:.1f} {ex:.1f},{ey:.1f}")
            head = _arrowhead(ex, ey, 0.0, float(sgn), color)
            lx, ly, anchor = ex + 6, (ey - 3 if down else ey + 11), "start"
        else:
            # same column (depth beyond the last column, or folded inputs): an arc on the right
            right = max(sx + sw, dx + dw)
            x0, y0 = sx + sw, sy + sh / 2
            x1, y1 = dx + dw, dy + dh / 2
            bulge = right + 24 + min(50.0, abs(y1 - y0) / 6)
            path = f"M{x0:.1f},{y0:.1f} C{bulge:.1f},{y0:.1f} {bulge:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
            head = _arrowhead(x1, y1, x1 - bulge, 0.0, color)
            lx, ly, anchor = bulge - 10, (y0 + y1) / 2 + 4, "start"
        text = e.label.lstrip(".")  # methods read as ".mul" on the wire; "mul" is enough here
        if text and (e.dst, e.label) not in labelled:
            labelled.add((e.dst, e.label))
            fade = f' opacity="{_FREED_OPACITY}"' if faded else ""
            label_svg = (f'<text class="syft-edge-label" x="{lx:.1f}" y="{ly:.1f}" font-size="10.5" '
                         f'font-style="italic" fill="{color}" text-anchor="{anchor}" stroke="#ffffff" '
                         f'stroke-width="3" paint-order="stroke"{fade}>{esc(text)}</text>')
    opacity = f' opacity="{_FREED_OPACITY}"' if faded else ""
    cls = f"syft-edge syft-{e.kind}"
    title = f"{src.label} → {dst.label}" + (f" ({e.label})" if e.label else "")
    return (f'<g class="{esc(cls)}" data-src="{esc(e.src)}" data-dst="{esc(e.dst)}" data-label="{esc(e.label)}"'
            f'{opacity}><title>{esc(title)}</title><path d="{path}" fill="none" stroke="{color}" '
            f'stroke-width="{width}"{dash}/>{head}</g>'), label_svg


def to_svg(lay: Layout, local_title: str = "this kernel", empty: str = "no pointers yet") -> str:
    """The laid-out graph as one ``<svg>`` element."""
    w, h = lay.width, lay.height
    parts = [f'<svg class="syft-graph" xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
             f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" '
             f'style="background:#ffffff;max-width:none">']
    parts.append(f'<text x="{PAD}" y="{PAD + 12}" font-size="12" font-weight="600" fill="{_MUTED}">'
                 f'{esc(local_title)}</text>')
    if not lay.graph.nodes:
        parts.append(f'<text x="{PAD}" y="{PAD + HEADER_H + 16}" font-size="12" fill="{_MUTED}">{esc(empty)}</text>')
    for name, (gx, gy, gw, gh) in lay.groups.items():
        parts.append(f'<g class="syft-group" data-group="{esc(name)}"><rect x="{gx:.1f}" y="{gy:.1f}" '
                     f'width="{gw:.1f}" height="{gh:.1f}" rx="8" fill="#fafafa" stroke="#c8c8c8"/>'
                     f'<text x="{gx + 10:.1f}" y="{gy + 16:.1f}" font-size="12" font-weight="600" '
                     f'fill="{_TEXT}">{esc(name)}</text></g>')
    labelled: set = set()
    labels = []
    for e in lay.graph.edges:
        if e.src in lay.boxes and e.dst in lay.boxes:
            path, label = _edge_svg(e, lay, labelled)
            parts.append(path)
            if label:
                labels.append(label)
    for n in lay.graph.nodes:
        parts.append(_node_svg(n, lay.boxes[n.key]))
    parts.extend(labels)
    parts.append("</svg>")
    return "".join(parts)


def render(graph: Graph, max_nodes: int = 50, local_title: str = "this kernel", empty: str = "no pointers yet") -> str:
    """``collapse``, ``layout`` and ``to_svg`` in one call."""
    return to_svg(layout(collapse(graph, max_nodes)), local_title=local_title, empty=empty)


def legend() -> str:
    """A one-line HTML legend for the colours used in :func:`to_svg`."""
    def swatch(kind: str, text: str, extra: str = "") -> str:
        fill, stroke = _ERROR if kind == "error" else _STYLE[kind]
        return (f'<span><svg width="14" height="10"><rect x="1" y="1" width="12" height="8" rx="2" fill="{fill}" '
                f'stroke="{stroke}"{extra}/></svg> {esc(text)}</span>')

    return ('<div class="syft-legend">' + swatch("pointer", "pointer / client") + swatch("owner", "owner's data")
            + swatch("result", "result") + swatch("sent", "sent") + swatch("error", "error")
            + swatch("more", "freed (faded) / folded", ' stroke-dasharray="3 2"')
            + '<span>→ points at &nbsp; ⤷ <i>op</i>: made from</span></div>')


def lineage_pairs(graph: Graph) -> List[Tuple[str, str, str]]:
    """``[(input, result, op)]``: the lineage edges, for tests and text summaries."""
    return [(e.src, e.dst, e.label) for e in graph.edges if e.kind == LINEAGE]


def summary(graph: Graph, limit: int = 12) -> str:
    """A few lines of text for a plain ``repr``: ``x_set[0] -> #X`` and ``#X, #Y -add-> 3f2a…``."""
    names = {n.key: n.label for n in graph.nodes}
    lines = []
    for e in graph.edges:
        if e.kind == POINTS:
            lines.append(f"  {names.get(e.src, e.src)} -> {names.get(e.dst, e.dst)}")
    made: Dict[Tuple[str, str], List[str]] = {}
    for e in graph.edges:
        if e.kind == LINEAGE:
            made.setdefault((e.dst, e.label), []).append(names.get(e.src, e.src))
    for (dst, op), ins in made.items():
        lines.append(f"  {names.get(dst, dst)} = {op}({', '.join(ins)})")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... {len(lines) - limit} more"]
    return "\n".join(lines)
