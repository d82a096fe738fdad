"""Row 5: peak RSS added on each side by a ``.get()`` and a ``send`` of a big float32 tensor.

Each side is a fresh process. Its peak (VmHWM) is reset to the current RSS by writing ``5`` to
``/proc/self/clear_refs`` just before the measured step (where the kernel refuses, the peak is taken
against the fresh process's RSS before the step, which is then an upper bound). Figure: added peak / tensor.
Quick mode moves 256 MiB, full mode 1 GiB.
"""
from __future__ import annotations

from typing import Any, Dict

from .._util import Config, GiB, MiB, Owner, read_json_line, row, spawn, stop_child

NAME = "memory"
TITLE = "5. memory"
QUICK = True
GOAL_RATIO = 1.1


def _client(mode: str, owner: Owner, arg: str, timeout: float) -> Dict[str, Any]:
    proc = spawn("benchmarks._memclient", mode, owner.address, owner.key, arg)
    try:
        return read_json_line(proc, timeout)
    finally:
        stop_child(proc)


def run(cfg: Config) -> Dict[str, Any]:
    nbytes = GiB if cfg.full else 256 * MiB
    numel = nbytes // 4
    size = f"{nbytes // MiB} MiB" if nbytes < GiB else f"{nbytes // GiB} GiB"
    timeout = min(120.0, max(10.0, cfg.remaining() - 5))
    res: Dict[str, Any] = {}
    cfg.log(f"memory: get of {size}")
    with Owner("syft", tensors={"#BIG": numel}, start_timeout=timeout) as owner:
        owner_reset = owner.command("reset_hwm")
        client = _client("get", owner, "#BIG", timeout)
        after = owner.command("hwm")
        res["get"] = {"client": client, "owner_reset": owner_reset, "owner_after": after,
                      "owner_added": after["hwm"] - owner_reset["rss"]}
    cfg.check(5)
    cfg.log(f"memory: send of {size}")
    with Owner("syft", start_timeout=timeout) as owner:
        owner_reset = owner.command("reset_hwm")
        client = _client("send", owner, str(numel), timeout)
        after = owner.command("hwm")
        res["send"] = {"client": client, "owner_reset": owner_reset, "owner_after": after,
                       "owner_added": after["hwm"] - owner_reset["rss"]}
    reset_ok = all(res[k]["client"]["reset_ok"] and res[k]["owner_reset"]["ok"] for k in ("get", "send"))
    how = "VmHWM reset via clear_refs" if reset_ok else "VmHWM vs fresh-process RSS (clear_refs refused)"
    mib = nbytes / MiB
    rows = []
    for step in ("get", "send"):
        for side in ("client", "owner"):
            added = res[step]["client"]["added"] if side == "client" else res[step]["owner_added"]
            rows.append(row(f"{side} peak RSS added by {step} of {size}", added / MiB, mib, "MiB", better="lower",
                            goal=f"<= {GOAL_RATIO}x tensor", goal_ratio=GOAL_RATIO,
                            notes=f"baseline = tensor size; {how}"))
    return {"rows": rows, "data": res, "notes": [f"memory measured with {size} tensors ({cfg.mode} mode); {how}"]}
