"""Authenticating a link: a key proven by HMAC, and CurveZMQ keys for links off this machine.

The worker sends a fresh nonce; the client answers with
``HMAC-SHA256(key, "syft-auth" | nonce | session id)``. Only then does the
worker run anything for that session. The key never crosses the wire. On
loopback the key is the worker's, from its 0600 connection file; an invited
client proves its own key (see :mod:`syft_magics.owner.invites`).

Off this machine the link is also encrypted and bound to a CurveZMQ key pair per
client: libzmq's CurveZMQ (Curve25519, XSalsa20-Poly1305 from libsodium) does the
cryptography, and the worker's ZAP handler (:mod:`syft_magics.owner.zap`) accepts
only the public keys of invited, unrevoked clients. Keys are shown to people as
fingerprints only (:func:`fingerprint`).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

import zmq

from ..errors import AuthenticationError, EncryptionUnavailable


def new_key() -> str:
    """A new random key, hex-encoded (256 bits)."""
    return secrets.token_hex(32)


def new_nonce() -> bytes:
    return secrets.token_bytes(16)


def proof(key: str, nonce: bytes, session: bytes) -> bytes:
    """What a client sends to prove it knows ``key``."""
    return hmac.new(key.encode(), b"syft-auth\x00" + nonce + session, hashlib.sha256).digest()


def verify(key: str, nonce: bytes, session: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(proof(key, nonce, session), mac)


def proof_of(key: str, what: bytes, *fields: bytes) -> bytes:
    """An HMAC with ``key`` over ``what`` (which proof it is) and ``fields``, each prefixed with its length, so that
    no other list of fields signs alike (a worker-to-worker proof over a nonce and a routing id the other side
    chose, both of any length, split differently, was another proof: helper-47), nor a client's :func:`proof`."""
    framed = b"".join(len(f).to_bytes(4, "big") + f for f in (what, *fields))
    return hmac.new(key.encode(), b"syft-proof\x00" + framed, hashlib.sha256).digest()


def verify_of(key: str, mac: Any, what: bytes, *fields: bytes) -> bool:
    """Whether ``mac`` is :func:`proof_of` ``(key, what, *fields)``."""
    return same(mac, proof_of(key, what, *fields))


def same(mac: Any, expected: bytes) -> bool:
    """Whether ``mac`` (as received: any type) is ``expected``, compared in constant time."""
    return type(mac) is bytes and hmac.compare_digest(mac, expected)


# -- CurveZMQ: encryption and per-client identity off this machine ------------------------------
@dataclass(frozen=True)
class CurveKeys:
    """One client's CurveZMQ identity and the worker's public key it expects (Z85 text, 40 characters).

    ``repr`` shows fingerprints only: the secret never reaches a log, a traceback or a cell.
    """

    server: str
    public: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"CurveKeys(server={fingerprint(self.server)}, client={fingerprint(self.public)})"


def curve_available() -> bool:
    """Whether this libzmq can encrypt links (CurveZMQ)."""
    return bool(zmq.has("curve"))


def require_curve(why: str) -> None:
    """Raise :class:`~syft_magics.errors.EncryptionUnavailable` with ``why`` unless CurveZMQ is available."""
    if not curve_available():
        raise EncryptionUnavailable(
            f"{why}, but this libzmq ({zmq.zmq_version()}) was built without CurveZMQ (libsodium). "
            "Install a pyzmq wheel from PyPI (it bundles a libzmq with CurveZMQ), or keep the worker on "
            "127.0.0.1 and reach it through an SSH tunnel.")


def new_keypair() -> Tuple[str, str]:
    """A fresh CurveZMQ key pair ``(public, secret)``, Z85 text."""
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def fingerprint(public: Union[str, bytes]) -> str:
    """How a public key is shown to people: 16 hex digits of its SHA-256, in groups (never the key)."""
    raw = public.encode("ascii") if isinstance(public, str) else public
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


def set_client_keys(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Make ``sock`` (before it connects) a CurveZMQ client with ``keys``."""
    require_curve("this connection file asks for an encrypted link")
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode("ascii"))


def set_server_keys(sock: zmq.Socket, public: str, secret: str, domain: str) -> None:
    """Make ``sock`` (before it binds) a CurveZMQ server whose peers are checked by ZAP in ``domain``."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode("ascii"))
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode("ascii"))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.x, ``localhost``, ``::1``)."""
    return host in ("localhost", "::1", "ip6-localhost") or host.startswith("127.")


#: Transport events that end a connection attempt at once (see :func:`handshake_failure`).
HANDSHAKE_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


def handshake_failure(event: Any, address: str, encrypted: bool) -> Optional[AuthenticationError]:
    """What a client tells its user when the transport handshake failed (a socket monitor's ``event``):
    the worker's ZAP handler refused our key, or one side encrypts and the other does not."""
    kind = event["event"]
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return AuthenticationError(
            f"the worker at {address} refused this client's key: it has no invitation there, or the "
            "invitation was revoked (ask the worker's owner for a new invitation file)")
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and event["value"] == _MECHANISM_MISMATCH:
        if encrypted:
            return AuthenticationError(f"the worker at {address} does not encrypt its links, but this "
                                       "connection file expects it to: is it the same worker?")
        return AuthenticationError(
            f"the worker at {address} encrypts its links (CurveZMQ) and admits invited clients only: "
            "connect with the invitation file its owner gave you, e.g. %syft_connect Bob --file alice.json")
    if encrypted:
        return AuthenticationError(f"the encrypted handshake with {address} failed: the worker's key does not "
                                   "match this connection file (was the worker restarted? ask for a new invitation)")
    return None  # not a worker of ours, or a network hiccup: the handshake's timeout says so


class HandshakeWatch:
    """While a client connects over TCP: a monitor of its socket, so that a failed transport handshake
    (the worker's ZAP handler refused our key, or one side encrypts and the other does not) is an
    error at once rather than a timeout."""

    def __init__(self, sock: zmq.Socket, address: str, encrypted: bool) -> None:
        self.sock, self.address, self.encrypted = sock, address, encrypted
        self.monitor = sock.get_monitor_socket(HANDSHAKE_FAILED) if address.startswith("tcp://") else None

    def wait(self, timeout_ms: int) -> bool:
        """Whether a reply waits on the socket within ``timeout_ms``; raises if the handshake failed."""
        if self.monitor is None:
            return bool(self.sock.poll(timeout_ms))
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self.monitor in ready:
            from zmq.utils.monitor import recv_monitor_message

            failure = handshake_failure(recv_monitor_message(self.monitor), self.address, self.encrypted)
            if failure is not None:
                raise failure
        return self.sock in ready

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(0)
            self.monitor = None


def invitation_ended(sock: zmq.Socket, address: str, worker: str, reason: Any) -> AuthenticationError:
    """The error of a client whose invitation the worker ended; its socket stops reconnecting (with a key
    the worker now refuses)."""
    try:
        sock.disconnect(address)
    except zmq.ZMQError:
        pass
    return AuthenticationError(f"{worker} ended this client's invitation ({str(reason)[:40]}); its pointers "
                               "are no longer usable. Ask the owner for a new invitation.")
