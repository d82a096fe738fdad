"""Live ipywidgets panels: :class:`WorkerPanel` (the data owner's registry, command log, requests
with Approve / Deny, who holds what) and :class:`ConnectionPanel` (the scientist's pointers and the
pointer graph).

Only ipywidgets' own widgets are used (the graph is an SVG string in an ``HTML`` widget), so the
panels render in JupyterLab 4, Notebook 7, Voila and VS Code without a CDN or a front-end build;
elsewhere their ``repr`` is a readable text summary. They refresh on one throttled background
timer (:mod:`syft_magics.ui.panels._refresh`), never once per message.
"""
from .connection_panel import ConnectionPanel
from .worker_panel import WorkerPanel

__all__ = ["WorkerPanel", "ConnectionPanel"]
