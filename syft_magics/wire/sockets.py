"""The socket calls on the hot path, without pyzmq's convenience layer.

``send_multipart`` builds a ``Frame`` for every part and combines enum flags in
Python, which costs several times the send itself for the small messages ops
are made of. These helpers send part by part with plain integer flags, copying
small parts (ZeroMQ would copy them anyway) and passing large ones zero-copy.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import zmq

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)

#: Parts at least this large are handed to ZeroMQ zero-copy; smaller ones are copied.
ZERO_COPY_BYTES = zmq.COPY_THRESHOLD


def send_parts(sock: zmq.Socket, parts: Sequence[Any], *, flags: int = NOBLOCK, copy: bool = False,
               track: bool = False, track_from: int = ZERO_COPY_BYTES) -> Optional[zmq.MessageTracker]:
    """Send one multipart message; with ``track``, a tracker of its zero-copy parts, and of its parts of
    ``track_from`` bytes or more (from the second part: copied first, so the tracker tells when ZeroMQ has let go).

    ``copy=True`` copies every part (for inproc peers, which would otherwise share the
    sender's memory). Raises ``zmq.Again`` only before the first part is queued: ZeroMQ
    then accepts the rest of a message whose first part it took.
    """
    last = len(parts) - 1
    trackers: List[zmq.MessageTracker] = []
    for i, part in enumerate(parts):
        f = flags if i == last else flags | SNDMORE
        if track and i and not copy and track_from <= len(part) < ZERO_COPY_BYTES:
            # (an explicit frame: pyzmq copies parts under its copy_threshold, 64 KiB; their tracker is done at once)
            trackers.append(sock.send(zmq.Frame(bytes(part), track=True, copy=False), f, copy=False, track=True))
        elif copy or len(part) < ZERO_COPY_BYTES:
            sock.send(part, f)
        elif track:
            trackers.append(sock.send(part, f, copy=False, track=True))
        else:
            sock.send(part, f, copy=False)
    if not trackers:
        return None
    return trackers[0] if len(trackers) == 1 else zmq.MessageTracker(*trackers)


def readable(sock: zmq.Socket) -> bool:
    """Whether a message waits on ``sock`` (no system call, no exception)."""
    return bool(sock.getsockopt(EVENTS) & POLLIN)  # type: ignore[operator]  # EVENTS is an int option


def recv_parts(sock: zmq.Socket) -> List[Any]:
    """One waiting multipart message, parts as ``zmq.Frame`` (zero-copy). Raises ``zmq.Again`` if none.

    Reads part by part, following each frame's ``more``: pyzmq's ``recv_multipart`` asks the socket
    for ``RCVMORE`` after each part, through its enum types, which costs more than the receive."""
    frame = sock.recv(NOBLOCK, copy=False)
    parts = [frame]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        parts.append(frame)
    return parts
