"""A client's lane: its heavy ops run off the serving thread, one at a time, in order.

The serving thread must never wait on one client's long op: it accepts connections, answers
handshakes and heartbeats, and serves every other client. So an op that is not known to be cheap
(:mod:`~syft_magics.owner.costs`) runs on the lane's own thread (torch releases the GIL in its kernels)
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
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional, Tuple

from ..wire.protocol import Kind, encode, peek
from . import halts, quotas
from .replies import error_reply

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session

#: A message waiting its turn: its connection, its parts, whether it came in a batch (None: not a message but the
#: mark of one refused when the queue was full, which stops its session when its turn comes: owner/halts.py)
Deferred = Tuple[int, List[Any], Optional[bool]]
#: what runs on the serving thread when the work is done: (router, result, exception or None, seconds)
Done = Callable[[Any, Any, Optional[BaseException], float], None]

#: A lane's thread waits this long for the client's next background op before it ends.
IDLE_SECONDS = 1.0


class Lane:
    """One client's background op and the messages that wait behind it (serving thread's state)."""

    def __init__(self, label: str) -> None:
        self.label = label
        #: an op is running in the background: this client's messages wait
        self.busy = False
        self.backlog: Deque[Deferred] = deque()
        #: the backlog holds the mark of a message refused when the queue was full (see :meth:`mark_stop`)
        self.stop_marked = False
        # (the lane's thread, kept while ops keep coming: see run)
        self._jobs: Deque[Callable[[], None]] = deque()
        self._ready = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def holds(self) -> bool:
        """Whether a message of this client must wait (an op runs, or earlier messages wait)."""
        return self.busy or bool(self.backlog)

    def says_goodbye(self) -> bool:
        """Whether the client's goodbye waits in the backlog, behind messages it sent before it (it ends the
        session; frees of pointers collected at the client's exit may follow it)."""
        return any(is_goodbye(parts) for _, parts, _ in self.backlog)

    def defer(self, conn: int, parts: List[Any], batched: bool, front: bool = False) -> None:
        """Keep a message to serve once the lane is free (``front``: before those already waiting)."""
        if front:
            self.backlog.appendleft((conn, parts, batched))
        else:
            self.backlog.append((conn, parts, batched))

    def mark_stop(self, conn: int, parts: List[Any]) -> None:
        """Queue the mark of ``parts``, a message refused when the queue was full: it stops its session in its turn,
        once the messages before it have run (owner/halts.py). One mark at a time: the first stops what follows."""
        if not self.stop_marked:
            self.stop_marked = True
            self.backlog.append((conn, parts, None))

    def run(self, work: Callable[[], Any], done: Done, call_soon: Callable[[Callable[[Any], None]], None]) -> None:
        """Run ``work()`` on the lane's thread; then ``done(router, result, error, seconds)`` on the serving thread.

        The thread stays for the client's next background op, for :data:`IDLE_SECONDS`, and ends then or when
        the session ends (:meth:`close`): torch's math libraries set up each new thread on its first kernel,
        4-16 ms on this VM for a linear layer (then 20 us), which a thread per op paid every time (a federated
        round's first forward of each new model: 7 ms of CPU, 11 ms of wall time, of a 17 ms round)."""
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
            # the result travels in the callback alone: this thread may still be here when the serving thread has
            # answered and let go of it (its autograd graph, charged until freed, then outlived the client's sync)
            handing = _handing(done, (result, error, seconds))
            result = error = None
            call_soon(handing)

        with self._ready:
            self._jobs.append(main)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"syft-lane-{self.label}", daemon=True)
                self._thread.start()
            else:
                self._ready.notify()

    def _serve(self) -> None:
        while True:
            with self._ready:
                if not self._jobs and not self._closed:
                    self._ready.wait(IDLE_SECONDS)
                if not self._jobs:  # idle, or its session ended: the next op starts another thread
                    self._thread = None
                    return
                job = self._jobs.popleft()
            job()
            del job  # (nothing of the op outlives it here)

    def close(self) -> None:
        """The session ended: the lane's thread ends once its op (if one runs) is done."""
        with self._ready:
            self._closed = True
            self._ready.notify()


def is_goodbye(parts: List[Any]) -> bool:
    """Whether the message ``parts`` (``[header, *frames]``, not decoded yet) is a client's goodbye."""
    return peek(parts[0]).get("t") == Kind.BYE


def _handing(done: Done, handed: Tuple[Any, Optional[BaseException], float]) -> Callable[[Any], None]:
    """``done(router, *handed)``, for the serving thread: the only holder of what ``handed`` holds."""
    return lambda router: done(router, *handed)


def wait(server: "Server", session: "Session", parts: List[Any], batched: bool) -> Any:
    """The reply to a message of a client whose op runs in the background: a heartbeat is answered at once,
    anything else waits its turn (up to the client's ``max_queued``). A goodbye behind nothing else ends the
    session at once (the running op's results are dropped); behind messages that wait (a script's last ops,
    sent at its exit) it waits too, so that they run first."""
    head = peek(parts[0])
    kind = head.get("t")
    if kind == Kind.PING:
        return encode({"t": Kind.PONG, "s": head.get("s")})
    backlog = len(session.lane.backlog)
    if kind == Kind.BYE and (not backlog or backlog >= session.quotas.max_queued):
        server._end_session(session.ident, "disconnected")
        return None
    if backlog >= session.quotas.max_queued:
        return queue_full(server, session, parts)
    session.lane.defer(server._conn, parts, batched)
    return None


def queue_full(server: "Server", session: "Session", parts: List[Any]) -> Any:
    """The refusal of a message past the client's ``max_queued`` (alone, or part of a batch), as its reply."""
    server.refuse("queue over a quota")
    try:
        server._refused_message(session, parts, lambda: quotas.check_queued(session.quotas, session.label,
                                                                            session.quotas.max_queued))
    except Exception as exc:
        if halts.stops(parts):  # (its failure stops what follows it, in its turn: no scan of a 10,000-long backlog)
            session.lane.mark_stop(server._conn, parts)
        return error_reply(exc)
    return None  # (never: check_queued refuses at max_queued)
