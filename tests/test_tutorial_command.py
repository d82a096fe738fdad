"""``python -m syft_magics tutorial``: JupyterLab on the notebooks with Bob and Model side by side.

Started for real on a free loopback port with no browser; the test checks that JupyterLab answers,
that its side-by-side workspace lists both notebooks (and their files are served), then stops it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

from syft_magics.ui import tutorial

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent


def test_the_workspace_opens_bob_and_model_in_two_panes():
    ws = tutorial.workspace("notebooks/")
    dock = ws["data"]["layout-restorer:data"]["main"]["dock"]
    assert dock["type"] == "split-area" and dock["orientation"] == "horizontal"
    panes = [area["widgets"] for area in dock["children"]]
    assert panes == [["notebook:notebooks/Bob.ipynb"], ["notebook:notebooks/Model.ipynb"]]
    assert ws["data"]["notebook:notebooks/Model.ipynb"]["data"] == {"path": "notebooks/Model.ipynb",
                                                                     "factory": "Notebook"}


def test_a_working_copy_never_overwrites_a_notebook_already_there(tmp_path):
    (tmp_path / "Bob.ipynb").write_text("my edits")
    folder = tutorial.prepare(tmp_path)
    assert folder == tmp_path.resolve()
    assert (tmp_path / "Bob.ipynb").read_text() == "my edits"
    assert json.loads((tmp_path / "Model.ipynb").read_text())["cells"]
    assert (tmp_path / "Pipelines.ipynb").is_file()
    shipped = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert shipped <= {p.name for p in tmp_path.glob("*.ipynb")}  # every notebook of the tutorial


def test_setup_installs_every_notebook_as_data():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {Path(p.strip()).name for p in cfg["options.data_files"]["share/syft_magics/notebooks"].split(",")}
    assert listed == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (loopback only)
        return reply.read()


def test_the_tutorial_command_serves_jupyterlab_with_the_side_by_side_workspace(tmp_path):
    port = free_port()
    log = tmp_path / "lab.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "syft_magics", "tutorial", "--port", str(port), "--no-browser",
                             "--dir", str(tmp_path / "work")],
                            cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        token = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the command exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab/workspaces/syft-tutorial\?token=(\w+)", log.read_text())
            if found:
                token = found.group(1)
                try:
                    get(f"http://127.0.0.1:{port}/api/status?token={token}")
                    break
                except OSError:
                    pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"JupyterLab did not answer on {port}:\n{log.read_text()[-3000:]}")
        page = get(f"http://127.0.0.1:{port}/lab/workspaces/syft-tutorial?token={token}").decode()
        assert "JupyterLab" in page or "jupyter-config-data" in page
        space = json.loads(get(f"http://127.0.0.1:{port}/lab/api/workspaces/syft-tutorial?token={token}"))
        dock = space["data"]["layout-restorer:data"]["main"]["dock"]
        assert [a["widgets"] for a in dock["children"]] == [["notebook:Bob.ipynb"], ["notebook:Model.ipynb"]]
        files = json.loads(get(f"http://127.0.0.1:{port}/api/contents?token={token}"))
        names = {f["name"] for f in files["content"]}
        assert {"Bob.ipynb", "Model.ipynb", "Pipelines.ipynb"} <= names
        settings = tmp_path / "work" / ".syft-tutorial" / "settings" / "@jupyterlab" / "apputils-extension"
        assert json.loads((settings / "notification.jupyterlab-settings").read_text())["fetchNews"] == "false"
        with pytest.raises(OSError):  # the token is required
            get(f"http://127.0.0.1:{port}/api/contents")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode is not None
