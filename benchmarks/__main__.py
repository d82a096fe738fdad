"""``python -m benchmarks [--full] [--peers] [--json PATH] [--only NAMES]``: run the rows, print the table,
write JSON."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from typing import Any, Dict, List

from . import rows as rows_pkg
from ._util import ROOT, Alarm, Config, DeadlineExceeded, stop_all_children

QUICK_DEADLINE_S = 115.0
FULL_DEADLINE_S = 570.0


def machine() -> Dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: Dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    import msgpack
    import zmq

    info.update(pyzmq=zmq.__version__, libzmq=zmq.zmq_version(), msgpack=".".join(map(str, msgpack.version)),
                switch_interval_default=sys.getswitchinterval())
    try:
        import syft_magics

        info["syft_magics"] = syft_magics.__version__
    except ImportError:
        info["syft_magics"] = None
    try:
        import subprocess

        info["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                     text=True, timeout=5).stdout.strip()
    except Exception:
        info["git"] = None
    info["loadavg_at_start"] = _loadavg()
    return info


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        a = abs(v)
        if a >= 10000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def table(results: List[Dict[str, Any]]) -> str:
    head = ["row", "ours", "baseline", "unit", "ratio", "goal", "met", "notes"]
    lines: List[List[str]] = []
    for res in results:
        took = f" ({res['seconds']:.0f} s)" if "seconds" in res else ""
        lines.append([f"[{res['title']}]{took}" + (f"  ERROR: {res['error']}" if res.get("error") else ""),
                      "", "", "", "", "", "", ""])
        for r in res.get("rows", []):
            met = {True: "yes", False: "NO", None: "-"}[r["met"]]
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            lines.append(["  " + r["label"], _fmt(r["ours"]), _fmt(r["baseline"]), r["unit"], ratio, r["goal"], met,
                          r["notes"]])
    data = [line for line in lines if any(line[1:])]
    widths = [max([len(h)] + [len(line[i]) for line in data]) for i, h in enumerate(head)]
    widths[0] = min(max(widths[0], 30), 60)
    out = []

    def fmt(cells: List[str]) -> str:
        left = [cells[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(cells[1:5], 1)]
        right = [cells[5].ljust(widths[5]), cells[6].ljust(3), cells[7]]
        return "  ".join(left + right).rstrip()

    out.append(fmt(head))
    out.append("-" * min(200, sum(widths[:7]) + 14 + 20))
    for line in lines:
        out.append(line[0] if not any(line[1:]) else fmt(line))
    return "\n".join(out)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--full", action="store_true", help="full mode (< 10 min): more samples, 1 GiB memory row, peers")
    ap.add_argument("--peers", action="store_true", help="run the peers row in quick mode too")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                     "latest.json"), help="where to write the JSON results")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated rows to run, of: {', '.join(map(rows_pkg.short, rows_pkg.ROWS))}")
    ap.add_argument("--deadline", type=float, default=None,
                    help=f"override the run's time limit in seconds "
                         f"(default {QUICK_DEADLINE_S:g} quick, {FULL_DEADLINE_S:g} full)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)

    names = list(rows_pkg.ROWS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        known = [rows_pkg.short(n) for n in names]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            ap.error(f"unknown rows {unknown}; choose from {known}")
        names = [n for n in names if rows_pkg.short(n) in wanted]
    modules = rows_pkg.load(names)
    if not args.only:
        modules = [m for m in modules if m.QUICK or args.full or (m.NAME == "peers" and args.peers)]

    def on_term(signum: int, frame: Any) -> None:  # a SIGTERM cleans up like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    start = time.monotonic()
    deadline = start + (args.deadline or (FULL_DEADLINE_S if args.full else QUICK_DEADLINE_S))
    cfg = Config(full=args.full, peers=args.peers, deadline=deadline, only=args.only, verbose=not args.quiet)
    info = machine()
    print(f"syft_magics benchmarks, {cfg.mode} mode; machine: {info['cpu']}, {info['cores']} cores, "
          f"Python {info['python']}, torch {info['torch']}, pyzmq {info['pyzmq']} / libzmq {info['libzmq']}, "
          f"git {info['git']}, load {info['loadavg_at_start']}", flush=True)
    results: List[Dict[str, Any]] = []
    interrupted = None
    try:
        with Alarm(deadline + 3.0):
            for mod in modules:
                res: Dict[str, Any] = {"name": mod.NAME, "title": mod.TITLE}
                if cfg.remaining() < 5:
                    res["error"] = "not run: the run's deadline passed"
                    results.append(res)
                    continue
                t0 = time.monotonic()
                cfg.log(f"row {mod.TITLE} ({cfg.remaining():.0f} s left)")
                try:
                    res.update(mod.run(cfg))
                except DeadlineExceeded as exc:
                    res["error"] = str(exc)
                except KeyboardInterrupt:
                    res["error"] = "interrupted (Ctrl-C)"
                    res["seconds"] = round(time.monotonic() - t0, 2)
                    results.append(res)
                    raise
                except Exception as exc:
                    res["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    res["traceback"] = traceback.format_exc()
                    if not args.quiet:
                        traceback.print_exc()
                finally:
                    stop_all_children()
                res["seconds"] = round(time.monotonic() - t0, 2)
                results.append(res)
                cfg.results[mod.NAME] = res
    except (KeyboardInterrupt, DeadlineExceeded) as exc:
        interrupted = type(exc).__name__
    finally:
        stop_all_children()
    elapsed = time.monotonic() - start
    print()
    print(table(results))
    for res in results:
        for note in res.get("notes", []):
            print(f"note [{res['name']}]: {note}")
    info["loadavg_at_end"] = _loadavg()
    print(f"\n{cfg.mode} mode, {elapsed:.0f} s, load average {info['loadavg_at_start']} -> {info['loadavg_at_end']} "
          "(other work on the machine skews small-message figures: compare ratios within one run)"
          + (f" (stopped early: {interrupted})" if interrupted else ""))
    out = {"mode": cfg.mode, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "seconds": round(elapsed, 2), "machine": info, "interrupted": interrupted, "rows": results}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(_clean(out), f, indent=1, default=str, allow_nan=False)
        print(f"JSON: {args.json}")
    return 130 if interrupted == "KeyboardInterrupt" else 0


def _clean(o: Any) -> Any:
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


if __name__ == "__main__":
    sys.exit(main())
