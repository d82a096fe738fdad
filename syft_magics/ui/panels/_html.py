"""Small HTML helpers for the panels: escaped tables with inline styles, and value formatting.

Everything that reaches the browser goes through :func:`esc`. Styles are inline or in a
``<style>`` block scoped by ``.syft-panel`` class names, so the panels look the same in
JupyterLab, Notebook 7, Voila and VS Code without any front-end build or CDN.
"""
from __future__ import annotations

import time
from typing import Optional

from ...display import esc, human_bytes
from ...display import html_row as row
from ...display import html_table as table

__all__ = ["esc", "table", "row", "badge", "clock", "duration", "human_bytes", "STYLE", "plural"]

#: One style block per widget value; the class names are all prefixed ``syft-``.
STYLE = """<style>
.syft-tbl{border-collapse:collapse;font-size:12px;font-family:var(--jp-code-font-family,monospace);width:100%}
.syft-tbl th{text-align:left;font-weight:600;border-bottom:1px solid #bbb;padding:2px 8px;white-space:nowrap;
  position:sticky;top:0;background:var(--jp-layout-color1,#fff)}
.syft-tbl td{padding:2px 8px;border-bottom:1px solid rgba(128,128,128,.18);white-space:nowrap;vertical-align:top}
.syft-tbl tr.syft-err td{color:#c62828}
.syft-tbl tr.syft-freed td{opacity:.45}
.syft-scroll{max-height:340px;overflow:auto}
.syft-muted{color:#777}
.syft-badge{display:inline-block;padding:0 6px;margin-right:6px;border-radius:8px;background:rgba(128,128,128,.14);
  font-size:12px;white-space:nowrap}
.syft-badge b{font-weight:600}
.syft-warn{background:#fff3cd;color:#7a5a00}
.syft-bad{background:#fde8e8;color:#c62828}
.syft-good{background:#e6f4ea;color:#1e6b34}
.syft-title{font-size:14px;font-weight:600;margin-right:10px}
.syft-legend span{margin-right:14px;font-size:11px;color:#555}
</style>"""


def plural(n: int, word: str, many: Optional[str] = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def clock(t: Optional[float], ms: bool = False) -> str:
    """Wall-clock time of day, e.g. ``14:03:07`` (``14:03:07.123`` with ``ms``)."""
    if not t:
        return "-"
    text = time.strftime("%H:%M:%S", time.localtime(t))
    return f"{text}.{int((t % 1) * 1000):03d}" if ms else text


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def badge(label: str, value: object, kind: str = "") -> str:
    extra = f" syft-{kind}" if kind else ""
    return f'<span class="syft-badge{extra}">{esc(label)} <b>{esc(value)}</b></span>'
