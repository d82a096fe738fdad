"""What a worker knows about one connected client."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional


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

    @property
    def short(self) -> str:
        return self.ident.hex()[:8]

    @property
    def label(self) -> str:
        """How the client reads in logs: its name and the address it connected from."""
        return f"{self.name}@{self.peer}"
