"""ipyparallel peer: one local engine, ``execute('z = x + y')`` + ``pull('z')`` timed. One JSON line out.

    python -m benchmarks._ipp_peer N

Prints ``{"skipped": ...}`` when ipyparallel is not installed. Stops its cluster in ``finally``, also on
SIGTERM or when stdin closes (the parent is gone).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


def main() -> None:
    n = int(sys.argv[1])
    try:
        import ipyparallel as ipp
    except ImportError:
        print(json.dumps({"skipped": "ipyparallel is not installed (pip install -e .[bench])"}), flush=True)
        return

    def on_term(*_: object) -> None:
        raise SystemExit(3)

    signal.signal(signal.SIGTERM, on_term)

    def watch_stdin() -> None:
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_stdin, daemon=True).start()
    t0 = time.perf_counter()
    cluster = ipp.Cluster(n=1, log_level=40)
    try:
        rc = cluster.start_and_connect_sync(activate=False)
        rc.wait_for_engines(1, timeout=60)
        start_s = time.perf_counter() - t0
        view = rc[0]
        view.block = True
        view.execute("import torch")
        view.push({"x": None, "y": None})
        view.execute("x = torch.arange(5, dtype=torch.float32); y = torch.ones(5)")
        for _ in range(20):
            view.execute("z = x + y")
            view.pull("z")
        times = []
        for _ in range(n):
            t1 = time.perf_counter()
            view.execute("z = x + y")
            z = view.pull("z")
            times.append(time.perf_counter() - t1)
        assert float(z.sum()) == 15.0
        times.sort()
        print(json.dumps({"op_median_us": times[len(times) // 2] * 1e6,
                          "op_p90_us": times[int(0.9 * (len(times) - 1))] * 1e6, "n": n,
                          "cluster_start_s": start_s}), flush=True)
    finally:
        try:
            cluster.stop_cluster_sync()
        except Exception:
            pass


if __name__ == "__main__":
    main()
