"""Upload chunks served after the messages that wait behind them, so that a small op sent during a big
upload is not stuck behind the megabytes already on their way.

ZeroMQ hands the worker a client's messages in the order they were sent: an op issued during a streamed
``send`` (from another thread of the client, or by another client) arrives behind the chunks already
sent (up to the window), and copying each chunk into the upload's fresh memory takes the serving thread
hundreds of microseconds. So the serving loop reads ahead: a chunk of an authenticated session is set
aside here and served once nothing else waits, so an op waits for at most the chunk being copied.
Uploads are never starved (a chunk is served after at most :data:`MAX_OVERTAKES` other messages) and what
is held stays bounded (:data:`MAX_HELD_BYTES`: past it the oldest are served at once). Chunks keep their
order among themselves, and nothing else can depend on them: an upload's object exists only once its
last chunk is in. A chunk whose session ended meanwhile is dropped, as it would have been refused.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Tuple

import zmq

from ..wire import limits
from ..wire.protocol import Kind, peek

if TYPE_CHECKING:
    from .serving import Server

#: At most this many other messages are served while a chunk waits.
MAX_OVERTAKES = 16
#: The most bytes of chunks set aside at once (beyond it, chunks are served in arrival order).
MAX_HELD_BYTES = 64 << 20


class ChunkQueue:
    """The upload chunks the serving loop set aside, oldest first, each with its connection's token."""

    def __init__(self) -> None:
        self._held: Deque[Tuple[int, List[Any], int]] = deque()
        self._bytes = 0
        self._overtaken = 0

    def __bool__(self) -> bool:
        return bool(self._held)

    def take(self, parts: List[Any], token: int) -> bool:
        """Set the message ``parts`` (``[routing id, header, *frames]``, on the connection ``token``, of an
        authenticated session) aside if it is an upload chunk; whether it was."""
        if peek(parts[1]).get("t") != Kind.CHUNK:
            return False
        size = sum(len(p) for p in parts)
        self._held.append((token, parts, size))
        self._bytes += size
        return True

    @property
    def full(self) -> bool:
        """Whether the chunks held take more than :data:`MAX_HELD_BYTES` (the oldest are due now)."""
        return self._bytes > MAX_HELD_BYTES

    def passed(self) -> bool:
        """Another message was served while chunks wait: whether the oldest chunk is due now."""
        if not self._held:
            return False
        self._overtaken += 1
        return self._overtaken >= MAX_OVERTAKES

    def pop(self) -> Optional[Tuple[int, List[Any]]]:
        """The oldest chunk and its connection's token (None if none is held)."""
        if not self._held:
            return None
        token, parts, size = self._held.popleft()
        self._bytes -= size
        self._overtaken = 0
        return token, parts

    def set_aside(self, server: "Server", router: zmq.Socket, parts: List[Any]) -> bool:
        """Hold the received message ``parts`` if it is an upload chunk of a session on its own connection;
        whether it was (else the caller serves it now). While none is held, only a message carrying a
        chunk-sized frame is looked at: an op pays one length check."""
        if not self._held and not (len(parts) == 3 and len(parts[2]) >= limits.MIN_CHUNK_BYTES):
            return False
        token = server.connections.token(parts[-1]) if server.connections is not None else 0
        if not _alive(server, parts, token) or not self.take(parts, token):
            return False
        while self.full:
            self.serve_one(server, router)
        return True

    def serve_one(self, server: "Server", router: zmq.Socket) -> None:
        """Serve the oldest chunk held, unless its session ended meanwhile (then it is dropped)."""
        held = self.pop()
        if held is None:
            return
        token, parts = held
        if _alive(server, parts, token):
            server._guarded(router, parts, token)


def _alive(server: "Server", parts: List[Any], token: int) -> bool:
    """Whether the message ``parts`` comes from a session served on the connection ``token`` (it came in on)."""
    session = server.sessions.get(parts[0].bytes)
    return session is not None and session.conn == token
