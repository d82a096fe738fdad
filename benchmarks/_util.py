"""Shared pieces of the harness: the run configuration, owner processes, statistics, result rows.

Every wait here has a timeout, every child process is tracked and killed in ``finally``,
and the whole run has one deadline (:class:`Config.deadline`).
"""
from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

#: The directory that holds the ``benchmarks`` package (the repository root).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MiB = 1 << 20
GiB = 1 << 30


class DeadlineExceeded(Exception):
    """The run's global deadline (or a row's budget) passed."""


class ChildFailed(RuntimeError):
    """A child process died, printed garbage or did not answer in time."""


# -- configuration -----------------------------------------------------------------------------
@dataclass
class Config:
    full: bool = False
    peers: bool = False
    deadline: float = 0.0  # time.monotonic() at which the whole run must stop
    only: Optional[List[str]] = None
    results: Dict[str, Any] = field(default_factory=dict)  # results of rows already run (by row name)
    verbose: bool = True

    @property
    def mode(self) -> str:
        return "full" if self.full else "quick"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, margin: float = 0.0) -> None:
        if self.remaining() <= margin:
            raise DeadlineExceeded("the run's global deadline passed")

    def budget(self, seconds: float) -> float:
        """A wall-clock budget for one measurement: ``seconds``, capped by what the run has left."""
        return max(0.2, min(seconds, self.remaining() - 5.0))

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation; ``nan`` for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summary_us(seconds: Sequence[float]) -> Dict[str, float]:
    """Median, p90, p99, min of latencies given in seconds, reported in microseconds."""
    return {"n": len(seconds), "median_us": median(seconds) * 1e6, "p90_us": percentile(seconds, 90) * 1e6,
            "p99_us": percentile(seconds, 99) * 1e6, "min_us": (min(seconds) * 1e6) if seconds else float("nan")}


# -- result rows ----------------------------------------------------------------------------------
def row(label: str, ours: Optional[float], baseline: Optional[float], unit: str, *,
        better: str, goal: str, goal_ratio: Optional[float] = None, goal_abs: Optional[float] = None,
        ratio_of: str = "ours/baseline", notes: str = "", extra: Optional[dict] = None) -> Dict[str, Any]:
    """One line of the table.

    ``better`` is ``"lower"`` (latency, memory) or ``"higher"`` (throughput). The ratio is always
    ``ours / baseline`` (so <= goal for lower-is-better rows, >= goal for higher-is-better ones).
    ``goal_ratio`` is checked against the ratio, ``goal_abs`` against our own figure; a row with
    neither has no goal (``met`` is ``None``).
    """
    ratio = None
    if ours is not None and baseline not in (None, 0):
        ratio = ours / baseline
    checks = []
    if goal_ratio is not None:
        checks.append(None if ratio is None else (ratio <= goal_ratio if better == "lower" else ratio >= goal_ratio))
    if goal_abs is not None:
        checks.append(None if ours is None else (ours <= goal_abs if better == "lower" else ours >= goal_abs))
    if not checks or any(c is None for c in checks):
        met = None
    else:
        met = all(checks)
    return {"label": label, "ours": ours, "baseline": baseline, "unit": unit, "ratio": ratio, "better": better,
            "goal": goal, "goal_ratio": goal_ratio, "goal_abs": goal_abs, "met": met, "notes": notes,
            "extra": extra or {}}


def info_row(label: str, ours: Optional[float], baseline: Optional[float], unit: str, notes: str = "",
             better: str = "lower", extra: Optional[dict] = None) -> Dict[str, Any]:
    """A row shown for context, with no goal."""
    return row(label, ours, baseline, unit, better=better, goal="-", notes=notes, extra=extra)


def skipped_row(label: str, why: str) -> Dict[str, Any]:
    r = row(label, None, None, "", better="lower", goal="-", notes=f"skipped: {why}")
    r["skipped"] = True
    return r


# -- memory of this process ------------------------------------------------------------------------
def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else -1


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def hwm_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def reset_hwm() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return hwm_bytes() <= rss_bytes() + 64 * 1024


# -- ports ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- child processes --------------------------------------------------------------------------------
_CHILDREN: "set[subprocess.Popen]" = set()


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(module: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Start ``python -m module args`` in its own process group, stdin/stdout piped, stderr to a temp file.

    The child is tracked: :func:`stop_child` (called by every user in ``finally``) and an atexit hook
    end it. Children also exit by themselves when their stdin closes (that is, when we die).
    """
    err = tempfile.TemporaryFile(mode="w+b")
    full_env = _env()
    if env:
        full_env.update(env)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            start_new_session=True)
    proc._bench_err = err  # type: ignore[attr-defined]
    proc._bench_buf = b""  # type: ignore[attr-defined]
    _CHILDREN.add(proc)
    return proc


def child_stderr(proc: subprocess.Popen, limit: int = 2000) -> str:
    err = getattr(proc, "_bench_err", None)
    if err is None:
        return ""
    try:
        err.flush()
        err.seek(0)
        text = err.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""
    return text[-limit:]


def read_json_line(proc: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    """The next JSON line the child prints on stdout (other lines are skipped), within ``timeout``."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while True:
            buf: bytes = proc._bench_buf  # type: ignore[attr-defined]
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                proc._bench_buf = buf  # type: ignore[attr-defined]
                line = line.strip()
                if line.startswith(b"{"):
                    try:
                        return json.loads(line)
                    except ValueError:
                        pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{_name(proc)} printed no answer within {timeout:g} s; "
                                  f"stderr: {child_stderr(proc)!r}")
            if not sel.select(min(remaining, 0.5)):
                if proc.poll() is not None:
                    raise ChildFailed(f"{_name(proc)} exited with {proc.returncode}; stderr: {child_stderr(proc)!r}")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait(2)
                raise ChildFailed(f"{_name(proc)} closed its stdout (exit {proc.returncode}); "
                                  f"stderr: {child_stderr(proc)!r}")
            proc._bench_buf += chunk  # type: ignore[attr-defined]
    finally:
        sel.close()


def send_json_line(proc: subprocess.Popen, obj: Dict[str, Any]) -> None:
    try:
        proc.stdin.write((json.dumps(obj) + "\n").encode())
        proc.stdin.flush()
    except (BrokenPipeError, OSError, ValueError) as exc:
        raise ChildFailed(f"{_name(proc)} is gone ({exc}); stderr: {child_stderr(proc)!r}") from None


def _name(proc: subprocess.Popen) -> str:
    args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return f"child {' '.join(str(a) for a in args[2:5])} (pid {proc.pid})"


def descendants(pid: int) -> List[int]:
    """The pids of every live descendant of ``pid`` (from /proc), children first."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_child(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Close stdin (the polite stop), then SIGTERM, then SIGKILL the child's whole process group.

    Descendants that started sessions of their own (ipyparallel's engines do) are noted first and
    killed by pid if they outlive the child.
    """
    try:
        kids = descendants(proc.pid) if proc.poll() is None else []
    except OSError:
        kids = []
    try:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        # the child is gone; anything it started in its group goes too, and its other descendants
        _signal_group(proc, signal.SIGKILL)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    finally:
        _CHILDREN.discard(proc)
        for stream in (proc.stdout, getattr(proc, "_bench_err", None)):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all_children() -> None:
    for proc in list(_CHILDREN):
        stop_child(proc, grace=1.0)


atexit.register(stop_all_children)


def wait_warm_ups(timeout: float = 120.0) -> None:
    """Join this process's warm-up threads (a worker's: dispatch, cost estimates, traces; a client's: shape
    inference) and the garbage-collector freeze that follows them: about 150,000 objects of imports, a
    second here, that would otherwise land in whatever is measured first, holding the GIL."""
    import threading

    for thread in threading.enumerate():
        if thread.name.endswith("warm-up") or thread.name == "syft-gc-freeze":
            thread.join(timeout)


class Owner:
    """A data owner's process (``python -m benchmarks._owner``), used as a context manager.

    ``Owner("syft", tensors={"#X": 5})`` runs a :class:`syft_magics.Worker` in a background thread;
    ``Owner("raw")`` a raw ZeroMQ ROUTER server with the same layout. ``busy=True`` makes the owner's
    main thread run a pure-Python loop; ``switch_interval`` sets ``sys.setswitchinterval`` in the owner
    (after the worker started, so it overrides whatever the package set); ``policy`` is the worker's (``open``);
    ``digits=True`` shares scikit-learn's digits as ``#digits_x`` and ``#digits_y``.
    """

    def __init__(self, server: str, *, tensors: Optional[Dict[str, int]] = None, busy: bool = False,
                 switch_interval: Optional[float] = None, start_timeout: float = 30.0, secure: bool = False,
                 policy: str = "open", digits: bool = False) -> None:
        args = ["--server", server, "--policy", policy] + (["--secure"] if secure else []) + \
            (["--digits"] if digits else [])
        for tag, numel in (tensors or {}).items():
            args += ["--tensor", f"{tag}={numel}"]
        if busy:
            args.append("--busy")
        if switch_interval is not None:
            args += ["--switch-interval", repr(switch_interval)]
        self.server = server
        self._args = args
        self._start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.info: Dict[str, Any] = {}

    def __enter__(self) -> "Owner":
        self.proc = spawn("benchmarks._owner", *self._args)
        try:
            self.info = read_json_line(self.proc, self._start_timeout)
        except BaseException:
            stop_child(self.proc)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            stop_child(self.proc)

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def key(self) -> Optional[str]:
        return self.info.get("key")

    def command(self, cmd: str, timeout: float = 10.0, **kw: Any) -> Dict[str, Any]:
        """Ask the owner's control thread something (``count``, ``reset_hwm``, ``hwm``...)."""
        assert self.proc is not None
        send_json_line(self.proc, {"cmd": cmd, **kw})
        return read_json_line(self.proc, timeout)


class Alarm:
    """Raise :class:`DeadlineExceeded` in the main thread when the run's deadline passes (a watchdog)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __enter__(self) -> "Alarm":
        def on_alarm(signum: int, frame: Any) -> None:
            raise DeadlineExceeded("the run's global deadline passed (watchdog)")

        self._old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.1, self.deadline - time.monotonic()))
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)
