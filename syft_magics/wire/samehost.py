"""The same-host tensor path: large tensors through a shared memory file instead of TCP.

When a client and its worker run on one machine as one user, a tensor of at least
:data:`SHARED_MIN_BYTES` (and at most :data:`POOL_MAX_BYTES`) travels through the sender's
**pool**: an anonymous memory file (``memfd``) that the sender keeps for the link and reuses.
The sender writes the tensor's bytes into a free region of its pool with ``pwrite`` and names
the region in the message; the receiver, which opened the pool once through
``/proc/<sender pid>/fd/<n>``, reads them straight into a tensor of its own with ``preadv``
and tells the sender the region is free again. Two copies and no socket, against the kernel's
copies plus ZeroMQ's framing on loopback TCP.

What it keeps of the TCP path's guarantees:

- **Detected, never assumed.** After authentication each side proves it can open the other's
  memory files: the worker writes the client's nonce into a memory file and the client reads it
  back through ``/proc``; then the client does the same with the worker's nonce
  (:func:`make_probe`, :func:`check_probe`). Across hosts, users or PID namespaces a probe fails
  and the TCP path is used. The peer's pid is the verified probe's, never a later message's.
- **The caller may change a sent tensor at once; a received tensor is the receiver's own.** The
  bytes are copied into the pool before ``send`` returns, and out of it into fresh memory on the
  other side: neither process ever maps the other's memory.
- **Only the peer uses it.** A memfd has no name; ``/proc/<pid>/fd`` opens only for processes
  allowed to inspect the sender (the same user, who can read the connection file and its key
  anyway). A pool holds only bytes its owner chose to send.
- **Nothing left behind.** A memfd is freed with its last descriptor: a killed sender or
  receiver leaves nothing in ``/dev/shm`` or anywhere else.
- **Memory.** Nobody maps a pool, so it is not part of either process's resident set; it holds
  at most :data:`POOL_MAX_BYTES` per link direction while the link lives (kept for reuse: fresh
  shared pages cost more to allocate than the copy itself).
- **Bounded, never blocking.** A receiver reads at most :data:`POOL_MAX_BYTES` per tensor and
  checks every length; a sender with no free region sends the tensor by TCP instead of waiting.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import ProtocolError

#: Tensors at least this large take the same-host path where it is available.
SHARED_MIN_BYTES = 1 << 20
#: A pool grows to at most this size; larger tensors go by TCP (zero-copy there).
POOL_MAX_BYTES = 64 << 20
#: A region the receiver has not freed after this long is reclaimed (the receiver read it, or is gone).
HOLD_SECONDS = 120.0
#: At most this many regions of one pool are in flight.
MAX_REGIONS = 64

_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "memfd_create") and hasattr(os, "preadv")


def available() -> bool:
    """Whether this process can use the same-host path at all (Linux with memfd)."""
    return _AVAILABLE


class SameHostError(ProtocolError):
    """A same-host tensor could not be read as announced (the sender is gone, or the reference is bad)."""


def _open_peer_file(pid: int, fd: int, ino: int) -> int:
    """Our own descriptor for the peer's file ``fd`` (which must have inode ``ino``)."""
    if not (type(pid) is int and type(fd) is int and type(ino) is int and pid > 0 and 0 <= fd < 1 << 31):
        raise SameHostError(f"bad same-host file reference ({pid!r}, {fd!r}, {ino!r})")
    try:
        own = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SameHostError(f"the peer's memory file is gone ({exc.strerror})") from None
    st = os.fstat(own)
    if not stat.S_ISREG(st.st_mode) or st.st_ino != ino:
        os.close(own)
        raise SameHostError("the peer's memory file is not the one announced")
    return own


def _read_exact(fd: int, buffer: Any, offset: int) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < view.nbytes:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise SameHostError("the peer's memory file is shorter than announced")
        done += n


class Pool:
    """The sender's memory file for one link direction, and which regions of it are in flight."""

    def __init__(self) -> None:
        self.fd = -1
        self.ino = 0
        self.size = 0
        self._regions: Dict[int, Tuple[int, float]] = {}  # offset -> (length, when written)
        #: the offsets written since the caller last cleared it (the regions of one message)
        self.written: List[int] = []

    def put(self, data: Any) -> Optional[Tuple[int, int, int]]:
        """Copy ``data`` (a buffer) into a free region; ``(fd, inode, offset)`` to name it, or None if full."""
        view = memoryview(data).cast("B")
        nbytes = view.nbytes
        if not SHARED_MIN_BYTES <= nbytes <= POOL_MAX_BYTES or len(self._regions) >= MAX_REGIONS:
            return None
        offset = self._free_offset(nbytes)
        if offset is None:
            return None
        if self.fd < 0:
            self.fd = os.memfd_create("syft-pool", os.MFD_CLOEXEC)
            self.ino = os.fstat(self.fd).st_ino
        if offset + nbytes > self.size:
            os.ftruncate(self.fd, offset + nbytes)
            self.size = offset + nbytes
        done = 0
        while done < nbytes:
            done += os.pwrite(self.fd, view[done:], offset + done)
        self._regions[offset] = (nbytes, time.monotonic())
        self.written.append(offset)
        return self.fd, self.ino, offset

    def _free_offset(self, nbytes: int) -> Optional[int]:
        """The lowest offset where ``nbytes`` fit between the regions in flight, within the maximum size."""
        at = 0
        for start in sorted(self._regions):
            if start - at >= nbytes:
                return at
            at = max(at, start + self._regions[start][0])
        return at if at + nbytes <= POOL_MAX_BYTES else None

    def release(self, offsets: Sequence[Any]) -> int:
        """The receiver has read these regions; returns how many were in flight (others are ignored)."""
        return sum(self._regions.pop(o, None) is not None for o in offsets if type(o) is int)

    def expire(self, now: float) -> None:
        for offset, (_, written) in list(self._regions.items()):
            if now - written > HOLD_SECONDS:
                del self._regions[offset]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.ino, self.size = -1, 0, 0
        self._regions.clear()

    def __len__(self) -> int:
        return len(self._regions)


class Peer:
    """The receiving end for one verified peer process: reads its pool, remembers what to free."""

    def __init__(self, pid: int, confirm: bool = True) -> None:
        self.pid = pid
        self.confirm = confirm
        self.read: List[int] = []  # offsets read, to tell the sender (when ``confirm``)
        self._files: Dict[int, int] = {}  # the peer's inode -> our descriptor

    def take(self, fd: int, ino: int, offset: int, dtype: torch.dtype, shape: List[int]) -> torch.Tensor:
        """A new tensor of ours holding the bytes at ``offset`` of the peer's pool ``fd``."""
        numel = 1
        for n in shape:
            numel *= n
        nbytes = numel * dtype.itemsize
        if not (type(offset) is int and 0 <= offset and 0 < nbytes <= POOL_MAX_BYTES):
            raise SameHostError(f"bad same-host tensor ({nbytes} bytes at offset {offset!r})")
        own = self._files.get(ino)
        if own is None:
            own = _open_peer_file(self.pid, fd, ino)
            for old in self._files.values():  # one pool per peer: a new inode replaces the old one
                os.close(old)
            self._files = {ino: own}
        tensor = torch.empty(shape, dtype=dtype)
        _read_exact(own, tensor.view(torch.uint8).reshape(-1).numpy(), offset)
        if self.confirm:
            self.read.append(offset)
        return tensor

    def take_read(self) -> List[int]:
        read, self.read = self.read, []
        return read

    def close(self) -> None:
        for own in self._files.values():
            os.close(own)
        self._files.clear()


# -- the handshake probe ---------------------------------------------------------------------------
def make_probe(nonce: bytes) -> Tuple[int, List[int]]:
    """A memory file holding the peer's ``nonce``: ``(descriptor to close later, [pid, fd, inode])`` to announce."""
    fd = os.memfd_create("syft-probe", os.MFD_CLOEXEC)
    os.pwrite(fd, nonce, 0)
    return fd, [os.getpid(), fd, os.fstat(fd).st_ino]


def check_probe(probe: Any, nonce: bytes) -> Optional[int]:
    """The peer's pid if its announced ``probe`` holds our ``nonce`` (so it runs here, as us), else None."""
    if not _AVAILABLE or not isinstance(probe, list) or len(probe) != 3:
        return None
    pid, fd, ino = probe
    try:
        own = _open_peer_file(pid, fd, ino)
    except SameHostError:
        return None
    try:
        got = bytearray(len(nonce))
        _read_exact(own, got, 0)
        return pid if bytes(got) == nonce else None
    except (SameHostError, OSError):
        return None
    finally:
        os.close(own)
