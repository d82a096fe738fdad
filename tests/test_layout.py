"""The package shows its architecture: every module is named in the README's table of modules, and none grows past
500 lines (the next feature goes into a module of its own, or a split comes first)."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "syft_magics"


def _modules() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts)


def test_every_module_is_in_the_readmes_table() -> None:
    named = set(re.findall(r"`((?:owner|scientist|wire|ui)/[\w/]+|\w+)`", (ROOT / "README.md").read_text()))
    missing = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).with_suffix("").as_posix()
        folder = rel.rsplit("/", 1)[0] + "/"
        if rel not in named and folder not in named:
            missing.append(rel)
    assert not missing, f"modules the README's table does not name: {missing}"


def test_no_module_reaches_500_lines() -> None:
    long = {p.relative_to(PACKAGE).as_posix(): n for p in _modules()
            if (n := len(p.read_text().splitlines())) >= 500}
    assert not long, f"modules of 500 lines or more (split them first): {long}"
