"""Small helpers shared by the tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer, as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


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
