"""The tutorial in a real browser: JupyterLab (started by ``python -m syft_magics tutorial``) with Bob and
Model side by side, driven by playwright in Debian's chromium, as a person would use it.

Bob's notebook runs (Run All): his panel shows the registry. Model's runs: its ``z.get()`` waits until
the person clicks **Approve** in Bob's panel. Then the person clicks **Request value** on ``z``'s card
in Model's notebook: the card says which request waits, the person approves it in Bob's panel, and the
card shows the value. Screenshots of the side-by-side window go to the test's temporary folder (or
``$SYFT_SCREENSHOTS``); the test checks they are not blank.

Skipped only where ``/usr/bin/chromium`` is absent (``.ci/run`` installs it).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium, png_ink, run_all
from helpers import free_port, stop_process_tree

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.timeout(600),
    needs_chromium,
]


def start_tutorial(tmp_path: Path, runtime_dir: Path):
    port = free_port()
    log = tmp_path / "lab.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "syft_magics", "tutorial", "--port", str(port), "--no-browser",
                             "--dir", str(tmp_path / "work")], cwd=tmp_path, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the tutorial command exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        found = re.search(r"(http://127\.0\.0\.1:\d+/lab/workspaces/syft-tutorial\?token=\w+)", log.read_text())
        if found:
            try:
                with urllib.request.urlopen(found.group(1).replace("/lab/workspaces/syft-tutorial", "/api/status"),
                                            timeout=5):
                    return proc, found.group(1)
            except OSError:
                pass
        time.sleep(0.3)
    stop_process_tree(proc, grace=20)
    raise AssertionError(f"JupyterLab did not answer:\n{log.read_text()[-3000:]}")


def test_request_value_on_zs_card_then_approve_in_bobs_panel(tmp_path, runtime_dir):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SYFT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    lab, url = start_tutorial(tmp_path, runtime_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = None
            try:
                page = browser.new_page(viewport={"width": 1800, "height": 1100})
                page.set_default_timeout(150_000)  # a loaded 2-core machine runs three kernels and a browser
                page.goto(url, wait_until="domcontentloaded")
                bob = page.locator(".jp-NotebookPanel", has_text="Bob: the data owner")
                model = page.locator(".jp-NotebookPanel", has_text="Model: the data scientist")
                bob.wait_for(state="visible")
                model.wait_for(state="visible")
                # side by side: Bob's pane left of Model's, both in view
                b, m = bob.bounding_box(), model.bounding_box()
                assert b and m and b["x"] + b["width"] <= m["x"] + 2 and abs(b["y"] - m["y"]) < 5
                for pane in (bob, model):  # both kernels started and idle
                    pane.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=150_000)

                run_all(page, bob)
                registry = bob.locator(".syft-registry tr.syft-obj")
                page.wait_for_function(
                    "() => document.querySelectorAll('.syft-registry tr.syft-obj').length === 2", timeout=150_000)
                assert "#X" in " ".join(registry.all_inner_texts())
                bob.locator(".jp-OutputArea-output", has_text="no pending request yet").wait_for()

                # Model runs top to bottom; its z.get() waits for Bob, who approves in his panel
                run_all(page, model)
                bob.locator(".lm-TabBar-tab", has_text="Requests (1)").wait_for(timeout=120_000)
                bob.locator(".lm-TabBar-tab", has_text="Requests").first.click()
                bob.locator(".syft-request-1 .syft-approve").click()
                model.locator(".jp-OutputArea-output", has_text="tensor([2., 3., 4., 5., 6.])").first.wait_for()

                # the card of z (shown by %syft_inspect z): Request value, then Approve in Bob's panel
                card = model.locator(".syft-card").filter(has_text="add(#X, #Y)").last
                card.scroll_into_view_if_needed()
                assert "computed" in card.locator(".syft-card-header").inner_text()
                card.locator(".syft-card-request").click()
                card.locator(".syft-card-status", has_text="waiting for Bob to approve request #2").wait_for()
                assert "waiting" in card.locator(".syft-card-header").inner_text()
                page.screenshot(path=str(shots / "tutorial_waiting.png"))
                bob.locator(".syft-request-2 .syft-approve").click()
                card.locator(".syft-card-value", has_text="tensor([2., 3., 4., 5., 6.])").wait_for()
                assert "approved" in card.locator(".syft-card-header").inner_text()
                card.scroll_into_view_if_needed()
                # nothing covers the notebooks: no pop-up asking about Jupyter news
                assert page.get_by_text("official Jupyter news").count() == 0
                page.screenshot(path=str(shots / "tutorial_side_by_side.png"))

                # Bob chooses #X under his Registry tab: his own card, with his values
                bob.locator(".lm-TabBar-tab", has_text="Registry").first.click()
                choice = bob.locator(".syft-inspect-choice select")
                choice.select_option(label=next(o for o in choice.locator("option").all_inner_texts()
                                                if o.startswith("#X")))
                owner_card = bob.locator(".syft-inspector .syft-owner-card")
                owner_card.locator(".syft-card-value", has_text="tensor([1., 2., 3., 4., 5.])").wait_for()
                assert "shared by you" in owner_card.inner_text()
                owner_card.scroll_into_view_if_needed()
                page.screenshot(path=str(shots / "tutorial_owner_card.png"))
                bob.locator(".lm-TabBar-tab", has_text="Graph").first.click()
                bob.locator(".syft-graph-view svg.syft-graph").scroll_into_view_if_needed()
                page.screenshot(path=str(shots / "tutorial_bob_graph.png"))
            except BaseException:
                if page is not None:
                    page.screenshot(path=str(shots / "failure.png"))  # what the person would have seen
                raise
            finally:
                browser.close()
    finally:
        stop_process_tree(lab, grace=20)
    for name in ("tutorial_waiting.png", "tutorial_side_by_side.png", "tutorial_owner_card.png"):
        assert png_ink(shots / name) > 0.02, f"{name} looks blank"
