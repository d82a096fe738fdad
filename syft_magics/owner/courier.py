"""A worker's courier: a one-shot client link that delivers a moved object to another worker.

It runs in its own thread with its own ZeroMQ context (never the serving thread: a slow or dead target
must not stall the source worker). Steps: hello naming the ticket (with a nonce of ours) -> the
target's challenge, which must prove the ticket's secret and come from the instance the scientist
named -> our proof of the secret -> one ``deliver`` message -> the target's ``ok``. Then the courier
answers the scientist's waiting ``move`` through the source's serving thread (:meth:`Server.post`),
with the target's refusal or "unreachable" if it failed. Every wait is bounded.
"""
from __future__ import annotations

import logging
import os
import socket as _socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import zmq

from ..config import defaults
from ..errors import ErrorCode
from ..wire import auth, limits
from ..wire.protocol import PROTOCOL_VERSION, Kind, decode, encode
from ..wire.sockets import send_parts
from .tickets import file_key, worker_proof

if TYPE_CHECKING:
    from .serving import Server

log = logging.getLogger(__name__)


#: The largest message a courier reads from its target (a challenge, a welcome, an ok or an error).
MAX_ANSWER_BYTES = 64 << 10


@dataclass(frozen=True)
class Destination:
    """The target worker of a move, as the scientist named it, and the ticket it issued."""

    address: str
    name: str
    instance: str
    tid: bytes
    secret: bytes
    wait: float  # seconds to wait for the target's first answer
    #: an encrypted target's public key and the courier's one-time key pair from the ticket (else None)
    curve: Optional[auth.CurveKeys] = None
    #: the key of this machine's connection file of the worker at ``address``, which the target must prove it
    #: holds (else None: no such file)
    file_key: Optional[str] = None


class CourierError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Courier:
    """Delivers one payload to one destination, then answers the scientist's request ``seq``."""

    def __init__(self, server: "Server", session: bytes, seq: Any, dest: Destination, payload: Dict[str, Any],
                 nbytes: int = 0) -> None:
        self.server, self.session, self.seq, self.dest, self.payload = server, session, seq, dest, payload
        #: the bytes of the copy it carries (held by its client until delivered: see moves._room)
        self.nbytes = nbytes
        self.on_done: Callable[["Courier"], None] = lambda courier: None

    def run(self) -> None:
        dest = self.dest
        try:
            self._deliver()
            reply: Dict[str, Any] = {"t": Kind.OK, "s": self.seq, "moved": dest.name}
            self.server.events.emit("command", client=f"courier to {dest.name}", op=f"move to {dest.name}",
                                    inputs=(), out=[], duration=0.0, status="ok")
        except CourierError as exc:
            reply = {"t": Kind.ERR, "s": self.seq, "code": exc.code, "etype": "MoveFailed",
                     "msg": f"the move to {dest.name} failed: {exc}"}
            self.server.events.emit("command", client=f"courier to {dest.name}", op=f"move to {dest.name}",
                                    inputs=(), out=[], duration=0.0, status=f"error: {exc}")
        except Exception as exc:  # never lost: the scientist is waiting
            log.warning("a courier of %s failed", self.server.name, exc_info=True)
            reply = {"t": Kind.ERR, "s": self.seq, "code": ErrorCode.ERROR, "etype": type(exc).__name__,
                     "msg": f"the move to {dest.name} failed: {exc}"}
        finally:
            self.payload = {}
            self.on_done(self)
        self.server.post(self.session, reply)

    def _deliver(self) -> None:
        dest = self.dest
        context = _context_for(dest.address)
        own = context is None
        ctx = context or zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        ident = os.urandom(16)
        try:
            sock.setsockopt(zmq.ROUTING_ID, ident)
            sock.setsockopt(zmq.LINGER, 0)
            # (the target only answers small control messages: a listener of the scientist's answered with gigabytes,
            # all read, 6 GB in the owner's process under a 64 MB quota: helper-50)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES)
            sock.setsockopt(zmq.RCVHWM, 16)
            if dest.curve is not None and dest.address.startswith("tcp://"):
                auth.set_client_keys(sock, dest.curve)
            sock.connect(dest.address)
            ours = os.urandom(16)
            hello = {"t": Kind.HELLO, "s": 0, "v": PROTOCOL_VERSION, "ticket": dest.tid, "cn": ours,
                     "name": f"courier of {self.server.name}", "pid": os.getpid(), "hostname": _socket.gethostname()}
            challenge = self._ask(sock, hello, dest.wait, Kind.CHALLENGE, unreachable=True)
            if challenge.get("instance") != dest.instance or \
                    not auth.same(challenge.get("tp"), worker_proof(dest.secret.hex(), ours, ident)):
                raise CourierError(ErrorCode.UNAUTHENTICATED, f"the worker at {dest.address} is not the {dest.name} "
                                                              "that issued the ticket")
            if dest.file_key is not None and not auth.verify_of(dest.file_key, challenge.get("kp"), b"owner", ours,
                                                                ident):
                # (helper-46: a listener of the scientist's at a look-alike address of Carol's, 127.0.0.2 or the LAN
                # address at Carol's port, named Carol, with Carol's instance and a ticket of the scientist's own)
                raise CourierError(ErrorCode.UNAUTHENTICATED, f"the worker at {dest.address} is not the {dest.name} "
                                                              "of this machine's connection file")
            nonce = challenge.get("nonce")
            if type(nonce) is not bytes:
                raise CourierError(ErrorCode.PROTOCOL, f"{dest.name}'s challenge carries no nonce")
            answer = {"t": Kind.AUTH, "s": 0, "mac": auth.proof(dest.secret.hex(), nonce, ident)}
            key = file_key(self.server)
            if key is not None:  # (we are the source the ticket names, at the address we reached: .guests)
                answer["sp"] = auth.proof_of(key, b"source", nonce, dest.address.encode(), ident)
            self._ask(sock, answer, dest.wait, Kind.WELCOME)
            self._ask(sock, {"t": Kind.DELIVER, "s": 1, **self.payload}, defaults.reply_timeout, Kind.OK)
        finally:
            sock.close(0)
            if own:
                ctx.term()

    def _ask(self, sock: zmq.Socket, header: dict, timeout: float, expect: str, unreachable: bool = False) -> dict:
        dest = self.dest
        send_parts(sock, encode(header), flags=0)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(max(1, int(remaining * 1000))):
                what = "could not reach" if unreachable else "got no answer from"
                raise CourierError(ErrorCode.ERROR, f"{self.server.name} {what} {dest.name} at {dest.address} "
                                                    f"within {timeout:g} s (is it running?)")
            reply = decode(sock.recv_multipart())
            if reply.get("t") == expect:
                return reply
            if reply.get("t") == Kind.ERR:
                code = reply.get("code") or ErrorCode.ERROR
                raise CourierError(code, f"{dest.name} refused it: {limits.clip(reply.get('msg'), 300)}")


def _context_for(address: str) -> Optional[zmq.Context]:
    """The context of a worker of this process serving ``address`` by inproc:// (else None: a new context)."""
    if not address.startswith("inproc://"):
        return None
    from .worker import live_workers

    for worker in live_workers():
        if worker.inproc_address == address and worker.context is not None:
            return worker.context
    raise CourierError(ErrorCode.ERROR, f"no worker of this process serves {address}")
