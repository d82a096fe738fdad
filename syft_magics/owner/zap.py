"""The worker's ZAP handler: which CurveZMQ keys may open a connection at all.

An encrypted worker's socket is a CurveZMQ server with a ZAP domain; libzmq asks the ZAP
handler of the socket's context about every connection after the Curve handshake proved
the client holds the secret half of its public key, and before any message of that
connection reaches the serving loop. We use pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator`
(it answers ZAP requests from its own thread, so a busy serving loop never delays a connect)
with the worker's :class:`~.invites.InviteBook` as its credentials provider: the rule lives
in the book, apart from the loop. A refused connection never reaches the loop; it is
counted and reported through ``on_refused`` with the key's fingerprint, never the key.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..wire import auth
from .invites import InviteBook

log = logging.getLogger(__name__)

#: The ZAP domain of workers' sockets.
DOMAIN = "syft"


class _Quiet:
    """pyzmq's authenticator logs whole client keys at debug level: keep only its errors, without arguments."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = debug

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.warning("ZAP handler: %s", str(msg).split(":", 1)[0].split("%", 1)[0].strip())

    error = warning


class _Provider:
    """The credentials provider pyzmq's authenticator calls with each client's public key (Z85)."""

    def __init__(self, book: InviteBook, on_refused: Callable[[str], None],
                 couriers: Optional[Callable[[Any], bool]] = None) -> None:
        self.book = book
        self.on_refused = on_refused
        self.couriers = couriers

    def callback(self, domain: str, key: bytes) -> bool:
        if domain == DOMAIN and (self.book.by_key(key) is not None
                                 or (self.couriers is not None and self.couriers(key))):
            return True
        try:
            self.on_refused(auth.fingerprint(key))
        except Exception:  # reporting must never break the ZAP handler
            log.exception("reporting a refused key failed")
        return False


class Gate:
    """Starts and stops the ZAP handler of one worker's context."""

    def __init__(self, context: zmq.Context, book: InviteBook, on_refused: Callable[[str], None],
                 name: str = "worker", couriers: Optional[Callable[[Any], bool]] = None) -> None:
        self._auth = ThreadAuthenticator(context, log=_Quiet())
        # couriers: the one-time keys of open move tickets (owner/tickets.py), admitted besides invitations
        self._provider = _Provider(book, on_refused, couriers)
        self._name = name

    def start(self) -> None:
        """Bind the context's ZAP endpoint and answer from a thread (before the socket binds)."""
        self._auth.configure_curve_callback(DOMAIN, credentials_provider=self._provider)
        self._auth.start()
        self._auth.thread.name = f"syft-zap-{self._name}"

    def stop(self) -> None:
        self._auth.stop()
