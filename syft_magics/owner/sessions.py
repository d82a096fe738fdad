"""What a worker knows about one connected client."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import zmq

from ..wire import auth, samehost
from ..wire.protocol import Kind, encode
from ..wire.sockets import send_parts
from .lanes import Lane
from .quotas import Quotas
from .replies import Unread
from .streams import Streams

_serials = itertools.count(1)


@dataclass
class Session:
    """One authenticated client link, identified by its 16-byte session id."""

    ident: bytes
    name: str
    pid: Optional[int]
    hostname: str
    peer: str
    #: the token of the connection that authenticated it (see owner/connections.py)
    conn: int = 0
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    #: the client's process, once it proved it runs on this host as this user (same-host tensor path)
    host_peer: Optional[samehost.Peer] = field(default=None, repr=False)
    #: the memory file values travel through to that client
    pool: Optional[samehost.Pool] = field(default=None, repr=False)
    #: during the same-host check: our probe file and the nonce the client must send back in its own
    host_probe: Optional[tuple] = field(default=None, repr=False)
    #: the limits this client is held to (the worker's, or the owner's for this client)
    quotas: Quotas = field(default_factory=Quotas, repr=False)
    #: its ops that run off the serving thread, and the messages waiting behind them
    lane: Lane = field(init=False, repr=False)
    #: the large frames of values sent to it that ZeroMQ still holds (bounded by ``quotas.max_unread_bytes``)
    unread: Unread = field(default_factory=Unread, repr=False)
    #: streamed uploads and downloads in progress (big tensors in chunks, wire/chunks.py)
    streams: Streams = field(default_factory=Streams, repr=False)
    #: the invitation it authenticated with (encrypted workers): its name, the client's public key,
    #: the limits the owner set for it (read by quotas; empty: the worker's defaults)
    client: Optional[str] = None
    key: Optional[str] = field(default=None, repr=False)
    limits: Dict[str, Any] = field(default_factory=dict)
    #: its TCP connection: (descriptor, peer address) as seen when it authenticated, to cut it on revocation
    endpoint: Optional[Tuple[int, Any]] = field(default=None, repr=False)
    #: its connection closed while what it queued before its goodbye still waits: served, without renewing the lease
    gone: bool = False
    #: the op whose failure stops its later ops until the client says it was told (see owner/halts.py), its
    #: sequence number, and how many of its pipelined messages were not run since
    halted: Optional[str] = None
    halted_at: int = 0
    not_run: int = 0
    #: which session it is (its ``ident`` is the client's choice: a later session may present the same one)
    serial: int = field(default_factory=_serials.__next__, repr=False)

    def __post_init__(self) -> None:
        self.lane = Lane(self.ident.hex()[:8])

    @property
    def fingerprint(self) -> Optional[str]:
        """The fingerprint of the client's key (None without encryption)."""
        return auth.fingerprint(self.key) if self.key else None

    def expire(self, now: float) -> None:
        """Drop what this session left idle too long: same-host regions, stalled streams, a probe never answered."""
        if self.pool is not None:
            self.pool.expire(now)
        self.streams.expire(now)
        if self.host_probe is not None and now - self.host_probe[3] > samehost.PROBE_SECONDS:
            self.drop_probe()

    def close_files(self) -> None:
        """Close the same-host memory files this session holds and drop its partial streams (it ended)."""
        self.streams.clear()
        if self.pool is not None:
            self.pool.close()
        if self.host_peer is not None:
            self.host_peer.close()
        self.drop_probe()

    def drop_probe(self) -> None:
        """Close the same-host probe offered at the handshake (answered, declined, unanswered, or the session ended)."""
        if self.host_probe is not None:
            self.host_probe[0].close()
            self.host_probe = None

    @property
    def short(self) -> str:
        return self.ident.hex()[:8]

    @property
    def label(self) -> str:
        """How the client reads in logs: its name and the address it connected from."""
        return f"{self.name}@{self.peer}"


def beat(router: zmq.Socket, sessions: Dict[bytes, Session]) -> None:
    """Tell every client the worker's loop is turning (called about once a second).

    A client's own heartbeat waits behind the ops it queued; under load that queue can take longer
    than the client's ``heartbeat_timeout`` to drain, and the link would be judged dead while the
    worker is busy serving it. This beat goes out at once whatever is queued, so a client marks the
    link dead only when the worker really stops (killed, paused, its loop stuck).
    """
    beat = encode({"t": Kind.PONG, "s": None})
    for ident in list(sessions):
        try:
            send_parts(router, [ident, *beat])
        except zmq.Again:  # a client that does not read: its queue is full; it gets no beat
            pass
