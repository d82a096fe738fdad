"""The data owner's process: a server in a background thread, the main thread idle or busy.

    python -m benchmarks._owner --server syft|raw [--tensor '#X=5' ...] [--busy] [--switch-interval S] [--secure]
                                [--policy P] [--digits]

``syft`` runs :class:`syft_magics.Worker` (policy ``open``, or ``--policy``) and shares one float32 tensor
per ``--tensor TAG=NUMEL`` (and scikit-learn's digits with ``--digits``); ``raw`` runs a bare ZeroMQ ROUTER
server with the same layout (one background thread, same socket options) that answers the baselines'
messages (see :class:`RawServer`).

It prints one JSON line (address, key, pid, switch interval) on stdout once it serves, then answers
JSON commands read from stdin, one per line, on a control thread: ``count`` (the busy loop's progress),
``reset_hwm``, ``hwm`` (peak RSS), ``stats``. It exits when stdin closes or on SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import sys
import threading
import time
from typing import Any, Dict, List

import msgpack
import torch
import zmq

from ._util import hwm_bytes, reset_hwm, rss_bytes, wait_warm_ups

_OUT_LOCK = threading.Lock()


def emit(obj: Dict[str, Any]) -> None:
    with _OUT_LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def make_tensor(numel: int) -> torch.Tensor:
    t = torch.ones(numel, dtype=torch.float32)  # touches every page: resident before any measurement
    if numel <= 16:
        t = torch.arange(numel, dtype=torch.float32)
    return t


class RawServer:
    """A ROUTER in a background thread: the baselines' server. The first frame after the identity says what to do.

    ``E`` echo the message back; ``A`` decode a msgpack op header, reply an ack with its sequence number;
    ``P`` receive a tensor frame zero-copy (``torch.frombuffer``), ack; ``K`` unpickle a tensor, ack;
    ``G`` send the tensor tagged in frame 2 zero-copy; ``Q`` send it pickled; ``S`` copy a tensor out of a
    shared-memory segment, ack; ``V`` tell where a tensor lives (pid, address, bytes) for
    ``process_vm_readv``; ``H`` (hold) drop the last received tensor.
    """

    def __init__(self, tensors: Dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 200)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.running = True
        self.kept: Any = None
        self.thread = threading.Thread(target=self._serve, name="raw-server", daemon=True)

    def start(self) -> "RawServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.running = False
        self.thread.join(3)
        self.ctx.destroy(0)

    def _serve(self) -> None:
        sock = self.sock
        while self.running:
            if not sock.poll(200):
                continue
            for _ in range(256):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    return
                self._handle(sock, parts)

    def _handle(self, sock: zmq.Socket, parts: List[zmq.Frame]) -> None:
        ident, kind = parts[0].bytes, parts[1].bytes
        if kind == b"E":
            sock.send_multipart([ident, *parts[1:]], copy=False)
        elif kind == b"A":
            op = msgpack.unpackb(parts[2].bytes, raw=False)
            sock.send_multipart([ident, b"a", msgpack.packb(op["s"])])
        elif kind == b"P":
            self.kept = torch.frombuffer(parts[2].buffer, dtype=torch.float32)
            sock.send_multipart([ident, b"k"])
        elif kind == b"K":
            self.kept = pickle.loads(parts[2].buffer)
            sock.send_multipart([ident, b"k"])
        elif kind == b"G":
            t = self.tensors[parts[2].bytes.decode()]
            sock.send_multipart([ident, b"v", t.reshape(-1).view(torch.uint8).numpy()], copy=False)
        elif kind == b"Q":
            t = self.tensors[parts[2].bytes.decode()]
            sock.send_multipart([ident, b"v", pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)], copy=False)
        elif kind == b"S":
            from multiprocessing import shared_memory

            name, nbytes = msgpack.unpackb(parts[2].bytes)
            shm = shared_memory.SharedMemory(name=name, track=False) if sys.version_info >= (3, 13) else \
                shared_memory.SharedMemory(name=name)
            try:
                self.kept = torch.frombuffer(shm.buf, dtype=torch.uint8, count=nbytes).clone()
            finally:
                shm.close()
            sock.send_multipart([ident, b"k"])
        elif kind == b"V":
            t = self.tensors[parts[2].bytes.decode()]
            info = [os.getpid(), t.data_ptr(), t.numel() * t.element_size()]
            sock.send_multipart([ident, b"v", msgpack.packb(info)])
        elif kind == b"H":
            self.kept = None
            sock.send_multipart([ident, b"k"])
        else:
            sock.send_multipart([ident, b"?"])


def busy_chunk() -> int:
    """A slice of pure-Python work (no C call that releases the GIL); returns iterations done."""
    s = 0
    for i in range(20000):
        s += i
    return 20000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=("syft", "raw"), required=True)
    ap.add_argument("--tensor", action="append", default=[], help="TAG=NUMEL (float32)")
    ap.add_argument("--busy", action="store_true", help="run a pure-Python loop on the main thread")
    ap.add_argument("--policy", default="open", help="the worker's policy (syft only)")
    ap.add_argument("--digits", action="store_true",
                    help="share scikit-learn's digits as #digits_x (float32 / 16) and #digits_y (labels)")
    ap.add_argument("--switch-interval", type=float, default=None)
    ap.add_argument("--secure", action="store_true",
                    help="syft: encrypt links (CurveZMQ); the info line names an invitation file to connect with")
    args = ap.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    torch.set_num_threads(1)

    tensors = {}
    for spec in args.tensor:
        tag, numel = spec.split("=", 1)
        tensors[tag] = make_tensor(int(numel))

    default_interval = sys.getswitchinterval()
    worker = server = None
    if args.server == "syft":
        import syft_magics

        syft_magics.defaults.freeze_gc_after = 0.0  # (the steady state: frozen once warm, measured after)
        worker = syft_magics.Worker("Owner", port=0, policy=args.policy, connection_file=False,
                                    secure=True if args.secure else None).start()
        for tag, t in tensors.items():
            worker.share(t, tag)
        if args.digits:
            from sklearn.datasets import load_digits

            digits = load_digits()
            worker.share(torch.tensor(digits.data, dtype=torch.float32) / 16.0, "#digits_x")
            worker.share(torch.tensor(digits.target, dtype=torch.long), "#digits_y")
        # let the worker's warm-ups finish, or they land in whatever is measured first (the memory row's peak RSS,
        # the first op's latency, the training row's first epochs: 15.8 ms against 12-13 once warm)
        wait_warm_ups()
        info = {"address": worker.address, "key": worker.key}
        if args.secure:
            import tempfile

            folder = tempfile.mkdtemp(prefix="syft-bench-")  # 0700
            info["invitation"] = str(worker.invite("bench", os.path.join(folder, "bench.json")))
    else:
        server = RawServer(tensors).start()
        info = {"address": server.address, "key": None}
    package_interval = sys.getswitchinterval()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    info.update(pid=os.getpid(), server=args.server, busy=args.busy, python_default_interval=default_interval,
                interval_after_start=package_interval, switch_interval=sys.getswitchinterval())

    counter = [0]

    def control() -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            name = cmd.get("cmd")
            if name == "count":
                emit({"count": counter[0], "t": time.perf_counter()})
            elif name == "reset_hwm":
                ok = reset_hwm()
                emit({"ok": ok, "rss": rss_bytes(), "hwm": hwm_bytes()})
            elif name == "hwm":
                emit({"rss": rss_bytes(), "hwm": hwm_bytes()})
            elif name == "stats":
                emit({"stats": dict(worker.stats) if worker else {},
                      "objects": len(worker.store) if worker else 0,
                      "switch_interval": sys.getswitchinterval()})
            else:
                emit({"error": f"unknown command {name!r}"})
        stop.set()  # stdin closed: the parent is done (or dead)

    threading.Thread(target=control, name="control", daemon=True).start()
    emit(info)
    try:
        if args.busy:
            while not stop.is_set():
                counter[0] += busy_chunk()
        else:
            while not stop.wait(0.5):
                pass
    finally:
        if worker is not None:
            worker.stop(timeout=2)
        if server is not None:
            server.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
