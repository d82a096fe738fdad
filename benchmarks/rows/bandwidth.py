"""Row 3: bandwidth of ``client.send`` and ``.get()`` of float32 tensors, in GB/s (1 GB = 1e9 bytes).

Ours, send: ``p = client.send(t); client.sync()`` (the sync's round trip proves the worker holds it).
Ours, get: ``ptr.get()`` of a tensor the owner shared. Both as shipped (owner and client on one host: the
same-host path for 1-64 MiB, see ``syft_magics.wire.samehost``) and with ``defaults.same_host = False``
(our TCP path), in the same rounds. Baselines over the same TCP loopback, same layout:
raw ZeroMQ zero-copy (``copy=False`` then ``torch.frombuffer``, with an ack for pushes), and pickle
(``pickle.dumps`` sent as bytes, ``pickle.loads`` on the other side). For the same-host question it also
measures a /dev/shm push (copy into a fresh segment, owner copies out), a one-copy
``process_vm_readv`` pull (what TensorPipe's CMA channel does) and a local memcpy into a fresh buffer
(the ceiling of any one-copy path).
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Dict, List

import torch

from .._clients import RawClient, cma_pull, get_seconds, local_copy, send_seconds, syft_connect
from .._util import Config, MiB, Owner, info_row, median, row

POOL_MAX_BYTES = 64 << 20  # syft_magics.wire.samehost.POOL_MAX_BYTES (imported lazily by the children)

NAME = "bandwidth"
TITLE = "3. bandwidth"
QUICK = True
SIZES_MIB = (1, 16, 128)
GOAL_RATIO = 0.8


def _reps(size_mib: int, full: bool) -> int:
    return {1: 40, 16: 12, 128: 5}[size_mib] if full else {1: 10, 16: 4, 128: 2}[size_mib]


def _round_robin(measures: Dict[str, Callable[[], float]], reps: int, budget: float) -> Dict[str, List[float]]:
    """``reps`` rounds, each running every measure once, so load spikes from elsewhere hit all alike; every
    other round in reverse order, so no measure always comes first (after the caches were cold) or last."""
    out: Dict[str, List[float]] = {k: [] for k in measures}
    end = time.monotonic() + budget
    items = list(measures.items())
    for i in range(reps):
        for k, fn in items if i % 2 == 0 else items[::-1]:
            try:
                out[k].append(fn())
            except OSError:  # e.g. process_vm_readv refused
                out[k].append(-1.0)
            gc.collect()
        if time.monotonic() > end and i >= 1:
            break
    return out


def _gbps(nbytes: int, seconds: List[float]) -> float:
    return nbytes / median(seconds) / 1e9 if seconds else float("nan")


def run(cfg: Config) -> Dict[str, Any]:
    tensors = {f"#B{s}": s * MiB // 4 for s in SIZES_MIB}
    rows, data, notes = [], {}, []
    budget = cfg.budget(2.0 if cfg.full else 1.0)  # per size and measure (11 measures x 3 sizes)
    with Owner("syft", tensors=tensors) as syft_owner, Owner("raw", tensors=tensors) as raw_owner:
        client = syft_connect(syft_owner.address, syft_owner.key)
        import syft_magics

        syft_magics.defaults.same_host = False
        tcp_client = syft_connect(syft_owner.address, syft_owner.key)
        syft_magics.defaults.same_host = True
        try:
            with RawClient(raw_owner.address) as raw:
                for size in SIZES_MIB:
                    cfg.check(10)
                    nbytes = size * MiB
                    tag = f"#B{size}"
                    reps = _reps(size, cfg.full)
                    src = torch.ones(nbytes // 4, dtype=torch.float32)
                    ptr, = client.search(tag)
                    tcp_ptr, = tcp_client.search(tag)

                    def sender(c: Any) -> Callable[[], float]:
                        return lambda: send_seconds(c, src)

                    def getter(p: Any) -> Callable[[], float]:
                        return lambda: get_seconds(p, nbytes)

                    ours_send, ours_get = sender(client), getter(ptr)
                    tcp_send, tcp_get = sender(tcp_client), getter(tcp_ptr)
                    for warm in (ours_send, ours_get, tcp_send, tcp_get):
                        warm()
                    raw.push_zero_copy(src)
                    raw.drop()
                    measures: Dict[str, Callable[[], float]] = {
                        "ours_send": ours_send,
                        "tcp_send": tcp_send,
                        "raw_push": lambda: raw.push_zero_copy(src),
                        "pickle_push": lambda: raw.push_pickle(src),
                        "shm_push": lambda: raw.push_shm(src),
                        "ours_get": ours_get,
                        "tcp_get": tcp_get,
                        "raw_pull": lambda: raw.pull_zero_copy(tag, nbytes),
                        "pickle_pull": lambda: raw.pull_pickle(tag, nbytes),
                        "local_copy": lambda: local_copy(nbytes),
                        "cma_pull": lambda: cma_pull(raw, tag) or -1.0,
                    }
                    m = _round_robin(measures, reps, budget * len(measures))
                    m["cma_pull"] = [c for c in m["cma_pull"] if c > 0]
                    g = {k: _gbps(nbytes, v) for k, v in m.items()}
                    data[f"{size}MiB"] = {"GB_s": g, "seconds": m}
                    same_host = max(g["shm_push"], g.get("cma_pull") or 0.0)
                    rows.append(row(f"send {size} MiB", g["ours_send"], g["raw_push"], "GB/s", better="higher",
                                    goal=f">= {GOAL_RATIO}x raw zero-copy", goal_ratio=GOAL_RATIO,
                                    notes=f"pickle {g['pickle_push']:.2f} "
                                          f"(ours {g['ours_send'] / g['pickle_push']:.1f}x); "
                                          f"shm {g['shm_push']:.2f}"))
                    cma_txt = f"{g['cma_pull']:.2f}" if m["cma_pull"] else "refused"
                    rows.append(row(f"get {size} MiB", g["ours_get"], g["raw_pull"], "GB/s", better="higher",
                                    goal=f">= {GOAL_RATIO}x raw zero-copy", goal_ratio=GOAL_RATIO,
                                    notes=f"pickle {g['pickle_pull']:.2f} "
                                          f"(ours {g['ours_get'] / g['pickle_pull']:.1f}x); "
                                          f"1-copy CMA {cma_txt}; memcpy to fresh {g['local_copy']:.2f}"))
                    if client.same_host:
                        goal = ">= 2x our TCP path" if size == 1 else "-"
                        for what in ("send", "get"):
                            rows.append(row(f"{what} {size} MiB, same-host path vs our TCP path", g[f"ours_{what}"],
                                            g[f"tcp_{what}"], "GB/s", better="higher", goal=goal,
                                            goal_ratio=2.0 if size == 1 else None,
                                            notes="pool" if size * MiB <= POOL_MAX_BYTES else "above the pool: TCP"))
                    data[f"{size}MiB"]["best_same_host_GB_s"] = same_host
                    gc.collect()
        finally:
            client.disconnect()
            tcp_client.disconnect()
    # the same-host question, answered from this run's numbers
    verdicts = []
    for size in SIZES_MIB:
        d = data.get(f"{size}MiB")
        if not d:
            continue
        g = d["GB_s"]
        best_ours = max(g["ours_send"], g["ours_get"])
        cma = g.get("cma_pull") if d["seconds"].get("cma_pull") else None
        best_alt = max(g["shm_push"], cma or 0.0)
        verdicts.append(f"{size} MiB: ours {g['ours_send']:.2f}/{g['ours_get']:.2f} GB/s (send/get), "
                        f"shm push {g['shm_push']:.2f}, CMA pull {cma:.2f}" if cma else
                        f"{size} MiB: ours {g['ours_send']:.2f}/{g['ours_get']:.2f} GB/s (send/get), "
                        f"shm push {g['shm_push']:.2f}, CMA refused")
        verdicts[-1] += f" -> same-host path {'WOULD' if best_alt > 1.2 * best_ours else 'would not'} beat TCP " \
                        f"({best_alt / best_ours:.1f}x)"
    notes.append("same-host shared memory (torch rpc reaches 6.6-8.5 GB/s at 16 MiB): " + "; ".join(verdicts))
    rows.append(info_row("same-host best 16 MiB (shm/CMA)", data.get("16MiB", {}).get("best_same_host_GB_s"),
                         data.get("16MiB", {}).get("GB_s", {}).get("raw_pull"), "GB/s", better="higher",
                         notes="ours column = best same-host path; baseline = raw zmq pull"))
    return {"rows": rows, "notes": notes, "data": data}
