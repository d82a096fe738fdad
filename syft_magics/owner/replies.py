"""What a worker answers besides values: refusals and their error replies.

A :class:`Reject` is a request the worker refuses on purpose; its :class:`ErrorCode` tells the
client which exception to raise. :func:`error_reply` turns any failure into an ``err`` message.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

import zmq

from ..errors import ErrorCode, ProtocolError
from ..wire import limits
from ..wire.protocol import Kind, encode
from .failures import Withheld

log = logging.getLogger(__name__)


class Reject(Exception):
    """A request the worker refuses; ``code`` tells the client which error to raise."""

    def __init__(self, code: ErrorCode, message: str, public: bool = True, etype: Optional[str] = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        #: the built-in exception the client's error also is (see errors.typed): a failure public facts tell
        self.etype = etype
        #: whether the text tells only public facts (else it is withheld like a torch error's)
        self.public = public
        self.extra = extra


class Replies(list):
    """The replies to the messages of one batch, in order."""


class Unread:
    """The large frames of values sent to one client that ZeroMQ still holds (not yet written to the
    network). ZeroMQ bounds the *count* of replies queued for a peer (``SNDHWM``), not their bytes: a
    client that asks for values and never reads them would pile copies up in the worker's memory, so
    each client's unread bytes are bounded too (``Quotas.max_unread_bytes``)."""

    def __init__(self, parent: "Optional[Unread]" = None) -> None:
        self._frames: Deque[Tuple[zmq.MessageTracker, int]] = deque()
        self._bytes = 0
        #: what this counts is counted there too (a download's chunks: in its client's unread bytes)
        self.parent = parent

    def nbytes(self) -> int:
        """Bytes of this client's values still held by ZeroMQ (sent frames are forgotten, in order)."""
        frames = self._frames
        while frames and frames[0][0].done:
            self._bytes -= frames.popleft()[1]
        return self._bytes

    def add(self, tracker: Optional[zmq.MessageTracker], nbytes: int) -> None:
        if tracker is not None:
            self._frames.append((tracker, nbytes))
            self._bytes += nbytes
            if self.parent is not None:
                self.parent.add(tracker, nbytes)


#: Value frames of at least this many bytes are counted as unread (smaller ones by ZeroMQ's count of replies alone:
#: 50,000 of them, under 50 MB). Values under 64 KiB were not counted: 50,000 gets of 60 KiB values a client never
#: read held 3.2 GiB per session (helper-56).
TRACK_BYTES = 1 << 10


class Tracked(list):
    """A ``value`` reply whose frames of :data:`TRACK_BYTES` or more are counted in its client's :class:`Unread` once
    sent."""

    def __init__(self, parts: List[Any], unread: Unread, nbytes: int) -> None:
        super().__init__(parts)
        self.unread, self.nbytes = unread, nbytes


def error_reply(exc: Exception) -> List[Any]:
    """The ``err`` message for a failed message: a code the client maps to an exception, and the text
    (for an error withheld from the client, its type and number only: see :mod:`.provenance`)."""
    code = exc.code if isinstance(exc, Reject) else ErrorCode.WITHHELD if isinstance(exc, Withheld) else \
        ErrorCode.PROTOCOL if isinstance(exc, ProtocolError) else ErrorCode.ERROR
    extra = exc.extra if isinstance(exc, Reject) else {"w": exc.n} if isinstance(exc, Withheld) else {}
    etype = getattr(exc, "etype", None) or type(exc).__name__  # (a Withheld's, or a Reject's that names one)
    try:
        return encode({"t": Kind.ERR, "s": getattr(exc, "seq", None), "code": code, **extra,
                       "etype": etype, "msg": limits.clip(exc)})
    except Exception:
        log.warning("an error reply could not be encoded", exc_info=True)
        return encode({"t": Kind.ERR, "s": None, "code": ErrorCode.ERROR, "etype": "Exception",
                       "msg": "unprintable error"})


def forget_frames(exc: BaseException) -> None:
    """Drop the frames a handled error's traceback keeps (its own and its context's): they hold the failed
    op's results and arguments, and an error held in a frame of its own traceback makes a reference cycle that
    only Python's garbage collector frees. A refused result's graph stayed charged until then, and its client
    could run nothing meanwhile (found by an attacker's probe)."""
    seen: set = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = None
        e = e.__context__ or e.__cause__
