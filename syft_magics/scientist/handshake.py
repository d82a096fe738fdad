"""The client's half of the handshake over a socket: hello, the worker's challenge, the proof of the key, and
whether both sides are on one host (then large tensors travel through memory files: :mod:`..wire.samehost`).

The worker's half is :mod:`syft_magics.owner.handshake`; a link in the worker's own process
(:mod:`.direct`) makes the same proof without a socket.
"""
from __future__ import annotations

import os
import socket as _socket
from typing import Optional, Tuple

from ..config import defaults
from ..errors import ProtocolError, WorkerUnreachable
from ..wire import auth, samehost
from ..wire.protocol import PROTOCOL_VERSION, Kind
from .transport import welcome_devices


class Handshake:
    """Mixed into :class:`~.link.Link`: authenticates its session with the worker's key, and sets up the same-host
    path when both sides can open each other's memory files."""

    address: str
    session: bytes
    worker_name: str
    instance: str
    policy: str
    lease: float
    devices: Tuple[str, ...]
    host_peer: Optional[samehost.Peer]
    pool: Optional[samehost.Pool]
    _copy: bool

    def _request_raw(self, header: dict, timeout: float, expect: Kind) -> dict:  # pragma: no cover - the link's
        raise NotImplementedError

    def _handshake(self, key: str, timeout: float, client_name: str) -> None:
        hello = {"t": Kind.HELLO, "s": 0, "v": PROTOCOL_VERSION, "name": client_name, "pid": os.getpid(),
                 "hostname": _socket.gethostname()}
        host_nonce = os.urandom(16)
        if defaults.same_host and samehost.available() and not self._copy:
            hello["host"] = host_nonce
        try:
            challenge = self._request_raw(hello, timeout, expect=Kind.CHALLENGE)
        except WorkerUnreachable:
            raise WorkerUnreachable(
                f"no worker answered at {self.address} within {timeout:g} s "
                "(is the worker running, and is the address right?)") from None
        nonce = challenge.get("nonce")
        if not isinstance(nonce, bytes):
            raise ProtocolError("the worker's challenge carries no nonce")
        self.worker_name = str(challenge.get("name"))
        welcome = self._request_raw({"t": Kind.AUTH, "s": 0, "mac": auth.proof(key, nonce, self.session)},
                                    timeout, expect=Kind.WELCOME)
        self.instance = str(welcome.get("instance"))
        self.policy = str(welcome.get("policy"))
        self.devices = welcome_devices(welcome)
        self.lease = float(welcome.get("lease") or defaults.lease_timeout)
        offer = welcome.get("host")
        if isinstance(offer, dict) and "host" in hello:
            self._same_host(offer, host_nonce, key, timeout)

    def _same_host(self, offer: dict, nonce: bytes, key: str, timeout: float) -> None:
        """Both sides prove they can open the other's memory files (see :func:`.samehost.probe_proof`); then large
        tensors take that path."""
        theirs = offer.get("nonce")
        if not isinstance(theirs, bytes) or len(theirs) != 16:
            return
        nonces, me = (nonce, theirs), os.getpid()

        def proof(writer: int, reader: int, role: bytes) -> bytes:
            return samehost.probe_proof(key, role, nonces, writer, reader)

        pid = samehost.check_probe(offer.get("probe"), lambda writer: proof(writer, me, samehost.WORKER))
        if pid is None:  # (another host, user or namespace, or this very process): the worker may close its probe
            self._request_raw({"t": Kind.HOST, "s": 0, "probe": None}, timeout, expect=Kind.OK)
            return
        # then the worker lends us results
        lend = samehost.can_read_memory(offer.get("probe"), pid, proof(pid, me, samehost.WORKER))
        probe = samehost.make_probe(proof(me, pid, samehost.CLIENT))
        try:
            reply = self._request_raw({"t": Kind.HOST, "s": 0, "probe": probe.announce, "lend": lend}, timeout,
                                      expect=Kind.OK)
        finally:
            probe.close()
        if reply.get("host") is True:
            self.host_peer, self.pool = samehost.Peer(pid), samehost.Pool()
            self.pool.lend = reply.get("lend") is True  # the worker can read our memory: sends are lent
