"""One background thread that refreshes every open panel on a throttled timer.

Workers and clients never render: their event subscribers only append to a
deque (see :class:`LivePanel`). This thread wakes every :data:`TICK` seconds and
asks each panel whether it is due; a panel refreshes only when something
changed (or its slow poll is due) and never more often than its
``1 / max_rate``, an interval that grows with the time a render takes (about
:data:`DUTY` of the time goes to rendering, up to :data:`MAX_INTERVAL`; never more than :data:`MAX_DUTY`, even
when that leaves a panel further behind), so a busy worker, or a loop issuing ops in the same process, keeps
its CPU. Between renders the thread sleeps until the next panel may render again (it does not wake every
tick to find out that none may: each wake-up takes the GIL from the loop). The
thread (``syft-panel-refresh``) runs only while a panel is open and ends on its
own after the last one closes. Widget updates from this thread reach the front
end while the notebook is idle (ipykernel sends comm messages from any thread).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Dict, Optional

import ipywidgets as widgets

from ...display import TextRepr
from . import _html as H

__all__ = ["Refresher", "REFRESHER", "TICK", "DUTY", "MAX_INTERVAL", "LivePanel", "close_tree"]

TICK = 0.05  # how often the thread looks at the panels (s)
DUTY = 0.02  # at most this share of the time is spent rendering one panel (under load)...
MAX_INTERVAL = 2.0  # ...but a panel with news is never more than this many seconds behind...
MAX_DUTY = 0.05  # ...unless its renders are so slow (a loaded machine) that this share would be exceeded

log = logging.getLogger(__name__)


class Refresher:
    """Drives the ``_tick(now)`` of registered panels from one daemon thread."""

    def __init__(self, name: str = "syft-panel-refresh") -> None:
        self.name = name
        self._panels: Dict[int, object] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def add(self, panel: object) -> None:
        with self._lock:
            self._panels[id(panel)] = panel
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, panel: object) -> None:
        with self._lock:
            self._panels.pop(id(panel), None)
        self._wake.set()

    def kick(self) -> None:
        """Look at the panels now rather than at the next tick."""
        self._wake.set()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    def _loop(self) -> None:
        while True:
            with self._lock:
                panels = list(self._panels.values())
                if not panels:
                    self._thread = None
                    return
            now = time.monotonic()
            soonest = now + MAX_INTERVAL  # when the next panel may render again
            for panel in panels:
                try:
                    panel._tick(now)  # type: ignore[attr-defined]
                except Exception:  # a broken panel shows its error and stops; the others go on
                    log.warning("panel %s failed and stops refreshing", type(panel).__name__, exc_info=True)
                    try:
                        panel._broken(traceback.format_exc())  # type: ignore[attr-defined]
                    except Exception:
                        pass
                    self.remove(panel)
                soonest = min(soonest, getattr(panel, "_next_allowed", 0.0))
            panels = []  # drop references before sleeping
            self._wake.wait(max(TICK, soonest - time.monotonic()))
            self._wake.clear()


#: The process-wide refresher every panel uses.
REFRESHER = Refresher()


class LivePanel(TextRepr, widgets.VBox):
    """What the panels share: throttled refreshing, their text repr, closing.

    Subclasses implement ``_changed() -> bool`` (cheap: is there news?), ``_render()``
    (build and assign the widget values), ``text()`` (the plain-text summary) and
    ``_release()`` (unsubscribe), have a ``footer`` HTML widget, and call
    :meth:`_start_live` / :meth:`_stop_live`.
    """

    #: Never more than this many refreshes per second (5-10 is plenty for eyes).
    max_rate = 6.0
    #: Refresh at least this often even without news (slow-changing things: names, liveness).
    poll_interval = 1.0

    def _init_live(self) -> None:
        self._closed = False
        self._live = False
        self._render_lock = threading.RLock()
        self._next_allowed = 0.0
        self._next_poll = 0.0
        self._forced = True
        self.renders = 0  # how many times the panel re-rendered (tests and benchmarks read it)
        self.render_seconds = 0.0

    def _start_live(self) -> None:
        if not self._live:
            self._live = True
            REFRESHER.add(self)

    def _stop_live(self) -> None:
        self._live = False
        REFRESHER.remove(self)

    @property
    def live(self) -> bool:
        """Whether the panel still refreshes itself."""
        return self._live

    def request_refresh(self) -> None:
        """Refresh at the next allowed moment (clicks and hooks call this)."""
        self._forced = True
        REFRESHER.kick()

    def _tick(self, now: float) -> None:
        if not self._live or now < self._next_allowed:
            return
        if not (self._forced or now >= self._next_poll or self._changed()):
            return
        try:
            self.refresh(full=False)
            self._failures = 0
        except Exception:
            # a transient failure (something changed under the render) is retried at the next tick;
            # three in a row mean the panel is broken: the refresher shows the error and drops it
            self._failures = getattr(self, "_failures", 0) + 1
            self._next_allowed = now + 1.0 / self.max_rate
            if self._failures >= 3:
                raise
            return
        took = self._last_render
        self._next_allowed = now + max(min(MAX_INTERVAL, max(1.0 / self.max_rate, took / DUTY)), took / MAX_DUTY)
        self._next_poll = now + self.poll_interval

    def refresh(self, full: bool = True) -> None:
        """Re-render now, in the calling thread. The timer passes ``full=False``: then only what is on
        screen (the header and the selected tab) is rebuilt; a tab is brought up to date when selected."""
        with self._render_lock:
            self._forced = False
            t0 = time.perf_counter()
            self._render(full)
            self._last_render = time.perf_counter() - t0
            self.renders += 1
            self.render_seconds += self._last_render

    _last_render = 0.0

    def _changed(self) -> bool:  # pragma: no cover - overridden
        return False

    def _render(self, full: bool = True) -> None:  # pragma: no cover - overridden
        pass

    def _broken(self, text: str) -> None:
        """The refresher gave up on this panel: stop, and show why in the footer."""
        self._live = False
        try:
            self.footer.value = f'<pre style="color:#c62828;font-size:11px">{H.esc(text)}</pre>'
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def _release(self) -> None:  # pragma: no cover - overridden
        """Let go of what the panel subscribed to (called once, by :meth:`close`)."""

    def close(self) -> None:
        """Stop refreshing, unsubscribe and close the widgets."""
        if getattr(self, "_closed", True):
            return super().close()
        self._closed = True
        self._stop_live()
        try:
            self._release()
        except Exception:  # closing goes on: the widgets must go away
            log.warning("%s could not unsubscribe", type(self).__name__, exc_info=True)
        for child in list(self.children):
            close_tree(child)
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Optional[dict]:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = self.text()
        return data


def close_tree(widget: Any) -> None:
    """Close a widget and everything inside it."""
    for child in list(getattr(widget, "children", ()) or ()):
        close_tree(child)
    try:
        widget.close()
    except Exception:
        pass
