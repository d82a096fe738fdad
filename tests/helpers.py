"""Small helpers shared by the tests."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer, as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def owner_approves(worker: Any) -> Iterator[None]:
    """The owner, in another thread, approves the first request that arrives while the block runs."""
    def approve() -> None:
        if wait_until(lambda: worker.requests.pending):
            worker.approve(worker.requests.pending[0].n)

    thread = threading.Thread(target=approve)
    thread.start()
    try:
        yield
    finally:
        thread.join(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_tree(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM ``proc``'s process group (a server shuts its kernels down), wait ``grace`` seconds,
    then SIGKILL the group and whatever of its tree is left."""
    try:
        import psutil

        family = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        family = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for child in family:
        try:
            child.kill()
        except Exception:
            pass


@contextlib.contextmanager
def worker_child(policy: Optional[str] = None, grace: float = 10.0) -> Iterator[Tuple[subprocess.Popen, str, str]]:
    """A worker in a child process (``tests/worker_process.py``; it may crash without taking the tests
    down): ``(process, address, key)``. Stopped by closing its stdin, killed after ``grace`` seconds."""
    import syft_magics as sm

    here = Path(__file__).parent
    port, key = free_port(), sm.wire.auth.new_key()
    proc = subprocess.Popen([sys.executable, str(here / "worker_process.py"), str(port), key,
                             *([policy] if policy else [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(here.parent)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, f"tcp://127.0.0.1:{port}", key
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
