"""After a client's pipelined op fails, the worker runs none of that client's later ops until the client has been
told of the failure.

Ops are pipelined: the scientist's code goes on past an op before the worker has run it, and hears of its failure
at the next request it waits on (a ``.get()``, ``sync()``, a search; in a notebook, the end of the cell). Run
locally, the failing line would have raised and nothing after it would have run; running what was sent meanwhile
would carry her state past a failure she has not seen (an ``opt.step()`` after a failed ``backward``, the rest of
a training loop after a bad batch). So, as a CUDA error is sticky until read, a session stops at its first
failed pipelined op or send: each later one is not run (its results exist, failed, naming the first failure;
no reply), and a request the client waits on is answered "not run" with the first failure's number and how many
were not run. The stop ends at the client's ``told`` message, which its library sends when it raises that
failure to the user (a wait that timed out or was interrupted raised nothing: the stop stays, helper-78).
Housekeeping (frees, heartbeats, the same-host check, stream control, the goodbye) is always served.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, List, Optional

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
#: What a stopped session does not run (everything that would compute, store, read or move).
NOT_RUN = frozenset({Kind.OP, Kind.SEND, Kind.GET, Kind.SEARCH, Kind.SYNC, Kind.PUT, Kind.TICKET, Kind.MOVE})


def awaited(header: dict) -> bool:
    """Whether the client waits for the answer to ``header``'s message: a get, search, sync, move or streamed
    upload always; an op described back (``"m"``) or a send acknowledged (``"ack"``). Other ops and sends are
    pipelined (answered only if they fail)."""
    kind = header.get("t")
    return kind not in STOPPING or bool(header.get("m") if kind == Kind.OP else header.get("ack"))


def stop(session: "Session", parts: List[Any]) -> None:
    """The message ``parts`` of ``session`` failed: if it was a pipelined op or send, or a batch holding one
    (refused whole, e.g. over the message size quota), its later ones stop."""
    if session.halted is None:
        stopped(session, _stopping(parts))


def stops(parts: List[Any]) -> bool:
    """Whether the failure of the message ``parts`` stops its session (see :func:`stop`)."""
    return bool(_stopping(parts))


def _stopping(parts: List[Any]) -> dict:
    """The header of the pipelined op or send that ``parts`` is, or that its batch holds first; else ``{}``."""
    head = peek(parts[0])
    if head.get("t") == Kind.BATCH:
        return next((h for h in map(peek, _heads(head)) if h.get("t") in STOPPING and not awaited(h)), {})
    return head if head.get("t") in STOPPING and not awaited(head) else {}


def stopped(session: "Session", header: dict) -> None:
    """As :func:`stop`, for a message already read (``header``: an op that failed on its client's lane)."""
    if session.halted is None and header.get("t") in STOPPING and not awaited(header):
        name, seq = header.get("f"), header.get("s")
        session.halted = limits.clip(short_name(name), 80) if isinstance(name, str) and name else "a send"
        session.halted_at = seq if type(seq) is int else 0
        session.not_run = 0


def told(session: "Session", header: dict) -> None:
    """The client raised the failure numbered ``header["first"]`` to its user: a stop from it (or earlier) ends."""
    first = header.get("first")
    if session.halted is not None and type(first) is int and first >= session.halted_at:
        session.halted = None


def check(server: "Server", session: "Session", parts: List[Any]) -> bool:
    """Whether the message ``parts`` of the stopped ``session`` is not run (its results failed, naming the first
    failure; nothing answered): raises "not run" as the answer to a request the client waits on."""
    head = peek(parts[0])
    kind = head.get("t")
    if kind not in NOT_RUN:
        return False
    waits = awaited(head)
    if not waits:
        session.not_run += 1
    exc = Reject(ErrorCode.NOT_RUN, f"not run: an op this client sent before it ({session.halted}) had failed, and "
                                    f"{server.name} ran none of its later ops until it had been told (its next "
                                    ".get(), sync() or search raises that failure); send or compute this again",
                 first=session.halted_at, n=session.not_run)
    exc.seq = head.get("s")  # type: ignore[attr-defined]
    out = head.get("o") if kind == Kind.OP else [head.get("id")] if kind == Kind.SEND else None
    if isinstance(out, list) and out:  # (a later use of its pointers names why)
        try:
            server._fail(session, str(head.get("f") or "send"), out, [], exc, time.perf_counter())
        except Reject:
            pass
    if waits:
        raise exc
    return True


def _heads(batch: dict) -> List[bytes]:
    heads: Optional[Any] = batch.get("m")
    return [h for h in heads[:_PEEKED] if type(h) is bytes] if isinstance(heads, list) else []


#: The messages of a refused batch looked at for the op that stops its session (a batch's first is one, as a rule).
_PEEKED = 4096
