"""Which transport connection a message came in on, so a session is bound to its connection.

ZeroMQ names a peer by its routing id, which the peer chooses and sends in clear: a new
socket presenting a dropped client's routing id would otherwise be served as that client.
A socket monitor reports every accepted and every closed TCP connection (by file
descriptor, before the descriptor can be reused), and each received frame tells its
connection's descriptor (``ZMQ_SRCFD``). Each accepted connection gets a fresh token;
a session remembers the token of the connection that authenticated it and is served
only on that connection; when that connection closes, the session ends (once the messages it sent before closing, a
goodbye for instance, have been read).

The monitor's events are read before each message is handled: the I/O thread reports a
connection before any of its messages can arrive, and reports its closing before its
descriptor is closed, so a message is always judged against the right token.
"""
from __future__ import annotations

import itertools
import os
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire import limits

#: The token of messages that arrive without a descriptor (``inproc://`` peers in this process).
INPROC = 0

_SRCFD = int(zmq.SRCFD)
_EVENTS_OPTION, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # (plain ints: pyzmq's enums cost a call each)
_EVENTS = int(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)

class Connections:
    """Tokens of the live connections of one ROUTER socket (serving thread only).

    A connection that carries nothing of the worker's (no session, handshake or courier: ``bound`` names the tokens
    that do) is cut after :data:`~syft_magics.wire.limits.UNBOUND_SECONDS`, and at once beyond
    :data:`~syft_magics.wire.limits.MAX_UNBOUND` of them (``on_cut`` counts each)."""

    def __init__(self, router: zmq.Socket, on_closed: Callable[[int], None],
                 bound: Callable[[], Set[int]] = set, on_cut: Callable[[], None] = lambda: None) -> None:
        self._monitor: Optional[zmq.Socket] = router.get_monitor_socket(_EVENTS)
        self._router = router
        self._tokens: Dict[int, int] = {}  # fd -> token of the connection now on it
        self._opened: Dict[int, Tuple[int, float, Any]] = {}  # fd -> (token, when accepted, peer address)
        self._counter = itertools.count(1)
        self._on_closed = on_closed
        self._bound, self._on_cut = bound, on_cut
        self._closed: List[int] = []

    def poll_events(self) -> None:
        """Apply every connection event reported so far (call before judging a message)."""
        mon = self._monitor
        if mon is None:
            return
        while mon.getsockopt(_EVENTS_OPTION) & _POLLIN:  # type: ignore[operator]  # EVENTS is an int option
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._tokens[fd] = next(self._counter)
                self._opened[fd] = (self._tokens[fd], time.monotonic(), _peername(fd))
                if len(self._opened) > limits.MAX_UNBOUND:
                    self.cut_unbound(time.monotonic())
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._opened.pop(fd, None)
                # its messages still queued keep their token until the descriptor is reused
                token = self._tokens.get(fd)
                if token is not None:
                    self._closed.append(token)

    @property
    def closing(self) -> bool:
        """Whether connections closed that :meth:`end_closed` has not reported yet."""
        return bool(self._closed)

    def end_closed(self) -> None:
        """Report the connections closed so far (call when their queued messages have been read)."""
        while self._closed:
            self._on_closed(self._closed.pop(0))

    def token(self, frame: Any) -> int:
        """The token of the connection ``frame`` arrived on (:data:`INPROC` for in-process peers).
        A descriptor accepted before the monitor started gets its token now."""
        try:
            fd = frame.get(_SRCFD)
        except (zmq.ZMQError, AttributeError, TypeError):
            return INPROC
        if fd is None or fd < 0:
            return INPROC
        token = self._tokens.get(fd)
        if token is None:
            token = self._tokens[fd] = next(self._counter)
        return token

    def endpoint(self, frame: Any) -> Optional[Tuple[int, Any]]:
        """The TCP connection ``frame`` arrived on: its descriptor and the peer's address (None for inproc)."""
        try:
            fd = frame.get(_SRCFD)
        except (zmq.ZMQError, AttributeError, TypeError):
            return None
        if fd is None or fd < 0:
            return None
        peer = _peername(fd)
        return None if peer is None else (fd, peer)

    def cut_unbound(self, now: float) -> None:
        """Cut the connections that carry nothing of the worker's: those older than ``UNBOUND_SECONDS``, and the
        oldest beyond ``MAX_UNBOUND`` of them."""
        bound = self._bound()
        unbound = sorted((at, fd, peer) for fd, (token, at, peer) in self._opened.items() if token not in bound)
        over = len(unbound) - limits.MAX_UNBOUND
        for i, (at, fd, peer) in enumerate(unbound):
            if (i < over or now - at > limits.UNBOUND_SECONDS) and peer is not None and self.cut((fd, peer)):
                self._opened.pop(fd, None)
                self._on_cut()

    def cut(self, endpoint: Tuple[int, Any]) -> bool:
        """Shut down the TCP connection at ``endpoint`` (a revoked client's): libzmq's I/O thread then
        closes it. Only if the descriptor still holds that same connection (same peer address and
        port): a descriptor reused for another client's connection is left alone."""
        self.poll_events()
        fd, peer = endpoint
        if fd not in self._tokens or _peername(fd) != peer:
            return False
        sock = _socket_of(fd)
        if sock is None:
            return False
        with sock:  # closes the duplicate only; shutdown acts on the connection itself
            try:
                sock.shutdown(socket.SHUT_RDWR)
                return True
            except OSError:
                return False

    @property
    def socket(self) -> Optional[zmq.Socket]:
        return self._monitor

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._router.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None


def _peername(fd: int) -> Any:
    """The peer address of the TCP socket ``fd`` (None if it is not a connected socket)."""
    sock = _socket_of(fd)
    if sock is None:
        return None
    with sock:
        try:
            return sock.getpeername()
        except OSError:
            return None


def _socket_of(fd: int) -> Optional[socket.socket]:
    """A socket object on a duplicate of ``fd`` (closing it leaves ``fd`` open), or None."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
