"""Who may connect to an encrypted worker: one CurveZMQ identity per invited client.

``bob.invite("alice")`` makes Alice a key pair of her own and a token (the HMAC key she proves
at the handshake), keeps her *public* key and token in the worker's :class:`InviteBook`, and
writes both halves into a connection file (0600) for the owner to hand over. The worker's ZAP
handler (:mod:`.zap`) lets a connection through only if its key is in the book and not revoked;
the handshake then names the session after the invitation (the owner's log and panel say
``alice``, not a routing id). ``bob.revoke("alice")`` takes her key out of the book: new
connections are refused, and her sessions end at once (:meth:`.handshake.Handshakes.end_invite`).

The book is kept in memory: a restarted worker has a new key pair and new invitations.
Only public keys and fingerprints are ever shown; the secret half exists only in the file.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ..wire import auth, limits

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
