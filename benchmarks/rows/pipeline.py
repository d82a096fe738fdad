"""Row 2: pipelined throughput, a chain of 10,000 ops on pointers then one ``.get()``.

Ours: ``z = torch.add(z, y)`` 10,000 times (each result a new pointer, the previous one freed by the
client's background thread), then ``z.get()``, checked against the expected value. Raw: the same number of
msgpack-encoded op messages over a DEALER with 512 in flight, the owner decoding each and acknowledging it.
"""
from __future__ import annotations

import time
from typing import Any, Dict

import torch

from .._clients import RawClient, op_template, syft_connect
from .._util import Config, Owner, median, row

NAME = "pipeline"
TITLE = "2. pipelined throughput"
QUICK = True
N_OPS = 10_000
WINDOW = 512
GOAL_OPS = 40_000
GOAL_RATIO = 0.5


def chain(client: Any, x: Any, y: Any, n: int) -> float:
    client.sync()
    t0 = time.perf_counter()
    z = x
    add = torch.add
    for _ in range(n):
        z = add(z, y)
    value = z.get()
    dt = time.perf_counter() - t0
    expected = torch.arange(5, dtype=torch.float32) + n
    if not torch.equal(value, expected):
        raise AssertionError(f"the chain computed {value}, expected {expected}")
    return dt


def run(cfg: Config) -> Dict[str, Any]:
    reps = 5 if cfg.full else 3
    ours, base = [], []
    template = op_template()
    with Owner("syft", tensors={"#X": 5, "#Y": 5}) as syft_owner, Owner("raw") as raw_owner:
        client = syft_connect(syft_owner.address, syft_owner.key)
        try:
            x, = client.search("#X")
            y, = client.search("#Y")
            y1 = client.send(torch.ones(5))  # y on the worker, owned by us: a plain session object
            with RawClient(raw_owner.address) as raw:
                chain(client, x, y1, 500)  # warm-up
                raw.pipelined(2000, WINDOW, template)
                for _ in range(reps):
                    cfg.check(10)
                    ours.append(N_OPS / chain(client, x, y1, N_OPS))
                    base.append(N_OPS / raw.pipelined(N_OPS, WINDOW, template))
        finally:
            client.disconnect()
    o, b = median(ours), median(base)
    rows = [
        row(f"chain of {N_OPS:,} ops + get", o, b, "ops/s", better="higher",
            goal=f">= {GOAL_OPS // 1000}k ops/s and >= {GOAL_RATIO}x raw", goal_ratio=GOAL_RATIO,
            goal_abs=GOAL_OPS,
            notes=f"raw = msgpack op msgs, {WINDOW} in flight, decoded + acked; median of {reps}"),
    ]
    return {"rows": rows, "data": {"ours_ops_s": ours, "raw_msgs_s": base}}
