"""A data owner's worker: serves shared tensors over ZeroMQ from a background thread.

One ROUTER socket, one serving thread. The owner's thread (the notebook) only
touches the object store (under its lock) and hands replies to the serving
thread through an outbox and an inproc wake-up socket, so the notebook stays
usable while clients compute. Each message is handled inside a guard: a
malformed or hostile message gets an error reply and never stops the worker.
"""
from __future__ import annotations

import errno
import os
import socket as _socket
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import msgpack
import torch
import zmq

from . import auth, discovery
from ._logfile import describe_command, print_command
from ._session import Session
from ._sockets import readable, recv_parts, send_parts
from ._switch import switch_interval
from ._writes import written_args
from .allowlist import Allowlist, short_name
from .config import defaults
from .errors import PortInUse, ProtocolError, TagError
from .events import EventStream
from .policy import ALLOW, DENY, GetRequest, OpenPolicy, Policy, RequestBook, make_policy
from .protocol import PROTOCOL_VERSION, decode, encode, field
from .store import OWNER, Entry, ObjectStore, Registry, check_tag, new_id

#: Live workers of this process, so re-running a cell restarts instead of failing.
_LIVE: Dict[str, "Worker"] = {}
_LIVE_LOCK = threading.Lock()

class _Reject(Exception):
    """A request the worker refuses; ``code`` tells the client which error to raise."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra




def live_workers() -> List["Worker"]:
    """The workers running in this process."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


class Worker:
    """Serves the tensors its owner shares; runs allowed ops for authenticated clients.

    ``Worker("Bob", port=3000).start()`` binds ``tcp://127.0.0.1:3000`` (port 0:
    a free one) and an ``inproc://`` address for clients in the same process.
    """

    def __init__(
        self,
        name: str,
        port: int = 0,
        host: str = "127.0.0.1",
        policy: "str | Policy" = "review",
        *,
        verbose: bool = False,
        log: Optional[str] = None,
        tcp: bool = True,
        key: Optional[str] = None,
        lease_timeout: Optional[float] = None,
        allowlist: Optional[Allowlist] = None,
        connection_file: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a worker needs a non-empty name, e.g. 'Bob'")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (any free port) or 1-65535, not {port!r}")
        self.name = name
        self.host = host
        self.policy = make_policy(policy)
        self.allowlist = allowlist or Allowlist()
        self.key = key or auth.new_key()
        self.instance = os.urandom(8).hex()
        self.lease_timeout = lease_timeout if lease_timeout is not None else defaults.lease_timeout
        self.events = EventStream(defaults.event_history)
        self.store = ObjectStore()
        self.requests = RequestBook()
        self.stats = {"commands": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0}
        self._port = port
        self._tcp = tcp
        self._write_file = connection_file
        self._sessions: Dict[bytes, Session] = {}
        self._handshakes: Dict[bytes, Tuple[bytes, dict, float]] = {}
        self._grants: set = set()
        self._outbox: Deque[List[Any]] = deque()
        self._ctx: Optional[zmq.Context] = None
        self._router: Optional[zmq.Socket] = None
        self._wake_send: Optional[zmq.Socket] = None
        self._wake_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._conn: Optional[discovery.ConnectionInfo] = None
        self.address: Optional[str] = None
        self.inproc_address = f"inproc://syft-{self.instance}"
        self._loggers: List[Callable[[], None]] = []
        self._verbose = verbose
        self._log_path = log

    # -- lifecycle -----------------------------------------------------------
    @property
    def port(self) -> Optional[int]:
        """The TCP port served (known after :meth:`start`)."""
        return self._port if self._tcp else None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def context(self) -> Optional[zmq.Context]:
        """The ZeroMQ context (in-process clients must share it to use ``inproc://``)."""
        return self._ctx

    def start(self) -> "Worker":
        """Bind, write the connection file and start serving in a background thread."""
        if self._running:
            return self
        self._stop_same_port_in_process()
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 200)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.setsockopt(zmq.MAXMSGSIZE, defaults.max_message_bytes)
        router.setsockopt(zmq.SNDHWM, 0)
        router.setsockopt(zmq.RCVHWM, 0)
        try:
            if self._tcp:
                self._bind_tcp(router)
            router.bind(self.inproc_address)
        except BaseException:
            router.close(0)
            ctx.term()
            raise
        try:
            if self._verbose:
                self.set_verbose(True)
            if self._log_path:
                self.set_log(self._log_path)
        except BaseException:
            self._close_loggers()
            router.close(0)
            ctx.term()
            raise
        wake_recv = ctx.socket(zmq.PAIR)
        wake_recv.bind(f"inproc://syft-wake-{self.instance}")
        wake_send = ctx.socket(zmq.PAIR)
        wake_send.connect(f"inproc://syft-wake-{self.instance}")
        self._ctx, self._router, self._wake_send = ctx, router, wake_send
        self.address = f"tcp://{self._display_host()}:{self._port}" if self._tcp else self.inproc_address
        self._running = True
        switch_interval.acquire()
        self._thread = threading.Thread(target=self._serve, args=(router, wake_recv),
                                        name=f"syft-worker-{self.name}", daemon=True)
        self._thread.start()
        if self._write_file and self._tcp:
            discovery.remove_stale(self.name)
            self._conn = discovery.ConnectionInfo(
                name=self.name, address=self.address, key=self.key, pid=os.getpid(),
                hostname=_socket.gethostname(), instance=self.instance, policy=self.policy.name,
                protocol=PROTOCOL_VERSION, started=time.time())
            discovery.write(self._conn)
        with _LIVE_LOCK:
            _LIVE[self.instance] = self
        self.events.emit("start", address=self.address)
        return self

    def _display_host(self) -> str:
        return "127.0.0.1" if self.host in ("*", "0.0.0.0") else self.host

    def _bind_tcp(self, router: zmq.Socket) -> None:
        endpoint = f"tcp://{self.host}:{self._port or '*'}"
        deadline = time.monotonic() + 2.0
        while True:
            try:
                router.bind(endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno == errno.EADDRINUSE and self._port and time.monotonic() < deadline and self._restarting:
                    time.sleep(0.05)
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(
                        f"port {self._port} on {self.host} is already in use by another process; "
                        f"choose another port, or pass 0 (or omit it) for a free one") from None
                raise PortInUse(f"cannot bind {endpoint}: {exc}") from None
        self._port = int(router.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

    _restarting = False

    def _stop_same_port_in_process(self) -> None:
        for other in live_workers():
            if other is not self and self._tcp and self._port and other.port == self._port:
                other.stop()
                self._restarting = True

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye to clients, stop serving, free the port and remove the connection file."""
        if not self._running:
            return
        self._running = False
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._wake_lock:
            if self._wake_send is not None:
                self._wake_send.close(0)
                self._wake_send = None
        if self._ctx is not None:
            # term() waits for every socket of the context, including those of in-process clients
            # (inproc:// needs the worker's context); their links close them on the ETERM term() causes.
            # Wait in a helper thread so a client that never notices cannot hang the owner's stop().
            ctx, self._ctx = self._ctx, None
            closer = threading.Thread(target=ctx.term, name=f"syft-term-{self.name}", daemon=True)
            closer.start()
            closer.join(timeout)
        if self._conn is not None:
            discovery.remove(self._conn)
        with _LIVE_LOCK:
            _LIVE.pop(self.instance, None)
        if self._thread is None or not self._thread.is_alive():
            # the clients were told goodbye: free their objects and cancel their pending requests
            # (nobody can receive an approval any more); the owner's shared data stays
            for ident in list(self._sessions):
                self._end_session(ident, "worker stopped")
            self._handshakes.clear()
        switch_interval.release()
        self.events.emit("stop")
        self._close_loggers()

    def _close_loggers(self) -> None:
        for close in self._loggers:
            close()
        self._loggers.clear()

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connection_file(self) -> Optional[str]:
        return self._conn.path if self._conn else None

    # -- the owner's side ------------------------------------------------------
    def share(self, tensor: torch.Tensor, *tags: str) -> str:
        """Make ``tensor`` findable by clients under ``tags``; returns its id (hex).

        The worker keeps a reference, not a copy: the data stays where it is.
        Clients can compute on it and read its shape, but cannot change it, and
        its values leave only as the policy allows.
        """
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"share() takes a local torch.Tensor, not {type(tensor).__name__}")
        tensor = tensor.detach()
        tags = tuple(check_tag(t) for t in tags)
        entry = self.store.put(Entry(new_id(), tensor, tags=tags, origin=OWNER))
        self.events.emit("share", id=entry.hex, tags=tags, shape=entry.shape, dtype=entry.dtype)
        return entry.hex

    def unshare(self, id_or_tag: str) -> int:
        """Stop serving owner objects by hex id or tag; returns how many were removed."""
        if id_or_tag.startswith("#"):
            victims = [e.id for e in self.store.search((id_or_tag,))]
        else:
            victims = [e.id for e in self.store.entries() if e.hex.startswith(id_or_tag) and e.session is None]
        for oid in victims:
            self.store.remove(oid)
            self.events.emit("free", id=oid.hex(), reason="unshared")
        return len(victims)

    @property
    def objects(self) -> Registry:
        """Every object this worker holds (a snapshot): hex id -> entry."""
        return Registry(self.name, self.store.entries())

    @property
    def clients(self) -> List[Session]:
        """The authenticated client sessions now connected."""
        return list(self._sessions.values())

    def panel(self):
        """A live ipywidgets panel of this worker: registry, commands, requests (with Approve/Deny)."""
        from .panels import WorkerPanel

        return WorkerPanel(self)

    def approve(self, n: int) -> GetRequest:
        """Let request ``n`` through: the waiting ``.get()`` receives the value."""
        req = self.requests.decide(n, "approved")
        self._grants.add((req._session, req._oid))
        self._post(req._session, {"t": "approved", "s": req._seq, "n": n})
        self.events.emit("decision", n=n, status="approved")
        return req

    def deny(self, n: int, reason: str = "") -> GetRequest:
        """Refuse request ``n``: the waiting ``.get()`` raises ``PermissionDenied`` with ``reason``."""
        req = self.requests.decide(n, "denied", reason)
        self._post(req._session, {"t": "err", "s": req._seq, "code": "denied", "n": n,
                                  "msg": f"{self.name} denied request #{n}" + (f": {reason}" if reason else "")})
        self.events.emit("decision", n=n, status="denied", reason=reason)
        return req

    def _post(self, ident: bytes, header: dict) -> None:
        self._outbox.append([ident, *encode(header)])
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_send is not None:
                try:
                    self._wake_send.send(b"", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    # -- logging ---------------------------------------------------------------
    def set_verbose(self, on: bool = True) -> None:
        """Print one line per received command, as the seed tutorial did."""
        if on:
            out = sys.stdout
            self._loggers.append(self.events.subscribe(lambda e: print_command(out, self, e)))

    def set_log(self, path: str) -> None:
        """Append one JSON line per command to ``path``."""
        from ._logfile import CommandLog

        log = CommandLog(path, self)
        unsubscribe = self.events.subscribe(log.write)
        self._loggers.append(lambda: (unsubscribe(), log.close()))

    def describe_command(self, event) -> str:
        return describe_command(self, event)

    # -- serving ---------------------------------------------------------------
    def _serve(self, router: zmq.Socket, wake: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        next_check = time.monotonic() + 1.0
        try:
            while self._running:
                ready = dict(poller.poll(200))
                if router in ready:
                    for _ in range(256):
                        if not readable(router):
                            break
                        self._guarded(router, recv_parts(router))
                if wake in ready:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._outbox:
                    send_parts(router, self._outbox.popleft(), flags=0)
                now = time.monotonic()
                if now >= next_check:
                    self._expire(now)
                    next_check = now + 1.0
            for ident in list(self._sessions):
                send_parts(router, [ident, *encode({"t": "bye", "name": self.name})], flags=0)
        finally:
            router.close()
            wake.close(0)

    def _guarded(self, router: zmq.Socket, parts: List[zmq.Frame]) -> None:
        ident = parts[0].bytes
        reply = self._answer(ident, parts[1:]) if len(parts) > 1 else \
            _error_reply(ProtocolError("message has no header"))
        try:
            for one in (reply if type(reply) is _Replies else () if reply is None else (reply,)):
                send_parts(router, [ident, *one], flags=0)
        except zmq.ContextTerminated:
            raise
        except Exception:  # a reply that cannot go out is dropped; the worker serves on
            pass

    def _answer(self, ident: bytes, parts: List[Any], batched: bool = False) -> Any:
        """The reply to one message (``[header, *frames]``): its handler's, or an error; never raises."""
        try:
            return self._handle(ident, parts, batched)
        except Exception as exc:  # the worker survives anything a client sends
            return _error_reply(exc)

    def _handle(self, ident: bytes, parts: List[Any], batched: bool = False) -> Any:
        session = self._sessions.get(ident)
        if session is None:
            return self._handshake(ident, parts)
        session.last_seen = time.monotonic()
        used: List[Entry] = []
        try:
            header = decode(parts, self._resolver(session, used))
        except Exception as exc:
            # unreadable arguments (e.g. a freed input): answer with the seq, poison the op's results
            peek = _peek(parts[0])
            exc.seq = peek.get("s")
            if peek.get("t") == "op" and isinstance(peek.get("o"), list):
                self._fail(session, str(peek.get("f")), peek["o"], used, exc, time.perf_counter())
            raise
        kind = header["t"]
        if kind == "batch" and not batched:
            return self._on_batch(ident, header, parts[1:])
        seq = header.get("s")
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown message type {kind!r}")
        try:
            return handler(self, session, header, used)
        except Exception as exc:
            exc.seq = seq
            raise

    def _on_batch(self, ident: bytes, header: dict, frames: List[Any]) -> "_Replies":
        """Pipelined messages sent together: headers ``m``, and ``n``, how many of the frames are each one's."""
        heads = field(header, "m", list)
        counts = field(header, "n", list)
        if (len(heads) != len(counts) or any(type(h) is not bytes for h in heads)
                or any(type(c) is not int or c < 0 for c in counts) or sum(counts) != len(frames)):
            raise ProtocolError(f"batch of {len(heads)} messages does not match its {len(frames)} frames")
        replies = _Replies()
        i = 0
        for head, count in zip(heads, counts):
            reply = self._answer(ident, [head, *frames[i:i + count]], batched=True)
            i += count
            if reply is not None:
                replies.append(reply)
        return replies

    def _resolver(self, session: Session, used: List[Entry]) -> Callable[[bytes], Any]:
        store = self.store

        def resolve(oid: bytes) -> Any:
            entry = store.get(oid)
            if entry is None:
                raise _Reject("unknown_object", f"{self.name} holds no object {oid.hex()[:8]}… "
                                                "(it was freed, or never existed)")
            if entry.session is not None and entry.session != session.ident:
                raise _Reject("unknown_object", f"object {oid.hex()[:8]}… belongs to another client")
            if entry.error is not None:
                raise _Reject("failed_input", f"an input ({entry.label}) came from an op that failed: {entry.error}")
            used.append(entry)
            return entry.tensor

        return resolve

    # -- handshake ---------------------------------------------------------------
    def _handshake(self, ident: bytes, parts: List[zmq.Frame]) -> List[Any]:
        header = decode(parts)
        kind = header["t"]
        if kind == "hello":
            version = header.get("v")
            if version != PROTOCOL_VERSION:
                raise _Reject("version", f"{self.name} speaks protocol {PROTOCOL_VERSION}, the client {version!r}; "
                                         "install the same syft_magics version on both sides")
            nonce = auth.new_nonce()
            peer = _peer_address(parts[0])
            self._handshakes[ident] = (nonce, {**header, "peer": peer}, time.monotonic())
            return encode({"t": "challenge", "nonce": nonce, "instance": self.instance, "name": self.name})
        if kind == "auth":
            pending = self._handshakes.pop(ident, None)
            mac = header.get("mac")
            if pending is None or not isinstance(mac, bytes) or not auth.verify(self.key, pending[0], ident, mac):
                self.events.emit("auth_failed", peer=pending[1]["peer"] if pending else "?")
                raise _Reject("unauthenticated", f"{self.name} refused the link: wrong key")
            hello = pending[1]
            session = Session(ident=ident, name=str(hello.get("name") or "client"), pid=hello.get("pid"),
                              hostname=str(hello.get("hostname") or "?"), peer=hello["peer"])
            self._sessions[ident] = session
            self.events.emit("connect", client=session.label, session=session.short)
            return encode({"t": "welcome", "instance": self.instance, "name": self.name,
                           "policy": self.policy.name, "lease": self.lease_timeout})
        raise _Reject("unknown_session", f"{self.name} has no session for this link", instance=self.instance)

    def _expire(self, now: float) -> None:
        for ident, session in list(self._sessions.items()):
            if now - session.last_seen > self.lease_timeout:
                self._end_session(ident, "lease expired")
        for ident, (_, _, started) in list(self._handshakes.items()):
            if now - started > 30:
                self._handshakes.pop(ident, None)

    def _end_session(self, ident: bytes, reason: str) -> None:
        session = self._sessions.pop(ident, None)
        if session is None:
            return
        freed = self.store.drop_session(ident)
        for req in self.requests.pending:
            if req._session == ident:
                self.requests.decide(req.n, "cancelled", reason)
        self._grants = {g for g in self._grants if g[0] != ident}
        self.events.emit("disconnect", client=session.label, session=session.short, reason=reason, freed=freed)

    # -- message handlers ----------------------------------------------------------
    def _on_op(self, session: Session, header: dict, used: List[Entry]) -> Optional[List[Any]]:
        t0 = time.perf_counter()
        name = field(header, "f", str)
        args = header.get("a", ())
        kwargs = header.get("k") or {}
        out = header.get("o") or []
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not isinstance(out, list):
            raise ProtocolError("op arguments must be a list, keyword arguments a map, outputs a list")
        self.stats["commands"] += 1
        try:
            fn = self.allowlist.lookup(name)
            if fn is None:
                raise _Reject("op_not_allowed", f"{short_name(name)} is not on {self.name}'s allowlist of ops")
            if "out" in kwargs:
                raise _Reject("bad_args", "out= is not supported on pointers")
            self._check_writable(written_args(name, fn, args, kwargs), used)
            for oid in out:
                if oid is not None and (not isinstance(oid, bytes) or len(oid) != 16 or oid in self.store):
                    raise _Reject("bad_id", "result ids must be fresh 16-byte ids")
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._fail(session, name, out, used, exc, t0)
            raise
        inputs = tuple(e.id for e in used)
        op = short_name(name)
        leaves = _flatten(result)
        if header.get("m"):
            out = [new_id() if isinstance(leaf, torch.Tensor) else None for leaf in leaves]
        elif len(out) != len(leaves):
            exc = _Reject("bad_args", f"{op} returned {len(leaves)} results, the client expected {len(out)}")
            self._fail(session, name, out, used, exc, t0)
            raise exc
        made = []
        now = time.time()
        for oid, leaf in zip(out, leaves):
            if oid is not None and isinstance(leaf, torch.Tensor):
                self.store.put(Entry(oid, leaf, origin=session.label, session=session.ident, op=op, inputs=inputs,
                                     created=now, last_access=now))
                made.append(oid)
        self.events.emit("command", client=session.label, op=op, inputs=inputs, out=made,
                         duration=time.perf_counter() - t0, status="ok")
        if header.get("m"):
            return encode({"t": "ok", "s": header.get("s"), "r": _describe_result(result, iter(out))})
        return None

    def _check_writable(self, targets: List[Any], used: List[Entry]) -> None:
        for target in targets:
            if not isinstance(target, torch.Tensor):
                continue
            entry = next((e for e in used if e.tensor is target), None)
            if entry is None:
                continue
            if entry.session is None or self.store.aliases_owner_data(target):
                raise _Reject("read_only", f"{entry.label} is {self.name}'s data (or a view of it) and cannot be "
                                           "changed in place; compute on a copy instead, e.g. ptr.clone()")

    def _fail(self, session: Session, name: str, out: list, used: List[Entry],
              exc: Exception, t0: float) -> None:
        self.stats["errors"] += 1
        message = f"{short_name(name)}: {exc}"
        for oid in out:
            if isinstance(oid, bytes) and len(oid) == 16 and oid not in self.store:
                self.store.put(Entry(oid, None, origin=session.label, session=session.ident,
                                     op=short_name(name), error=message))
        self.events.emit("command", client=session.label, op=short_name(name), inputs=tuple(e.id for e in used),
                         out=[], duration=time.perf_counter() - t0, status=f"error: {exc}")

    def _on_get(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        seq = header.get("s")
        oid = field(header, "id", bytes)
        entry = self.store.get(oid)
        if entry is None or (entry.session is not None and entry.session != session.ident):
            raise _Reject("unknown_object", f"{self.name} holds no object {oid.hex()[:8]}… (it was freed, or never existed)")
        if entry.error is not None:
            raise _Reject("failed_input", f"{entry.label} came from an op that failed: {entry.error}")
        entry.last_access = time.time()
        if (session.ident, oid) in self._grants:
            self._grants.discard((session.ident, oid))
            return self._value(session, seq, entry)
        if type(self.policy).decide is OpenPolicy.decide:  # allows everything: no request to describe
            return self._value(session, seq, entry)
        req_fields = dict(client=session.label, object_id=entry.hex, shape=entry.shape, dtype=entry.dtype,
                          lineage=self.store.lineage(entry), tags=entry.tags)
        decision = self.policy.decide(GetRequest(n=0, **req_fields))
        if decision == ALLOW:
            return self._value(session, seq, entry)
        if decision == DENY:
            self.events.emit("get", client=session.label, id=entry.hex, status="denied")
            raise _Reject("denied", f"{self.name} refused to release {entry.label}: "
                                    f"{self.policy.deny_reason(GetRequest(n=0, **req_fields))}")
        for req in self.requests.pending:
            if req._session == session.ident and req._oid == oid:
                req._seq = seq
                break
        else:
            req = self.requests.open(**req_fields)
            req._session, req._oid, req._seq = session.ident, oid, seq
            self.events.emit("request", n=req.n, client=session.label, id=entry.hex, lineage=req.lineage)
        return encode({"t": "pending", "s": seq, "n": req.n, "name": self.name})

    def _value(self, session: Session, seq: Any, entry: Entry) -> List[Any]:
        self.stats["bytes_out"] += entry.nbytes
        self.events.emit("get", client=session.label, id=entry.hex, status="sent", bytes=entry.nbytes)
        tensor = entry.tensor
        if session.peer == "inproc":
            # inproc:// passes the frame's memory itself: the client would hold the store's tensor
            # (the owner's data) and could change it in place
            tensor = tensor.clone()
        return encode({"t": "value", "s": seq, "x": tensor})

    def _on_send(self, session: Session, header: dict, used: List[Entry]) -> None:
        oid = field(header, "id", bytes)
        tensor = field(header, "x", torch.Tensor)
        tags = tuple(check_tag(t) for t in header.get("tags") or ())
        if len(oid) != 16 or oid in self.store:
            raise _Reject("bad_id", "sent objects need a fresh 16-byte id")
        self.stats["bytes_in"] += tensor.numel() * tensor.element_size()
        self.store.put(Entry(oid, tensor, tags=tags, origin=session.label, session=session.ident, op=""))
        self.events.emit("command", client=session.label, op="send", inputs=(), out=[oid], duration=0.0, status="ok")
        return encode({"t": "ok", "s": header.get("s")}) if header.get("ack") else None

    def _on_search(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        tags = field(header, "tags", list)
        try:
            tags = tuple(check_tag(t) for t in tags)
        except TagError as exc:
            raise _Reject("bad_tag", str(exc)) from None
        found = self.store.search(tags)
        self.events.emit("search", client=session.label, session=session.short, tags=tags, found=len(found),
                         ids=[e.id for e in found])
        return encode({"t": "ok", "s": header.get("s"), "all_tags": self.store.all_tags(),
                       "r": [[e.id, list(e.shape), e.dtype, list(e.tags)] for e in found]})

    def _on_free(self, session: Session, header: dict, used: List[Entry]) -> None:
        ids = [i for i in field(header, "ids", list) if isinstance(i, bytes)]
        freed = self.store.free(session.ident, ids)
        if freed:
            self.events.emit("free", client=session.label, count=freed)
        return None

    def _on_sync(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        return encode({"t": "ok", "s": header.get("s")})

    def _on_ping(self, session: Session, header: dict, used: List[Entry]) -> List[Any]:
        return encode({"t": "pong", "s": header.get("s")})

    def _on_bye(self, session: Session, header: dict, used: List[Entry]) -> None:
        self._end_session(session.ident, "disconnected")
        return None

    _HANDLERS = {"op": _on_op, "get": _on_get, "send": _on_send, "search": _on_search, "free": _on_free,
                 "sync": _on_sync, "ping": _on_ping, "bye": _on_bye}

    def __repr__(self) -> str:
        state = f"serving at {self.address}" if self._running else "stopped"
        return (f"<Worker {self.name} {state}, policy={self.policy.name}, objects={len(self.store)}, "
                f"clients={len(self._sessions)}>")


class _Replies(list):
    """The replies to the messages of one batch, in order."""


def _error_reply(exc: Exception) -> List[Any]:
    """The ``err`` message for a failed message: a code the client maps to an exception, and the text."""
    code = exc.code if isinstance(exc, _Reject) else "protocol" if isinstance(exc, ProtocolError) else "error"
    extra = exc.extra if isinstance(exc, _Reject) else {}
    try:
        return encode({"t": "err", "s": getattr(exc, "seq", None), "code": code, **extra,
                       "etype": type(exc).__name__, "msg": str(exc)})
    except Exception:
        return encode({"t": "err", "s": None, "code": "error", "etype": "Exception", "msg": "unprintable error"})


def _flatten(result: Any) -> List[Any]:
    if isinstance(result, (tuple, list)):
        leaves: List[Any] = []
        for item in result:
            leaves.extend(_flatten(item))
        return leaves
    return [result]


def _describe_result(result: Any, ids) -> Any:
    """The shape of a result for a client that could not infer it (data-dependent ops)."""
    if isinstance(result, (tuple, list)):
        return ["L", type(result).__name__, [_describe_result(r, ids) for r in result]]
    oid = next(ids)
    if isinstance(result, torch.Tensor):
        return ["T", oid, list(result.shape), str(result.dtype).removeprefix("torch."), result.requires_grad]
    return ["V", None]


def _peer_address(frame: zmq.Frame) -> str:
    try:
        return frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError, TypeError):
        return "inproc"


def _peek(frame: zmq.Frame) -> dict:
    """The plain fields of a header whose arguments could not be decoded."""
    try:
        header = msgpack.unpackb(getattr(frame, "bytes", frame), ext_hook=lambda c, d: None, raw=False)
        return header if isinstance(header, dict) else {}
    except Exception:
        return {}
