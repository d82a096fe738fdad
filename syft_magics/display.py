"""How values read in reprs and panels: text tables, object ids, dtypes, byte counts."""
from __future__ import annotations

import html
from typing import Iterable, Optional, Sequence, Union


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def esc(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes included): everything that reaches a browser goes through it."""
    return html.escape(str(value), quote=True)


def html_row(cells: Sequence[object], cls: str = "", attrs: str = "", titles: Optional[Sequence[str]] = None) -> str:
    """One escaped ``<tr>``; ``titles`` gives per-cell tooltips."""
    tds = []
    for i, cell in enumerate(cells):
        tip = titles[i] if titles and i < len(titles) and titles[i] else ""
        tip_attr = f' title="{esc(tip)}"' if tip else ""
        tds.append(f"<td{tip_attr}>{esc(cell)}</td>")
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<tr{cls_attr}{(' ' + attrs) if attrs else ''}>{''.join(tds)}</tr>"


def html_table(headers: Sequence[str], rows: Iterable[str], empty: str = "nothing yet", cls: str = "") -> str:
    """An HTML table from ready-made ``<tr>`` strings (each built with :func:`html_row`)."""
    body = "".join(rows)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    if not body:
        body = f'<tr><td class="syft-muted" colspan="{len(headers)}">{esc(empty)}</td></tr>'
    return f'<table class="syft-tbl {esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def short_id(oid: Union[bytes, str]) -> str:
    """An object id as people read it: its first 8 hex digits and an ellipsis."""
    return (oid.hex() if isinstance(oid, bytes) else oid)[:8] + "…"


def dtype_text(dtype: object) -> str:
    """A dtype without the ``torch.`` prefix (``float32``), also for dtypes the wire does not carry."""
    return str(dtype).removeprefix("torch.")


class TextRepr:
    """A repr that is the object's :meth:`text` summary, and never fails (panels and cards)."""

    def text(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__

    def __repr__(self) -> str:
        try:
            return self.text()
        except Exception as exc:  # never let a repr fail
            return f"<{type(self).__name__} ({exc})>"


def human_bytes(n: float) -> str:
    """``1.5 MiB``: a byte count as people read it."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
