"""The client's end of one link to a worker: a DEALER socket and its threads.

Pipelined messages (ops, small sends, frees) are queued and leave together as
one ``batch`` message: with the next request that waits, when the batch is
full, or from the background thread shortly after.

Threading: the socket and the batch are used under ``lock`` by the caller's
thread (queues ops, sends requests, waits for replies) and a background thread
(sends batches nobody flushed, heartbeats, reads replies nobody waits for; it
never waits for the lock: a caller holding it is waiting for a reply and keeps
the heartbeat going itself). Replies are matched to requests by sequence
number. Any thread may read a reply off the socket; it files it in
:attr:`replies` (awaited) or :attr:`errors` (failed pipelined ops).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, List, Optional

import zmq

from ..config import defaults
from ..errors import (
    AuthenticationError,
    ProtocolError,
    QuotaExceeded,
    ReplyTimeout,
    SyftError,
    WorkerStopped,
    WorkerUnreachable,
    error_class,
)
from ..wire import auth, buffers
from ..wire.protocol import ErrorCode, Kind, decode, encode, peek
from ..wire.sockets import readable, recv_parts, send_parts
from . import at_exit
from .handshake import Handshake
from .transport import LinkBase

log = logging.getLogger(__name__)

#: Frames at least this large go zero-copy: tracked until ZeroMQ releases them, or acknowledged by the
#: worker (``Client.send``); smaller ones are copied when queued (measured: a memcpy costs less than
#: waiting for either, up to 8 MiB).
LARGE_FRAME_BYTES = 8 << 20
#: A batch of pipelined messages leaves when it holds this many messages or bytes.
_BATCH_MESSAGES = 256
_BATCH_BYTES = 8 << 20
#: ... or, with the next message, once its first has waited this long (s): the worker starts on a stream of ops
#: while the caller queues the rest (an epoch's 200 ops, queued in 3 ms, waited for its closing sync in one
#: 5 ms batch: 14.5 ms an epoch against 12.8). Batches nobody adds to leave from the link's thread, which ticks
#: every ``defaults.flush_interval`` (more often, it would take the GIL from the caller's loop).
_BATCH_AGE = 0.001


class Link(Handshake, LinkBase):
    """An authenticated, heartbeating connection to one worker."""

    streams_values = True

    def __init__(self, address: str, key: str, *, timeout: float, context: Optional[zmq.Context] = None,
                 client_name: str = "client", curve: Optional[auth.CurveKeys] = None) -> None:
        super().__init__(address)
        self.lock = threading.Lock()
        self._batch_heads: List[bytes] = []  # the headers of queued messages
        self._batch_frames: List[Any] = []  # their tensor frames, one message after the other
        self._batch_counts: List[int] = []  # how many frames each queued message has
        self._batch_bytes = 0
        self._batch_started = 0.0  # when the first message of the queued batch came
        self._next_ping = 0.0
        self._own_ctx = context is None
        # inproc:// hands the sender's buffers to the receiver as they are: copy, or the worker would keep
        # (and expose) the client's memory, and a tracked zero-copy send would wait until the worker let go.
        self._copy = address.startswith("inproc://")
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._poller = zmq.Poller()  # kept: Socket.poll builds one per call
        self._poller.register(self._sock, zmq.POLLIN)
        # a thread that wants to send while another holds the lock to wait for replies wakes it (_take_lock)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._senders = 0  # threads waiting for the lock to send (the waiter lets them have it first)
        self._handoff = threading.Condition()
        self._sock.setsockopt(zmq.ROUTING_ID, self.session)
        self._sock.setsockopt(zmq.LINGER, 0)
        # No ZMQ_IMMEDIATE: with it, replies not yet read when the worker closes its socket (its "bye",
        # the last results) are dropped with the connection, so a stopped worker looked merely unreachable.
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.encrypted = curve is not None
        try:
            if curve is not None:
                auth.set_client_keys(self._sock, curve)
            self._watch = auth.HandshakeWatch(self._sock, address, self.encrypted)
            try:
                self._sock.connect(address)
                self._handshake(key, timeout, client_name)
            finally:
                self._watch.close()
        except BaseException:
            self._close_socket()
            raise
        self._thread = threading.Thread(target=self._background, name=f"syft-link-{self.worker_name}", daemon=True)
        self._thread.start()
        at_exit.register(self)  # its queued ops are sent if the process exits

    def _request_raw(self, header: dict, timeout: float, expect: Kind) -> dict:
        deadline = time.monotonic() + timeout
        self._send_parts(encode(header), deadline)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._watch.wait(max(1, int(remaining * 1000))):
                raise ReplyTimeout(f"no answer from {self.address} within {timeout:g} s")
            reply = decode(self._sock.recv_multipart())
            if reply["t"] == expect:
                return reply
            if reply["t"] == Kind.ERR:
                if error_class(reply.get("code")) is AuthenticationError:
                    raise AuthenticationError(
                        f"{self.worker_name} at {self.address} refused the link: wrong key "
                        "(take the key from the worker's connection file)")
                if error_class(reply.get("code")) is QuotaExceeded:  # (too many sessions)
                    raise QuotaExceeded(f"{self.worker_name} refused the link: {reply.get('msg')}")
                raise ProtocolError(f"handshake failed: {reply.get('msg')}")

    # -- sending -----------------------------------------------------------------
    def send(self, parts: List[Any], *, flush: bool = False, awaited: bool = False, alone: bool = False) -> None:
        """Queue one message for the worker; ``flush=True`` sends it, and everything queued, now.

        Pipelined messages (ops, small sends) travel together as one ``batch``: with the next
        request that waits for an answer, when the batch is full or ``defaults.flush_interval``
        old, or from the background thread (within that interval while the link is busy, within
        ``defaults.free_interval`` after a pause). Large tensors go at once, zero-copy; this call
        then returns only when ZeroMQ has let go of their memory (so the caller may change it
        again), unless the caller will wait for the worker's reply (``awaited``), which proves it.
        ``alone``: never in a batch (a chunk of an upload: the worker may serve the messages behind it first,
        see ``owner/chunk_queue.py``, which it can only do for a message of its own).
        """
        self.check()
        big = not self._copy and any(len(p) >= LARGE_FRAME_BYTES for p in parts[1:])
        now = awaited or big  # goes as it is, after the queued batch
        tracker = None
        self._take_lock()
        try:
            if not now:
                # smaller frames are copied now: the caller may change the tensor before the batch leaves
                self._batch_heads.append(parts[0])
                self._batch_frames.extend(p if type(p) is bytes else bytes(p) for p in parts[1:])
                self._batch_counts.append(len(parts) - 1)
                self._batch_bytes += sum(len(p) for p in parts)
                queued = len(self._batch_counts)
                if queued == 1:
                    self._batch_started = time.monotonic()
                if not flush and queued < _BATCH_MESSAGES and self._batch_bytes < _BATCH_BYTES and \
                        (queued == 1 or time.monotonic() - self._batch_started < _BATCH_AGE):
                    return
            deadline = time.monotonic() + defaults.reply_timeout
            try:
                tracker = self._flush(deadline, parts if now else None, track=big and not awaited, alone=alone)
            except zmq.ZMQError as exc:
                self._lost(exc)
        finally:
            self.lock.release()
        if tracker is not None:
            self._wait_tracker(tracker, deadline)

    def _flush(self, deadline: float, last: Optional[List[Any]] = None, track: bool = False,
               alone: bool = False) -> Optional[zmq.MessageTracker]:
        """Send queued messages and frees (then ``last``, if given) as one message (``alone``: ``last`` as a
        message of its own, after them); call with ``lock`` held."""
        heads, frames, counts = self._batch_heads, self._batch_frames, self._batch_counts
        # frees go after the queued ops: an op queued before a pointer died may still use its object
        for free in self.free_messages():
            heads.append(free[0])
            counts.append(0)
        if self.host_peer is not None and self.host_peer.read:
            # the regions of the worker's memory file that values were read from are free again
            heads.append(encode({"t": Kind.RELEASE, "i": self.host_peer.take_read()})[0])
            counts.append(0)
        if last is not None and alone and counts:
            self._batch_heads, self._batch_frames, self._batch_counts, self._batch_bytes = heads, frames, counts, 0
            self._flush(deadline)
            heads, frames, counts = [], [], []
        if last is not None:
            heads.append(last[0])
            frames.extend(last[1:])
            counts.append(len(last) - 1)
        self._batch_heads, self._batch_frames, self._batch_counts, self._batch_bytes = [], [], [], 0
        if not counts:
            return None
        if len(counts) == 1:
            return self._send_parts([heads[0], *frames], deadline, track)
        # one frame for all the headers, then every tensor frame: ZeroMQ's cost is per frame
        return self._send_parts([*encode({"t": Kind.BATCH, "m": heads, "n": counts}), *frames], deadline, track)

    def _wait_tracker(self, tracker: zmq.MessageTracker, deadline: float) -> None:
        # the tensor's memory must not change until ZeroMQ has let go of it; while the worker is
        # away the message waits in the queue, so give up like a reply that does not come
        while True:
            try:
                tracker.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                return
            except zmq.NotDone:
                self.check()
                now = time.monotonic()
                if self._silent(now) or now >= deadline:
                    raise self._lapsed(now) from None

    def _send_parts(self, parts: List[Any], deadline: float, track: bool = False) -> Optional[zmq.MessageTracker]:
        while True:
            try:
                return send_parts(self._sock, parts, copy=self._copy, track=track and not self._copy)
            except zmq.Again:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.broken is not None:
                    self.check()
                    raise WorkerUnreachable(f"cannot reach {self.worker_name} at {self.address}: "
                                            "the link is down (is the worker still running?)") from None
                self._sock.poll(max(1, int(min(remaining, 0.05) * 1000)), zmq.POLLOUT)

    # -- receiving ---------------------------------------------------------------
    def wait(self, seq: int, timeout: float, tick: Optional[Callable[[], bool]] = None) -> dict:
        """The reply to request ``seq``; raises if the worker is gone or silent past ``timeout``.

        ``tick`` runs between polls, without the lock (a stream sends its next chunks, shows its
        progress); when it returns True the transfer moved on and ``timeout`` counts anew.
        """
        deadline = time.monotonic() + timeout
        while True:
            reply = self.take(seq)
            if reply is not None:
                return reply
            self.check()
            if tick is not None and tick():
                deadline = time.monotonic() + timeout
            now = time.monotonic()
            if now >= deadline:
                raise ReplyTimeout(f"{self.worker_name} did not answer within {timeout:g} s "
                                   f"(raise syft_magics.defaults.reply_timeout if it is just slow)")
            if self._silent(now):
                raise self._lapsed(now)
            with self.lock:
                if seq in self.replies:
                    continue
                try:
                    self._ping_if_due(now)  # the background thread leaves the socket to the waiter
                    for item, _ in self._poller.poll(max(1, int(min(deadline - now, 0.05) * 1000))):
                        if item is self._sock:
                            self._drain(ready=True)
                        else:  # another thread wants the lock
                            _empty(self._wake_r)
                except zmq.ZMQError as exc:
                    self._lost(exc)
            if self._senders:  # let the threads that woke us take the lock first (a release hands nothing over)
                with self._handoff:
                    self._handoff.wait_for(lambda: not self._senders, timeout=0.005)

    def _take_lock(self) -> None:
        """Take :attr:`lock`. If another thread holds it to wait for replies (polling the socket), wake it: a
        message sent meanwhile (an op during a streamed upload, from another thread) would otherwise wait until
        the next reply came, a chunk's credit, hundreds of microseconds."""
        if self.lock.acquire(blocking=False):
            return
        with self._handoff:
            self._senders += 1
        try:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # (wake-ups are pending already)
                pass
            self.lock.acquire()
        finally:
            with self._handoff:
                self._senders -= 1
                self._handoff.notify_all()

    def _ping_if_due(self, now: float) -> None:
        """Send a heartbeat when one is due (call with ``lock`` held)."""
        # after a "bye" keep asking: a worker restarted at the address answers "unknown
        # session", which turns WorkerStopped into the more useful WorkerRestarted
        if now >= self._next_ping and (self.broken in (None, self._lapse) or isinstance(self.broken, WorkerStopped)):
            try:
                send_parts(self._sock, encode({"t": Kind.PING, "s": None}))
            except zmq.Again:
                return
            self._next_ping = now + defaults.heartbeat_interval
            self._unanswered_since = self._unanswered_since or now

    def _drain(self, ready: bool = False) -> None:
        """File every reply waiting on the socket (``ready``: a poll just said one waits; asking the socket
        again is one more system call per round trip)."""
        sock = self._sock
        while ready or readable(sock):
            ready = False
            try:
                parts = recv_parts(sock)
            except zmq.Again:
                return
            try:
                header: Optional[dict] = decode(parts, peer=self.host_peer)
            except ProtocolError as exc:
                header = self._undecodable(parts, exc)
            if header is not None:
                self._file(header)

    @staticmethod
    def _undecodable(parts: List[Any], exc: ProtocolError) -> Optional[dict]:
        """A reply whose tensor could not be rebuilt becomes an error for its waiter (others are dropped)."""
        seq = peek(parts[0]).get("s")
        if type(seq) is not int:
            return None
        return {"t": Kind.ERR, "s": seq, "code": ErrorCode.PROTOCOL, "etype": "ProtocolError",
                "msg": f"the worker's reply could not be read: {exc}"}

    def _file(self, header: dict) -> None:
        if header["t"] == Kind.BYE and header.get("reason"):  # the owner revoked (or replaced) our invitation
            self.broken = auth.invitation_ended(self._sock, self.address, self.worker_name, header.get("reason"))
            return
        super()._file(header)

    def say(self, header: dict) -> None:
        """Send a small control message now (call with ``lock`` held); lost only with the link."""
        try:
            send_parts(self._sock, encode(header))
        except zmq.Again:
            log.debug("link to %s: %s not sent", self.worker_name, header["t"])

    def cancel(self, seq: int) -> None:
        """Stop stream ``seq``: the worker drops its partial state; chunks still on their way are dropped."""
        with self.lock:
            self.streams.pop(seq, None)
            self.credits.pop(seq, None)
            self._awaited.discard(seq)
            self._abandoned.add(seq)
            if self.broken is None and not self._closed:
                try:
                    self.say({"t": Kind.CANCEL, "s": seq})
                except zmq.ZMQError as exc:
                    self._lost(exc)

    def _lost(self, exc: zmq.ZMQError) -> None:
        """The socket failed (call with ``lock`` held): an in-process worker that stopped terminated the
        context this link shares with it. Close the socket, so the worker's ``stop()`` can finish, and raise."""
        if exc.errno not in (zmq.ETERM, zmq.ENOTSOCK):
            raise exc
        if self.broken is None:
            self.broken = WorkerStopped(f"{self.worker_name} was stopped by its owner; "
                                        "its pointers are no longer usable")
        self._sock.close(0)
        self.check()
        raise self.broken

    def _silent(self, now: float) -> bool:  # a heartbeat unanswered for heartbeat_timeout (any message clears it)
        return self._unanswered_since is not None and now - self._unanswered_since > defaults.heartbeat_timeout

    def _lapsed(self, now: float) -> SyftError:
        """Mark the link dead now, so later calls fail at once; heartbeats go on, and an answer revives it."""
        if self.broken is None:
            self.broken = self._lapse = WorkerUnreachable(
                f"{self.worker_name} at {self.address} stopped answering (no heartbeat reply for "
                f"{now - self.last_pong:.0f} s); calls fail at once until it answers again")
        return self.broken

    # -- background ----------------------------------------------------------------
    def _background(self) -> None:
        while True:
            # tick often while ops are being queued, so a batch never waits long for its request;
            # rarely when the link is idle (no wake-up per op: that would slow every round trip)
            active = self._batch_counts or time.monotonic() - self._batch_started < 1.0
            if self._stop.wait(defaults.flush_interval if active else defaults.free_interval):
                return
            buffers.trim()  # (what received tensors left unused: not kept past its time)
            # a caller that holds the lock is waiting for a reply: it sent the batch and keeps the
            # heartbeat going itself, so never queue behind it
            if not self.lock.acquire(blocking=False):
                continue
            try:
                if self._closed:
                    return
                now = time.monotonic()
                released = self.host_peer is not None and self.host_peer.read
                if (self._batch_counts or self.free_queue or released) and self.broken is None:
                    self._flush(now + defaults.reply_timeout)
                self._ping_if_due(now)
                self._drain()
                if self.broken is None and self._silent(time.monotonic()):
                    self._lapsed(time.monotonic())
            except (zmq.Again, WorkerUnreachable) as exc:  # the next tick tries again; a waiter raises it
                log.debug("link to %s: %s", self.worker_name, exc)
            except zmq.ZMQError as exc:
                try:
                    self._lost(exc)
                except Exception as lost:  # the link is unusable; the next call on it raises this
                    log.info("link to %s lost: %s", self.worker_name, lost)
                return
            except Exception:  # a bug: the thread ends (heartbeats stop), but not silently
                log.exception("link to %s: the background thread failed", self.worker_name)
                return
            finally:
                self.lock.release()

    # -- closing -------------------------------------------------------------------
    def close(self, say_bye: bool = True, linger: float = 0.5) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self.lock:
            if say_bye and self.broken is None:
                try:
                    self._sock.setsockopt(zmq.LINGER, int(linger * 1000))
                    self._batch_heads.append(encode({"t": Kind.BYE})[0])
                    self._batch_counts.append(0)
                    self._flush(time.monotonic())
                except (zmq.ZMQError, SyftError):
                    pass
            self._closed = True
            self._close_socket()

    def _close_socket(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.host_peer is not None:
            self.host_peer.close()
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._own_ctx:
            self._ctx.term()


def _empty(fd: int) -> None:
    """Read a non-blocking pipe's pending bytes (wake-ups)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
