"""Python's cyclic garbage collector while workers or clients run: what exists once they have warmed up is frozen.

Python runs a full collection each time the objects that survived two younger collections grow by a
quarter, and a full collection walks every tracked object of the process. A kernel holds about
300,000 of them once torch and the machinery the warm-ups import (the worker's cost estimates and
traces, the client's shape inference) are loaded: each full collection then held the serving
thread (and the owner's notebook) for about 0.2 s, once some 30 epochs into a small training run,
then again every few hundred; on the scientist's side 0.25 s every 50,000 ops of a chain.
Once a worker or client has run ``defaults.freeze_gc_after`` seconds (10) and its warm-ups are done, what
is garbage is collected and what is left is frozen (``gc.freeze()``, out of the collector's reach);
later full collections walk only what was made since. Frozen objects are still freed by their
reference counts as always; only a reference cycle among them, should one become garbage meanwhile,
waits until the last worker stops or client disconnects: then they are unfrozen and collected at once
(left to the collection during the interpreter's shutdown, ZeroMQ's and torch's objects among them
were finalized there: a segfault or "terminate called" at exit in 3 of 10 runs of a script). Waiting
first spares short-lived workers (a test's, a script's) the two full collections.

A process that froze objects itself (``gc.get_freeze_count()`` non-zero before the first worker or
client started) is left alone, as is one where ``defaults.freeze_gc`` is False.
"""
from __future__ import annotations

import gc
import threading
from typing import Iterable, Optional

from .config import defaults


class _Freezer:
    """Freezes the collector's objects while any worker or client of this process runs (see the module)."""

    def __init__(self) -> None:
        self._users = 0
        self._ours = False  # the freezing is ours to do and undo (nobody else froze objects in this process)
        self._frozen = False  # we froze: we unfreeze and collect when the last worker stops or client disconnects
        self._period = 0  # counts the spans during which workers or clients run (a late timer's span has ended)
        self._stopped = threading.Event()  # set when the span ends: its timer thread leaves at once
        self._lock = threading.Lock()

    def acquire(self, warming: Iterable[Optional[threading.Thread]] = ()) -> None:
        """A worker starts or a client connects; ``warming``: the threads its warm-ups started (what they
        import is frozen once they end)."""
        with self._lock:
            self._users += 1
            if self._users != 1:
                return
            self._ours = bool(defaults.freeze_gc) and gc.get_freeze_count() == 0
            if not self._ours:
                return
            self._period += 1
            period, self._stopped = self._period, threading.Event()
            stopped = self._stopped
        threading.Thread(target=self._after, args=([t for t in warming if t is not None], period, stopped),
                         name="syft-gc-freeze", daemon=True).start()

    def _after(self, threads: Iterable[threading.Thread], period: int, stopped: threading.Event) -> None:
        for t in threads:
            while t.is_alive() and not stopped.is_set():
                t.join(0.1)
        if stopped.is_set() or defaults.freeze_gc_after and stopped.wait(defaults.freeze_gc_after):
            return  # (the last worker stopped or client disconnected first)
        with self._lock:
            if self._users and self._ours and self._period == period and not self._frozen:
                gc.collect()  # (what is garbage now would otherwise be frozen with the rest)
                gc.freeze()
                self._frozen = True

    def release(self) -> None:
        """A worker stopped or a client disconnected: the last one gives the frozen objects back to the collector,
        which collects what among them became garbage."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._period += 1
                self._stopped.set()
                if self._frozen:
                    self._frozen = False
                    gc.unfreeze()
                    gc.collect()


#: The one instance workers and clients acquire on start and release on stop.
freezer = _Freezer()
