"""A small driver for real Jupyter kernels in tests: run code, collect its output, never hang."""
from __future__ import annotations

import os
import queue
import re
import signal
import time
from dataclasses import dataclass, field
from typing import List

from jupyter_client import KernelManager


@dataclass
class Output:
    """What one execution printed, displayed and raised."""

    stdout: str = ""
    stderr: str = ""
    results: List[str] = field(default_factory=list)
    error: str = ""
    #: the traceback as the notebook shows it (colours removed)
    traceback: str = ""

    @property
    def text(self) -> str:
        return self.stdout + "".join(self.results)


class Kernel:
    """A real IPython kernel in its own process, with an environment of our choosing."""

    def __init__(self, env: dict) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **env}, extra_arguments=[])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def start(self, code: str) -> str:
        """Begin running ``code``; returns the message id to :meth:`collect` later."""
        return self.kc.execute(code)

    def collect(self, msg_id: str, timeout: float = 30) -> Output:
        """The output of execution ``msg_id``, once the kernel is idle again."""
        out = Output()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"kernel did not finish within {timeout} s; so far: {out}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    out.stdout += content["text"]
                else:
                    out.stderr += content["text"]
            elif kind in ("execute_result", "display_data"):
                out.results.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                out.error = f"{content['ename']}: {content['evalue']}"
                out.traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content.get("traceback", ())))
            elif kind == "status" and content["execution_state"] == "idle":
                return out

    def run(self, code: str, timeout: float = 30, ok: bool = True) -> Output:
        """Run ``code`` and wait for it; with ``ok``, fail on an exception in the kernel."""
        out = self.collect(self.start(code), timeout)
        if ok and out.error:
            raise AssertionError(f"kernel raised {out.error}\nwhile running:\n{code}\nstdout: {out.stdout}")
        return out

    def wait_for(self, expression: str, expected: str, timeout: float = 20) -> None:
        """Poll ``print(expression)`` in the kernel until it prints ``expected``."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.run(f"print({expression})").stdout.strip()
            if last == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"{expression} stayed {last!r}, expected {expected!r}")

    def kill(self) -> None:
        """Kill the kernel process at once, as when it dies (no goodbye sent)."""
        self.km.signal_kernel(signal.SIGKILL)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
