"""After a client's pipelined op fails, the worker runs none of that client's later ops until the client has read
the failure.

Ops are pipelined: the scientist's code goes on past an op before the worker has run it, and hears of its failure
at the next request it waits on (a ``.get()``, ``sync()``, a search; in a notebook, the end of the cell). Run
locally, the failing line would have raised and nothing after it would have run; running what was sent meanwhile
would carry her state past a failure she has not seen (an ``opt.step()`` after a failed ``backward``, the rest of
a training loop after a bad batch). So, as a CUDA error is sticky until read, a session stops at its first
failed pipelined op or send: each later one is answered "not run" (its results exist, failed, naming the first
failure), up to and including the next request the client waits on (:func:`awaited`), which ends the stop:
the client raises the first failure there, and what it sends after that it sent knowing. Housekeeping (frees,
heartbeats, the same-host check, stream control, the goodbye) is always served.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, List

from ..errors import ErrorCode
from ..wire import limits
from ..wire.names import short_name
from ..wire.protocol import Kind, peek
from .replies import Reject

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session

#: Pipelined messages whose failure stops their session (they change the client's objects).
STOPPING = frozenset({Kind.OP, Kind.SEND})
#: What a stopped session is answered "not run" (everything that would compute, store, read or move).
NOT_RUN = frozenset({Kind.OP, Kind.SEND, Kind.GET, Kind.SEARCH, Kind.SYNC, Kind.PUT, Kind.TICKET, Kind.MOVE})


def awaited(header: dict) -> bool:
    """Whether the client waits for the answer to ``header``'s message: a get, search, sync, move or streamed
    upload always; an op described back (``"m"``) or a send acknowledged (``"ack"``). Other ops and sends are
    pipelined (answered only if they fail)."""
    kind = header.get("t")
    return kind not in STOPPING or bool(header.get("m") if kind == Kind.OP else header.get("ack"))


def stop(session: "Session", parts: List[Any]) -> None:
    """The message ``parts`` of ``session`` failed: if it was a pipelined op or send, its later ones stop."""
    if session.halted is None:
        stopped(session, peek(parts[0]))


def stopped(session: "Session", header: dict) -> None:
    """As :func:`stop`, for a message already read (``header``: an op that failed on its client's lane)."""
    if session.halted is None and header.get("t") in STOPPING and not awaited(header):
        name = header.get("f")
        session.halted = limits.clip(short_name(name), 80) if isinstance(name, str) and name else "a send"


def check(server: "Server", session: "Session", parts: List[Any]) -> None:
    """Raise "not run" as the answer to ``parts`` if ``session`` is stopped and the message would run; a
    request the client waits on ends the stop. Call only while ``session.halted`` is set."""
    head = peek(parts[0])
    kind = head.get("t")
    if kind not in NOT_RUN:
        return
    first = session.halted
    if awaited(head):
        session.halted = None
    exc = Reject(ErrorCode.NOT_RUN, f"not run: an op this client sent before it ({first}) failed, and "
                                    f"{server.name} runs none of a client's later ops until the client has been "
                                    "told (its next .get(), sync() or search raises that failure)")
    if kind == Kind.SEND:
        oid = head.get("id")
        exc.seq = head.get("s")  # type: ignore[attr-defined]
        if isinstance(oid, bytes) and len(oid) == 16 and oid not in server.store:
            server._fail(session, "send", [oid], [], exc, time.perf_counter())  # (a later use names why)
        raise exc
    server._answers_message(session, parts, exc, [])
