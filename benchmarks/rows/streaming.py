"""Row 10: streamed transfers (``syft_magics.wire.chunks``): small ops during a big transfer, and the chunk size.

Over our TCP path (``defaults.same_host = False``), one owner process, one client, in the same run:

- **Op round trip during a big transfer**: ``torch.add(x_ptr, y_ptr).get()`` round trips from a second thread
  of the client, on the same link, while the main thread runs a 1 GiB (quick: 256 MiB) ``get`` and then a
  ``send``, against the same round trips with the link idle. Goal: a few times (<= 5x) the idle median.
  For contrast (no goal) the same during a single-frame ``get`` (streaming off): the op waits for the whole
  value.
- **Chunked vs single-frame throughput** at 16 and 128 MiB, send (``send`` + ``sync``) and ``get``, for each
  candidate chunk size (window ``defaults.chunk_window``) against the single-frame path, in round-robin
  rounds so load from elsewhere hits all alike. The default chunk size is the candidate these rows pick.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Any, Callable, Dict, List

import torch

from .._clients import get_seconds, op_times, send_seconds, syft_connect
from .._util import Config, MiB, Owner, info_row, median, row, summary_us

NAME = "streaming"
TITLE = "10. streaming (big transfers in chunks)"
QUICK = True
GOAL_RATIO = 5.0  # op round trip during a big transfer, against idle
CHUNKS_KIB = (1024, 2048, 4096)  # (256 KiB was the slowest in every run)
SIZES_MIB = (16, 128)
#: Rounds of the chunk-size measures at most (full mode; half in quick mode), as the budget allows.
MAX_ROUNDS = 12
SINGLE = 1 << 62  # stream_min_bytes that turns streaming off


def _during(client: Any, x: Any, y: Any, transfer: Callable[[], Any]) -> Dict[str, Any]:
    """Op round trips from a second thread while ``transfer`` runs on this one; its seconds too."""
    stop = threading.Event()
    times: List[float] = []

    def ops() -> None:
        while not stop.is_set():
            times.extend(op_times(x, y, 1, 5.0))

    t = threading.Thread(target=ops, name="ops-during-transfer")
    t0 = time.perf_counter()
    t.start()
    try:
        transfer()
    finally:
        dt = time.perf_counter() - t0
        stop.set()
        t.join(30)
    return {"seconds": dt, "ops": times}


def run(cfg: Config) -> Dict[str, Any]:
    import syft_magics

    d = syft_magics.defaults
    big = (1024 if cfg.full else 256) * MiB
    tensors = {"#X": 5, "#Y": 5, "#BIG": big // 4, **{f"#S{s}": s * MiB // 4 for s in SIZES_MIB}}
    reps = 3 if cfg.full else 2
    rows, data, notes = [], {}, []
    with Owner("syft", tensors=tensors, start_timeout=60) as owner:
        d.same_host = False
        client = syft_connect(owner.address, owner.key)
        d.same_host = True
        saved = (d.stream_min_bytes, d.chunk_bytes)
        try:
            x, = client.search("#X")
            y, = client.search("#Y")
            bigp, = client.search("#BIG")
            src_big = torch.ones(big // 4)
            op_times(x, y, 200, 2.0)  # warm
            # -- op round trip: idle, during a streamed get and send, during a single-frame get ------
            cfg.check(20)
            idle = op_times(x, y, 400, cfg.budget(3.0))
            cfg.log(f"streaming: op round trips during a {big // MiB} MiB get and send")
            got = _during(client, x, y, bigp.get)
            gc.collect()
            sent = _during(client, x, y, lambda: client.send(src_big).delete())
            gc.collect()
            idle2 = op_times(x, y, 400, cfg.budget(3.0))
            d.stream_min_bytes = SINGLE
            single = _during(client, x, y, bigp.get)
            d.stream_min_bytes = saved[0]
            gc.collect()
            cfg.log(f"streaming: during get {len(got['ops'])} ops in {got['seconds']:.2f} s, send "
                    f"{len(sent['ops'])} in {sent['seconds']:.2f} s, single-frame get {single['seconds']:.2f} s")
            i = summary_us(idle + idle2)
            g, s, one = summary_us(got["ops"]), summary_us(sent["ops"]), summary_us(single["ops"])
            data["round_trip"] = {"idle": i, "during_get": g, "during_send": s, "during_single_frame_get": one,
                                  "get_s": got["seconds"], "send_s": sent["seconds"],
                                  "single_get_s": single["seconds"]}
            size = f"{big // MiB} MiB"
            rows.append(row(f"op round trip during {size} get, median", g["median_us"], i["median_us"], "us",
                            better="lower", goal=f"<= {GOAL_RATIO:g}x idle", goal_ratio=GOAL_RATIO,
                            notes=f"n={g['n']} during / {i['n']} idle; get took {got['seconds']:.2f} s"))
            rows.append(row(f"op round trip during {size} send, median", s["median_us"], i["median_us"], "us",
                            better="lower", goal=f"<= {GOAL_RATIO:g}x idle", goal_ratio=GOAL_RATIO,
                            notes=f"n={s['n']}; send took {sent['seconds']:.2f} s"))
            rows.append(info_row(f"op round trip during single-frame {size} get", one["median_us"], i["median_us"],
                                 "us", notes=f"streaming off, for contrast; n={one['n']}; get took "
                                 f"{single['seconds']:.2f} s"))
            # -- chunk size: chunked against single-frame throughput -----------------------------------
            for size_mib in SIZES_MIB:
                cfg.check(15)
                nbytes = size_mib * MiB
                ptr, = client.search(f"#S{size_mib}")
                src = torch.ones(nbytes // 4)
                cfg.log(f"streaming: chunk sizes at {size_mib} MiB")

                def measure(stream_min: int, chunk: int) -> Dict[str, Callable[[], float]]:
                    def send() -> float:
                        d.stream_min_bytes, d.chunk_bytes = stream_min, chunk
                        return send_seconds(client, src)

                    def get() -> float:
                        d.stream_min_bytes, d.chunk_bytes = stream_min, chunk
                        return get_seconds(ptr)
                    return {"send": send, "get": get}

                measures: Dict[str, Callable[[], float]] = {}
                for label, (smin, chunk) in {"single": (SINGLE, saved[1]),
                                             **{f"{k}K": (0, k << 10) for k in CHUNKS_KIB}}.items():
                    for way, fn in measure(smin, chunk).items():
                        measures[f"{way}_{label}"] = fn
                for fn in measures.values():
                    fn()  # warm
                secs: Dict[str, List[float]] = {k: [] for k in measures}
                # rounds until the budget is spent (medians of 2-3 transfers moved 0.5-1.0x between runs)
                end = time.monotonic() + cfg.budget(8.0 if cfg.full else 3.0)
                for r in range(MAX_ROUNDS if cfg.full else MAX_ROUNDS // 2):
                    for k, fn in measures.items():
                        secs[k].append(fn())
                        gc.collect()
                    if time.monotonic() > end and r + 1 >= reps:
                        break
                d.stream_min_bytes, d.chunk_bytes = saved
                cfg.log(f"streaming: {size_mib} MiB medians (s) "
                        + ", ".join(f"{k} {median(v):.3f}" for k, v in secs.items()))
                gbps = {k: nbytes / median(v) / 1e9 for k, v in secs.items()}
                data[f"{size_mib}MiB"] = {"GB_s": gbps, "seconds": secs}
                for way in ("send", "get"):
                    best = max(CHUNKS_KIB, key=lambda k: gbps[f"{way}_{k}K"])
                    chosen = saved[1] >> 10
                    rows.append(row(f"{way} {size_mib} MiB chunked ({chosen} KiB) vs single frame",
                                    gbps[f"{way}_{chosen}K"] if chosen in CHUNKS_KIB else None,
                                    gbps[f"{way}_single"], "GB/s", better="higher", goal=">= 0.8x single frame",
                                    goal_ratio=0.8,
                                    notes=", ".join(f"{k} KiB {gbps[f'{way}_{k}K']:.2f}" for k in CHUNKS_KIB) +
                                    f"; best {best} KiB"))
        finally:
            d.stream_min_bytes, d.chunk_bytes = saved
            client.disconnect()
    notes.append(f"chunk window {d.chunk_window}; default chunk {d.chunk_bytes >> 10} KiB, streams from "
                 f"{d.stream_min_bytes >> 20} MiB")
    return {"rows": rows, "data": data, "notes": notes}
