"""The interpreter's thread switch interval, shortened while any worker of this process runs."""
from __future__ import annotations

import sys
import threading
from typing import Optional

from ..config import defaults


class _SwitchInterval:
    """Shortens the interpreter's thread switch interval while any worker runs in this process.

    The serving thread needs the GIL to answer; while the owner's notebook runs
    pure Python, it gets it only every switch interval (5 ms by default), which
    would add up to 5 ms to each request (more: the serving thread gives the GIL
    up again in each socket call and torch op). A shorter interval
    (``defaults.switch_interval``, 0.25 ms) bounds each of those waits. The cost
    is more frequent thread switches while requests arrive: the owner's own
    pure-Python code runs 5-15% slower while it is being served, not otherwise (a
    thread blocked on its socket does not ask for the GIL). The previous value is
    restored when the last worker stops.
    """

    def __init__(self) -> None:
        self._users = 0
        self._saved: Optional[float] = None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            wanted = defaults.switch_interval
            if self._users == 1 and wanted and sys.getswitchinterval() > wanted:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(wanted)

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._saved is not None:
                sys.setswitchinterval(self._saved)
                self._saved = None


#: The one instance workers acquire on start and release on stop.
switch_interval = _SwitchInterval()
