"""A value at a glance, as HTML: the first elements, min / max / mean, and a small SVG histogram.

Used by the cards (:mod:`.card`): the scientist's once the owner let a value through, the
owner's for his own data and what his clients made there (a model: its layers). Pure functions of a local
object; nothing here touches the network.
"""
from __future__ import annotations

import html
from typing import Any, List

import torch

__all__ = ["preview_html", "object_html", "stats", "histogram_svg", "SMALL", "HISTOGRAM_MIN"]

SMALL = 20  #: tensors with at most this many elements are shown whole
HISTOGRAM_MIN = 32  #: float tensors with more elements than this get a histogram
BINS = 20


def stats(t: torch.Tensor) -> dict:
    """``{"min", "max", "mean"}`` of a numeric tensor (floats; ``mean`` of integers as float)."""
    flat = t.detach().reshape(-1)
    if flat.numel() == 0 or flat.is_complex():
        return {}
    if flat.dtype == torch.bool:
        flat = flat.to(torch.int64)
    return {"min": flat.min().item(), "max": flat.max().item(), "mean": flat.double().mean().item()}


def histogram_svg(t: torch.Tensor, bins: int = BINS, width: int = 200, height: int = 44) -> str:
    """A bar chart of ``t``'s values in ``bins`` equal bins, as one ``<svg>`` (no script, no CDN)."""
    flat = t.detach().reshape(-1).double()
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return ""
    lo, hi = flat.min().item(), flat.max().item()
    if hi == lo:
        hi = lo + 1.0
    counts: List[int] = torch.histc(flat, bins=bins, min=lo, max=hi).to(torch.int64).tolist()
    top = max(counts) or 1
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 12 - c / top * (height - 14):.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * (height - 14):.1f}" fill="#5b8bd0"><title>{c}</title></rect>'
        for i, c in enumerate(counts))
    axis = (f'<text x="0" y="{height - 1}" font-size="9" fill="#777">{_num(lo)}</text>'
            f'<text x="{width}" y="{height - 1}" font-size="9" fill="#777" text-anchor="end">{_num(hi)}</text>')
    return (f'<svg class="syft-histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{rects}{axis}</svg>')


def _num(v: float) -> str:
    return f"{v:.4g}"


def preview_html(t: Any) -> str:
    """The value itself when small; else the first elements, statistics and, for floats, a histogram. Another
    object (a model, an optimizer a client made on the owner's worker): :func:`object_html`."""
    if not isinstance(t, torch.Tensor):
        return object_html(t)
    n = t.numel()
    head = f"tensor of shape {tuple(t.shape)}, {str(t.dtype).removeprefix('torch.')}"
    if n <= SMALL:
        body = f'<pre class="syft-card-tensor" style="margin:2px 0">{html.escape(repr(t))}</pre>'
        return f'<div class="syft-preview">{body}</div>'
    first = ", ".join(_num(v) if isinstance(v, float) else str(v) for v in t.detach().reshape(-1)[:8].tolist())
    parts = [f'<div class="syft-muted" style="font-size:12px">{html.escape(head)}</div>',
             f'<div style="font-size:12px"><code class="syft-card-first">[{html.escape(first)}, …]</code> '
             f'({n:,} elements)</div>']
    s = stats(t)
    if s:
        parts.append('<div class="syft-card-stats" style="font-size:12px">'
                     f'min <b>{_num(s["min"])}</b> &nbsp; max <b>{_num(s["max"])}</b> &nbsp; '
                     f'mean <b>{_num(s["mean"])}</b></div>')
    if t.is_floating_point() and n > HISTOGRAM_MIN:
        parts.append(histogram_svg(t))
    return '<div class="syft-preview">' + "".join(parts) + "</div>"


#: A model's layers shown at most (its ``repr``'s lines).
MODEL_LINES = 40


def object_html(obj: Any) -> str:
    """What an object that is not a tensor is: a model's class, size and layers (its ``repr``, cut), an optimizer's
    class and parameter count; everything escaped (a client chose the layers' names)."""
    if isinstance(obj, torch.nn.Module):
        numel = sum(t.numel() for t in obj.state_dict().values() if isinstance(t, torch.Tensor))
        head = f"model {type(obj).__name__}, {numel:,} weights"
        lines = repr(obj).splitlines()
        if len(lines) > MODEL_LINES:
            lines = [*lines[:MODEL_LINES], f"… {len(lines) - MODEL_LINES:,} more lines"]
        body = "\n".join(line[:200] for line in lines)
    elif isinstance(obj, torch.optim.Optimizer):
        count = sum(len(g["params"]) for g in obj.param_groups)
        head, body = f"optimizer {type(obj).__name__} over {count:,} parameters", ""
    else:
        head, body = type(obj).__name__, ""
    parts = [f'<div class="syft-muted" style="font-size:12px">{html.escape(head)}</div>']
    if body:
        parts.append(f'<pre class="syft-card-model" style="margin:2px 0">{html.escape(body)}</pre>')
    return '<div class="syft-preview">' + "".join(parts) + "</div>"
