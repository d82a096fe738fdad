"""Row 10: the cost of encryption: the same worker with and without CurveZMQ, in the same run.

Two owner processes, one plain (loopback, the shared key) and one encrypted (``--secure``: CurveZMQ,
ZAP, an invitation file), each sharing the same tensors. Both clients turn the same-host path off
(``defaults.same_host = False``), as a client on another machine would have it: every byte crosses
the socket, so the encrypted one pays libsodium on both ends. Measures alternate in blocks
(op round trip: ``torch.add(x, y).get()`` on 5 elements) or round-robin (1 and 16 MiB ``.get()``
and ``send`` + ``sync``), so a load spike hits both alike. Ratios are Curve / plain: above 1 for
times (slower), below 1 for bandwidth.
"""
from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from .._clients import get_seconds, interleave, op_times, send_seconds
from .._util import Config, MiB, Owner, median, row, summary_us

NAME = "curve"
TITLE = "10. encryption (CurveZMQ) vs plain"
QUICK = False
SIZES_MIB = (1, 16)


def _connect(owner: Owner) -> Any:
    import syft_magics

    syft_magics.defaults.reply_timeout = 60.0
    syft_magics.defaults.same_host = False  # as off-host: every byte through the socket
    try:
        invitation = owner.info.get("invitation")
        if invitation:
            client = syft_magics.connect(file=invitation, timeout=60.0)
            shutil.rmtree(Path(invitation).parent, ignore_errors=True)  # the owner's temporary folder
            return client
        return syft_magics.connect(owner.address, key=owner.key, timeout=60.0)
    finally:
        syft_magics.defaults.same_host = True


def _transfers(client: Any, size: int) -> Dict[str, Callable[[], float]]:
    nbytes = size * MiB
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    ptr, = client.search(f"#B{size}")

    return {"get": lambda: get_seconds(ptr, nbytes), "send": lambda: send_seconds(client, src)}


def run(cfg: Config) -> Dict[str, Any]:
    import zmq

    if not zmq.has("curve"):
        return {"rows": [], "notes": ["skipped: this libzmq has no CurveZMQ"], "data": {}}
    tensors = {"#X": 5, "#Y": 5, **{f"#B{s}": s * MiB // 4 for s in SIZES_MIB}}
    blocks, per_block = (4, 500) if cfg.full else (3, 200)
    reps = {1: 12, 16: 4} if cfg.full else {1: 8, 16: 3}
    budget = cfg.budget(2.0 if cfg.full else 1.0)
    rows: List[Dict[str, Any]] = []
    data: Dict[str, Any] = {}
    with Owner("syft", tensors=tensors) as plain_owner, Owner("syft", tensors=tensors, secure=True) as curve_owner:
        plain, curve = _connect(plain_owner), _connect(curve_owner)
        try:
            assert curve._link.encrypted and not plain._link.encrypted
            xy = {name: (c.search("#X")[0], c.search("#Y")[0]) for name, c in (("plain", plain), ("curve", curve))}
            for name in xy:
                op_times(*xy[name], 100, 2.0)  # warm up
            cfg.check(10)
            p_times, c_times = interleave(blocks, lambda: op_times(*xy["plain"], per_block, budget),
                                          lambda: op_times(*xy["curve"], per_block, budget))
            p, c = summary_us(p_times), summary_us(c_times)
            data["round_trip"] = {"plain": p, "curve": c}
            rows.append(row("op round trip, Curve vs plain, median", c["median_us"], p["median_us"], "us",
                            better="lower", goal="-", notes=f"n={c['n']}/{p['n']}"))
            for size in SIZES_MIB:
                cfg.check(10)
                measures = {f"{what}_{name}": fn for name, client in (("plain", plain), ("curve", curve))
                            for what, fn in _transfers(client, size).items()}
                for fn in measures.values():
                    fn()  # warm up
                times: Dict[str, List[float]] = {k: [] for k in measures}
                end = time.monotonic() + budget * len(measures)
                for i in range(reps[size]):
                    for k, fn in measures.items():
                        times[k].append(fn())
                        gc.collect()
                    if time.monotonic() > end and i >= 1:
                        break
                gbps = {k: size * MiB / median(v) / 1e9 for k, v in times.items()}
                data[f"{size}MiB"] = {"GB_s": gbps, "seconds": times}
                for what in ("get", "send"):
                    rows.append(row(f"{what} {size} MiB, Curve vs plain", gbps[f"{what}_curve"],
                                    gbps[f"{what}_plain"], "GB/s", better="higher", goal="-",
                                    notes=f"n={len(times[f'{what}_curve'])}; same-host path off on both"))
        finally:
            plain.disconnect()
            curve.disconnect()
    return {"rows": rows, "notes": ["Curve = libzmq's CurveZMQ (libsodium); both sides in two processes on one "
                                    "host, loopback TCP"], "data": data}
