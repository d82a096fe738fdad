"""Row 6: peers. torch.distributed.rpc (world size 2 on 127.0.0.1, both ranks our subprocesses) and
ipyparallel (one local engine; skipped with a note when not installed: ``pip install -e .[bench]``).

Our figures come from rows 1-3 of the same run (the ratio column is ours / peer); where those rows did not
run, ours is left empty. Not in quick mode unless ``--peers``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._util import ChildFailed, Config, free_port, info_row, read_json_line, row, skipped_row, spawn, stop_child

NAME = "peers"
TITLE = "6. peers"
QUICK = False


def _ours(cfg: Config, row_name: str, *path: str) -> Optional[float]:
    obj: Any = cfg.results.get(row_name, {}).get("data")
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    if isinstance(obj, list):
        from .._util import median

        return median(obj) if obj else None
    return obj


def _torch_rpc(cfg: Config, timeout: float) -> Dict[str, Any]:
    port = free_port()
    n_ops, n_big = (1000, 10) if cfg.full else (300, 4)
    procs = []
    try:
        procs.append(spawn("benchmarks._rpc_peer", "1", str(port), str(n_ops), str(n_big)))
        procs.append(spawn("benchmarks._rpc_peer", "0", str(port), str(n_ops), str(n_big)))
        return read_json_line(procs[1], timeout)
    finally:
        for p in reversed(procs):
            stop_child(p, grace=5.0)


def _ipp(cfg: Config, timeout: float) -> Dict[str, Any]:
    proc = spawn("benchmarks._ipp_peer", str(300 if cfg.full else 100))
    try:
        return read_json_line(proc, timeout)
    finally:
        stop_child(proc, grace=10.0)


def run(cfg: Config) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    notes: List[str] = []
    data: Dict[str, Any] = {}
    our_op = _ours(cfg, "latency", "ours", "median_us")
    our_chain = _ours(cfg, "pipeline", "ours_ops_s")
    our_push = _ours(cfg, "bandwidth", "16MiB", "GB_s", "ours_send")
    our_pull = _ours(cfg, "bandwidth", "16MiB", "GB_s", "ours_get")
    if our_op is None:
        notes.append("peers: run rows latency, pipeline and bandwidth in the same run to fill in our figures")

    cfg.log("peers: torch.distributed.rpc")
    try:
        tr = _torch_rpc(cfg, timeout=min(120.0, max(10.0, cfg.remaining() - 10)))
    except ChildFailed as exc:
        tr = {"error": str(exc)[:500]}
    data["torch_rpc"] = tr
    if "error" in tr:
        rows.append(skipped_row("torch rpc", f"failed: {tr['error'][:120]}"))
    else:
        rows += [
            info_row("vs torch rpc: op on 2 RRefs + value, median", our_op, tr["op_median_us"], "us",
                     notes=f"rpc p90 {tr['op_p90_us']:.0f} us"),
            info_row("vs torch rpc: op chain", our_chain, tr["chain100_ops_s"], "ops/s", better="higher",
                     notes="ours: chain of 10,000 + get; rpc: chain of 100 rpc.remote + to_here"),
            row("vs torch rpc: 16 MiB push (send)", our_push, tr["push16_GB_s"], "GB/s", better="higher",
                goal=">= torch rpc (same host)", goal_ratio=1.0,
                notes="ours: the same-host path; rpc: TensorPipe defaults on one host"),
            row("vs torch rpc: 16 MiB pull (get)", our_pull, tr["pull16_GB_s"], "GB/s", better="higher",
                goal=">= torch rpc (same host)", goal_ratio=1.0),
        ]

    cfg.log("peers: ipyparallel")
    try:
        ip = _ipp(cfg, timeout=min(90.0, max(10.0, cfg.remaining() - 5)))
    except ChildFailed as exc:
        ip = {"error": str(exc)[:500]}
    data["ipyparallel"] = ip
    if "skipped" in ip:
        rows.append(skipped_row("vs ipyparallel execute + pull", "pip install -e .[bench]"))
    elif "error" in ip:
        rows.append(skipped_row("vs ipyparallel execute + pull", f"failed: {ip['error'][:120]}"))
    else:
        rows.append(info_row("vs ipyparallel: execute + pull, median", our_op, ip["op_median_us"], "us",
                             notes=f"cluster start {ip['cluster_start_s']:.1f} s"))
    return {"rows": rows, "notes": notes, "data": data}
