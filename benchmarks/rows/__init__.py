"""The table's rows, in order. To add one: write a module here with ``NAME``, ``TITLE``, ``QUICK``
(whether quick mode runs it) and ``run(cfg) -> dict``, then add its name to :data:`ROWS`.

``run`` returns ``{"rows": [row(...), ...], "notes": [str, ...], "data": {...}}`` (see ``benchmarks._util.row``).
It must bound every wait, stop its child processes in ``finally`` and respect ``cfg.remaining()``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import List

#: Module names under benchmarks.rows (or full dotted module paths), in the order they run and print.
ROWS = ["latency", "pipeline", "onekernel", "bandwidth", "busy", "memory", "benchmarks.panel", "clients", "peers",
        "training", "streaming", "curve"]


def short(name: str) -> str:
    """The name ``--only`` takes: the module's last component."""
    return name.rsplit(".", 1)[-1]


def load(names: List[str] = ROWS) -> List[ModuleType]:
    return [importlib.import_module(name if "." in name else f"{__name__}.{name}") for name in names]
