"""Connection files: how a client finds a worker (and its key) by name.

Each running worker writes ``syft-worker-<name>-<port>.json`` (mode 0600) into
the Jupyter runtime directory, and removes it when it stops. A file whose
process is gone is *stale*: finding only stale files is a clear error, never a
hang. Set ``SYFT_MAGICS_RUNTIME_DIR`` to use another directory (tests do).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from jupyter_client.localinterfaces import is_local_ip
from jupyter_core.paths import secure_write

from ..errors import StaleConnectionFile, UnknownWorker
from . import auth

PREFIX = "syft-worker-"


@dataclass
class ConnectionInfo:
    """What a connection file holds (an invitation file too: the same format, with ``client`` set).

    An encrypted worker's file also holds its public key (``server_key``) and one client's
    CurveZMQ key pair; ``key`` is then that client's own token. ``repr`` hides every key.
    """

    name: str
    address: str
    key: str = field(repr=False)
    pid: int
    hostname: str
    instance: str
    policy: str
    protocol: int
    started: float
    path: Optional[str] = None
    #: the worker's CurveZMQ public key (Z85): the link is encrypted and the client needs its own keys
    server_key: Optional[str] = field(default=None, repr=False)
    #: the invitation this file carries (``local`` for the worker's own file)
    client: Optional[str] = None
    #: that client's CurveZMQ key pair (Z85)
    public_key: Optional[str] = field(default=None, repr=False)
    secret_key: Optional[str] = field(default=None, repr=False)

    @property
    def curve(self) -> Optional[auth.CurveKeys]:
        """The client's CurveZMQ keys, when the worker encrypts its links."""
        if not self.server_key:
            return None
        if not self.public_key or not self.secret_key:
            raise ValueError(f"{self.path or 'the connection file'} names an encrypted worker but holds no "
                             "client key pair; ask its owner for an invitation (bob.invite(...))")
        return auth.CurveKeys(self.server_key, self.public_key, self.secret_key)

    @property
    def alive(self) -> bool:
        """Whether the worker's process still runs (only knowable on this machine)."""
        if self.hostname != socket.gethostname():
            return True
        return pid_alive(self.pid)


def runtime_dir() -> Path:
    """Where connection files live: ``$SYFT_MAGICS_RUNTIME_DIR`` or Jupyter's runtime dir."""
    env = os.environ.get("SYFT_MAGICS_RUNTIME_DIR")
    if env:
        path = Path(env)
    else:
        from jupyter_core.paths import jupyter_runtime_dir

        path = Path(jupyter_runtime_dir())
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write(info: ConnectionInfo) -> Path:
    """Write ``info`` as a private (0600) connection file; returns its path."""
    port = info.address.rsplit(":", 1)[-1]
    return write_to(runtime_dir() / f"{PREFIX}{_safe(info.name)}-{_safe(port)}.json", info)


def write_to(path: Path, info: ConnectionInfo) -> Path:
    """Write ``info`` to ``path`` (0600, replacing it in one step); returns the path."""
    data = asdict(info)
    data.pop("path")
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with secure_write(str(tmp)) as f:  # 0600, checked, as Jupyter writes its kernels' connection files
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    info.path = str(path)
    return path


def remove(info: ConnectionInfo) -> None:
    """Remove the file written for ``info`` if it is still ours."""
    if not info.path:
        return
    try:
        current = read(Path(info.path))
        if current.instance == info.instance:
            os.unlink(info.path)
    except (OSError, ValueError):
        pass


def read(path: Path) -> ConnectionInfo:
    """Parse one connection file (``ValueError`` if it is not one)."""
    with open(path) as f:
        data = json.load(f)
    try:
        return ConnectionInfo(path=str(path), **data)
    except TypeError as exc:
        raise ValueError(f"{path} is not a syft_magics connection file: {exc}") from None


def all_files() -> List[ConnectionInfo]:
    """Every readable connection file, newest first."""
    found = []
    for path in runtime_dir().glob(f"{PREFIX}*.json"):
        try:
            found.append(read(path))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda i: i.started, reverse=True)


def find(name: str) -> ConnectionInfo:
    """The live worker called ``name`` (exact name first, then ignoring case)."""
    files = all_files()
    matches = [i for i in files if i.name == name] or [i for i in files if i.name.lower() == name.lower()]
    live = [i for i in matches if i.alive]
    if live:
        return live[0]
    if matches:
        stale = matches[0]
        raise StaleConnectionFile(
            f"worker {name!r} is not running: its connection file {stale.path} names process {stale.pid}, "
            f"which has exited (it was not stopped cleanly). Start it again with %syft_worker {name}, "
            f"or delete the file."
        )
    names = sorted({i.name for i in files if i.alive})
    others = f" Running here: {', '.join(names)}." if names else ""
    raise UnknownWorker(
        f"no worker named {name!r} is running on this machine (looked in {runtime_dir()}).{others} "
        f"Start one with %syft_worker {name}, or connect by address with a key."
    )


def find_by_name(name: str) -> Optional[ConnectionInfo]:
    """The connection file of the live worker called exactly ``name`` on this machine, if any."""
    return next((info for info in all_files() if info.name == name and info.alive), None)


def find_by_address(address: str) -> Optional[ConnectionInfo]:
    """The connection file of the live worker at ``address`` on this machine, if any."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    for info in all_files():
        ihost, _, iport = info.address.removeprefix("tcp://").rpartition(":")
        if iport == port and (ihost == host or _is_local(ihost) and _is_local(host)) and info.alive:
            return info
    return None


def _is_local(host: str) -> bool:
    """Whether ``host`` names this machine (loopback, any of its interfaces, or a bind-all address)."""
    if host in ("localhost", "*"):
        return True
    if _NUMERIC.fullmatch(host):  # (127.2, 2130706434, 0x7f000002: forms of 127.0.0.2 the resolver reads: helper-50)
        try:
            host = socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return False
    try:
        return ipaddress.ip_address(host).is_loopback or is_local_ip(host)
    except ValueError:
        return False  # a name: 127.example.com is not loopback (helper-46)


_NUMERIC = re.compile(r"[0-9A-Fa-fxX.]+")
#: A worker name a peer may give that no connection file here holds: plain characters only.
_PLAIN = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


def plain_or_known(name: str) -> bool:
    """Whether a peer may give ``name`` for a worker (a move's target or source): the exact name of a live worker
    of this machine, or a plain one (letters, digits, ``_.@+-``) that no live worker's name folds to (case, width:
    ``carol``, ``Ｃarol``). A look-alike of a known name, or one that carries text (``Carol at tcp://...``), would
    read as that worker in the owner's request (helper-50: ``Cаrol``, its ``а`` Cyrillic)."""
    names = [info.name for info in all_files() if info.alive]
    if name in names:
        return True
    folded = unicodedata.normalize("NFKC", name).casefold()
    return bool(_PLAIN.fullmatch(name)) and all(unicodedata.normalize("NFKC", n).casefold() != folded for n in names)


def remove_stale(name: str) -> None:
    """Delete connection files for ``name`` whose process is gone (a new worker takes the name)."""
    for info in all_files():
        if info.name == name and not info.alive and info.path:
            try:
                os.unlink(info.path)
            except OSError:
                pass
