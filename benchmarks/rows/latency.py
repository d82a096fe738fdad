"""Row 1: op round trip, ``torch.add(x_ptr, y_ptr).get()`` on 5-element tensors, against a raw ZeroMQ echo.

Both servers run in an owner process's background thread while its main thread idles; both owners are up
during the whole measurement and the two measures alternate in blocks, so drifts hit both alike.
"""
from __future__ import annotations

from typing import Any, Dict

from .._clients import RawClient, interleave, op_header_size, op_times, syft_connect
from .._util import Config, Owner, row, summary_us

NAME = "latency"
TITLE = "1. op round trip (5 elements)"
QUICK = True
GOAL_RATIO = 1.5


def run(cfg: Config) -> Dict[str, Any]:
    blocks, per_block = (6, 1000) if cfg.full else (4, 400)
    budget = cfg.budget(4.0 if cfg.full else 1.5)  # per block and measure
    payload = b"o" * op_header_size()
    with Owner("syft", tensors={"#X": 5, "#Y": 5}) as syft_owner, Owner("raw") as raw_owner:
        client = syft_connect(syft_owner.address, syft_owner.key)
        try:
            x, = client.search("#X")
            y, = client.search("#Y")
            with RawClient(raw_owner.address) as raw:
                # warm up both paths (meta-inference cache, allocator, TCP)
                op_times(x, y, 200, 2.0)
                raw.echo_times(payload, 200, 2.0)
                ours, base = interleave(blocks, lambda: op_times(x, y, per_block, budget),
                                        lambda: raw.echo_times(payload, per_block, budget))
        finally:
            client.disconnect()
    o, b = summary_us(ours), summary_us(base)
    rows = [
        row("op round trip, median", o["median_us"], b["median_us"], "us", better="lower",
            goal=f"<= {GOAL_RATIO}x raw", goal_ratio=GOAL_RATIO,
            notes=f"raw = zmq DEALER/ROUTER echo of {len(payload)} B; n={o['n']}/{b['n']}"),
        row("op round trip, p90", o["p90_us"], b["p90_us"], "us", better="lower",
            goal=f"<= {GOAL_RATIO}x raw", goal_ratio=GOAL_RATIO),
    ]
    return {"rows": rows, "data": {"ours": o, "raw_echo": b}}
