"""The live panels' state, without a browser: registry, command log, requests (Approve / Deny),
the pointer graph, the refresh timer, the text repr, the magics, and Approve / Deny across two
real kernels."""
from __future__ import annotations

import gc
import re
import threading
import time

import helpers
import pytest
import torch
from helpers import free_port
from IPython.core.error import UsageError

import syft_magics as sm
from syft_magics.ui.panels import ConnectionPanel, WorkerPanel
from syft_magics.ui.panels import graph as G
from syft_magics.ui.panels._names import find_names
from syft_magics.ui.panels._refresh import REFRESHER

pytestmark = pytest.mark.timeout(120)


def wait_until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    if not helpers.wait_until(cond, timeout):
        raise AssertionError(f"{what} not met within {timeout} s")


@pytest.fixture
def panels():
    """Panels made in a test are closed at its end (the leak check then sees no refresh thread)."""
    made = []

    def track(panel):
        made.append(panel)
        return panel

    yield track
    for p in made:
        p.close()



def scientist(client, ns):
    ns["x_set"] = client.search("#X")
    ns["y_set"] = client.search("#Y")
    ns["z"] = torch.add(ns["x_set"][0], ns["y_set"][0])
    client.sync()
    return ns["z"]


class Getter:
    """``ptr.get()`` in a thread, as the scientist's kernel would block on it."""

    def __init__(self, ptr):
        self.value = self.error = None
        self.thread = threading.Thread(target=self._run, args=(ptr,), name="test-get", daemon=True)
        self.thread.start()

    def _run(self, ptr):
        try:
            self.value = ptr.get()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout=10.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the get never finished"
        return self


def test_seed_flow_shows_registry_command_log_and_pointer_graph(review_seed, panels):
    bob, client = review_seed
    wp = panels(WorkerPanel(bob))
    ns = {}
    cp = panels(ConnectionPanel(client, namespace=ns))
    z = scientist(client, ns)
    wp.refresh()
    cp.refresh()

    # registry: one row per object, #X and #Y from the owner, the result from the client
    rows = re.findall(r'<tr class="syft-obj[^"]*" data-id="([0-9a-f]{32})">(.*?)</tr>', wp.registry.value, re.S)
    assert len(rows) == 3
    text = wp.registry.value
    assert "#X" in text and "#Y" in text and "owner (shared)" in text and "add(#X, #Y)" in text
    assert z.id_at_location in {hexid for hexid, _ in rows}
    # held by: the client that searched #X holds it; the result is held by its creator
    held = {hexid: re.findall(r"<td[^>]*>([^<]*)</td>", cells, re.S)[7] for hexid, cells in rows}
    assert set(held.values()) == {"1"}

    # command log: the add, with who sent it, how long it took and that it went well
    log = wp.commands.value
    assert re.search(r'<tr class="syft-cmd syft-ok">.*add\(#X, #Y\) -&gt; ' + z.id_at_location[:8], log)
    assert "µs" in log or "ms" in log

    # header counters
    head = wp.header.value
    assert "clients <b>1</b>" in head and "objects <b>3</b>" in head and "commands <b>1</b>" in head
    assert "held <b>60 B</b>" in head

    # pointer graph: pointer -> object, #X and #Y -> result (labelled add), names from the namespace
    g = cp.last_graph
    x_obj = f"o:Bob:{ns['x_set'][0].id_at_location}"
    y_obj = f"o:Bob:{ns['y_set'][0].id_at_location}"
    z_obj = f"o:Bob:{z.id_at_location}"
    z_ptr = next(n.key for n in g.nodes if n.side == G.LOCAL and n.label == "z")
    assert (z_ptr, z_obj) in g.edge_set(G.POINTS)
    assert {(x_obj, z_obj), (y_obj, z_obj)} <= g.edge_set(G.LINEAGE)
    assert {lbl for _, dst, lbl in G.lineage_pairs(g) if dst == z_obj} == {"add"}
    assert {n.label for n in g.nodes if n.side == G.LOCAL} == {"x_set[0]", "y_set[0]", "z"}
    assert f'data-src="{z_ptr}"' in cp.graph.value and "<svg" in cp.graph.value
    assert "z" in cp.pointers_html.value and f"{z.id_at_location[:12]}…@Bob" in cp.pointers_html.value

    # the worker's own graph: the client holds #X, #Y and the result; lineage #X, #Y -> result
    wg = wp.last_graph
    assert {(f"o:{ns['x_set'][0].id_at_location}", f"o:{z.id_at_location}"),
            (f"o:{ns['y_set'][0].id_at_location}", f"o:{z.id_at_location}")} <= wg.edge_set(G.LINEAGE)
    assert len(wg.edge_set(G.POINTS)) == 3


def test_approve_button_releases_a_waiting_get(review_seed, panels):
    bob, client = review_seed
    wp = panels(WorkerPanel(bob))
    z = scientist(client, {})
    getter = Getter(z)
    wait_until(lambda: 1 in wp._request_rows, what="the request to show in the panel (by the timer)")
    assert "add(#X, #Y)" in wp._request_rows[1].children[0].value
    # the timer renders the request's row, then the tab titles: wait for both
    wait_until(lambda: wp.tabs.titles[2] == "Requests (1)", what="the Requests tab to count the request")
    approve, _, _ = wp.request_buttons(1)
    approve.click()  # what a click in the browser does
    assert torch.equal(getter.join().value, torch.tensor([2.0, 3, 4, 5, 6]))
    assert bob.requests[1].status == "approved"
    assert 1 not in wp._request_rows and "approved" in wp.history.value
    assert "approved request #1" in wp.footer.value


def test_deny_button_with_a_reason_raises_permission_denied(review_seed, panels):
    bob, client = review_seed
    wp = panels(WorkerPanel(bob))
    z = scientist(client, {})
    getter = Getter(z)
    wait_until(lambda: 1 in wp._request_rows, what="the request row")
    _, reason, deny = wp.request_buttons(1)
    reason.value = "too revealing"
    deny.click()
    getter.join()
    assert isinstance(getter.error, sm.PermissionDenied) and "too revealing" in str(getter.error)
    assert bob.requests[1].status == "denied" and bob.requests[1].reason == "too revealing"
    errors = client.events.of_kind("error")
    assert errors and errors[-1]["code"] == "denied", "the scientist's panel hears of the denial"
    assert "too revealing" in wp.history.value
    # a second click on a decided request says so instead of raising
    wp.approve(1)
    assert "already denied" in wp.footer.value


def test_panels_refresh_on_a_timer_not_per_message(seed, panels):
    bob, client = seed
    wp = panels(WorkerPanel(bob))
    cp = panels(ConnectionPanel(client, namespace={}))
    assert REFRESHER.running
    x = client.search("#X")[0]
    wp.tabs.selected_index = 1  # the timer rebuilds what is on screen: the header and the Commands tab
    start_w, start_c = wp.renders, cp.renders
    t0 = time.monotonic()
    keep = [x + i for i in range(2000)]
    client.sync()
    wait_until(lambda: f"objects <b>{2002}</b>" in wp.header.value, timeout=15, what="the header to catch up")
    wait_until(lambda: sum(1 for n in (cp.shown_graph.nodes if cp.shown_graph else ()) if n.kind == "more") == 2,
               timeout=15, what="the graph to fold")
    elapsed = time.monotonic() - t0
    # thousands of events, a handful of renders: at most max_rate per second (+1 for the first)
    for panel, start in ((wp, start_w), (cp, start_c)):
        assert panel.renders - start <= panel.max_rate * elapsed + 2, (panel.renders - start, elapsed)
    # the log keeps a bounded ring (older events were dropped unread), the totals count everything
    assert len(wp._log) == 500
    wait_until(lambda: "2,000 commands" in wp.commands.value, timeout=15, what="the totals")
    # 2001 pointers and 2001 objects: at most 50 drawn, the others counted in two "+N older" nodes
    total = lambda: sum(n.count if n.kind == "more" else 1 for n in cp.shown_graph.nodes)  # noqa: E731
    wait_until(lambda: total() == 4002, timeout=15, what="every pointer and object drawn or counted")
    assert len(cp.shown_graph.nodes) <= 50 + 2
    assert "… and " not in wp.registry.value  # the Registry tab was not on screen: not rebuilt...
    wp.tabs.selected_index = 0
    wait_until(lambda: "… and 1,702 more" in wp.registry.value, timeout=15,
               what="the Registry to catch up once selected")
    wp.refresh()  # everything, at once
    assert sum(1 for n in wp.shown_graph.nodes if n.kind != "more") <= 50
    remote = [n for n in wp.shown_graph.nodes if n.side == G.REMOTE]
    more = [n for n in remote if n.kind == "more"]
    assert len(more) == 1 and more[0].label == f"+{more[0].count} older"
    assert more[0].count + len(remote) - 1 == 2002  # every object of the worker drawn or counted
    del keep


def test_freed_pointers_fade_and_remote_errors_are_red(seed, panels):
    bob, client = seed
    bob.allowlist.deny("Tensor.exp")
    ns = {}
    cp = panels(ConnectionPanel(client, namespace=ns))
    x = client.search("#X")[0]
    ns["x"] = x
    ns["tmp"] = x * 3
    ns["bad"] = x.exp()  # allowed here, refused there: the failure arrives later, as an event
    with pytest.raises(sm.OpNotAllowed):
        client.sync()
    cp.refresh()  # the panel has seen tmp alive (else it only knows the freed object, not the pointer)
    tmp_id = ns["tmp"].id_at_location
    del ns["tmp"]
    gc.collect()
    wait_until(lambda: bob.store.get(bytes.fromhex(tmp_id)) is None, what="the worker to free tmp")
    cp.refresh()
    g = cp.last_graph
    nodes = {n.key: n for n in g.nodes}
    assert nodes[f"o:Bob:{tmp_id}"].state == G.FREED
    tmp_ptr = [n for n in g.nodes if n.side == G.LOCAL and n.state == G.FREED]
    assert len(tmp_ptr) == 1
    bad = nodes[f"o:Bob:{ns['bad'].id_at_location}"]
    assert bad.state == G.ERROR and "allowlist" in bad.title
    assert 'opacity="0.35"' in cp.graph.value and "#d32f2f" in cp.graph.value
    assert "syft-err" in cp.pointers_html.value and "freed" in cp.pointers_html.value
    assert "allowlist" in cp.footer.value


def test_worker_panel_counts_sessions_holding_objects(seed, make_client, panels, monkeypatch):
    import syft_magics.scientist.client as client_module

    bob, client = seed
    wp = panels(WorkerPanel(bob))
    monkeypatch.setattr(client_module, "_user", lambda: "alice")  # another client, as from another kernel
    other = make_client("Bob")
    client.search("#X")
    other.search("#X")
    other.search("#Y")
    wp.refresh()
    x_hex = bob.objects.by_tag("#X")[0].hex
    assert len(wp._holders(bob.store.entries(), bob.clients)[x_hex]) == 2
    other.disconnect()
    wait_until(lambda: len(bob.clients) == 1)
    wp.refresh()
    held = wp._holders(bob.store.entries(), bob.clients)
    assert len(held[x_hex]) == 1 and bob.objects.by_tag("#Y")[0].hex not in held


def test_panel_stops_with_its_worker_and_close_leaves_no_thread(make_worker, panels):
    bob = make_worker("Bob")
    wp = panels(WorkerPanel(bob))
    assert wp.live
    bob.stop()
    wait_until(lambda: not wp.live, what="the panel to stop refreshing")
    wait_until(lambda: "stopped" in wp.header.value)
    wait_until(lambda: not REFRESHER.running, what="the refresh thread to end")
    wp.close()
    assert wp.closed and wp.comm is None


def test_text_repr_where_no_widget_front_end(review_seed, panels):
    bob, client = review_seed
    wp = panels(WorkerPanel(bob))
    ns = {}
    cp = panels(ConnectionPanel(client, namespace=ns))
    scientist(client, ns)
    wp.refresh()
    cp.refresh()
    text = repr(wp)
    assert text.startswith("WorkerPanel of Bob") and "#X" in text and "add(#X, #Y)" in text
    bundle = wp._repr_mimebundle_()
    assert bundle["text/plain"] == wp.text() and "application/vnd.jupyter.widget-view+json" in bundle
    ctext = repr(cp)
    assert "ConnectionPanel of Bob" in ctext and "z" in ctext and "= add(#X, #Y)" in ctext


def test_names_are_found_by_identity_in_lists_and_dicts(seed):
    _, client = seed
    x = client.search("#X")[0]
    y = x + 1
    ns = {"x_set": [x], "params": {"w": y}, "y": y, "_hidden": x, "Out": {1: x}, "n": 3}
    names = find_names(ns, [x, y])
    assert names[x.id] == ["x_set[0]"]
    assert names[y.id] == ["y", "params['w']"]


# -- magics -----------------------------------------------------------------------------------------
def test_panel_magics(ip, capsys):
    ip.run_line_magic("syft_worker", "Bob --policy open --panel")
    magics = next(m for m in ip.magics_manager.registry.values() if hasattr(m, "panels"))
    wp = magics.panels[("worker", "Bob")]
    assert isinstance(wp, WorkerPanel) and wp.worker is ip.user_ns["bob"]
    ip.run_line_magic("syft_panel", "Bob")
    assert magics.panels[("worker", "Bob")] is wp  # shown again, not rebuilt
    ip.run_line_magic("syft_connect", "Bob --as c --panel")
    cp = magics.panels[("connection", "Bob")]
    assert isinstance(cp, ConnectionPanel) and cp.client is ip.user_ns["c"]
    ip.run_line_magic("syft_panel", "Bob --connection")
    assert magics.panels[("connection", "Bob")] is cp
    out = capsys.readouterr().out
    assert "WorkerPanel of Bob" in out and "ConnectionPanel of Bob" in out
    with pytest.raises(UsageError, match="no worker or connection named 'Alice'"):
        ip.run_line_magic("syft_panel", "Alice")
    with pytest.raises(UsageError, match="say which panel"):
        ip.run_line_magic("syft_panel", "")
    # the names in the scientist's namespace appear in the graph
    ip.run_cell("import torch\nbob.share(torch.ones(3), '#ones')\nz = c.search('#ones')[0] * 2\nc.sync()")
    cp.refresh()
    assert "z" in {n.label for n in cp.last_graph.nodes if n.side == G.LOCAL}
    # restarting the worker replaces its panel; unloading closes them all
    ip.run_line_magic("syft_worker", f"Bob {ip.user_ns['bob'].port} --panel")
    assert wp.closed and magics.panels[("worker", "Bob")] is not wp
    ip.run_line_magic("unload_ext", "syft_magics")
    assert cp.closed and not magics.panels
    ip.run_line_magic("load_ext", "syft_magics")


# -- two real kernels -------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_approve_and_deny_in_the_owners_panel_reach_the_other_kernel(kernels):
    bob, sci = kernels
    port = free_port()
    bob.run(f"%load_ext syft_magics\nimport torch\n%syft_worker Bob {port} --panel\n"
            "bob.share(torch.tensor([1., 2, 3, 4, 5]), '#X'); bob.share(torch.ones(5), '#Y')\n"
            "from syft_magics.ui.magics import _LOADED\n"
            "panel = next(iter(_LOADED.values())).panels[('worker', 'Bob')]")
    # a fresh kernel's first torch op (meta kernels, imports) while Bob's kernel warms up: slow on a loaded machine
    sci.run("%load_ext syft_magics\nimport torch\n%syft_connect Bob --panel\n"
            "x_set = bob.search('#X'); y_set = bob.search('#Y')\nz = torch.add(x_set[0], y_set[0])", timeout=90)
    pending = sci.start("print(z.get())")
    # the owner's panel shows the request (refreshed by its timer while the kernel is idle)
    bob.wait_for("1 in panel._request_rows", "True")
    assert "add(#X, #Y)" in bob.run("print(panel._request_rows[1].children[0].value)").stdout
    bob.run("panel.request_buttons(1)[0].click()")
    out = sci.collect(pending)
    assert not out.error and "tensor([2., 3., 4., 5., 6.])" in out.stdout
    # the scientist's panel: z points at the result, which #X and #Y made
    sci.run("from syft_magics.ui.magics import _LOADED\n"
            "cp = next(iter(_LOADED.values())).panels[('connection', 'Bob')]\ncp.refresh()")
    assert "z = add(#X, #Y)" not in sci.run("print(repr(cp))").stdout  # remote ids, not names, on the right
    assert "z ->" in sci.run("print(repr(cp))").stdout
    assert sci.run("print(any(e.label == 'add' for e in cp.last_graph.edges))").stdout.strip() == "True"

    pending = sci.start("w = x_set[0] * 2\nw.get()")
    bob.wait_for("2 in panel._request_rows", "True")
    bob.run("a, reason, deny = panel.request_buttons(2)\nreason.value = 'no raw values today'\ndeny.click()")
    out = sci.collect(pending)
    assert out.error.startswith("PermissionDenied") and "no raw values today" in out.error
    assert "denied" in bob.run("print(panel.history.value)").stdout



def test_a_panel_opened_after_the_ops_still_draws_inputs_before_their_results(seed, panels):
    """Opened late (``%syft_panel --connection`` after a few cells), the graph must still put the owner's data
    left of what was made from it: a result first seen in an op event is newer than that op's inputs."""
    bob, client = seed
    x, y = client.search("#X")[0], client.search("#Y")[0]
    z = torch.add(x, y)
    w = torch.mul(z, 2)
    client.sync()
    cp = panels(ConnectionPanel(client, namespace={"x": x, "y": y, "z": z, "w": w}))
    cp.refresh()
    lay = G.layout(cp.shown_graph)
    col = {n.key.rsplit(":", 1)[-1]: lay.columns[n.key] for n in cp.shown_graph.nodes if n.key in lay.columns}
    assert col[x.id_at_location.split("@")[0]] == col[y.id_at_location.split("@")[0]] == 0
    assert 0 < col[z.id_at_location.split("@")[0]] < col[w.id_at_location.split("@")[0]]
