"""The tutorial in Jupyter Notebook 7, two people, two pages: Bob's notebook in one browser page, Model's in
another, as a data owner and a data scientist would each have their own.

Bob runs all his cells; Model runs all of hers, and her ``z.get()`` waits until Bob clicks **Approve** in
his panel, on his page. Then Model clicks **Request value** on ``z``'s card: her card says which request
waits, Bob approves it on his page, and her card shows the value. Screenshots of both pages go to the
test's temporary folder (or ``$SYFT_SCREENSHOTS``) and are checked not blank.

Skipped where chromium or Notebook 7 is absent (``.ci/run`` installs both: ``notebook`` is in the test extra).
"""
from __future__ import annotations

import os
import re
import shutil
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
    pytest.mark.skipif(shutil.which("jupyter-notebook") is None and not Path(sys.prefix, "bin",
                                                                          "jupyter-notebook").exists(),
                       reason="Jupyter Notebook 7 is absent (pip install -e '.[test]')"),
]


def start_notebook_server(tmp_path: Path, runtime_dir: Path):
    """Jupyter Notebook 7 on a free loopback port over a copy of the tutorial's two notebooks."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Bob.ipynb", "Model.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, work / name)
    port, token = free_port(), "syft-two-pages"
    log = tmp_path / "notebook.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    cmd = [sys.executable, "-m", "notebook", f"--ServerApp.root_dir={work}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           "--no-browser", "--JupyterNotebookApp.news_url=",
           "--JupyterNotebookApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"Jupyter Notebook exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                return proc, base, token
        except OSError:
            time.sleep(0.3)
    stop_process_tree(proc, grace=20)
    raise AssertionError(f"Jupyter Notebook did not answer:\n{log.read_text()[-3000:]}")


def open_notebook(context, base: str, token: str, name: str, heading: str):
    page = context.new_page()
    page.set_default_timeout(150_000)  # a loaded 2-core machine runs a server, two kernels and a browser
    page.goto(f"{base}/notebooks/{name}?token={token}", wait_until="domcontentloaded")
    notebook = page.locator(".jp-NotebookPanel", has_text=heading)
    notebook.wait_for(state="visible")
    return page, notebook


def test_bob_and_model_in_two_notebook7_pages_request_and_approve(tmp_path, runtime_dir):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SYFT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    server, base, token = start_notebook_server(tmp_path, runtime_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pages = []
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 1000})
                bob_page, bob = open_notebook(context, base, token, "Bob.ipynb", "Bob: the data owner")
                pages.append(bob_page)
                run_all(bob_page, bob)
                bob_page.wait_for_function(
                    "() => document.querySelectorAll('.syft-registry tr.syft-obj').length === 2", timeout=150_000)
                assert "#X" in " ".join(bob.locator(".syft-registry tr.syft-obj").all_inner_texts())
                bob.locator(".jp-OutputArea-output", has_text="no pending request yet").wait_for()

                model_page, model = open_notebook(context, base, token, "Model.ipynb", "Model: the data scientist")
                pages.append(model_page)
                run_all(model_page, model)  # its z.get() waits for Bob, on his own page
                bob_page.bring_to_front()
                bob.locator(".lm-TabBar-tab", has_text="Requests (1)").wait_for(timeout=120_000)
                bob.locator(".lm-TabBar-tab", has_text="Requests").first.click()
                bob.locator(".syft-request-1 .syft-approve").click()
                model_page.bring_to_front()
                model.locator(".jp-OutputArea-output", has_text="tensor([2., 3., 4., 5., 6.])").first.wait_for()

                # Model asks for z's value from its card; Bob approves on his page; the card shows it
                card = model.locator(".syft-card").filter(has_text="add(#X, #Y)").last
                card.scroll_into_view_if_needed()
                card.locator(".syft-card-request").click()
                card.locator(".syft-card-status", has_text="waiting for Bob to approve request #2").wait_for()
                model_page.screenshot(path=str(shots / "nb7_model_waiting.png"))
                bob_page.bring_to_front()
                bob.locator(".syft-request-2 .syft-approve").click()
                bob_page.screenshot(path=str(shots / "nb7_bob_approved.png"))
                model_page.bring_to_front()
                card.locator(".syft-card-value", has_text="tensor([2., 3., 4., 5., 6.])").wait_for()
                assert "approved" in card.locator(".syft-card-header").inner_text()
                card.scroll_into_view_if_needed()
                model_page.screenshot(path=str(shots / "nb7_model_value.png"))
                # Bob's command log on his page lists what Model's kernel ran
                bob.locator(".lm-TabBar-tab", has_text="Commands").first.click()
                log = bob.locator(".syft-commands").first
                log.locator("td", has_text=re.compile(r"^add\(#X, #Y\)")).first.wait_for()
            except BaseException:
                for i, page in enumerate(pages):
                    page.screenshot(path=str(shots / f"nb7_failure_{i}.png"))
                raise
            finally:
                browser.close()
    finally:
        stop_process_tree(server, grace=20)
    for name in ("nb7_model_waiting.png", "nb7_bob_approved.png", "nb7_model_value.png"):
        assert png_ink(shots / name) > 0.02, f"{name} looks blank"
