"""A worker's serving loop and its message handlers, apart from the owner's API.

One ROUTER socket, one serving thread (:class:`Server`). The owner's thread never
touches the socket or the session table: what it decides (an approval, a denial)
is handed to the serving thread through :meth:`Server.call_soon` and an inproc
wake-up socket, so decisions and incoming gets are ordered on one thread. Each
message is handled inside a guard: a malformed or hostile message gets an error
reply and never stops the worker.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, NoReturn, Optional, Tuple

import zmq

from ..collector import freezer
from ..config import defaults
from ..display import short_id
from ..errors import ProtocolError, TagError
from ..wire import buffers, limits, samehost
from ..wire.names import check_tag
from ..wire.protocol import ErrorCode, Kind, decode, encode, field, peek
from ..wire.sockets import readable, recv_parts
from . import costs, fake_trace, halts, lanes, moves, quotas, releases, sends, streams, tickets, writes
from .chunk_queue import ChunkQueue
from .connections import Connections
from .direct import DirectPort
from .handshake import Handshakes
from .ops import Ops
from .policy import GetRequest
from .provenance import Disclosure, Provenance
from .replies import Reject, Replies, error_reply, forget_frames
from .sessions import Session, beat
from .store import Entry

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

#: How long a peer that said hello may take to authenticate.
HANDSHAKE_TIMEOUT = limits.HANDSHAKE_TIMEOUT


class Server(Handshakes, DirectPort, Ops):
    """Serves one worker's ROUTER socket from a background thread.

    It holds what only the serving thread may change: the sessions and the
    handshakes in progress (approvals live in the worker's request book).
    """

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.name = worker.name
        self.store = worker.store
        self.requests = worker.requests
        self.events = worker.events
        self.stats = worker.stats
        #: what may leave about results and errors (shapes, error text), and what was withheld
        self.disclosure = Disclosure(worker)
        self.sessions: Dict[bytes, Session] = {}
        #: routing id -> (nonce, hello, time, connection token) of peers that said hello
        self.handshakes: Dict[bytes, Tuple[bytes, dict, float, int]] = {}
        self.connections: Optional[Connections] = None
        #: a signed-in client's message was just answered: the next poll may spin (owner/spin.py)
        self._warm = False
        self._conn, self._cuts = 0, []  # the message's connection token; revoked connections to cut (handshake)
        self.tickets = tickets.Tickets()  # for objects moved here from other workers (owner/tickets.py)
        self._calls: Deque[Callable[[zmq.Socket], None]] = deque()
        self._wake_send: Optional[zmq.Socket] = None
        self._wake_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._init_direct()

    # -- the owner's thread ------------------------------------------------------
    def start(self, ctx: zmq.Context, router: zmq.Socket) -> None:
        """Serve ``router`` from a new thread until :meth:`stop`."""
        address = f"inproc://syft-wake-{self.worker.instance}"
        wake_recv = ctx.socket(zmq.PAIR)
        wake_recv.bind(address)
        wake_send = ctx.socket(zmq.PAIR)
        wake_send.connect(address)
        self._wake_send = wake_send
        self._running = True
        freezer.acquire([writes.warm_up(), costs.warm_up(), fake_trace.warm_up()])
        self._thread = threading.Thread(target=self._serve, args=(router, wake_recv),
                                        name=f"syft-worker-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Say goodbye to clients and stop; True if the serving thread has ended."""
        self._running = False
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._wake_lock:
            if self._wake_send is not None:
                self._wake_send.close(0)
                self._wake_send = None
                freezer.release()
        return self._thread is None or not self._thread.is_alive()

    def end_all(self, reason: str) -> None:
        """End every session (the serving thread has stopped)."""
        for ident in list(self.sessions):
            self._end_session(ident, reason)
        self.handshakes.clear()

    def call_soon(self, fn: Callable[[zmq.Socket], None]) -> None:
        """Run ``fn(router)`` on the serving thread, in order with the messages it handles."""
        self._calls.append(fn)
        self._wake()

    def post(self, ident: bytes, header: dict) -> None:
        """Send ``header`` to the client ``ident`` from the serving thread."""
        self.call_soon(lambda router: self.to(router, ident, encode(header)))

    def grant(self, req: GetRequest) -> None:
        """Tell ``req``'s client that the owner approved (from the owner's thread; the request book
        already lets its next get through): its waiting ``.get()`` asks again."""

        def tell(router: zmq.Socket) -> None:
            if req.session in self.sessions:
                self.to(router, req.session, encode({"t": Kind.APPROVED, "s": req.seq, "n": req.n}))

        self.call_soon(tell)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_send is not None:
                try:
                    self._wake_send.send(b"", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    # -- the serving thread ----------------------------------------------------------
    def _serve(self, router: zmq.Socket, wake: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        conns = self.connections = Connections(router, self._connection_closed, self.bound_tokens,
                                               lambda: self.refuse("connection without a session"))
        if conns.socket is not None:
            poller.register(conns.socket, zmq.POLLIN)
        next_check = time.monotonic() + 1.0
        chunks = ChunkQueue()  # upload chunks served after the messages behind them (see .chunk_queue)
        self.lock.acquire()  # held while serving, let go while waiting (links of this process: direct.py)
        try:
            while self._running:
                # (after a client's message, another is likely soon: a spin answers it warm, see owner/spin.py)
                ready = self.poll_unlocked(poller, 0 if chunks else 200, defaults.spin_seconds if self._warm else 0.0)
                self._warm = False
                if router in ready:
                    for i in range(256):
                        if i and not readable(router):  # (the first: the poll just said so)
                            break
                        while self._calls:  # the owner's decisions first: one made before a get arrived applies to it
                            self._calls.popleft()(router)
                        if not self._running:
                            break
                        conns.poll_events()
                        try:
                            parts = recv_parts(router)
                        except zmq.Again:  # (a readiness without a message)
                            break
                        if not chunks.set_aside(self, router, parts):
                            self._guarded(router, parts)
                            if chunks.passed():
                                chunks.serve_one(self, router)
                if chunks and not readable(router):
                    chunks.serve_one(self, router)  # (one, then the socket again: a message may have come)
                conns.poll_events()
                if conns.closing and not readable(router):  # (their messages read first)
                    conns.end_closed()
                if wake in ready:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._calls:
                    self._calls.popleft()(router)
                now = time.monotonic()
                if now >= next_check:
                    conns.end_closed()
                    conns.cut_unbound(now)
                    self._expire(now)
                    beat(router, self.sessions)
                    next_check = now + 1.0
            for ident in list(self.sessions):
                self.to(router, ident, encode({"t": Kind.BYE, "name": self.name}))
        except Exception:
            log.exception("the serving loop of worker %s stopped", self.name)
            raise
        finally:
            self.lock.release()
            conns.close()
            router.close()
            wake.close(0)

    def _guarded(self, router: zmq.Socket, parts: List[zmq.Frame], token: Optional[int] = None) -> None:
        """Answer one message received on the socket (``token``: its connection's, if known already)."""
        ident = parts[0].bytes
        if token is None:
            token = self.connections.token(parts[-1]) if self.connections is not None else 0
        self._conn = token
        reply = self._answer(ident, parts[1:]) if len(parts) > 1 else \
            error_reply(ProtocolError("message has no header"))
        self._send_replies(router, ident, reply)
        # (a spin follows a message of a signed-in client only: a stranger's would keep a CPU busy for free)
        session = self.sessions.get(ident)
        self._warm = self._warm or (session is not None and session.conn == token)

    def _drain(self, session: Session, router: zmq.Socket) -> None:
        """Serve, in order, the messages that waited behind a client's background op, until another
        one goes to the background or none is left."""
        lane = session.lane
        while lane.backlog and not lane.busy:
            if self.sessions.get(session.ident) is not session:
                lane.backlog.clear()
                return
            self._conn, parts, batched = lane.backlog.popleft()
            if batched is None:  # (a message refused when the queue was full: its turn, it stops what follows)
                lane.stop_marked = False
                halts.stop(session, parts)
                continue
            after = list(lane.backlog) if lane.backlog and lanes.is_goodbye(parts) else ()
            self._send_replies(router, session.ident, self._answer(session.ident, parts, batched, queued=True))
            if after and self.sessions.get(session.ident) is not session:
                for self._conn, parts, batched in after:  # sent after its goodbye: answered as a stranger's are
                    if batched is not None:
                        self._send_replies(router, session.ident, self._answer(session.ident, parts, batched))

    def _send_replies(self, router: zmq.Socket, ident: bytes, reply: Any) -> None:
        try:
            for one in (reply if type(reply) is Replies else () if reply is None else (reply,)):
                self.to(router, ident, one)
        except zmq.ContextTerminated:
            raise
        except Exception:  # a reply that cannot go out is dropped; the worker serves on
            log.warning("worker %s dropped a reply to %s", self.name, ident.hex()[:8], exc_info=True)

    def _answer(self, ident: bytes, parts: List[Any], batched: bool = False, queued: bool = False) -> Any:
        """The reply to one message (``[header, *frames]``): its handler's, or an error; never raises.
        ``queued``: it waited in its client's lane (or came in a batch that did), and is served now."""
        try:
            return self._handle(ident, parts, batched, queued)
        except Exception as exc:  # the worker survives anything a client sends
            if log.isEnabledFor(logging.DEBUG):
                log.debug("worker %s answers %s with an error", self.name, ident.hex()[:8], exc_info=True)
            reply = error_reply(exc)
            forget_frames(exc)
            return reply

    def _handle(self, ident: bytes, parts: List[Any], batched: bool = False, queued: bool = False) -> Any:
        session = self.sessions.get(ident)
        if session is None or session.conn != self._conn:
            # a session is served only on the connection that authenticated it: the routing id
            # alone (chosen by the peer, sent in clear) proves nothing
            return self._handshake(ident, parts, taken=session is not None)
        if not session.gone:
            session.last_seen = time.monotonic()
        try:
            return self._served(session, parts, batched, queued)
        except Exception:
            halts.stop(session, parts)  # (a pipelined op or send that failed: the client's later ones wait)
            raise

    def _served(self, session: Session, parts: List[Any], batched: bool, queued: bool) -> Any:
        """:meth:`_handle`'s, for a message of a signed-in client on its own connection."""
        if not batched:
            size = len(parts[0]) if len(parts) == 1 else sum(len(p) for p in parts)
            if size > int(session.quotas.max_message_bytes):
                self.refuse("message over a quota")
                self._refused_message(session, parts, lambda: quotas.check_message(session.quotas, session.label,
                                                                                   size))
        if not queued and session.lane.holds():
            return lanes.wait(self, session, parts, batched)
        if session.halted is not None and halts.check(self, session, parts):
            return None  # (not run: an earlier op of its client failed, and the client was not told yet)
        used: List[Entry] = []
        try:
            header = decode(parts, self._resolver(session, used), session.host_peer)
        except Exception as exc:
            if isinstance(exc, ProtocolError):
                self.refuse("malformed message")
            # unreadable arguments (e.g. a freed input): answer with the seq, poison the op's results
            self._answers_message(session, parts, exc, used)
        kind = header["t"]
        if kind == Kind.BATCH and not batched:
            return self._on_batch(session, header, parts[1:])
        seq = header.get("s")
        handler = self.HANDLERS.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown message type {kind!r}")
        try:
            return handler(self, session, header, used)
        except Exception as exc:
            setattr(exc, "seq", seq)
            raise

    def _refused_message(self, session: Session, parts: List[Any], check: Callable[[], None]) -> None:
        """Raise the refusal ``check`` raises, as the answer to the message ``parts``."""
        try:
            check()
        except Exception as exc:
            self._answers_message(session, parts, exc, [])

    def _answers_message(self, session: Session, parts: List[Any], exc: Exception, used: List[Entry]) -> NoReturn:
        """Raise ``exc`` as the answer to the message ``parts`` (read or not): it names the message's
        request (any exception: the reply carries its seq), and an op's results exist, failed with it."""
        head = peek(parts[0])
        setattr(exc, "seq", head.get("s"))
        if head.get("t") == Kind.OP and isinstance(head.get("o"), list):
            self._fail(session, str(head.get("f")), head["o"], used, exc, time.perf_counter(), Provenance())
        raise exc

    def _on_batch(self, session: Session, header: dict, frames: List[Any]) -> "Replies":
        """Pipelined messages sent together: headers ``m``, and ``n``, how many of the frames are each one's."""
        heads = field(header, "m", list)
        counts = field(header, "n", list)
        if (len(heads) != len(counts) or any(type(h) is not bytes for h in heads)
                or any(type(c) is not int or c < 0 for c in counts) or sum(counts) != len(frames)):
            raise ProtocolError(f"batch of {len(heads)} messages does not match its {len(frames)} frames")
        replies = Replies()
        i = 0
        for n, (head, count) in enumerate(zip(heads, counts)):
            if session.lane.busy:  # an op went to the background: the rest waits behind it, first in line
                tail, j = [], i
                for h, c in zip(heads[n:], counts[n:]):
                    tail.append([h, *frames[j:j + c]])
                    j += c
                room = max(0, session.quotas.max_queued - len(session.lane.backlog))
                for parts in tail[room:]:  # (as many as max_queued wait, as for messages sent one by one)
                    replies.append(lanes.queue_full(self, session, parts))
                for parts in reversed(tail[:room]):
                    session.lane.defer(self._conn, parts, True, front=True)
                break
            reply = self._answer(session.ident, [head, *frames[i:i + count]], batched=True, queued=True)
            i += count
            if reply is not None:  # (a stream's start is several replies)
                replies.extend(reply) if type(reply) is Replies else replies.append(reply)
        return replies

    def _resolver(self, session: Session, used: List[Entry]) -> Callable[[bytes], Any]:
        store = self.store

        def resolve(oid: bytes) -> Any:
            entry = store.get(oid)
            if entry is None:
                raise Reject(ErrorCode.UNKNOWN_OBJECT, f"{self.name} holds no object {short_id(oid)} "
                                                "(it was freed, or never existed)")
            if entry.session is not None and entry.session != session.ident:
                # another client's object reads exactly as one that does not exist
                raise Reject(ErrorCode.UNKNOWN_OBJECT, f"{self.name} holds no object {oid.hex()[:8]}… "
                                                        "(it was freed, or never existed)")
            if entry.error is not None:
                raise Reject(ErrorCode.FAILED_INPUT,
                              f"an input ({entry.label}) came from an op that failed: {entry.error}")
            used.append(entry)
            return entry.tensor

        return resolve

    def _expire(self, now: float) -> None:
        self.cut_due(now)
        for ident, session in list(self.sessions.items()):
            if now - session.last_seen > self.worker.lease_timeout:
                self._end_session(ident, "lease expired")
            else:
                session.expire(now)
        for ident, pending in list(self.handshakes.items()):
            if now - pending[2] > HANDSHAKE_TIMEOUT:
                self.handshakes.pop(ident, None)
        buffers.trim()

    def _connection_closed(self, token: int) -> None:
        """A TCP connection closed: its session ends (a new connection must authenticate anew), once the
        messages it sent before its goodbye have run, if they wait behind an op (a script's last ops)."""
        for ident, session in list(self.sessions.items()):
            if session.conn == token:
                # (messages that wait behind its background op were sent before the close: a script's last ops,
                # its goodbye, which ZeroMQ may hand over after the close is reported: they run first)
                if not session.lane.holds():
                    self._end_session(ident, "connection closed")
                else:  # its lease runs from its last message: what it queued has that long (a probe kept one 50 s)
                    session.gone = True
        for ident, pending in list(self.handshakes.items()):
            if pending[3] == token:
                self.handshakes.pop(ident, None)

    def refuse(self, reason: str) -> None:
        """Count a refused message by reason (shown in the owner's panel and log)."""
        self.stats["refused"] = self.stats.get("refused", 0) + 1
        by_reason = self.stats.setdefault("refusals", {})
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self.events.emit("refused", reason=reason)

    def _end_session(self, ident: bytes, reason: str) -> None:
        session = self.sessions.pop(ident, None)
        if session is None:
            return
        session.lane.backlog.clear()  # an op running in the background is left to end; its results are dropped
        session.lane.close()
        freed = self.store.drop_session(ident)
        self.requests.end_session(ident, reason)
        session.close_files()
        buffers.trim(everything=True, key=ident)  # (memory kept for its receives)
        self.events.emit("disconnect", client=session.label, session=session.short, reason=reason, freed=freed)

    # -- message handlers ----------------------------------------------------------
    def _on_get(self, session: Session, header: dict, used: List[Entry]) -> Optional[List[Any]]:
        return releases.on_get(self, session, header)

    def _on_search(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        tags = field(header, "tags", list)
        if len(tags) > limits.MAX_TAGS:
            raise Reject(ErrorCode.BAD_TAG, f"a search takes at most {limits.MAX_TAGS} tags")
        try:
            tags = tuple(check_tag(t) for t in tags)
        except TagError as exc:
            raise Reject(ErrorCode.BAD_TAG, str(exc)) from None
        found = self.store.search(tags)
        self.events.emit("search", client=session.label, session=session.short, tags=tags, found=len(found),
                         ids=[e.id for e in found])
        return encode({"t": Kind.OK, "s": header.get("s"), "all_tags": self.store.all_tags(owner_only=True),
                       "r": [[e.id, list(e.shape), e.dtype, list(e.tags)] for e in found]})

    def _on_free(self, session: Session, header: dict, used: List[Entry]) -> None:
        ids = [i for i in field(header, "ids", list) if isinstance(i, bytes)]
        freed = self.store.free(session.ident, ids)
        session.streams.end_downloads_of(ids)
        if freed:
            self.events.emit("free", client=session.label, count=freed)
        return None

    def _on_sync(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        return encode({"t": Kind.OK, "s": header.get("s")})

    def _on_ping(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        return encode({"t": Kind.PONG, "s": header.get("s")})

    def _on_release(self, session: Session, header: dict, used: List[Entry]) -> None:
        """The client has read these values out of our pool: their regions are free again."""
        if session.pool is not None:
            session.pool.release(field(header, "i", list)[:samehost.MAX_REGIONS])
        return None

    def _on_told(self, session: Session, header: dict, used: List[Entry]) -> None:
        halts.told(session, header)
        return None

    def _on_bye(self, session: Session, header: dict, used: List[Entry]) -> None:
        self._end_session(session.ident, "disconnected")
        return None

    #: the handler of each kind of message a client sends after the handshake (``batch`` aside)
    HANDLERS = {Kind.OP: Ops._on_op, Kind.GET: _on_get, Kind.SEND: sends.on_send, Kind.SEARCH: _on_search,
                Kind.FREE: _on_free, Kind.SYNC: _on_sync, Kind.TOLD: _on_told, Kind.PING: _on_ping, Kind.BYE: _on_bye,
                Kind.HOST: Handshakes.on_host, Kind.RELEASE: _on_release, **streams.HANDLERS,
                Kind.TICKET: tickets.on_ticket, Kind.MOVE: moves.on_move}
