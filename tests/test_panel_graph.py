"""The pointer graph's pure functions: collapsing, layout and the SVG string."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from syft_magics.ui.panels import graph as G


def seed_graph() -> G.Graph:
    nodes = [
        G.Node("o:X", "#X", G.REMOTE, group="Bob", detail="(5,)", order=1, pinned=True, kind="owner"),
        G.Node("o:Y", "#Y", G.REMOTE, group="Bob", detail="(5,)", order=2, pinned=True, kind="owner"),
        G.Node("o:Z", "3f2a…", G.REMOTE, group="Bob", detail="(5,)", order=5, kind="result"),
        G.Node("p:x", "x_set[0]", G.LOCAL, order=3, kind="pointer"),
        G.Node("p:y", "y_set[0]", G.LOCAL, order=4, kind="pointer"),
        G.Node("p:z", "z", G.LOCAL, order=6, kind="pointer"),
    ]
    edges = [G.Edge("p:x", "o:X", G.POINTS), G.Edge("p:y", "o:Y", G.POINTS), G.Edge("p:z", "o:Z", G.POINTS),
             G.Edge("o:X", "o:Z", G.LINEAGE, "add"), G.Edge("o:Y", "o:Z", G.LINEAGE, "add")]
    return G.Graph(nodes, edges)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, so any browser parses it the same way


NS = "{http://www.w3.org/2000/svg}"


def test_layout_puts_pointers_left_objects_right_and_each_pointer_on_its_objects_row():
    lay = G.layout(seed_graph())
    for key in ("p:x", "p:y", "p:z"):
        assert lay.boxes[key][0] < lay.boxes["o:X"][0]
    assert lay.boxes["p:x"][1] == lay.boxes["o:X"][1]
    assert lay.boxes["p:z"][1] == lay.boxes["o:Z"][1]
    # the result sits one lineage column right of its inputs, inside Bob's box
    assert lay.columns == {"o:X": 0, "o:Y": 0, "o:Z": 1}
    gx, gy, gw, gh = lay.groups["Bob"]
    for key in ("o:X", "o:Y", "o:Z"):
        x, y, w, h = lay.boxes[key]
        assert gx <= x and x + w <= gx + gw and gy <= y and y + h <= gy + gh


def test_svg_has_nodes_points_edges_and_lineage_edges_labelled_with_the_op():
    svg = G.render(seed_graph())
    root = parse(svg)
    nodes = {g.get("data-key"): g for g in root.iter(f"{NS}g") if "syft-node" in g.get("class", "")}
    assert set(nodes) == {"o:X", "o:Y", "o:Z", "p:x", "p:y", "p:z"}
    edges = [(g.get("data-src"), g.get("data-dst"), g.get("data-label"))
             for g in root.iter(f"{NS}g") if "syft-edge" in g.get("class", "")]
    assert ("p:z", "o:Z", "") in edges and ("o:X", "o:Z", "add") in edges and ("o:Y", "o:Z", "add") in edges
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("class") == "syft-edge-label"]
    assert labels == ["add"]  # one label per result, however many inputs
    assert "syft-local" in nodes["p:z"].get("class") and "syft-remote" in nodes["o:Z"].get("class")
    assert G.lineage_pairs(seed_graph()) == [("o:X", "o:Z", "add"), ("o:Y", "o:Z", "add")]


def test_freed_nodes_fade_and_errors_are_red():
    g = seed_graph()
    g.node("o:Z").state = G.ERROR
    g.node("p:x").state = G.FREED
    root = parse(G.render(g))
    nodes = {e.get("data-key"): e for e in root.iter(f"{NS}g") if "syft-node" in e.get("class", "")}
    assert nodes["p:x"].get("opacity") == "0.35" and "syft-freed" in nodes["p:x"].get("class")
    assert nodes["p:y"].get("opacity") is None
    rect = nodes["o:Z"].find(f"{NS}rect")
    assert rect.get("stroke") == "#d32f2f" and "syft-error" in nodes["o:Z"].get("class")
    lineage = [e for e in root.iter(f"{NS}g") if e.get("data-dst") == "o:Z" and "syft-lineage" in e.get("class")]
    assert all(e.find(f"{NS}path").get("stroke") == "#d32f2f" for e in lineage)
    # an edge from a freed pointer fades too
    faded = [e for e in root.iter(f"{NS}g") if e.get("data-src") == "p:x"]
    assert faded and faded[0].get("opacity") == "0.35"


def test_every_label_is_escaped():
    g = G.Graph([G.Node("p:<b>", "<script>alert(1)</script>", G.LOCAL, title='"quoted" & <tag>', kind="pointer"),
                 G.Node("o:1", "#a&b", G.REMOTE, group="<Bob>", kind="owner")],
                [G.Edge("p:<b>", "o:1", G.POINTS), G.Edge("o:1", "o:1", G.LINEAGE, "<op>")])
    svg = G.render(g)
    assert "<script>" not in svg and "<b>" not in svg and "<Bob>" not in svg and "<op>" not in svg
    assert "&lt;script&gt;" in svg and "&amp;" in svg
    parse(svg)


def test_a_client_cut_to_fit_keeps_the_address_the_worker_knows():
    """helper-75: a client's name, its own choice, cut to fit its node, hid the address the worker appends
    (``alice (your analyst VM)@127.0.0.1:53422`` read as ``alice (your analyst…``): the name is cut first."""
    svg = G.render(G.Graph([G.Node("c:1", "alice-with-a-long-name (your analyst VM)@127.0.0.1:53422", G.LOCAL,
                                   kind="client")], []))
    text = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert any(t.endswith("…@127.0.0.1:53422") and t.startswith("alice") for t in text), text


def chain(n: int) -> G.Graph:
    """#X, then n results x + i, each with its pointer ``keep[i]``."""
    nodes = [G.Node("o:X", "#X", G.REMOTE, group="Bob", order=0, pinned=True, kind="owner"),
             G.Node("p:X", "x", G.LOCAL, order=0.5, kind="pointer")]
    edges = [G.Edge("p:X", "o:X", G.POINTS)]
    prev = "o:X"
    for i in range(n):
        nodes.append(G.Node(f"o:{i}", f"r{i}", G.REMOTE, group="Bob", order=1 + i, kind="result"))
        nodes.append(G.Node(f"p:{i}", f"keep[{i}]", G.LOCAL, order=1 + i, kind="pointer",
                            state=G.FREED if i < n // 2 else G.LIVE))
        edges += [G.Edge(f"p:{i}", f"o:{i}", G.POINTS), G.Edge(prev, f"o:{i}", G.LINEAGE, "add")]
        prev = f"o:{i}"
    return G.Graph(nodes, edges)


def test_graph_stays_legible_past_50_nodes_by_folding_the_oldest_with_a_count():
    big = chain(200)  # 402 nodes
    small = G.collapse(big, 50)
    ordinary = [n for n in small.nodes if n.kind != "more"]
    more = {n.key: n for n in small.nodes if n.kind == "more"}
    assert len(ordinary) <= 50
    # the owner's pinned data and the newest results stay; the rest is counted
    keys = {n.key for n in ordinary}
    assert {"o:X", "p:X", "o:199", "p:199"} <= keys and "o:0" not in keys
    assert more["more:remote:Bob"].count + sum(1 for n in ordinary if n.side == G.REMOTE) == 201
    assert more["more:local:"].count + sum(1 for n in ordinary if n.side == G.LOCAL) == 201
    assert more["more:remote:Bob"].label == f"+{more['more:remote:Bob'].count} older"
    # a kept result whose input was folded points back at the "+N older" node
    oldest_kept = min((n for n in ordinary if n.kind == "result"), key=lambda n: n.order)
    assert ("more:remote:Bob", oldest_kept.key) in small.edge_set(G.LINEAGE)
    # no edge refers to a node that is not drawn
    drawn = {n.key for n in small.nodes}
    assert all(e.src in drawn and e.dst in drawn for e in small.edges)
    svg = G.render(big, 50)
    root = parse(svg)
    assert sum(1 for g in root.iter(f"{NS}g") if "syft-node" in g.get("class", "")) == len(small.nodes)
    assert "older" in svg
    # deep chains do not grow sideways forever: a few lineage columns, then arcs
    lay = G.layout(small)
    assert max(lay.columns.values()) <= G.MAX_COLS - 1 and lay.width < 1200
    # text sizes and coordinates are plain numbers (nothing NaN or infinite)
    assert not re.search(r"nan|inf", svg.replace("info", ""), re.I)


def test_small_graphs_are_not_collapsed_and_empty_graphs_say_so():
    g = seed_graph()
    assert G.collapse(g, 50) is g
    svg = G.render(G.Graph(), empty="no pointers yet")
    assert "no pointers yet" in svg
    parse(svg)


def test_text_summary_lists_pointers_and_lineage():
    text = G.summary(seed_graph())
    assert "z -> 3f2a…" in text and "3f2a… = add(#X, #Y)" in text


def test_an_edge_to_a_result_in_a_later_column_bends_in_the_gap_and_runs_along_its_row():
    g = seed_graph()
    g.nodes.append(G.Node("c:s", "client", G.LOCAL, order=0, kind="client"))
    g.edges += [G.Edge("c:s", "o:X", G.POINTS), G.Edge("c:s", "o:Z", G.POINTS)]
    lay = G.layout(g)
    root = parse(G.to_svg(lay))
    edge = next(e for e in root.iter(f"{NS}g") if e.get("data-src") == "c:s" and e.get("data-dst") == "o:Z")
    path = edge.find(f"{NS}path").get("d")
    x1 = lay.boxes["o:Z"][0]
    y1 = lay.boxes["o:Z"][1] + lay.boxes["o:Z"][3] / 2
    curve_end = re.search(r"C[\d.,\- ]+ ([\d.]+),([\d.]+) H([\d.]+)$", path)
    assert curve_end, path
    gate, row, end = (float(v) for v in curve_end.groups())
    left_of_objects = min(lay.boxes[k][0] for k in ("o:X", "o:Y", "o:Z"))
    assert gate < left_of_objects  # the bend stays in the gap, left of every object
    assert row == round(y1, 1) and end == round(x1, 1)  # then straight along the result's own row
