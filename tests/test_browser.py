"""The owner's panel in a real browser: Voila serves Bob's notebook, Debian's chromium renders it
(driven by playwright), and a second real kernel is the data scientist.

Asserts on the DOM: registry rows for #X and #Y, a command-log row for the add, the graph's
SVG nodes and edges, and a click on Approve that lets the scientist's ``.get()`` finish. The
scientist's own panel (pointer graph) is rendered in the same browser from its widget state.
Screenshots go to ``$SYFT_SCREENSHOTS`` (default: the test's temporary directory).

Skipped only where ``/usr/bin/chromium`` is absent (``.ci/run`` installs it).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from helpers import free_port, stop_process_tree
from kernel_driver import Kernel

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]


def bob_notebook(path: Path, port: int) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext syft_magics\nimport torch"),
        nbformat.v4.new_code_cell(f"%syft_worker Bob {port} --panel"),
        nbformat.v4.new_code_cell("bob.share(torch.tensor([1., 2, 3, 4, 5]), '#X')\n"
                                  "bob.share(torch.ones(5), '#Y');"),
    ]
    nbformat.write(nb, str(path))


def wait_http(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"voila did not listen on {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def tab(page, title: str):
    return page.locator(".syft-worker-panel .lm-TabBar-tab", has_text=title).first


def test_owner_panel_in_voila_with_the_scientist_in_another_kernel(runtime_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SYFT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    port, web = free_port(), free_port()
    nb = tmp_path / "Bob.ipynb"
    bob_notebook(nb, port)
    env = {**os.environ, "SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "voila.log"
    voila = subprocess.Popen(
        [sys.executable, "-m", "voila", str(nb), "--no-browser", f"--port={web}", "--Voila.ip=127.0.0.1",
         "--show_tracebacks=True"],
        cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    sci = None
    try:
        wait_http(web, voila, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(f"http://127.0.0.1:{web}/", wait_until="domcontentloaded")

                # the registry fills in live: #X and #Y were shared after the panel was displayed
                page.wait_for_selector(".syft-worker-panel .syft-header", state="visible")
                rows = page.locator(".syft-registry tr.syft-obj")
                page.wait_for_function(
                    "() => document.querySelectorAll('.syft-registry tr.syft-obj').length === 2")
                registry = " ".join(rows.all_inner_texts())
                assert "#X" in registry and "#Y" in registry and "owner (shared)" in registry

                # the scientist, in another kernel: search, add, then a .get() that waits for Bob
                sci = Kernel({"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir)})
                sci.run("%load_ext syft_magics\nimport torch\n%syft_connect Bob --panel\n"
                        "x_set = bob.search('#X'); y_set = bob.search('#Y')\nz = torch.add(x_set[0], y_set[0])\n"
                        "bob.sync()")
                page.wait_for_function(
                    "() => document.querySelectorAll('.syft-registry tr.syft-obj').length === 3")
                page.screenshot(path=str(shots / "worker_registry.png"), full_page=True)

                tab(page, "Commands").click()
                add_row = page.locator(".syft-commands tr.syft-cmd", has_text="add(#X, #Y)")
                add_row.wait_for(state="visible")
                assert "ok" in add_row.inner_text()
                page.screenshot(path=str(shots / "worker_commands.png"), full_page=True)

                pending = sci.start("print(z.get())")
                tab(page, "Requests (1)").wait_for(state="visible")
                tab(page, "Requests").click()
                approve = page.locator(".syft-request-1 .syft-approve")
                approve.wait_for(state="visible")
                assert "add(#X, #Y)" in page.locator(".syft-request-1").inner_text()
                page.screenshot(path=str(shots / "worker_requests.png"), full_page=True)
                approve.click()
                out = sci.collect(pending, timeout=30)
                assert not out.error, out.error
                assert "tensor([2., 3., 4., 5., 6.])" in out.stdout
                page.locator(".syft-requests tr.syft-approved").wait_for(state="visible")
                assert page.locator(".syft-request-1").count() == 0

                # the owner's graph: the client holds #X, #Y and z's object; #X, #Y -> result by add
                tab(page, "Graph").click()
                svg = page.locator(".syft-worker-panel .syft-graph-view svg.syft-graph")
                svg.wait_for(state="visible")
                nodes = svg.locator("g.syft-node")
                assert nodes.count() == 4  # #X, #Y, the result, the scientist's session
                lineage = svg.locator("g.syft-edge.syft-lineage[data-label='add']")
                assert lineage.count() == 2
                assert svg.locator("g.syft-edge.syft-points").count() == 3
                assert svg.locator("g.syft-node.syft-local").count() == 1
                page.screenshot(path=str(shots / "worker_graph.png"), full_page=True)

                # the scientist's panel, rendered from its widget state in the same browser
                sci.run("import json\nfrom syft_magics.ui.magics import _LOADED\n"
                        "cp = next(iter(_LOADED.values())).panels[('connection', 'Bob')]\n"
                        "w = x_set[0] * 2\nbob.sync()\ncp.refresh()")
                state = sci.run("print(json.dumps([cp.header.value, cp.graph.value, cp.pointers_html.value]))")
                header, graph, pointers = json.loads(state.stdout)
                page2 = browser.new_page(viewport={"width": 1100, "height": 700})
                page2.set_content(f"<html><body style='font-family:sans-serif'>{header}{graph}{pointers}</body></html>")
                csvg = page2.locator("svg.syft-graph")
                labels = csvg.locator("g.syft-node.syft-local text").all_text_contents()
                assert {"x_set[0]", "y_set[0]", "z", "w"} <= set(labels)
                assert csvg.locator("g.syft-edge.syft-points").count() == 4
                assert csvg.locator("g.syft-edge.syft-lineage[data-label='add']").count() == 2
                box = csvg.bounding_box()
                assert box and box["width"] > 300 and box["height"] > 150
                page2.screenshot(path=str(shots / "connection_panel.png"), full_page=True)
            finally:
                browser.close()
    finally:
        if sci is not None:
            sci.shutdown()
        stop_process_tree(voila, grace=15)
