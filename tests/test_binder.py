"""The Binder configuration: what the notebooks import is exactly what binder/requirements.txt installs,
torch comes from PyTorch's CPU index, and the workspace the badge opens shows Bob and Model side by side."""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import nbformat

from syft_magics.ui.tutorial import workspace

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def notebook_imports() -> set:
    """Top-level modules imported by the notebooks' code cells, outside the standard library."""
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
            for line in cell.source.splitlines():  # %load_ext NAME imports NAME too
                magic = re.match(r"\s*%load_ext\s+(\w+)", line)
                if magic:
                    found.add(magic.group(1))
    return {m for m in found if m not in sys.stdlib_module_names}


def requirements() -> list:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_what_the_notebooks_import_is_what_binder_installs():
    installed = set()
    for req in requirements():
        if req.startswith("--"):
            continue
        if req == "-e .":
            installed.add("syft_magics")  # this checkout: setup.cfg's name and package
        else:
            name = re.split(r"[=<>!~\[ ]", req)[0].replace("-", "_")
            installed.add({"scikit_learn": "sklearn"}.get(name, name))  # a distribution's import name
    assert notebook_imports() == installed == {"torch", "syft_magics", "sklearn", "matplotlib"}


def test_torch_is_the_cpu_build_from_pytorchs_index():
    reqs = requirements()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    assert any(re.fullmatch(r"torch==[\d.]+\+cpu", r) for r in reqs)


def test_runtime_and_the_side_by_side_workspace():
    assert re.fullmatch(r"python-3\.\d+", (BINDER / "runtime.txt").read_text().strip())
    assert json.loads((BINDER / "workspace.json").read_text()) == workspace("notebooks/")
    post = (BINDER / "postBuild").read_text()
    assert "jupyter lab workspaces import binder/workspace.json" in post
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/badge_logo.svg" in readme and "urlpath=lab/workspaces/syft-tutorial" in readme
