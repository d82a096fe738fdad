"""What a worker knows about one connected client."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from ..wire import samehost
from .streams import Streams


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
    #: streamed uploads and downloads in progress (big tensors in chunks, wire/chunks.py)
    streams: Streams = field(default_factory=Streams, repr=False)

    def expire(self, now: float) -> None:
        """Drop what this session left idle too long: same-host regions, stalled streams."""
        if self.pool is not None:
            self.pool.expire(now)
        self.streams.expire(now)

    def close_files(self) -> None:
        """Close the same-host memory files this session holds and drop its partial streams (it ended)."""
        self.streams.clear()
        if self.pool is not None:
            self.pool.close()
        if self.host_peer is not None:
            self.host_peer.close()
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
