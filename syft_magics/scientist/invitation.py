"""Connecting with a connection file or an invitation (``connect("Bob", file="alice.json")``).

An invitation (``bob.invite("alice")``) is a connection file that holds the worker's address and
public key and the invited client's own CurveZMQ key pair and token; with it a client connects
from any machine, encrypted, as that client.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import AuthenticationError, UnknownWorker
from ..wire import discovery


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
    from .client import Client

    try:
        return Client(address, key or info.key, timeout=timeout, connection_file=info.path, curve=info.curve)
    except ValueError as exc:  # an encrypted worker's file without a key pair
        raise AuthenticationError(str(exc)) from None
