"""The same-host tensor path: large tensors out of the other process's memory instead of through TCP.

When a client and its worker run on one machine as one user, a tensor of at least
:data:`SHARED_MIN_BYTES` (and at most :data:`POOL_MAX_BYTES`) takes one of two ways:

- **Lent** (one copy), where the receiver proved at the handshake that it may read the sender's
  memory (the kernel's ``process_vm_readv``, allowed between processes of one user unless ptrace
  rules such as Yama's ``ptrace_scope`` forbid it): the sender names the tensor's address in the
  message and keeps the buffer alive; the receiver copies the bytes straight into a tensor of its
  own and tells the sender it is done (riding its next message, or the acknowledgement of a send).
- **Through the sender's pool** (two copies) otherwise: an anonymous memory file (``memfd``) that
  the sender keeps for the link and reuses. The sender writes the tensor's bytes into a free region
  with ``pwrite`` and names the region in the message; the receiver, which opened the pool once
  through ``/proc/<sender pid>/fd/<n>``, reads them into a tensor of its own with ``preadv`` and
  frees the region the same way.

Both skip the socket, the kernel's copies on loopback TCP and ZeroMQ's framing.

What it keeps of the TCP path's guarantees:

- **Detected, never assumed.** After authentication each side proves it can open the other's
  memory files: the worker writes a proof into a memory file and the client reads it back through
  ``/proc``; then the client does the same (:func:`make_probe`, :func:`check_probe`). A proof is an
  HMAC with the link's key over both nonces of this handshake, the writer's role and pid and the
  reader's pid (:func:`probe_proof`): no other session's probe, nor a probe of either side read as
  the other's, nor this process itself, passes (:func:`_not_us`). The same proof, kept in the
  prober's memory, shows whether the peer may also read that memory (:func:`can_read_memory`): only
  then does the prober lend. Across hosts, users or PID namespaces a probe fails and the TCP path is
  used. The peer's pid is the verified probe's, never a later message's.
- **No wider access than before.** Reading another process's memory needs the same permission
  as opening its files through ``/proc`` (ptrace's read mode, i.e. the same user): a peer that may
  lend has that access already; a sender lends only the buffer it would otherwise have sent.
- **The caller may change a sent tensor at once; a received tensor is the receiver's own.** A send
  under 8 MiB is pipelined like a TCP send of that size: its bytes are copied into the pool (never
  lent) and the region is freed once a later request is answered (the worker handles a client's
  messages in order). A larger send returns once the worker acknowledges it has read the bytes
  (lent, or from the pool), as a zero-copy TCP send does. The receiver always copies into fresh
  memory of its own: neither process ever maps the other's memory.
- **Only the peer uses it.** A memfd has no name; ``/proc/<pid>/fd`` opens only for processes
  allowed to inspect the sender (the same user, who can read the connection file and its key
  anyway). A pool holds only bytes its owner chose to send.
- **Only our memory files, of a process of our user.** Opening ``/proc/<pid>/fd/<n>`` succeeds for
  anyone allowed to inspect that process, which for a worker running as root (or with
  ``CAP_SYS_PTRACE``) is every process. So a file is read only if the process named runs as this
  process's user (every uid in ``/proc/<pid>/status``), the file is one of our memory files
  (``memfd:syft-…``) owned by this user, and its inode is the one announced. Without that, an
  authenticated client of a root worker could prove "same host" with any file of another user's
  process that it can write (say a world-writable file held open there), then name that
  process's other files, or any address of its memory (the lent path), in its sends and receive
  their bytes as its own objects.
- **Nothing left behind.** A memfd is freed with its last descriptor: a killed sender or
  receiver leaves nothing in ``/dev/shm`` or anywhere else.
- **Memory.** Nobody maps a pool, so it is not part of either process's resident set; it holds
  at most :data:`POOL_MAX_BYTES` per link direction while the link lives (kept for reuse: fresh
  shared pages cost more to allocate than the copy itself). A lent buffer is held until the
  reader's release arrives (with its next message) or for :data:`HOLD_SECONDS` at most.
- **Bounded, never blocking.** A receiver reads at most :data:`POOL_MAX_BYTES` per tensor and
  checks every length; a sender with no free region sends the tensor by TCP instead of waiting.
"""
from __future__ import annotations

import ctypes
import os
import stat
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import ProtocolError
from . import auth, buffers

#: Tensors at least this large take the same-host path where it is available.
SHARED_MIN_BYTES = 1 << 20
#: A pool grows to at most this size; larger tensors go by TCP (zero-copy there).
POOL_MAX_BYTES = 64 << 20
#: A region the receiver has not freed after this long is reclaimed (the receiver read it, or is gone).
HOLD_SECONDS = 120.0
#: A handshake probe its peer has not answered within this long (s) is closed (a peer that declines says so at once).
PROBE_SECONDS = 10.0
#: At most this many regions of one pool are in flight.
MAX_REGIONS = 64

_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "memfd_create") and hasattr(os, "preadv")
#: The first field of a reference to lent memory (a pool reference's first field is a descriptor, >= 0).
LENT = -1


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _libc_readv() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                   ctypes.c_ulong]
    return fn


_process_vm_readv = _libc_readv() if _AVAILABLE else None


def available() -> bool:
    """Whether this process can use the same-host path at all (Linux with memfd)."""
    return _AVAILABLE


class SameHostError(ProtocolError):
    """A same-host tensor could not be read as announced (the sender is gone, or the reference is bad)."""


def _open_peer_file(pid: int, fd: int, ino: int) -> int:
    """Our own descriptor for the peer's file ``fd``: one of our memory files (``memfd:syft-…``), of inode
    ``ino``, owned by our user, held by a process of our user (see the module's doc for why)."""
    if not (type(pid) is int and type(fd) is int and type(ino) is int and 0 < pid < 1 << 31
            and 0 <= fd < 1 << 31):
        raise SameHostError(f"bad same-host file reference ({pid!r}, {fd!r}, {ino!r})")
    _not_us(pid)
    if not _runs_as_us(pid):
        raise SameHostError("the peer process does not run as this user")
    try:
        own = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SameHostError(f"the peer's memory file is gone ({exc.strerror})") from None
    try:
        st = os.fstat(own)
        name = os.readlink(f"/proc/self/fd/{own}")  # what we opened, not what the peer's table holds now
    except OSError:
        st, name = None, ""
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_ino != ino or st.st_uid != os.geteuid() \
            or not name.startswith(_MEMFD_PREFIX):
        os.close(own)
        raise SameHostError("the peer's memory file is not the one announced")
    return own


#: How our memory files read in ``/proc/*/fd`` (``memfd_create("syft-pool")`` and ``("syft-probe")``).
_MEMFD_PREFIX = "/memfd:syft-"


#: Whether a peer may be this very process (tests of the path's mechanics only: see :func:`_not_us`).
_SELF_PEER = False


def _not_us(pid: int) -> None:
    """Refuse this process as a peer: a client in a worker's process talks to it directly, and a worker that took
    itself for its peer would copy any address of its own memory, or its own memory files, into a client's objects
    (helper-54: a remote client read ``#X`` so, with no request)."""
    if pid == os.getpid() and not _SELF_PEER:
        raise SameHostError("a same-host peer is another process, never this one")


def _runs_as_us(pid: int) -> bool:
    """Whether every uid of process ``pid`` (real, effective, saved, filesystem) is our effective uid."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return all(int(uid) == os.geteuid() for uid in line.split()[1:])
    except (OSError, ValueError):
        return False
    return False


def _read_exact(fd: int, buffer: Any, offset: int) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < view.nbytes:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise SameHostError("the peer's memory file is shorter than announced")
        done += n


def _read_memory(pid: int, address: int, buffer: Any) -> None:
    """Copy ``len(buffer)`` bytes at ``address`` in process ``pid`` into ``buffer``: one copy, by the
    kernel (``process_vm_readv``), allowed only where we may inspect that process (same user)."""
    view = memoryview(buffer).cast("B")
    if view.nbytes == 0:
        return
    _not_us(pid)
    if _process_vm_readv is None:
        raise SameHostError("this system cannot read another process's memory")
    base = ctypes.addressof(ctypes.c_char.from_buffer(view))
    done = 0
    while done < view.nbytes:
        local = _Iovec(base + done, view.nbytes - done)
        remote = _Iovec(address + done, view.nbytes - done)
        got = _process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            err = ctypes.get_errno()
            raise SameHostError(f"cannot read the peer's lent memory ({os.strerror(err) if err else 'no data'})")
        done += got


def _address(data: Any) -> Optional[int]:
    """The address of a writable, contiguous buffer's first byte (what the peer reads), or None."""
    try:
        view = memoryview(data).cast("B")
        return ctypes.addressof(ctypes.c_char.from_buffer(view)) if view.nbytes and not view.readonly else None
    except (TypeError, ValueError):
        return None


class Pool:
    """The sender's side of one link direction: its memory file and which regions of it are in flight,
    or, where the peer proved it can read this process's memory (:attr:`lend`), the buffers lent to it.

    Lending is the one-copy path: the peer copies a tensor's bytes straight out of this process into a
    tensor of its own (``process_vm_readv``), and the sender keeps the buffer (so the memory stays
    valid) until the peer says it has read it. A sender lends only what the protocol already lets the
    peer see, exactly as the zero-copy TCP path hands the same buffer to ZeroMQ.
    """

    def __init__(self) -> None:
        self.fd = -1
        self.ino = 0
        self.size = 0
        self._regions: Dict[int, Tuple[int, float]] = {}  # offset -> (length, when written)
        #: the offsets written (and keys lent) since the caller last cleared it (the regions of one message)
        self.written: List[int] = []
        #: the peer can read this process's memory: tensors are lent, not copied into the memory file
        self.lend = False
        self._lent: Dict[int, Tuple[Any, float]] = {}  # key (< 0) -> (buffer kept alive, when lent)
        self._next_key = -1

    def put(self, data: Any, lend: bool = True) -> Optional[Tuple[int, int, int]]:
        """Lend ``data`` (a buffer) or copy it into a free region; ``(fd, inode, offset)`` to name a region,
        ``(LENT, key, address)`` to name lent memory, or None if full. ``lend=False`` always copies (the
        caller will not wait until the peer has read it, so ``data`` may change at once)."""
        view = memoryview(data).cast("B")
        nbytes = view.nbytes
        if not SHARED_MIN_BYTES <= nbytes <= POOL_MAX_BYTES or len(self) >= MAX_REGIONS:
            return None
        if self.lend and lend:
            address = _address(data)
            if address is not None:
                key, self._next_key = self._next_key, self._next_key - 1
                self._lent[key] = (data, time.monotonic())
                self.written.append(key)
                return LENT, key, address
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
        """The receiver has read these regions (or lent buffers); returns how many were in flight (others
        are ignored)."""
        return sum((self._lent.pop(o, None) if o < 0 else self._regions.pop(o, None)) is not None
                   for o in offsets if type(o) is int)

    def expire(self, now: float) -> None:
        for held in (self._regions, self._lent):
            for key, (_, since) in list(held.items()):
                if now - since > HOLD_SECONDS:
                    del held[key]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.ino, self.size = -1, 0, 0
        self._regions.clear()
        self._lent.clear()

    def __len__(self) -> int:
        return len(self._regions) + len(self._lent)


class Peer:
    """The receiving end for one verified peer process: reads its pool, remembers what to free."""

    def __init__(self, pid: int, confirm: bool = True, key: Any = None) -> None:
        self.pid = pid
        self.confirm = confirm
        self.key = key  # (whose receives: memory is kept per receiver, see .buffers)
        self.read: List[int] = []  # offsets read, to tell the sender (when ``confirm``)
        self._files: Dict[int, int] = {}  # the peer's inode -> our descriptor

    def take(self, fd: int, ino: int, offset: int, dtype: torch.dtype, shape: List[int]) -> torch.Tensor:
        """A new tensor of ours holding the bytes at ``offset`` of the peer's pool ``fd``, or, for lent
        memory (``fd == LENT``), the bytes at address ``offset`` of the peer process (key ``ino``)."""
        numel = 1
        for n in shape:
            numel *= n
        nbytes = numel * dtype.itemsize
        if not (type(offset) is int and 0 <= offset < 1 << 64 and 0 < nbytes <= POOL_MAX_BYTES):
            raise SameHostError(f"bad same-host tensor ({nbytes} bytes at offset {offset!r})")
        if fd == LENT:
            if not (type(ino) is int and ino < 0):
                raise SameHostError(f"bad lent-memory key {ino!r}")
            tensor = buffers.empty(shape, dtype, self.key)
            _read_memory(self.pid, offset, tensor.view(torch.uint8).reshape(-1).numpy())
            if self.confirm:
                self.read.append(ino)
            return tensor
        own = self._files.get(ino)
        if own is None:
            own = _open_peer_file(self.pid, fd, ino)
            for old in self._files.values():  # one pool per peer: a new inode replaces the old one
                os.close(old)
            self._files = {ino: own}
        tensor = buffers.empty(shape, dtype, self.key)
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
#: Who wrote a probe: the worker (checked by its client), or the client (checked by its worker).
WORKER, CLIENT = b"worker", b"client"


def probe_proof(key: str, role: bytes, nonces: Tuple[bytes, bytes], writer: int, reader: int) -> bytes:
    """What a probe holds: an HMAC with the link's key over who wrote it (``role`` and pid), for whom (the reader's
    pid) and both nonces of this handshake (the client's, the worker's). The bare nonce a peer chose was written
    before: a client had the worker write another session's nonce into the worker's own probe, and that session
    then named it as its own probe, so the worker took itself for its peer (helper-54). A probe now proves
    nothing but this handshake, in this direction, between these two processes."""
    return auth.proof_of(key, b"syft-samehost-" + role, *nonces, writer.to_bytes(8, "little"),
                         reader.to_bytes(8, "little"))


class Probe:
    """What one side shows the other at the handshake: a memory file holding a proof (:func:`probe_proof`: can the
    peer open our files?) and the same proof in this process's memory (can the peer read our memory?).
    Kept until the peer has checked it; :meth:`close` then."""

    def __init__(self, proof: bytes) -> None:
        self.fd = os.memfd_create("syft-probe", os.MFD_CLOEXEC)
        os.pwrite(self.fd, proof, 0)
        self._memory = ctypes.create_string_buffer(proof, len(proof))
        #: what to announce: ``[pid, fd, inode, address of the nonce in memory]``
        self.announce = [os.getpid(), self.fd, os.fstat(self.fd).st_ino, ctypes.addressof(self._memory)]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def make_probe(proof: bytes) -> Probe:
    """A :class:`Probe` holding ``proof`` (:func:`probe_proof`)."""
    return Probe(proof)


def check_probe(probe: Any, expect: Callable[[int], bytes]) -> Optional[int]:
    """The peer's pid if its announced ``probe`` holds, in one of our memory files, ``expect(pid)``: the proof a
    writer of that pid owes us (so it runs here, as us, and is the peer of this very handshake), else None.
    This process is never its own peer."""
    if not _AVAILABLE or not isinstance(probe, list) or len(probe) not in (3, 4):
        return None
    pid, fd, ino = probe[:3]
    try:
        own = _open_peer_file(pid, fd, ino)
    except SameHostError:
        return None
    try:
        want = expect(pid)
        got = bytearray(len(want))
        _read_exact(own, got, 0)
        return pid if auth.same(bytes(got), want) else None
    except (SameHostError, OSError):
        return None
    finally:
        os.close(own)


def can_read_memory(probe: Any, pid: int, proof: bytes) -> bool:
    """Whether we can read the verified peer ``pid``'s memory: its probe's address holds the ``proof`` its file
    held (where ptrace rules forbid it, e.g. Yama's ``ptrace_scope`` >= 1 between siblings, the pool is used)."""
    if not isinstance(probe, list) or len(probe) != 4 or probe[0] != pid or type(probe[3]) is not int \
            or not 0 < probe[3] < 1 << 64:
        return False
    got = bytearray(len(proof))
    try:
        _read_memory(pid, probe[3], got)
    except SameHostError:
        return False
    return auth.same(bytes(got), proof)
