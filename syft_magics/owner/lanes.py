"""A client's lane: its heavy ops run off the serving thread, one at a time, in order.

The serving thread must never wait on one client's long op: it accepts connections, answers
handshakes and heartbeats, and serves every other client. So an op that is not known to be cheap
(:mod:`~syft_magics.owner.costs`) runs in a thread of its own (torch releases the GIL in its kernels)
while the client's later messages wait in its lane's backlog, to be served in order once it is done;
other clients go on. A cheap op of an idle lane runs at once on the serving thread, as before: no
thread hand-off on the common small op (the op round trip is a tracked benchmark).

A torch kernel cannot be interrupted, so an op that runs past its budget is reported (counted and
logged) rather than stopped; ops estimated over it are refused before they start.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

#: (connection token, [header, *frames], whether it came in a batch)
Deferred = Tuple[int, List[Any], bool]
#: what runs on the serving thread when the work is done: (router, result, exception or None, seconds)
Done = Callable[[Any, Any, Optional[BaseException], float], None]


class Lane:
    """One client's background op and the messages that wait behind it (serving thread's state)."""

    def __init__(self, label: str) -> None:
        self.label = label
        #: an op is running in the background: this client's messages wait
        self.busy = False
        self.backlog: Deque[Deferred] = deque()

    def holds(self) -> bool:
        """Whether a message of this client must wait (an op runs, or earlier messages wait)."""
        return self.busy or bool(self.backlog)

    def defer(self, conn: int, parts: List[Any], batched: bool, front: bool = False) -> None:
        """Keep a message to serve once the lane is free (``front``: before those already waiting)."""
        if front:
            self.backlog.appendleft((conn, parts, batched))
        else:
            self.backlog.append((conn, parts, batched))

    def run(self, work: Callable[[], Any], done: Done, call_soon: Callable[[Callable[[Any], None]], None]) -> None:
        """Run ``work()`` in a new thread; then ``done(router, result, error, seconds)`` on the serving thread."""
        self.busy = True

        def main() -> None:
            t0 = time.perf_counter()
            result: Any = None
            error: Optional[BaseException] = None
            try:
                result = work()
            except BaseException as exc:  # handed back to the serving thread, which replies with it
                error = exc
            seconds = time.perf_counter() - t0
            call_soon(lambda router: done(router, result, error, seconds))

        threading.Thread(target=main, name=f"syft-lane-{self.label}", daemon=True).start()
