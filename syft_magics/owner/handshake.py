"""The worker's half of the handshake: hello, challenge, proof of the key, a session.

A mix-in of :class:`~syft_magics.owner.serving.Server` (the same serving thread, the same
tables): an unauthenticated peer gets a challenge and nothing else, its hello is checked and
bounded, and at most :data:`~syft_magics.wire.limits.MAX_PENDING_HANDSHAKES` wait at once.

On an encrypted worker a TCP peer has already passed CurveZMQ and the ZAP handler
(:mod:`.zap`): its connection is bound to an invited key, which libzmq reports on each frame
(``User-Id``). The session takes that invitation's name and limits, and the proof must use
that invitation's own token. Revoking an invitation ends its sessions here
(:meth:`Handshakes.end_invite`).
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

import zmq

from ..errors import ProtocolError
from ..events import EventStream
from ..wire import auth, limits, samehost
from ..wire.protocol import PROTOCOL_VERSION, ErrorCode, Kind, decode_handshake, encode
from ..wire.sockets import send_parts
from . import tickets
from .connections import INPROC, Connections
from .direct import DIRECT
from .invites import Invite
from .replies import Reject
from .sessions import Session

if TYPE_CHECKING:
    from .worker import Worker

#: Seconds between telling a revoked client goodbye and shutting its connection down.
CUT_DELAY = 0.2


class Handshakes:
    """Answers the messages of peers without a session (the serving thread only)."""

    worker: "Worker"
    name: str
    events: EventStream
    sessions: Dict[bytes, Session]
    #: routing id -> (nonce, checked hello, when, connection token)
    handshakes: Dict[bytes, Tuple[bytes, dict, float, int]]
    connections: Optional[Connections]
    _conn: int
    tickets: "tickets.Tickets"
    #: connections of revoked clients to shut down once their goodbye has left: (when, endpoint)
    _cuts: List[Tuple[float, Tuple[int, Any]]]

    def refuse(self, reason: str) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def _handshake(self, ident: bytes, parts: List[zmq.Frame], taken: bool = False) -> List[Any]:
        unknown = Reject(ErrorCode.UNKNOWN_SESSION, f"{self.name} has no session for this link",
                          instance=self.worker.instance)
        if ident in self.tickets.couriers:  # another worker's courier, past its ticket's handshake: one delivery
            return tickets.deliver(self, ident, parts)  # type: ignore[arg-type]
        try:
            header = decode_handshake(parts)
        except ProtocolError:
            self.refuse("malformed handshake")
            raise unknown from None
        kind = header["t"]
        if taken:  # another connection holds this routing id's session
            self.refuse("routing id of another connection")
            raise unknown
        if kind == Kind.HELLO:
            version = header.get("v")
            if version != PROTOCOL_VERSION:
                self.refuse("protocol version")
                raise Reject(ErrorCode.VERSION, f"{self.name} speaks protocol {PROTOCOL_VERSION}, the client "
                                                 f"{limits.clip(repr(version), 40)}; "
                                                 "install the same syft_magics version on both sides")
            if "ticket" in header:  # another worker's courier bringing a moved object (owner/tickets.py)
                return tickets.handshake(self, ident, header)  # type: ignore[arg-type]
            try:
                hello = hello_fields(header)
            except Reject:
                self.refuse("bad hello")
                raise
            found = self._invite_of(parts[0])
            if found is False:
                self.refuse("key not invited")
                raise Reject(ErrorCode.UNAUTHENTICATED, f"{self.name} refused the link: this key has no valid "
                                                         "invitation (it was revoked)")
            nonce = auth.new_nonce()
            hello["peer"] = peer_address(parts[0])
            hello["invite"] = found
            self.handshakes.pop(ident, None)
            while len(self.handshakes) >= limits.MAX_PENDING_HANDSHAKES:  # the oldest gives way
                self.handshakes.pop(next(iter(self.handshakes)))
                self.refuse("too many handshakes")
            self.handshakes[ident] = (nonce, hello, time.monotonic(), self._conn)
            return encode({"t": Kind.CHALLENGE, "nonce": nonce, "instance": self.worker.instance, "name": self.name})
        if kind == Kind.AUTH and ident in self.tickets.pending:
            return tickets.handshake(self, ident, header)  # type: ignore[arg-type]
        if kind == Kind.AUTH:
            pending = self.handshakes.pop(ident, None)
            mac = header.get("mac")
            invite: Optional[Invite] = pending[1]["invite"] if pending is not None else None
            key = invite.token if invite is not None else self.worker.key
            if pending is None or pending[3] != self._conn or not isinstance(mac, bytes) \
                    or (invite is not None and not invite.active) or not auth.verify(key, pending[0], ident, mac):
                self.refuse("authentication failed")
                self.events.emit("auth_failed", peer=pending[1]["peer"] if pending else "?",
                                 key=invite.fingerprint if invite is not None else None)
                raise Reject(ErrorCode.UNAUTHENTICATED, f"{self.name} refused the link: wrong key")
            hello = pending[1]
            self._room_for_a_session(invite)
            # an invited client is named by its invitation (what the owner chose), not by what it says
            name = invite.name if invite is not None and not invite.local else hello["name"]
            session = Session(ident=ident, name=name, pid=hello["pid"],
                              hostname=hello["hostname"], peer=hello["peer"], conn=self._conn,
                              quotas=self.worker.quotas_for(name, invite))
            if invite is not None:
                session.client, session.key, session.limits = invite.name, invite.public, dict(invite.limits)
                session.endpoint = self.connections.endpoint(parts[0]) if self.connections is not None else None
            self.sessions[ident] = session
            self.events.emit("connect", client=session.label, session=session.short, key=session.fingerprint)
            welcome = {"t": Kind.WELCOME, "instance": self.worker.instance, "name": self.name,
                       "policy": self.worker.policy.name, "lease": self.worker.lease_timeout,
                       "devices": list(self.worker.devices.allowed)}
            host_nonce, pid = hello.get("host"), hello["pid"]
            if type(host_nonce) is bytes and len(host_nonce) == 16 and session.peer != "inproc" \
                    and type(pid) is int and 0 < pid < 1 << 31 and samehost.available():
                # offer the same-host path: prove we can be read, ask the client to prove the same
                nonces = (host_nonce, os.urandom(16))
                probe = samehost.make_probe(samehost.probe_proof(key, samehost.WORKER, nonces, os.getpid(), pid))
                session.host_probe = (probe, nonces, key, time.monotonic())
                welcome["host"] = {"probe": probe.announce, "nonce": nonces[1]}
            return encode(welcome)
        raise unknown

    def _invite_of(self, frame: Any) -> "Optional[Invite] | bool":
        """The invitation a TCP peer of an encrypted worker connected with (False: none valid any more);
        None when keys do not apply (a plain worker, or an in-process peer)."""
        if not self.worker.secure or self._conn in (INPROC, DIRECT):  # in-process peers: no keys
            return None
        try:
            public = frame.get("User-Id")  # set by the ZAP handler: the key CurveZMQ proved
        except (zmq.ZMQError, AttributeError, TypeError):
            return False
        return self.worker.invites.by_key(public) or False

    def end_invite(self, router: zmq.Socket, invite: Invite, reason: str = "revoked") -> int:
        """End every session and handshake of ``invite``'s key at once (serving thread): each client is
        told, its objects are freed, its connection is shut down shortly after. Returns how many ended."""
        ended = 0
        for ident, session in list(self.sessions.items()):
            if session.key != invite.public:
                continue
            send_parts(router, [ident, *encode({"t": Kind.BYE, "name": self.name, "reason": reason})], flags=0)
            self._end_session(ident, reason)
            if session.endpoint is not None:
                self._cuts.append((time.monotonic() + CUT_DELAY, session.endpoint))
            ended += 1
        for ident, pending in list(self.handshakes.items()):
            if pending[1].get("invite") is invite:
                self.handshakes.pop(ident, None)
        return ended

    def cut_due(self, now: float) -> None:
        """Shut down the connections of revoked clients whose goodbye has had time to leave."""
        while self._cuts and self._cuts[0][0] <= now and self.connections is not None:
            self.connections.cut(self._cuts.pop(0)[1])

    def _end_session(self, ident: bytes, reason: str) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def _room_for_a_session(self, invite: "Optional[Invite]") -> None:
        """Refuse a session beyond ``MAX_SESSIONS``, or beyond ``MAX_SESSIONS_PER_CLIENT`` of one invited client."""
        mine = sum(s.key == invite.public for s in self.sessions.values()) \
            if invite is not None and not invite.local else 0  # (the owner's own user: the connection file)
        if len(self.sessions) >= limits.MAX_SESSIONS or mine >= limits.MAX_SESSIONS_PER_CLIENT:
            self.refuse("too many sessions")
            raise Reject(ErrorCode.QUOTA, f"{self.name} serves at most {limits.MAX_SESSIONS} sessions, "
                                          f"{limits.MAX_SESSIONS_PER_CLIENT} per invited client: close one first "
                                          "(client.disconnect())")

    def bound_tokens(self) -> Set[int]:
        """The connections that carry something of this worker's: a session, a handshake, a ticket or a courier."""
        return {*(s.conn for s in self.sessions.values()), *(h[3] for h in self.handshakes.values()),
                *(p[2] for p in self.tickets.pending.values()), *(c[1] for c in self.tickets.couriers.values())}

    def on_host(self, session: Session, header: dict, used: List[Any]) -> List[Any]:
        """The client's half of the same-host check: its probe must hold its proof (:func:`.samehost.probe_proof`);
        no probe: it declines."""
        ok = lend = False
        if session.host_probe is not None:
            _, nonces, key, _ = session.host_probe
            session.drop_probe()

            def expect(writer: int) -> bytes:
                return samehost.probe_proof(key, samehost.CLIENT, nonces, writer, os.getpid())

            pid = samehost.check_probe(header.get("probe"), expect)
            if pid is not None:
                # the client frees a sent tensor's region when we acknowledge the send: nothing to confirm
                session.host_peer, session.pool, ok = samehost.Peer(pid, False, session.ident), samehost.Pool(), True
                session.pool.lend = header.get("lend") is True  # the client can read our memory: lend it
                lend = samehost.can_read_memory(header.get("probe"), pid, expect(pid))
        return encode({"t": Kind.OK, "s": header.get("s"), "host": ok, "lend": lend})


def hello_fields(header: dict) -> dict:
    """The fields of a hello a session keeps, each checked and bounded (a name of 100 MiB is refused)."""
    name, hostname, pid = header.get("name", "client"), header.get("hostname", "?"), header.get("pid")
    for what, value in (("client name", name), ("host name", hostname)):
        if not limits.is_name(value):
            raise Reject(ErrorCode.BAD_ARGS,
                         f"the {what} must be a string of at most {limits.MAX_NAME_CHARS} printable characters")
    if isinstance(name, str) and "@" in name:  # (a label is name@address: a name with one reads as another host)
        raise Reject(ErrorCode.BAD_ARGS, "the client name must not contain '@' (the worker shows a client as "
                                         "name@address, the address it connected from)")
    if pid is not None and (type(pid) is not int or not 0 <= pid < 1 << 32):
        raise Reject(ErrorCode.BAD_ARGS, "the pid must be a small non-negative integer")
    host = header.get("host")
    return {"name": name or "client", "hostname": hostname or "?", "pid": pid,
            "host": host if type(host) is bytes and len(host) == 16 else None}


def peer_address(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, AttributeError, TypeError):
        return "inproc"
