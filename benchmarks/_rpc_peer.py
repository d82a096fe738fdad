"""torch.distributed.rpc peer, world size 2 on 127.0.0.1: rank 1 is the owner, rank 0 measures.

    python -m benchmarks._rpc_peer RANK PORT N_OPS N_BIG

Rank 0 prints one JSON line with its figures. Both ranks exit when stdin closes (parent gone).
TensorPipe picks its transports and channels itself (the default); for diagnosis,
``BENCH_RPC_TRANSPORTS=shm`` and ``BENCH_RPC_CHANNELS=cma`` (comma-separated lists) force them.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import torch
import torch.distributed.rpc as rpc

_BIG = {}


# -- functions run on the owner (rank 1) -------------------------------------------------------------
def make(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32)


def add_values(a: "rpc.RRef", b: "rpc.RRef") -> torch.Tensor:
    return torch.add(a.local_value(), b.local_value())


def add_rrefs(a: "rpc.RRef", b: "rpc.RRef") -> torch.Tensor:
    return torch.add(a.local_value(), b.local_value())


def hold_big(numel: int) -> int:
    _BIG["t"] = torch.ones(numel, dtype=torch.float32)
    return numel


def get_big() -> torch.Tensor:
    return _BIG["t"]


def take(t: torch.Tensor) -> int:
    return t.numel()


def _median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def _p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.9 * (len(s) - 1) + 0.5))]


def measure(n_ops: int, n_big: int) -> dict:
    owner = "owner"
    x = rpc.remote(owner, make, args=(5,))
    y = rpc.remote(owner, make, args=(5,))
    for _ in range(50):
        rpc.rpc_sync(owner, add_values, args=(x, y))
    times = []
    for _ in range(n_ops):
        t0 = time.perf_counter()
        rpc.rpc_sync(owner, add_values, args=(x, y))
        times.append(time.perf_counter() - t0)
    chain_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = x
        for _ in range(100):
            r = rpc.remote(owner, add_rrefs, args=(r, y))
        r.to_here()
        chain_s.append(time.perf_counter() - t0)
    numel = 16 * (1 << 20) // 4
    rpc.rpc_sync(owner, hold_big, args=(numel,))
    t = torch.ones(numel, dtype=torch.float32)
    push, pull = [], []
    for i in range(n_big + 1):
        t0 = time.perf_counter()
        rpc.rpc_sync(owner, take, args=(t,))
        dt1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        v = rpc.rpc_sync(owner, get_big)
        dt2 = time.perf_counter() - t0
        assert v.numel() == numel
        if i:
            push.append(dt1)
            pull.append(dt2)
    nbytes = numel * 4
    return {"op_median_us": _median(times) * 1e6, "op_p90_us": _p90(times) * 1e6, "n_ops": len(times),
            "chain100_ops_s": 100 / _median(chain_s), "push16_GB_s": nbytes / _median(push) / 1e9,
            "pull16_GB_s": nbytes / _median(pull) / 1e9}


def main() -> None:
    rank, port, n_ops, n_big = (int(a) for a in sys.argv[1:5])

    def watch_stdin() -> None:
        sys.stdin.read()
        os._exit(3)

    threading.Thread(target=watch_stdin, daemon=True).start()
    torch.set_num_threads(1)
    extra = {}
    if os.environ.get("BENCH_RPC_CHANNELS"):
        extra["_channels"] = os.environ["BENCH_RPC_CHANNELS"].split(",")
    if os.environ.get("BENCH_RPC_TRANSPORTS"):
        extra["_transports"] = os.environ["BENCH_RPC_TRANSPORTS"].split(",")
    opts = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://127.0.0.1:{port}", rpc_timeout=30,
                                           num_worker_threads=4, **extra)
    name = "scientist" if rank == 0 else "owner"
    rpc.init_rpc(name, rank=rank, world_size=2, rpc_backend_options=opts)
    try:
        if rank == 0:
            try:
                out = measure(n_ops, n_big)
            except Exception as exc:  # report, then shut down cleanly
                out = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(out), flush=True)
    finally:
        rpc.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
