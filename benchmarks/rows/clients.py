"""Row 7: many clients. 1, 4 and 16 scientist processes, each a pipelined chain, against one owner.

Ours: each client process runs ``z = torch.add(z, y)`` ``N`` times then one ``.get()`` (the value
checked) against one :class:`syft_magics.Worker`. Raw: the same client processes send as many msgpack op
messages, 512 in flight, to a raw ZeroMQ server that decodes and acknowledges each. All clients of a
round connect and warm up first, then start together; the aggregate is all ops over the time from the
first start to the last end, and fairness is the slowest client's rate over the fastest's.
"""
from __future__ import annotations

import subprocess
from typing import Any, Dict, List, Tuple

from .._util import Config, Owner, read_json_line, row, send_json_line, spawn, stop_child

NAME = "clients"
TITLE = "7. many clients"
QUICK = False
COUNTS = (1, 4, 16)
GOAL_RATIO = 0.7
GOAL_FAIR = 0.5


def ops_per_client(cfg: Config) -> int:
    return 3000 if cfg.full else 1500


def round_of(procs: List[subprocess.Popen], owner: Owner, mode: str, n: int,
             timeout: float) -> Tuple[float, float]:
    """(aggregate ops/s, slowest client's rate / fastest's) of ``procs`` running ``n`` ops each on ``owner``."""
    try:
        for proc in procs:
            send_json_line(proc, {"connect": mode, "address": owner.address, "key": owner.key})
        for proc in procs:
            read_json_line(proc, timeout)  # connected and warm
        for proc in procs:
            send_json_line(proc, {"go": n})
        done: List[Dict[str, Any]] = [read_json_line(proc, timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                send_json_line(proc, {"close": True})
    for proc in procs:
        read_json_line(proc, timeout)
    start = min(d["start"] for d in done)
    end = max(d["end"] for d in done)
    rates = [d["ops"] / (d["end"] - d["start"]) for d in done]
    return sum(d["ops"] for d in done) / (end - start), min(rates) / max(rates)


def run(cfg: Config) -> Dict[str, Any]:
    n = ops_per_client(cfg)
    rows, data = [], {}
    procs = [spawn("benchmarks._chainclient") for _ in range(max(COUNTS))]
    try:
        with Owner("syft", tensors={"#X": 5}) as syft_owner, Owner("raw") as raw_owner:
            for clients in COUNTS:
                cfg.check(10 + clients)
                timeout = cfg.budget(60 + 4 * clients)
                ours, fair = round_of(procs[:clients], syft_owner, "syft", n, timeout)
                base, base_fair = round_of(procs[:clients], raw_owner, "raw", n, timeout)
                data[clients] = {"ours_ops_s": ours, "raw_ops_s": base, "fairness": fair,
                                 "raw_fairness": base_fair}
                last = clients == max(COUNTS)
                goal = f">= {GOAL_RATIO}x raw, fairness >= {GOAL_FAIR}" if last else "-"
                r = row(f"{clients} client process{'es' if clients > 1 else ''} x {n:,} ops, aggregate", ours, base,
                        "ops/s", better="higher", goal=goal,
                        goal_ratio=GOAL_RATIO if last else None,
                        notes=f"fairness (slowest/fastest client) ours {fair:.2f}, raw {base_fair:.2f}")
                if last and r["met"] is not None:
                    r["met"] = r["met"] and fair >= GOAL_FAIR
                rows.append(r)
    finally:
        for proc in procs:
            stop_child(proc)
    return {"rows": rows, "data": data}
