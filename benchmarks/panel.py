"""Row: serving throughput with the live panels open versus closed (goal: a loss under 10 %).

The owner is a real IPython kernel (``jupyter_client``), as in a notebook: it runs a
:class:`syft_magics.Worker` and, in the "open" blocks, ``display(bob.panel())``, so every
refresh goes through ipywidgets and the kernel's iopub like in JupyterLab (the benchmark's
kernel client is the front end that receives them). The scientist is this process: a chain of
pipelined ops ``z = z + y`` then ``z.get()`` (each result a new pointer, the previous one freed),
timed in blocks that alternate closed / open so that drifts of the machine hit both alike.

Second row: the same chain with the scientist's own :class:`ConnectionPanel` open in this
process (no kernel here, so widget messages stop at ipywidgets' dummy comm: the panel's own work
is what is measured, its JSON to a front end is not).

``python -m benchmarks.panel [--full]`` runs it alone. In the harness it is a row module:
``NAME``, ``TITLE``, ``QUICK`` and ``run(cfg)``; ``run(quick: bool)`` works too.
"""
from __future__ import annotations

import gc
import json
import os
import queue
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import torch

NAME = "panel"
TITLE = "panel open vs closed"
QUICK = True
GOAL_RATIO = 0.9  # open / closed throughput

_OWNER_CODE = """
import gc, json, torch
from syft_magics import Worker
bob = Worker('PanelBench', port=0, policy='open').start()
bob.share(torch.arange(5.), '#X')
panel = None
print(json.dumps({'address': bob.address, 'key': bob.key}))
"""
_OPEN = "panel = bob.panel()\ndisplay(panel)\nprint(panel.renders)"
_CLOSE = "print(json.dumps({'renders': panel.renders, 'seconds': panel.render_seconds}))\npanel.close()\npanel = None"


class _Kernel:
    """A bounded-wait wrapper around a jupyter_client kernel (the data owner's notebook)."""

    def __init__(self, env: Dict[str, str], timeout: float = 60.0) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **env})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=timeout)
        self.messages = 0  # iopub messages received (the panel's widget updates among them)

    def run(self, code: str, timeout: float = 60.0) -> str:
        msg_id = self.kc.execute(code)
        out, error = [], None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the owner's kernel did not finish {code[:40]!r} within {timeout:g} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            self.messages += 1
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(f"the owner's kernel raised {error} running {code[:60]!r}")
        return "".join(out)

    def drain(self) -> int:
        n = 0
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return n
            n += 1
            self.messages += 1

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)


def _chain(client: Any, x: Any, y: Any, n: int, owner: Optional["_Kernel"] = None) -> float:
    """ops/s of ``n`` pipelined adds and one get (checked).

    Both processes start each block with a full garbage collection: a full collection costs ~150 ms
    in these processes and comes about once per 20,000 ops, so where it falls would decide a block.
    """
    if owner is not None:
        owner.run("gc.collect()")
    gc.collect()
    client.sync()
    t0 = time.perf_counter()
    z = x
    for _ in range(n):
        z = z + y
    value = z.get()
    dt = time.perf_counter() - t0
    expected = torch.arange(5, dtype=torch.float32) + n
    if not torch.equal(value, expected):
        raise AssertionError(f"the chain computed {value}, expected {expected}")
    return n / dt


def _median(values: List[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def run(cfg: Any = True) -> Dict[str, Any]:
    """Measure; ``cfg`` is the harness's Config, or a bool (``True``: quick mode)."""
    quick = cfg if isinstance(cfg, bool) else not getattr(cfg, "full", False)
    n_ops = 20_000  # ~1 s blocks: shorter ones swing by +-50% on a shared 2-vCPU machine
    blocks = 6 if quick else 9
    log = getattr(cfg, "log", lambda msg: print(f"  .. {msg}", file=sys.stderr, flush=True))
    import syft_magics
    from syft_magics.ui.panels import ConnectionPanel

    runtime = tempfile.mkdtemp(prefix="syft-panel-bench-")
    env = {"SYFT_MAGICS_RUNTIME_DIR": runtime, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
           + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    owner: Optional[_Kernel] = None
    client = None
    data: Dict[str, Any] = {"n_ops": n_ops, "blocks": blocks}
    try:
        log("panel: starting the owner's kernel")
        owner = _Kernel(env)
        info = json.loads(owner.run(_OWNER_CODE).strip().splitlines()[-1])
        syft_magics.defaults.reply_timeout = 30.0
        client = syft_magics.connect(info["address"], key=info["key"], timeout=30.0)
        x, = client.search("#X")
        y = client.send(torch.ones(5))
        _chain(client, x, y, 500)  # warm-up (imports, allocations)

        closed: List[float] = []
        opened: List[float] = []
        renders = seconds = 0.0
        open_time = 0.0
        for b in range(blocks):
            # pairs alternate which state goes first, so a drift of the machine does not favour one
            for state in (("closed", "open") if b % 2 == 0 else ("open", "closed")):
                if state == "closed":
                    closed.append(_chain(client, x, y, n_ops, owner))
                    continue
                owner.run(_OPEN)
                t0 = time.monotonic()
                opened.append(_chain(client, x, y, n_ops, owner))
                open_time += time.monotonic() - t0
                stats = json.loads(owner.run(_CLOSE).strip().splitlines()[-1])
                renders += stats["renders"] - 1  # the first render happens in display(), before the chain
                seconds += stats["seconds"]
                owner.drain()
            log(f"panel: pair {b + 1}/{blocks}: closed {closed[-1]:,.0f}, open {opened[-1]:,.0f} ops/s")
        data.update(owner_closed_ops_s=closed, owner_open_ops_s=opened, owner_renders=renders,
                    owner_render_s=seconds, owner_open_s=open_time, iopub_messages=owner.messages)

        # the scientist's panel, in this process
        sci_closed: List[float] = []
        sci_open: List[float] = []
        sci_renders = sci_seconds = sci_open_time = 0.0
        for b in range(blocks):
            for state in (("closed", "open") if b % 2 == 0 else ("open", "closed")):
                if state == "closed":
                    sci_closed.append(_chain(client, x, y, n_ops, owner))
                    continue
                panel = ConnectionPanel(client, namespace={"x": x, "y": y})
                try:
                    t0 = time.monotonic()
                    sci_open.append(_chain(client, x, y, n_ops, owner))
                    sci_open_time += time.monotonic() - t0
                    sci_renders += panel.renders - 1
                    sci_seconds += panel.render_seconds
                finally:
                    panel.close()
        data.update(scientist_closed_ops_s=sci_closed, scientist_open_ops_s=sci_open,
                    scientist_renders=sci_renders, scientist_render_s=sci_seconds)
    finally:
        if client is not None:
            client.disconnect()
        if owner is not None:
            owner.shutdown()
        shutil.rmtree(runtime, ignore_errors=True)

    oc, oo = _median(closed), _median(opened)
    sc, so = _median(sci_closed), _median(sci_open)
    pair_ratio = _median([o / c for o, c in zip(opened, closed)])
    sci_pair_ratio = _median([o / c for o, c in zip(sci_open, sci_closed)])
    data.update(owner_pair_ratio=pair_ratio, scientist_pair_ratio=sci_pair_ratio)
    renders_per_s = renders / open_time if open_time else 0.0
    ms_per_render = 1000 * seconds / renders if renders else 0.0
    notes = [
        f"owner's panel: {renders:.0f} renders in {open_time:.1f} s open under load ({renders_per_s:.1f}/s), "
        f"{ms_per_render:.1f} ms each; {data['iopub_messages']} iopub messages reached the benchmark's front end",
        f"scientist's panel: {sci_renders:.0f} renders, "
        f"{1000 * sci_seconds / sci_renders if sci_renders else 0:.1f} ms each",
        "ratio = open / closed; one block's rate varies by 10-20% on a shared 2-vCPU machine, so compare the "
        "medians of alternating pairs, not single blocks",
    ]
    rows = [
        _row(f"chain of {n_ops:,} ops + get, owner's panel open", oo, oc, notes=(
            f"baseline = panel closed; medians of {blocks} alternating pairs (median pair ratio {pair_ratio:.3f}); "
        "owner = a real IPython kernel")),
        _row(f"chain of {n_ops:,} ops + get, scientist's panel open", so, sc, notes=(
            f"baseline = panel closed; medians of {len(sci_open)} alternating pairs (median pair ratio "
        f"{sci_pair_ratio:.3f}); panel in the client process")),
    ]
    owner_share = seconds / open_time if open_time else 0.0
    sci_share = sci_seconds / sci_open_time if sci_open_time else 0.0
    rows += [
        _info("owner's panel: share of time spent rendering, under load", 100 * owner_share,
              f"{renders_per_s:.1f} renders/s, {ms_per_render:.1f} ms each (the throttle keeps it near 2%)"),
        _info("scientist's panel: share of time spent rendering, under load", 100 * sci_share,
              f"{sci_renders / sci_open_time if sci_open_time else 0:.1f} renders/s"),
    ]
    data.update(owner_render_share=owner_share, scientist_render_share=sci_share)
    return {"rows": rows, "notes": notes, "data": data}


def _row(label: str, ours: float, baseline: float, notes: str) -> Dict[str, Any]:
    try:
        from benchmarks._util import row
    except ImportError:  # run as a plain script from elsewhere
        ratio = ours / baseline if baseline else None
        return {"label": label, "ours": ours, "baseline": baseline, "unit": "ops/s", "ratio": ratio,
                "better": "higher", "goal": ">= 0.9x closed", "goal_ratio": GOAL_RATIO,
                "met": None if ratio is None else ratio >= GOAL_RATIO, "notes": notes}
    return row(label, ours, baseline, "ops/s", better="higher", goal=">= 0.9x closed (loss < 10%)",
               goal_ratio=GOAL_RATIO, notes=notes)


def _info(label: str, percent: float, notes: str) -> Dict[str, Any]:
    try:
        from benchmarks._util import info_row
    except ImportError:
        return {"label": label, "ours": percent, "baseline": None, "unit": "%", "ratio": None, "better": "lower",
                "goal": "-", "met": None, "notes": notes}
    return info_row(label, percent, None, "%", notes=notes)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    res = run("--full" not in argv)
    for r in res["rows"]:
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        if r["baseline"] is None:
            print(f"{r['label']}: {r['ours']:.1f} {r['unit']}  {r['notes']}")
            continue
        print(f"{r['label']}: {r['ours']:,.0f} vs {r['baseline']:,.0f} {r['unit']} "
              f"(ratio {r['ratio']:.3f}, goal {r['goal']}: {met})  {r['notes']}")
    for note in res["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
