"""The scientist's side of the measurements: a raw DEALER client and a syft_magics client, timed the same way."""
from __future__ import annotations

import pickle
import random
import time
from typing import Any, Callable, List, Optional, Tuple

import msgpack
import torch
import zmq

from ._util import ChildFailed

#: Every single wait of a measurement gives up after this many seconds.
WAIT_S = 20.0


class RawClient:
    """A DEALER with the same socket options as syft_magics' link, talking to ``_owner --server raw``."""

    def __init__(self, address: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(address)
        self.address = address
        # IMMEDIATE: wait until the connection is up, so the first timed message does not pay for it
        self.request([b"E", b"hello"])

    def close(self) -> None:
        self.ctx.destroy(0)

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def recv(self, copy: bool = True, timeout: float = WAIT_S) -> List[Any]:
        if not self.sock.poll(timeout * 1000):
            raise ChildFailed(f"the raw server at {self.address} did not answer within {timeout:g} s")
        return self.sock.recv_multipart(copy=copy)

    def request(self, parts: List[Any], copy: bool = True) -> List[Any]:
        self.sock.send_multipart(parts, copy=copy)
        return self.recv(copy=copy)

    # -- row 1/4: echo round trip ------------------------------------------------------------
    def echo_times(self, payload: bytes, n: int, budget: float, think: float = 0.0) -> List[float]:
        sock, out = self.sock, []
        end = time.monotonic() + budget
        for _ in range(n):
            if think:
                time.sleep(random.uniform(0.2, 1.0) * think)
            t0 = time.perf_counter()
            sock.send_multipart([b"E", payload])
            if not sock.poll(WAIT_S * 1000):
                raise ChildFailed("raw echo: no answer")
            sock.recv_multipart()
            out.append(time.perf_counter() - t0)
            if time.monotonic() > end:
                break
        return out

    # -- row 2: pipelined msgpack ops, a window in flight --------------------------------------
    def pipelined(self, n: int, window: int, op_template: dict) -> float:
        """Seconds for ``n`` msgpack op messages with at most ``window`` unacknowledged; the server decodes each."""
        sock = self.sock
        packb, unpackb = msgpack.packb, msgpack.unpackb
        sent = acked = 0
        op = dict(op_template)
        t0 = time.perf_counter()
        while acked < n:
            while sent < n and sent - acked < window:
                sent += 1
                op["s"] = sent
                sock.send_multipart([b"A", packb(op)])
            if not sock.poll(WAIT_S * 1000):
                raise ChildFailed("raw pipelined: no ack")
            while True:
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                unpackb(parts[1])
                acked += 1
        return time.perf_counter() - t0

    # -- row 3: bulk transfers -----------------------------------------------------------------
    def push_zero_copy(self, t: torch.Tensor) -> float:
        buf = t.reshape(-1).view(torch.uint8).numpy()
        t0 = time.perf_counter()
        self.sock.send_multipart([b"P", buf], copy=False)
        self.recv()
        return time.perf_counter() - t0

    def pull_zero_copy(self, tag: str, nbytes: int) -> float:
        t0 = time.perf_counter()
        self.sock.send_multipart([b"G", tag.encode()])
        parts = self.recv(copy=False)
        t = torch.frombuffer(parts[1].buffer, dtype=torch.float32)
        dt = time.perf_counter() - t0
        assert t.numel() * 4 == nbytes
        return dt

    def push_pickle(self, t: torch.Tensor) -> float:
        t0 = time.perf_counter()
        data = pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.send_multipart([b"K", data], copy=False)
        self.recv()
        return time.perf_counter() - t0

    def pull_pickle(self, tag: str, nbytes: int) -> float:
        t0 = time.perf_counter()
        self.sock.send_multipart([b"Q", tag.encode()])
        parts = self.recv(copy=False)
        t = pickle.loads(parts[1].buffer)
        dt = time.perf_counter() - t0
        assert t.numel() * 4 == nbytes
        return dt

    def push_shm(self, t: torch.Tensor) -> float:
        """Same host: copy into a fresh /dev/shm segment, the owner copies it out (two memcpys, no socket)."""
        from multiprocessing import shared_memory

        nbytes = t.numel() * t.element_size()
        t0 = time.perf_counter()
        shm = shared_memory.SharedMemory(create=True, size=nbytes)
        try:
            torch.frombuffer(shm.buf, dtype=torch.uint8, count=nbytes).copy_(t.reshape(-1).view(torch.uint8))
            self.sock.send_multipart([b"S", msgpack.packb([shm.name, nbytes])])
            self.recv()
            dt = time.perf_counter() - t0
        finally:
            shm.close()
            shm.unlink()
        return dt

    def drop(self) -> None:
        self.request([b"H"])


def cma_pull(raw: RawClient, tag: str) -> Optional[float]:
    """Same host, one copy: ``process_vm_readv`` from the owner's tensor into a fresh local one.

    What torch rpc's TensorPipe "cma" channel does. ``None`` where the kernel refuses (ptrace rules).
    """
    import ctypes
    import ctypes.util

    class IOVec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    readv = libc.process_vm_readv
    readv.restype = ctypes.c_ssize_t
    readv.argtypes = [ctypes.c_int, ctypes.POINTER(IOVec), ctypes.c_ulong, ctypes.POINTER(IOVec), ctypes.c_ulong,
                      ctypes.c_ulong]
    t0 = time.perf_counter()
    parts = raw.request([b"V", tag.encode()])
    pid, addr, nbytes = msgpack.unpackb(parts[1])
    dst = torch.empty(nbytes, dtype=torch.uint8)
    done = 0
    while done < nbytes:
        chunk = min(nbytes - done, 1 << 30)
        local = IOVec(dst.data_ptr() + done, chunk)
        remote = IOVec(addr + done, chunk)
        n = readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n <= 0:
            return None
        done += n
    return time.perf_counter() - t0


def local_copy(nbytes: int) -> float:
    """The ceiling of any one-copy path: a memcpy into a fresh buffer, in this process."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    t0 = time.perf_counter()
    dst = torch.empty_like(src)
    dst.copy_(src)
    return time.perf_counter() - t0


# -- syft_magics ---------------------------------------------------------------------------------
def syft_connect(address: str, key: str):
    import syft_magics

    from ._util import wait_warm_ups

    syft_magics.defaults.reply_timeout = WAIT_S
    syft_magics.defaults.freeze_gc_after = 0.0  # (the steady state: frozen once warm, not 10 s into a row)
    client = syft_magics.connect(address, key=key, timeout=WAIT_S)
    wait_warm_ups()  # (the client's shape-inference warm-up and the freeze after it: before any measurement)
    return client


def send_seconds(client: Any, src: torch.Tensor) -> float:
    """One timed ``send`` of ``src`` and the ``sync`` that proves the worker holds it; the copy is freed after."""
    t0 = time.perf_counter()
    p = client.send(src)
    client.sync()
    dt = time.perf_counter() - t0
    p.delete()
    return dt


def get_seconds(ptr: Any, nbytes: Optional[int] = None) -> float:
    """One timed ``get`` of ``ptr`` (checked to hold ``nbytes`` bytes of float32, when given)."""
    t0 = time.perf_counter()
    v = ptr.get()
    dt = time.perf_counter() - t0
    assert nbytes is None or v.numel() * 4 == nbytes
    return dt


def op_times(x: Any, y: Any, n: int, budget: float, think: float = 0.0) -> List[float]:
    """Round trips of ``torch.add(x_ptr, y_ptr).get()``; ``think``: up to that many seconds of idle between them."""
    add, out = torch.add, []
    end = time.monotonic() + budget
    for _ in range(n):
        if think:
            time.sleep(random.uniform(0.2, 1.0) * think)
        t0 = time.perf_counter()
        add(x, y).get()
        out.append(time.perf_counter() - t0)
        if time.monotonic() > end:
            break
    return out


def interleave(blocks: int, *measures: Callable[[], List[float]]) -> Tuple[List[float], ...]:
    """Run each measure ``blocks`` times, alternating, so drifts of the machine hit all of them alike."""
    results: Tuple[List[float], ...] = tuple([] for _ in measures)
    for _ in range(blocks):
        for acc, measure in zip(results, measures):
            acc.extend(measure())
    return results


def op_header_size() -> int:
    """The size of the header our client sends for ``torch.add(x_ptr, y_ptr)`` (the raw echo sends as much)."""
    from syft_magics.wire.protocol import Ref, encode

    parts = encode({"t": "op", "s": 12345, "f": "torch.add", "a": [Ref(b"x" * 16), Ref(b"y" * 16)], "k": {},
                    "o": [b"z" * 16]})
    return len(parts[0])


def op_template() -> dict:
    """A msgpack op like ours, for the raw pipelined baseline (ids as ext type 1, as on our wire)."""
    ref = msgpack.ExtType(1, b"x" * 16)
    return {"t": "op", "s": 0, "f": "torch.add", "a": [ref, msgpack.ExtType(1, b"y" * 16)], "k": {},
            "o": [b"z" * 16]}
