"""Python's cyclic garbage collector while workers or clients run: what exists once they have warmed up is frozen.

Python runs a full collection each time the objects that survived two younger collections grow by a
quarter, and a full collection walks every tracked object of the process. A kernel holds about
300,000 of them once torch and the machinery the warm-ups import (the worker's cost estimates and
traces, the client's shape inference) are loaded: each full collection then held the serving
thread (and the owner's notebook) for about 0.2 s, once some 30 epochs into a small training run,
then again every few hundred; on the scientist's side 0.25 s every 50,000 ops of a chain.
``gc.freeze()`` moves the objects that exist at that moment out of the collector's reach (O(1));
later full collections walk only what was made since. Frozen objects are still freed by their
reference counts as always; only a reference cycle among them, should one become garbage meanwhile,
waits until the last worker stops or client disconnects (``gc.unfreeze()``) to be collected.

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
        self._ours = False  # we froze: we unfreeze when the last worker stops or client disconnects
        self._lock = threading.Lock()

    def acquire(self, warming: Iterable[Optional[threading.Thread]] = ()) -> None:
        """A worker starts or a client connects; ``warming``: the threads its warm-ups started (what they
        import is frozen once they end)."""
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._ours = bool(defaults.freeze_gc) and gc.get_freeze_count() == 0
            if not self._ours:
                return
            gc.freeze()
        threads = [t for t in warming if t is not None]
        if threads:
            threading.Thread(target=self._after, args=(threads,), name="syft-gc-freeze", daemon=True).start()

    def _after(self, threads: Iterable[threading.Thread]) -> None:
        for t in threads:
            t.join()
        with self._lock:
            if self._users and self._ours:  # (the worker may have stopped meanwhile)
                gc.freeze()

    def release(self) -> None:
        """A worker stopped or a client disconnected: the last one gives the frozen objects back to the collector."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._ours:
                gc.unfreeze()
                self._ours = False
                # what was garbage when it was frozen is collected now, while the interpreter runs: left to the
                # collection at exit, objects such as ZeroMQ sockets and torch's were finalized during the
                # interpreter's shutdown (a segfault or "terminate called" at exit in 3 of 10 runs of a script)
                gc.collect()


#: The one instance workers and clients acquire on start and release on stop.
freezer = _Freezer()
