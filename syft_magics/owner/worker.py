"""A data owner's worker: serves shared tensors over ZeroMQ from a background thread.

One ROUTER socket, one serving thread. The owner's thread (the notebook) only
touches the object store (under its lock) and hands replies to the serving
thread through an outbox and an inproc wake-up socket, so the notebook stays
usable while clients compute. Each message is handled inside a guard: a
malformed or hostile message gets an error reply and never stops the worker.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import zmq

from ..config import defaults
from ..errors import InsecureBind, PortInUse
from ..events import EventStream
from ..wire import auth, discovery, limits
from ..wire.names import check_tag
from ..wire.protocol import ErrorCode, Kind
from .allowlist import Allowlist
from .devices import Devices
from .invites import LOCAL, Invitations, InviteBook
from .logs import CommandLog, JsonLinesHandler, command_logger, describe_command, print_command
from .policy import (
    GetRequest,
    Policy,
    RequestBook,
    make_policy,
)
from .quotas import ClientQuotas, Quotas
from .registry import Registry
from .serving import Server
from .sessions import Session
from .store import OWNER, Entry, ObjectStore, new_id
from .switch import switch_interval

#: Live workers of this process, so re-running a cell restarts instead of failing.
_LIVE: Dict[str, "Worker"] = {}
_LIVE_LOCK = threading.Lock()

class SharedId(str):
    """What :meth:`Worker.share` returns: the object's hex id (a ``str``), shown in a cell as what was shared."""

    _text: str

    def __new__(cls, hexid: str, text: str) -> "SharedId":
        obj = super().__new__(cls, hexid)
        obj._text = text
        return obj

    def __repr__(self) -> str:
        return f"<{self._text}>"


def live_workers() -> List["Worker"]:
    """The workers running in this process."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


class Worker(ClientQuotas, Invitations):
    """Serves the tensors its owner shares; runs allowed ops for authenticated clients.

    ``Worker("Bob", port=3000).start()`` binds ``tcp://127.0.0.1:3000`` (port 0:
    a free one) and an ``inproc://`` address for clients in the same process.

    Any other host (``"0.0.0.0"``, a network address) serves clients on other machines: the
    worker then encrypts its links with CurveZMQ and accepts only invited keys
    (:meth:`invite`, :meth:`revoke`); ``secure=True`` does the same on loopback, and
    ``secure=False`` with such a host is refused (:class:`~syft_magics.errors.InsecureBind`).
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
        quotas: Optional[Quotas] = None,
        secure: Optional[bool] = None,
        device: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a worker needs a non-empty name, e.g. 'Bob'")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (any free port) or 1-65535, not {port!r}")
        off_host = tcp and not auth.is_loopback(host)
        if off_host and secure is False:
            raise InsecureBind(
                f"refusing to serve {host} without encryption: clients on other machines would see tensors, "
                "tags and keys in clear. Drop secure=False (the worker then encrypts with CurveZMQ and admits "
                "only invited clients), or serve 127.0.0.1 and use an SSH tunnel")
        #: whether TCP links are encrypted (CurveZMQ) and admit invited keys only
        self.secure = bool(tcp and (secure or off_host))
        if self.secure:
            auth.require_curve(f"serving {host} needs encrypted links" if off_host else "secure=True needs CurveZMQ")
        #: the invited clients (encrypted workers); see :meth:`invite`
        self.invites = InviteBook()
        self._curve = auth.new_keypair() if self.secure else None
        self._gate: Optional[Any] = None
        self.name = name
        self.host = host
        self.policy = make_policy(policy)
        self.allowlist = allowlist or Allowlist()
        #: where shared, sent and moved-in tensors and models live (``device="cuda"``; the CPU by default)
        self.devices = Devices(device)
        for op_name, fn in self.devices.ops().items():  # this worker's .to() and model builder
            self.allowlist.allow(op_name, fn)
        self.key = key or auth.new_key()
        self.instance = os.urandom(8).hex()
        self.lease_timeout = lease_timeout if lease_timeout is not None else defaults.lease_timeout
        self.quotas, self._client_quotas = quotas or Quotas(), {}  # each client's limits (owner/quotas.py)
        self.events = EventStream(defaults.event_history)
        self.store = ObjectStore()
        self.requests = RequestBook()
        self.stats: Dict[str, Any] = {"commands": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0}
        self._port = port
        self._tcp = tcp
        self._write_file = connection_file
        self._ctx: Optional[zmq.Context] = None
        self._running = False
        self._conn: Optional[discovery.ConnectionInfo] = None
        self.address: Optional[str] = None
        self.inproc_address = f"inproc://syft-{self.instance}"
        self._loggers: List[Callable[[], None]] = []
        #: the serving loop and the sessions it holds
        self.server = Server(self)
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
        # per peer: replies queued for a peer that does not read are bounded (beyond, they are dropped),
        # and a peer that sends faster than the worker serves is slowed down by TCP, not buffered
        router.setsockopt(zmq.SNDHWM, limits.MAX_QUEUED_REPLIES)
        router.setsockopt(zmq.RCVHWM, limits.MAX_QUEUED_REQUESTS)
        try:
            if self._curve is not None:  # before binding: every TCP connection is then CurveZMQ + ZAP
                from .zap import DOMAIN, Gate

                self._gate = Gate(ctx, self.invites, self._refused_key, self.name, self.server.tickets.admits)
                self._gate.start()
                auth.set_server_keys(router, *self._curve, DOMAIN)
            if self._tcp:
                self._bind_tcp(router)
            router.bind(self.inproc_address)
        except BaseException:
            router.close(0)
            self._stop_gate()
            ctx.term()
            raise
        try:
            self._loggers.append(self.events.subscribe(CommandLog(self).write))  # records for any handler
            if self._verbose:
                self.set_verbose(True)
            if self._log_path:
                self.set_log(self._log_path)
        except BaseException:
            self._close_loggers()
            router.close(0)
            self._stop_gate()
            ctx.term()
            raise
        self._ctx = ctx
        self.address = f"tcp://{self._display_host()}:{self._port}" if self._tcp else self.inproc_address
        self._running = True
        switch_interval.acquire()
        self.server.start(ctx, router)
        if self._write_file and self._tcp:
            discovery.remove_stale(self.name)
            # encrypted: the file in the 0600 runtime folder is an invitation for this user on this machine
            self._conn = self._connection_info(self.address, LOCAL if self.secure else None)
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
        ended = self.server.stop(timeout)
        self._stop_gate()  # its socket belongs to the context term() waits for
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
        if ended:
            # the clients were told goodbye: free their objects and cancel their pending requests
            # (nobody can receive an approval any more); the owner's shared data stays
            self.server.end_all("worker stopped")
        switch_interval.release()
        self.events.emit("stop")
        self._close_loggers()

    def _stop_gate(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None

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
        tensor = self.place(tensor.detach())
        tags = tuple(check_tag(t) for t in tags)
        entry = self.store.put(Entry(new_id(), tensor, tags=tags, origin=OWNER))
        self.events.emit("share", id=entry.hex, tags=tags, shape=entry.shape, dtype=entry.dtype)
        return SharedId(entry.hex, f"{self.name} shares {entry.label}: id {entry.hex[:8]}…, "
                                   f"shape {tuple(entry.shape)}, {entry.dtype}")

    @property
    def device(self) -> torch.device:
        """The device this worker keeps its tensors and models on."""
        return self.devices.device

    def place(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this worker's device (as shared, sent or moved-in tensors are kept)."""
        return self.devices.place(tensor)

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
        return list(self.server.sessions.values())

    def panel(self):
        """A live ipywidgets panel of this worker: registry, commands, requests (with Approve/Deny)."""
        from ..ui.panels import WorkerPanel

        return WorkerPanel(self)

    def inspect(self, what: str):
        """The owner's card for one object (a tag such as ``"#X"``, or its hex id): its values, tags,
        who holds it, accesses, requests and lineage (:mod:`syft_magics.ui.owner_card`)."""
        from ..ui.owner_card import show

        return show(self, what)

    def approve(self, n: int) -> GetRequest:
        """Let request ``n`` through: the waiting ``.get()`` receives the value."""
        req = self.requests.decide(n, "approved")
        self.server.grant(req)
        self.events.emit("decision", n=n, status="approved")
        return req

    def deny(self, n: int, reason: str = "") -> GetRequest:
        """Refuse request ``n``: the waiting ``.get()`` raises ``PermissionDenied`` with ``reason``."""
        req = self.requests.decide(n, "denied", reason)
        self.server.post(req.session, {"t": Kind.ERR, "s": req.seq, "code": ErrorCode.DENIED, "n": n,
                                  "msg": f"{self.name} denied request #{n}" + (f": {reason}" if reason else "")})
        self.events.emit("decision", n=n, status="denied", reason=reason)
        return req

    # -- logging ---------------------------------------------------------------
    def set_verbose(self, on: bool = True) -> None:
        """Print one line per received command, as the seed tutorial did."""
        if on:
            out = sys.stdout
            self._loggers.append(self.events.subscribe(lambda e: print_command(out, self, e)))

    def set_log(self, path: str) -> None:
        """Append one JSON line per command (and per refusal) to ``path``, created 0600: a
        :class:`~.logs.JsonLinesHandler` on this worker's :func:`~.logs.command_logger`."""
        handler = JsonLinesHandler(path)
        logger = command_logger(self)
        level = logger.level
        logger.addHandler(handler)
        if level == logging.NOTSET or level > logging.INFO:
            logger.setLevel(logging.INFO)

        def close() -> None:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.close()

        self._loggers.append(close)

    def describe_command(self, event) -> str:
        return describe_command(self, event)

    def __repr__(self) -> str:
        state = f"serving at {self.address}" if self._running else "stopped"
        if self.secure:
            state += f", encrypted (key {self.fingerprint}, {len(self.invites)} invited)"
        return (f"<Worker {self.name} {state}, policy={self.policy.name}, objects={len(self.store)}, "
                f"clients={len(self.server.sessions)}>")

