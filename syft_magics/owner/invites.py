"""Who may connect to an encrypted worker: one CurveZMQ identity per invited client.

``bob.invite("alice")`` makes Alice a key pair of her own and a token (the HMAC key she proves
at the handshake), keeps her *public* key and token in the worker's :class:`InviteBook`, and
writes both halves into a connection file (0600) for the owner to hand over. The worker's ZAP
handler (:mod:`.zap`) lets a connection through only if its key is in the book and not revoked;
the handshake then names the session after the invitation (the owner's log and panel say
``alice``, not a routing id). ``bob.revoke("alice")`` takes her key out of the book: new
connections are refused, and her sessions end at once (:meth:`.handshake.Handshakes.end_invite`).

The book is kept in memory: a restarted worker has a new key pair and new invitations. The worker's
methods for all this (:class:`Invitations`) are mixed into it from here, beside the book they keep.
Only public keys and fingerprints are ever shown; the secret half exists only in the file.
"""
from __future__ import annotations

import os
import re
import secrets
import socket as _socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

import zmq

from ..errors import InsecureBind
from ..wire import auth, discovery, limits
from ..wire.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from ..events import EventStream
    from .policy import Policy
    from .quotas import Quotas
    from .serving import Server

#: The name of the invitation behind the worker's own connection file (clients of this user, this machine).
LOCAL = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")


@dataclass
class Invite:
    """One invited client: its public key, the token it proves, the limits the owner set for it."""

    name: str
    #: the client's CurveZMQ public key (Z85); the worker never holds its secret half
    public: str = field(repr=False)
    #: the HMAC key the client proves at the handshake (hex)
    token: str = field(repr=False)
    #: per-client limits (opaque here; the worker's quotas read them), e.g. {"max_bytes": 1 << 30}
    limits: Dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    #: when it was revoked (None: still valid)
    revoked: Optional[float] = None
    #: the invitation behind the worker's own connection file (:data:`LOCAL`)
    local: bool = False
    #: where its connection file was written
    path: Optional[str] = None

    @property
    def fingerprint(self) -> str:
        """How its key is shown (never the key itself)."""
        return auth.fingerprint(self.public)

    @property
    def active(self) -> bool:
        return self.revoked is None

    def __repr__(self) -> str:
        state = "revoked" if self.revoked is not None else "valid"
        return f"<Invite {self.name} key {self.fingerprint}, {state}>"


def check_name(name: object) -> str:
    """An invitation's name: letters, digits and ``_.@+-``, at most :data:`limits.MAX_NAME_CHARS`."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > limits.MAX_NAME_CHARS:
        raise ValueError(f"an invitation needs a name of letters, digits and _.@+- (at most "
                         f"{limits.MAX_NAME_CHARS} characters), e.g. 'alice'; not {limits.clip(repr(name), 40)}")
    return name


class InviteBook:
    """The invitations of one worker (thread-safe: the ZAP thread reads it, the owner changes it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: Dict[str, Invite] = {}
        self._by_key: Dict[str, Invite] = {}  # public key -> valid invitation
        self._history: List[Invite] = []  # replaced and revoked ones, for the owner to see

    def add(self, name: str, limits: Optional[Mapping[str, Any]] = None, *,
            local: bool = False) -> Tuple[Invite, str, Optional[Invite]]:
        """A new invitation for ``name``: ``(invite, secret key, the one it replaces or None)``.

        Inviting a name again gives it a new key pair; the old key is no longer accepted."""
        name = check_name(name)
        if name == LOCAL and not local:
            raise ValueError(f"{LOCAL!r} is the name of the worker's own connection file; choose another name")
        public, secret = auth.new_keypair()
        invite = Invite(name, public, secrets.token_hex(32), dict(limits or {}), local=local)
        with self._lock:
            old = self._by_name.get(name)
            if old is not None and old.active:
                old.revoked = time.time()
                self._by_key.pop(old.public, None)
                self._history.append(old)
            self._by_name[name] = invite
            self._by_key[public] = invite
        return invite, secret, old if old is not None and old.revoked is not None else None

    def revoke(self, name: str) -> Invite:
        """Revoke ``name``'s invitation (``KeyError`` if there is no valid one)."""
        with self._lock:
            invite = self._by_name.get(name)
            if invite is None or not invite.active:
                valid = ", ".join(n for n, i in self._by_name.items() if i.active and not i.local) or "none"
                raise KeyError(f"no valid invitation named {name!r} (valid: {valid})")
            invite.revoked = time.time()
            self._by_key.pop(invite.public, None)
            return invite

    def by_key(self, public: Any) -> Optional[Invite]:
        """The valid invitation of a public key (Z85 text or bytes), or None."""
        if isinstance(public, bytes):
            public = public.decode("ascii", "replace")
        with self._lock:
            return self._by_key.get(public) if isinstance(public, str) else None

    def __getitem__(self, name: str) -> Invite:
        with self._lock:
            return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._by_name

    def __iter__(self) -> Iterator[Invite]:
        with self._lock:
            return iter([i for i in self._by_name.values() if not i.local])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __repr__(self) -> str:
        return "\n".join(repr(i) for i in self) or "no invitations"


def invite_path(path: Optional[str], name: str) -> Path:
    """Where an invitation file goes: ``path``, or ``<name>.json`` in the current folder."""
    return Path(path) if path else Path.cwd() / f"{name}.json"


class Invitations:
    """The owner's side of invitations, mixed into :class:`~syft_magics.owner.worker.Worker`: who may connect to
    an encrypted worker (:meth:`invite`, :meth:`revoke`), its key, and the connection files it writes."""

    name: str
    key: str
    host: str
    instance: str
    secure: bool
    invites: InviteBook
    policy: "Policy"
    quotas: "Quotas"
    events: "EventStream"
    server: "Server"
    _curve: Optional[Tuple[str, str]]
    _running: bool
    _port: int

    def _connection_info(self, address: str, client: Optional[str],
                         limits: Optional[Dict[str, Any]] = None) -> discovery.ConnectionInfo:
        """A connection file's content; with ``client``, a new invitation of that name (its own keys)."""
        info = discovery.ConnectionInfo(
            name=self.name, address=address, key=self.key, pid=os.getpid(), hostname=_socket.gethostname(),
            instance=self.instance, policy=self.policy.name, protocol=PROTOCOL_VERSION, started=time.time())
        if client is not None and self._curve is not None:
            invite, secret, old = self.invites.add(client, limits, local=client == LOCAL)
            if old is not None:
                self._end_invite(old, "invitation replaced")
            info.key, info.client, info.server_key = invite.token, invite.name, self._curve[0]
            info.public_key, info.secret_key = invite.public, secret
        return info

    @property
    def fingerprint(self) -> Optional[str]:
        """The fingerprint of this worker's CurveZMQ key (None when its links are not encrypted)."""
        return auth.fingerprint(self._curve[0]) if self._curve is not None else None

    @property
    def server_key(self) -> Optional[str]:
        """This worker's CurveZMQ public key (Z85; None when its links are not encrypted)."""
        return self._curve[0] if self._curve is not None else None

    def invite(self, client: str, path: Optional[str] = None, *, address: Optional[str] = None,
               limits: Optional[Dict[str, Any]] = None) -> Path:
        """Invite ``client``: write a connection file (0600) with a key pair of its own, to hand over.

        The client connects with ``%syft_connect Bob --file alice.json`` (or
        ``connect("Bob", file="alice.json")``) from any machine that reaches ``address``
        (default: this worker's address; for ``0.0.0.0`` this machine's first network address).
        ``limits``: this client's quotas (Quotas fields, e.g. ``{"max_bytes": "1GB"}``). Inviting a
        name again replaces its key; :meth:`revoke` ends an invitation. Returns the file's path.
        """
        if not self.secure:
            raise InsecureBind(f"{self.name} does not encrypt its links, so it cannot tell invited clients apart: "
                               f"start it with secure=True (%syft_worker {self.name} --secure), or on a network "
                               "interface (--host 0.0.0.0), which encrypts")
        if not self._running:
            raise RuntimeError(f"start {self.name} before inviting clients (its address is not known yet)")
        self.quotas.with_(**(limits or {}))  # unknown or bad limits fail here (TypeError, ValueError)
        target = invite_path(path, client)
        if target.exists() and not _is_connection_file(target):
            raise FileExistsError(f"{target} exists and is not a connection file; choose another path")
        info = self._connection_info(address or self._public_address(), client, limits)
        discovery.write_to(target, info)
        invite = self.invites[client]
        invite.path = str(target)
        self.events.emit("invite", client=client, key=invite.fingerprint, path=str(target),
                         limits=dict(invite.limits))
        return target

    def revoke(self, client: str) -> Invite:
        """End ``client``'s invitation: its sessions end at once (its objects are freed, its
        connections closed) and its key is refused from now on."""
        try:
            invite = self.invites.revoke(client)
        except KeyError as exc:
            raise KeyError(exc.args[0]) from None
        self._end_invite(invite, "revoked")
        self.events.emit("revoke", client=client, key=invite.fingerprint)
        return invite

    def _end_invite(self, invite: Invite, reason: str) -> None:
        if self._running:
            def end(router: zmq.Socket) -> None:
                self.server.end_invite(router, invite, reason)

            self.server.call_soon(end)

    def _refused_key(self, fingerprint: str) -> None:
        """The ZAP handler refused a key (its thread): count it on the serving thread."""
        def count(router: zmq.Socket) -> None:
            self.server.refuse("key not invited")
            self.events.emit("auth_failed", peer="?", key=fingerprint)

        self.server.call_soon(count)

    def _public_address(self) -> str:
        host = self.host
        if host in ("*", "0.0.0.0", "", "::"):
            from jupyter_client.localinterfaces import public_ips

            ips = public_ips()
            host = ips[0] if ips else _socket.gethostname()
        return f"tcp://{host}:{self._port}"


def _is_connection_file(path: Path) -> bool:
    try:
        discovery.read(path)
        return True
    except (OSError, ValueError):
        return False
