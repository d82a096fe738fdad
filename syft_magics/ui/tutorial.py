"""``python -m syft_magics tutorial``: JupyterLab on the tutorial, Bob and Model side by side.

Finds the notebooks (the checkout's ``notebooks/``, or the copy installed with the package under
``<prefix>/share/syft_magics/notebooks``, which is copied to a working folder first so the
installed files stay pristine), writes a JupyterLab workspace that opens ``Bob.ipynb`` and
``Model.ipynb`` in two panes, and runs JupyterLab on 127.0.0.1 with that workspace as its start
page. JupyterLab comes from the ``tutorial`` extra (``pip install -e ".[tutorial]"``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional

__all__ = ["WORKSPACE", "SIDE_BY_SIDE", "find_notebooks", "prepare", "workspace", "lab_command", "run"]

WORKSPACE = "syft-tutorial"
SIDE_BY_SIDE = ("Bob.ipynb", "Model.ipynb")
NOTEBOOKS = ("Bob.ipynb", "Model.ipynb", "Pipelines.ipynb")
DEFAULT_DIR = Path.home() / "syft-magics-tutorial"


def checkout_notebooks() -> Optional[Path]:
    """The ``notebooks/`` folder of a source checkout this package runs from, if it does."""
    root = Path(__file__).resolve().parents[2]
    folder = root / "notebooks"
    if (root / "setup.cfg").is_file() and all((folder / n).is_file() for n in NOTEBOOKS):
        return folder
    return None


def installed_notebooks() -> Optional[Path]:
    """Where ``pip install`` put the notebooks (setup.cfg's data_files), if it did."""
    for base in {sys.prefix, sysconfig.get_path("data")}:
        folder = Path(base) / "share" / "syft_magics" / "notebooks"
        if all((folder / n).is_file() for n in NOTEBOOKS):
            return folder
    return None


def find_notebooks() -> Path:
    """The folder holding the tutorial's notebooks; a clear error if the package carries none."""
    folder = checkout_notebooks() or installed_notebooks()
    if folder is None:
        raise FileNotFoundError("the tutorial notebooks were not found: install the package from its checkout "
                                "(pip install -e '.[tutorial]') or with its data files")
    return folder


def prepare(target: Optional[Path] = None) -> Path:
    """The folder to open: the checkout's notebooks, or a working copy of the installed ones.

    A working copy never overwrites a notebook already there (your edits stay).
    """
    source = find_notebooks()
    if target is None and checkout_notebooks() == source:
        return source
    target = Path(target or DEFAULT_DIR).expanduser().resolve()
    if target == source.resolve():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.ipynb")):  # the core three, and any other notebook shipped with them
        if not (target / path.name).exists():
            shutil.copyfile(path, target / path.name)
    return target


def workspace(prefix: str = "", name: str = WORKSPACE) -> dict:
    """A JupyterLab 4 workspace: Bob's and Model's notebooks in two panes, side by side.

    ``prefix`` is the notebooks' folder relative to JupyterLab's root (``notebooks/`` on Binder).
    """
    left, right = (f"notebook:{prefix}{n}" for n in SIDE_BY_SIDE)
    return {
        "data": {
            "layout-restorer:data": {
                "main": {
                    "dock": {
                        "type": "split-area", "orientation": "horizontal", "sizes": [0.5, 0.5],
                        "children": [
                            {"type": "tab-area", "currentIndex": 0, "widgets": [left]},
                            {"type": "tab-area", "currentIndex": 0, "widgets": [right]},
                        ],
                    },
                    "current": left,
                },
                "left": {"collapsed": True, "visible": True, "widgets": ["filebrowser"]},
                "right": {"collapsed": True, "visible": True, "widgets": []},
                "relativeSizes": [0, 1, 0],
            },
            left: {"data": {"path": f"{prefix}{SIDE_BY_SIDE[0]}", "factory": "Notebook"}},
            right: {"data": {"path": f"{prefix}{SIDE_BY_SIDE[1]}", "factory": "Notebook"}},
        },
        "metadata": {"id": name},
    }


def save_workspace(folder: Path, prefix: str = "") -> Path:
    """Write the side-by-side workspace where JupyterLab will look for it (``folder``)."""
    from jupyterlab_server.workspaces_handler import WorkspacesManager

    return WorkspacesManager(str(folder)).save(WORKSPACE, json.dumps(workspace(prefix)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_settings(folder: Path) -> None:
    """The tutorial's own JupyterLab user settings: no pop-up asking about news over the notebooks.

    A settings file already there is kept (the person's changes win).
    """
    path = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}) + "\n")


def lab_command(root: Path, state: Path, port: int, token: str, browser: bool) -> List[str]:
    """The JupyterLab command line: loopback only, our workspace as the start page, no news polling.

    ``state`` holds the tutorial's workspace and user settings (``workspaces/``, ``settings/``).
    """
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--LabApp.workspaces_dir={state / 'workspaces'}", f"--LabApp.user_settings_dir={state / 'settings'}",
           f"--ServerApp.default_url=/lab/workspaces/{WORKSPACE}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if not browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers (and Binder-like machines) often run as root
    return cmd


def run(port: Optional[int] = None, browser: bool = True, folder: Optional[str] = None) -> int:
    """Prepare the notebooks and the workspace, print the URL, then become JupyterLab (until Ctrl-C)."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print("JupyterLab is not installed: pip install -e '.[tutorial]' (from the checkout), then run this again",
              file=sys.stderr)
        return 2
    try:
        root = prepare(Path(folder) if folder else None)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    state = root / ".syft-tutorial"
    save_workspace(state / "workspaces")
    save_settings(state / "settings")
    port = port or free_port()
    token = secrets.token_hex(16)
    print(f"The tutorial: {root}\nJupyterLab, Bob and Model side by side:\n"
          f"    http://127.0.0.1:{port}/lab/workspaces/{WORKSPACE}?token={token}\n"
          "Run Bob's notebook first, then Model's. Ctrl-C stops JupyterLab.", flush=True)
    cmd = lab_command(root, state, port, token, browser)
    os.execv(cmd[0], cmd)  # JupyterLab takes over this process: Ctrl-C and signals reach it directly
    return 0  # pragma: no cover
