"""Row: one kernel, the owner and the scientist in one process (a one-notebook tutorial).

Three clients run the same measures, interleaved in blocks so drifts of the machine hit all alike:
- ``direct``: ``connect(worker)`` to a worker of this process, the default (its handlers run on the
  client's thread: :mod:`syft_magics.scientist.direct`);
- ``inproc``: the same worker through an ``inproc://`` ZeroMQ socket and its serving thread
  (``defaults.in_process_direct = False``, the path before the direct link);
- ``cross``: a worker in another process over TCP loopback (the baseline the goals are against).

Measures: a chain of ``z = torch.add(z, y)`` then ``z.get()`` (ops/s), and the op round trip
``torch.add(x, y).get()`` (median).
"""
from __future__ import annotations

import gc
from typing import Any, Dict, List

import torch

from .._clients import op_times, syft_connect
from .._util import Config, Owner, info_row, median, row, wait_warm_ups
from .pipeline import chain

NAME = "onekernel"
TITLE = "one kernel: owner and scientist in one process"
QUICK = True
N_OPS = 5_000


def run(cfg: Config) -> Dict[str, Any]:
    import syft_magics

    reps = 5 if cfg.full else 3
    rt_n = 1000 if cfg.full else 400
    budget = cfg.budget(3.0 if cfg.full else 1.5)
    chains: Dict[str, List[float]] = {"direct": [], "inproc": [], "cross": []}
    trips: Dict[str, List[float]] = {"direct": [], "inproc": [], "cross": []}
    syft_magics.defaults.freeze_gc_after = 0.0  # (the steady state: frozen once warm, measured after)
    worker = syft_magics.Worker("OneKernel", tcp=False, policy="open").start()
    clients: Dict[str, Any] = {}
    try:
        worker.share(torch.arange(5, dtype=torch.float32), "#X")
        worker.share(torch.ones(5), "#Y")
        with Owner("syft", tensors={"#X": 5, "#Y": 5}) as owner:
            clients["cross"] = syft_connect(owner.address, owner.key)
            saved = syft_magics.defaults.in_process_direct
            try:
                syft_magics.defaults.in_process_direct = True
                clients["direct"] = syft_magics.connect(worker)
                syft_magics.defaults.in_process_direct = False
                clients["inproc"] = syft_magics.connect(worker)
            finally:
                syft_magics.defaults.in_process_direct = saved
            wait_warm_ups()  # (the worker's and the clients' of this process)
            args = {}
            for name, client in clients.items():
                x, = client.search("#X")
                y = client.send(torch.ones(5))
                args[name] = (client, x, y)
                chain(client, x, y, 300)  # warm-up
                op_times(x, client.search("#Y")[0], 100, 1.0)
            for _ in range(reps):
                for name, (client, x, y) in args.items():
                    cfg.check(10)
                    gc.collect()
                    chains[name].append(N_OPS / chain(client, x, y, N_OPS))
                    trips[name].extend(op_times(x, y, rt_n, budget))
    finally:
        for client in clients.values():
            client.disconnect()
        worker.stop()
    c = {k: median(v) for k, v in chains.items()}
    t = {k: median(v) * 1e6 for k, v in trips.items()}
    note = f"median of {reps} chains each, interleaved; cross = a worker in another process over TCP loopback"
    rows = [
        row(f"one kernel: chain of {N_OPS:,} ops + get", c["direct"], c["cross"], "ops/s", better="higher",
            goal=">= 1x cross-process", goal_ratio=1.0, notes=note),
        row("one kernel: op round trip, median", t["direct"], t["cross"], "us", better="lower",
            goal="<= 0.5x cross-process", goal_ratio=0.5, notes=f"n={len(trips['direct'])}/{len(trips['cross'])}"),
        info_row("one kernel over an inproc:// socket (before): chain", c["inproc"], c["cross"], "ops/s",
                 better="higher", notes="defaults.in_process_direct = False"),
        info_row("one kernel over an inproc:// socket (before): round trip", t["inproc"], t["cross"], "us",
                 notes="defaults.in_process_direct = False"),
    ]
    return {"rows": rows, "data": {"chain_ops_s": chains, "round_trip_s": trips}}
