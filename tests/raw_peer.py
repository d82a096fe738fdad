"""A client that speaks the wire protocol by hand, as an attacker would (no syft_magics client library)."""
from __future__ import annotations

import os
import time
from typing import Any, List, Optional

import zmq

from syft_magics.wire import auth
from syft_magics.wire.protocol import PROTOCOL_VERSION, decode, encode


class RawPeer:
    """A DEALER socket with a chosen routing id; ``send_raw`` sends any bytes, ``request`` a header."""

    def __init__(self, address: str, ident: bytes = b"", timeout: float = 20.0, rcvhwm: int = 1000) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.ident = ident or os.urandom(16)
        self.timeout = timeout
        self.sock.setsockopt(zmq.ROUTING_ID, self.ident)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.RCVBUF, 1 << 16)  # a small kernel buffer: a peer that never reads fills it soon
        self.sock.connect(address)

    def send_raw(self, parts: List[Any]) -> None:
        self.sock.send_multipart(parts)

    def reply(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The next reply, or None if none came within ``timeout`` seconds (the worker's unsolicited
        once-a-second beats to a logged-in peer are skipped)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
            header = decode(self.sock.recv_multipart())
            if not (header.get("t") == "pong" and header.get("s") is None):
                return header
        return None

    def request(self, header: dict, timeout: Optional[float] = None) -> Optional[dict]:
        self.send_raw(encode(header))
        return self.reply(timeout)

    def login(self, key: str, name: str = "raw") -> dict:
        """Hello and auth with ``key``; the welcome."""
        challenge = self.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": name})
        assert challenge is not None and challenge["t"] == "challenge", challenge
        welcome = self.request({"t": "auth", "s": 0, "mac": auth.proof(key, challenge["nonce"], self.ident)})
        assert welcome is not None and welcome["t"] == "welcome", welcome
        return welcome

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()
