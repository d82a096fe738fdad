"""``connect()``: from what a user names to a :class:`~.client.Client`: a worker's name (found through its
connection file on this machine), an address or a port, a connection file, an ``inproc://`` address or a
:class:`~syft_magics.owner.worker.Worker` of this process, or an invitation (``connect("Bob", file="alice.json")``).

An invitation (``bob.invite("alice")``) is a connection file that holds the worker's address and
public key and the invited client's own CurveZMQ key pair and token; with it a client connects
from any machine, encrypted, as that client.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import AuthenticationError, UnknownWorker, WorkerUnreachable
from ..wire import discovery
from .client import Client


def connect(target: Any = None, *, key: Optional[str] = None, timeout: Optional[float] = None,
            file: Optional[str] = None) -> Client:
    """Connect to a worker and return a :class:`Client`.
    ``target`` is a worker name (found through its connection file on this
    machine), an address (``"tcp://host:port"``, ``"host:port"`` or a port),
    a connection file path, an ``inproc://`` address or a :class:`Worker` of
    this process. ``key`` is needed only for an address with no connection file on this machine.
    ``file``: an invitation (``bob.invite``), from any machine (see :func:`connect_file`)."""
    from ..owner.worker import Worker, live_workers

    if file is not None:  # an invitation (or any connection file); an address as ``target`` overrides its own
        return connect_file(target, file, timeout)
    if isinstance(target, Worker):
        if not target.running:
            raise UnknownWorker(f"worker {target.name} is not running (call .start() first)")
        return Client(target.inproc_address, key or target.key, timeout=timeout, context=target.context,
                      worker=target)
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        target = f"tcp://127.0.0.1:{int(target)}"
    if not isinstance(target, str) or not target:
        raise TypeError("connect() takes a worker name, an address, a connection file or a Worker")
    if target.startswith("inproc://"):
        for worker in live_workers():
            if worker.inproc_address == target:
                return connect(worker, key=key, timeout=timeout)
        raise UnknownWorker(f"no worker in this process serves {target}")
    if target.endswith(".json") and os.path.isfile(target):
        return connect_file(None, target, timeout, key)
    if target.startswith("tcp://") or ":" in target:
        address = target if target.startswith("tcp://") else f"tcp://{target}"
        if key is None:
            found = discovery.find_by_address(address)
            if found is None:
                raise AuthenticationError(
                    f"no key for {address}: no worker on this machine has a connection file for it. "
                    "Pass key=... (from the worker's connection file), or connect by name.")
            return Client(address, found.key, timeout=timeout, connection_file=found.path, curve=found.curve)
        return Client(address, key, timeout=timeout)
    info = discovery.find(target)
    try:
        return Client(info.address, key or info.key, timeout=timeout, connection_file=info.path, curve=info.curve)
    except WorkerUnreachable as exc:
        raise WorkerUnreachable(f"{exc}. Its connection file {info.path} names process {info.pid}, "
                                "which is running but not answering.") from None



def connect_file(target: Any, file: str, timeout: Optional[float], key: Optional[str] = None) -> Any:
    """Connect with a connection or invitation file; an address as ``target`` replaces the file's."""
    try:
        info = discovery.read(Path(file))
    except FileNotFoundError:
        raise UnknownWorker(f"no connection file at {file}") from None
    except (OSError, ValueError) as exc:
        raise UnknownWorker(f"cannot read the connection file {file}: {exc}") from None
    address = info.address
    if isinstance(target, int) or (isinstance(target, str) and (target.isdigit() or ":" in target)):
        address = f"tcp://127.0.0.1:{int(target)}" if str(target).isdigit() else \
            str(target) if str(target).startswith("tcp://") else f"tcp://{target}"
    try:
        return Client(address, key or info.key, timeout=timeout, connection_file=info.path, curve=info.curve)
    except ValueError as exc:  # an encrypted worker's file without a key pair
        raise AuthenticationError(str(exc)) from None
