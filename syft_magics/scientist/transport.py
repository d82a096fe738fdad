"""What every link to a worker does, whatever carries its messages (:class:`LinkBase`).

The transports: :class:`~syft_magics.scientist.link.Link` (ZeroMQ, to a worker anywhere) and
:class:`~syft_magics.scientist.direct.DirectLink` (a worker of this process, no socket).
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..errors import SessionExpired, SyftError, WorkerRestarted, WorkerStopped, WorkerUnreachable
from ..wire import chunks, samehost
from ..wire.protocol import ErrorCode, Kind, encode
from . import transfers


def welcome_devices(welcome: dict) -> Tuple[str, ...]:
    """The device types a worker's welcome names (where ``ptr.to()`` may send tensors there), bounded."""
    devices = welcome.get("devices")
    return tuple(d for d in devices if isinstance(d, str))[:8] if isinstance(devices, list) else ("cpu",)


class LinkBase:
    """What every link to a worker does, whatever carries its messages: sequence numbers, replies
    matched to requests, errors of pipelined ops, and the link's state (closed, worker gone).

    Transports: :class:`Link` (ZeroMQ, to a worker anywhere) and
    :class:`~syft_magics.scientist.direct.DirectLink` (a worker in this process, no socket).
    The client calls ``send(parts, flush=, awaited=)``, ``wait(seq, timeout)`` and ``close()``.
    """

    lease: float
    #: whether big values travel in chunks over this link (with progress and interrupts: transfers.py)
    streams_values = False

    def __init__(self, address: str) -> None:
        self.address = address
        self.session = os.urandom(16)
        self.replies: Dict[Any, dict] = {}  # by seq (whatever the worker put there)
        #: the owner's decision on a get whose "pending" note is still unread in :attr:`replies`
        self._decided: Dict[Any, dict] = {}
        self.errors: List[dict] = []
        self.on_error: Callable[[dict], None] = lambda header: None
        self.free_queue: Deque[bytes] = deque()
        #: streamed values being received, by request (filled in as chunks arrive; wire/chunks.py)
        self.streams: Dict[Any, chunks.Incoming] = {}
        #: bytes of each streamed upload the worker holds so far, by request
        self.credits: Dict[Any, int] = {}
        #: the worker's process when it runs on this host as this user (verified at the handshake):
        #: large tensors then travel as sealed memory files (:mod:`syft_magics.wire.samehost`)
        self.host_peer: Optional[samehost.Peer] = None
        #: and the memory file our large sends travel through then
        self.pool: Optional[samehost.Pool] = None
        #: the pool regions of pipelined sends, with their seqs: free again once a later request is answered
        self.held: Deque[Tuple[int, List[int]]] = deque()
        self.broken: Optional[SyftError] = None
        #: ``broken`` while the worker is silent past the heartbeat timeout (link.py); an answer clears it
        self._lapse: Optional[WorkerUnreachable] = None
        self._unanswered_since: Optional[float] = None  # when the oldest heartbeat still unanswered left
        self.worker_name = "?"
        self.instance = ""
        self.policy = "?"
        #: the device types ``ptr.to(...)`` may name on that worker (told at the handshake)
        self.devices: Tuple[str, ...] = ("cpu",)
        self.last_pong = time.monotonic()
        self._seq = 0
        self._awaited: set = set()
        self._abandoned: set = set()
        self._closed = False

    def send(self, parts: List[Any], *, flush: bool = False, awaited: bool = False, alone: bool = False) -> None:
        raise NotImplementedError

    def wait(self, seq: int, timeout: float, tick: Optional[Callable[[], bool]] = None) -> dict:
        raise NotImplementedError

    def close(self, say_bye: bool = True) -> None:
        raise NotImplementedError

    def say(self, header: dict) -> None:
        """Send a small control message of a stream now (links that stream values)."""
        raise NotImplementedError

    def cancel(self, seq: int) -> None:
        """Stop stream ``seq`` (links that stream values)."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def last_seq(self) -> int:
        """The number of the last request or op sent (an upload's chunks take none: transfers.SHARED_SECONDS)."""
        return self._seq

    def _file(self, header: dict) -> None:
        kind = header["t"]
        seq = header.get("s")
        self.last_pong = time.monotonic()  # anything from the worker shows it is alive
        self._unanswered_since = None
        if self._lapse is not None and self.broken is self._lapse:
            self.broken = self._lapse = None  # it answers again (it was paused, or busy): the link is usable
        if kind == Kind.PONG:
            pass
        elif kind == Kind.BYE:
            self.broken = WorkerStopped(f"{self.worker_name} was stopped by its owner; "
                                        "its pointers are no longer usable")
        elif kind == Kind.ERR and header.get("code") == ErrorCode.UNKNOWN_SESSION:
            if header.get("instance") != self.instance:
                self.broken = WorkerRestarted(
                    f"{self.worker_name} at {self.address} was restarted: pointers made before the restart "
                    f"are invalid. Connect again (%syft_connect {self.worker_name}).")
            else:
                self.broken = SessionExpired(
                    f"{self.worker_name} ended this session (no heartbeat for {self.lease:g} s) and freed "
                    f"its objects. Connect again (%syft_connect {self.worker_name}).")
        elif kind in (Kind.CHUNK, Kind.CREDIT) or (kind == Kind.VALUE and header.get("z") is not None):
            if seq in self._awaited:
                transfers.receive(self, seq, header)
            elif kind == Kind.VALUE:  # a stream begun after its caller stopped waiting (Ctrl-C before it came)
                self.say({"t": Kind.CANCEL, "s": seq})
            # (else: chunks of a stream that was cancelled, dropped)
        elif seq in self._abandoned:
            pass  # e.g. the owner decided after the client's GetTimeout: the next get asks again
        elif kind == Kind.ERR and seq not in self._awaited:
            self.errors.append(header)
            self.on_error(header)
        elif self.replies.get(seq, {}).get("t") == Kind.PENDING:
            self._decided[seq] = header  # read in one go with its "pending" note: the waiter sees both, in order
        else:
            self.replies[seq] = header

    def take(self, seq: int) -> Optional[dict]:
        """The next reply to ``seq`` filed so far, or None: a "pending" note, then the owner's decision."""
        reply = self.replies.pop(seq, None)
        if reply is not None and seq in self._decided:
            self.replies[seq] = self._decided.pop(seq)
        return reply

    def hold(self, seq: int, regions: List[int]) -> None:
        """Keep the pool ``regions`` of the pipelined message ``seq`` until the worker has read them."""
        if regions:
            self.held.append((seq, regions))

    def settled(self, seq: int) -> None:
        """The reply to request ``seq`` came: the worker handled every message sent before it (in order),
        so the pool regions of earlier sends are free again."""
        held, pool = self.held, self.pool
        while held and held[0][0] < seq:
            regions = held.popleft()[1]
            if pool is not None:
                pool.release(regions)

    def expect(self, seq: int) -> None:
        """Mark ``seq`` as a request whose error reply belongs to its waiter, not the error list."""
        self._awaited.add(seq)

    def done(self, seq: int, abandoned: bool = False) -> None:
        """The caller stopped waiting for ``seq``; replies still to come for an abandoned one are dropped."""
        self._awaited.discard(seq)
        self.replies.pop(seq, None)
        self._decided.pop(seq, None)
        self.streams.pop(seq, None)
        self.credits.pop(seq, None)
        if abandoned:
            self._abandoned.add(seq)

    def free_messages(self) -> List[List[Any]]:
        """The messages that free the objects of the pointers dead so far (taken off :attr:`free_queue`)."""
        queue, messages = self.free_queue, []
        while queue:
            ids: List[bytes] = []
            while queue and len(ids) < 4096:
                ids.append(queue.popleft())
            messages.append(encode({"t": Kind.FREE, "ids": ids}))
        return messages

    def check(self) -> None:
        """Raise if the link is unusable (closed, worker stopped or restarted)."""
        if self._closed:
            raise WorkerUnreachable(f"the connection to {self.worker_name} is closed")
        if self.broken is not None:
            raise self.broken
