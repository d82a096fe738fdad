"""A link to a worker in this process, without a socket: one kernel, one GIL, one thread per message.

When the owner and the scientist share a kernel (a one-notebook tutorial, ``connect(worker)``), a
socket between them makes both sides pay on one GIL: ZeroMQ, a thread switch to the serving thread
and back. A :class:`DirectLink` instead hands each message to the worker's
:class:`~syft_magics.owner.direct.DirectPort` on the caller's thread, which runs the very handler
the serving thread would run (the same handshake with the key, policy, read-only owner data,
command log and events). Only the transport differs:

- Ops are queued, as over a socket, and run together (:data:`BATCH` at a time) on the caller's
  thread: with the next request that waits (``.get()``, ``sync()``), when the batch is full, or
  within ``defaults.flush_interval`` from a small background thread once the caller stops adding to it
  (:data:`STALE_AFTER` at most while it goes on). Switching between the client's
  code and the worker's once per op, rather than once per batch, cost a third of a chain's speed. A
  failed op is reported at the next ``.get()``/``sync()``, naming the line that issued it.
- Nothing is shared: tensor frames are copied before the worker decodes them (the caller may change
  its tensor at once; the worker never holds the caller's memory) and values come back as copies of
  the worker's tensors (``Server._value``), exactly where the wire would have copied.
- Frees of dead pointers are sent in bunches after the queued ops, with the next request that waits,
  or by the background thread (which also keeps the session's lease, as heartbeats do).
- What the worker sends on its own (an owner's approval, its goodbye) arrives in :meth:`_deliver`.
"""
from __future__ import annotations

import logging
import os
import socket as _socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from ..config import defaults
from ..errors import AuthenticationError, ProtocolError, ReplyTimeout, SyftError, error_class
from ..wire import auth
from ..wire.protocol import PROTOCOL_VERSION, Kind, decode, encode
from .transport import LinkBase, welcome_devices

if TYPE_CHECKING:
    from ..owner.worker import Worker

log = logging.getLogger(__name__)

#: Frees of dead pointers travel once this many are queued (or with the next request, or within
#: ``defaults.free_interval``): one message per dead pointer would cost a chain a third of its speed.
FREE_BUNCH = 256

#: ... and among the queued messages once this many are pending: the worker lets go of them while a long batch
#: runs (a training epoch queued whole kept every step's dead results, and an op over the owner's data that writes
#: gradients looks at each of its client's objects: 72 ms an epoch against 40 without that walk).
FREES_IN_LINE = 32

#: Pipelined messages run together once this many are queued (measured: a chain of ops at 43 us per op
#: one by one, 30 in batches of 256, 31 of 64, 30.7 of 1,024).
BATCH = 256

#: Queued messages whose caller keeps adding to them run from the background thread once the first has
#: waited this long (s); those the caller stopped adding to run within ``defaults.flush_interval`` or two.
STALE_AFTER = 0.05


class DirectLink(LinkBase):
    """An authenticated link to a :class:`Worker` of this process; messages are handled on the caller's thread."""

    def __init__(self, worker: "Worker", key: str, *, client_name: str = "client") -> None:
        super().__init__(worker.inproc_address)
        self.lease = float(worker.lease_timeout)
        self._port = worker.server
        self._lock = threading.Lock()  # one message at a time, in the order issued
        self._inbox = threading.Condition()  # replies filed (from this thread or the serving thread)
        self._stop = threading.Event()
        #: pipelined messages not yet handed to the worker (their frames copied), and when the first was queued
        self._queue: List[List[Any]] = []
        self._queued_at = 0.0
        self._issued = 0  # messages ever queued (the background thread tells a caller still issuing by it)
        self._port.open_direct(self.session, self._deliver)
        try:
            self._handshake(key, client_name)
        except BaseException:
            self._port.close_direct(self.session)
            self._closed = True
            raise
        self._thread = threading.Thread(target=self._background, name=f"syft-direct-{self.worker_name}",
                                        daemon=True)
        self._thread.start()

    def _handshake(self, key: str, client_name: str) -> None:
        """The worker's own handshake: hello, its challenge, our proof of the key."""
        challenge = self._exchange({"t": Kind.HELLO, "s": 0, "v": PROTOCOL_VERSION, "name": client_name,
                                    "pid": os.getpid(), "hostname": _socket.gethostname()}, Kind.CHALLENGE)
        nonce = challenge.get("nonce")
        if not isinstance(nonce, bytes):
            raise ProtocolError("the worker's challenge carries no nonce")
        self.worker_name = str(challenge.get("name"))
        welcome = self._exchange({"t": Kind.AUTH, "s": 0, "mac": auth.proof(key, nonce, self.session)},
                                 Kind.WELCOME)
        self.instance = str(welcome.get("instance"))
        self.policy = str(welcome.get("policy"))
        self.devices = welcome_devices(welcome)
        self.lease = float(welcome.get("lease") or self.lease)

    def _exchange(self, header: dict, expect: Kind) -> dict:
        replies = self._call(encode(header))
        reply = replies[0] if replies else {"t": None}
        if reply["t"] == expect:
            return reply
        if reply["t"] == Kind.ERR and error_class(reply.get("code")) is AuthenticationError:
            raise AuthenticationError(f"{self.worker_name} refused the link: wrong key "
                                      "(take the key from the worker's connection file)")
        raise ProtocolError(f"handshake failed: {reply.get('msg') or reply['t']}")

    def _call(self, parts: List[Any]) -> List[dict]:
        """Hand one message to the worker; its decoded replies."""
        return [decode(reply) for reply in self._port.call(self.session, parts)]

    # -- sending -----------------------------------------------------------------
    def send(self, parts: List[Any], *, flush: bool = False, awaited: bool = False, alone: bool = False) -> None:
        """Queue one message for the worker; ``flush=True`` runs it, and everything queued, now (on this
        thread). Replies (an error, an answer) are filed for ``wait``."""
        self.check()
        # copies: the worker must never hold (or expose) the caller's memory, nor the caller the worker's
        message = [parts[0], *(bytearray(p) for p in parts[1:])]
        with self._lock:
            frees = awaited or len(self.free_queue) >= FREE_BUNCH
            if flush or awaited:
                replies = self._run(message, frees)
            else:
                queue = self._queue
                if len(self.free_queue) >= FREES_IN_LINE:  # (they died before this message: after what is queued)
                    queue.extend(self.free_messages())
                queue.append(message)
                self._issued += 1
                if len(queue) == 1:
                    self._queued_at = time.monotonic()
                if len(queue) < BATCH:
                    return
                replies = self._run(None, frees)
        if replies:
            self._file_all(replies)

    def _run(self, last: Optional[List[Any]] = None, frees: bool = False) -> List[dict]:
        """Run the queued messages, then (if ``frees``) the frees of dead pointers (an op queued before a
        pointer died may still use its object), then ``last``; their decoded replies. Call with ``_lock``
        held."""
        messages, self._queue = self._queue, []
        if frees:
            messages.extend(self.free_messages())
        if last is not None:
            messages.append(last)
        if not messages:
            return []
        return [decode(reply) for reply in self._port.call_many(self.session, messages)]

    def _file_all(self, replies: List[dict]) -> None:
        with self._inbox:
            for header in replies:
                self._file(header)
            self._inbox.notify_all()

    def _deliver(self, parts: List[Any]) -> None:
        """A message the worker sent on its own (from its serving thread): an approval, its goodbye."""
        try:
            header = decode(parts)
        except ProtocolError:
            log.warning("link to %s: an unreadable message from the worker was dropped", self.worker_name)
            return
        self._file_all([header])

    # -- receiving ---------------------------------------------------------------
    def wait(self, seq: int, timeout: float, tick: Optional[Callable[[], bool]] = None) -> dict:
        """The reply to request ``seq`` (already filed, unless it waits for the owner's decision).
        Values are never streamed here (a copy in memory is all it takes): ``tick`` only lets an
        interrupt through."""
        deadline = time.monotonic() + timeout
        with self._inbox:
            while True:
                reply = self.take(seq)
                if reply is not None:
                    return reply
                self.check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReplyTimeout(f"{self.worker_name} did not answer within {timeout:g} s "
                                       f"(raise syft_magics.defaults.reply_timeout if it is just slow)")
                if tick is not None:
                    tick()
                self._inbox.wait(min(remaining, 0.1))

    # -- background ----------------------------------------------------------------
    def _background(self) -> None:
        """Queued messages within ``flush_interval``, frees within ``free_interval``; a ping per
        ``heartbeat_interval`` (the lease)."""
        next_ping = time.monotonic() + defaults.heartbeat_interval
        seen = 0  # how many messages the caller had queued at the last tick
        while True:
            # often while ops are being queued (a batch never waits long), rarely when the link is idle
            active = self._queue or time.monotonic() - self._queued_at < 1.0
            if self._stop.wait(defaults.flush_interval if active else defaults.free_interval):
                return
            if self.broken is not None:
                return
            now = time.monotonic()
            ping = now >= next_ping
            # a caller still queueing runs its batch (and the frees) itself when it is full: this thread taking
            # the worker's turn meanwhile only trades the GIL back and forth (a chain of ops 20-40% slower)
            issuing = self._issued != seen and (not self._queue or now - self._queued_at < STALE_AFTER)
            seen = self._issued
            if issuing and not ping:
                continue
            if not (self._queue or self.free_queue or ping) or not self._lock.acquire(blocking=False):
                continue  # a caller holding the lock is talking to the worker: the session is alive
            try:
                replies = self._run(encode({"t": Kind.PING, "s": None}) if ping else None, frees=True)
                if ping:
                    next_ping = now + defaults.heartbeat_interval
                if replies:
                    self._file_all(replies)
            except SyftError as exc:  # the worker went away: the next call raises it
                log.debug("link to %s: %s", self.worker_name, exc)
            except Exception:  # a bug: the thread ends (frees and pings stop), but not silently
                log.exception("link to %s: the background thread failed", self.worker_name)
                return
            finally:
                self._lock.release()

    # -- closing -------------------------------------------------------------------
    def close(self, say_bye: bool = True) -> None:
        """Say goodbye (the worker frees this session's objects) and stop the background thread."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._lock:
            if say_bye and self.broken is None:
                try:  # what was queued runs first, as over a socket
                    self._run(encode({"t": Kind.BYE}))
                except SyftError:
                    pass
            self._closed = True
            self._port.close_direct(self.session)
        with self._inbox:
            self._inbox.notify_all()
