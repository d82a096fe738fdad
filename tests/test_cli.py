"""``python -m syft_magics``: the headless worker and the demo, run as real subprocesses.

Every process is started through the ``cli`` fixture, which kills whatever is
still running when the test ends; every read of a child's output has a deadline.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

import syft_magics as sm

ADDRESS = re.compile(r"^(\S+) serving at (tcp://127\.0\.0\.1:\d+) \(policy: (\w+)\)$")


class CliProcess:
    """One ``python -m syft_magics ...`` child whose stdout and stderr are read by threads into queues."""

    def __init__(self, args: List[str], stdin: int = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "syft_magics", *args], stdin=stdin,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env=os.environ.copy())
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[str] = []
        self.stderr: List[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first new stdout line matching ``pattern`` (regex search); fails at the deadline or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s; stdout so far: {self.seen}, "
                            f"stderr: {self.stderr}")
            if line is None:
                self.lines.put(None)
                pytest.fail(f"stdout closed before a line matching {pattern!r}; stdout: {self.seen}, "
                            f"stderr: {self.stderr}, exit code {self.proc.poll()}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def started(self) -> Dict[str, str]:
        """Wait for the address and connection-file lines; returns name, address, policy, file."""
        match = self.expect(ADDRESS.pattern)
        path = self.expect(r"^connection file: (.+)$").group(1)
        return {"name": match.group(1), "address": match.group(2), "policy": match.group(3), "file": path}

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for exit (killing it at the deadline, then failing); returns the exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the process did not exit within {timeout} s; stdout: {self.seen}")
        for t in self._threads:
            t.join(5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return rc

    @property
    def err(self) -> str:
        return "\n".join(line for line in self.stderr if line is not None)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


@pytest.fixture
def cli():
    """``cli("worker", "Bob", ...)``: a started child process, killed after the test if still running."""
    started: List[CliProcess] = []

    def run(*args: str, stdin: int = subprocess.PIPE) -> CliProcess:
        p = CliProcess(list(args), stdin=stdin)
        started.append(p)
        return p

    yield run
    for p in started:
        p.kill()


@pytest.fixture
def files(tmp_path):
    """The seed tutorial's data as files: x.pt = [1, 2, 3, 4, 5], y.npy = ones(5)."""
    torch.save(torch.tensor([1.0, 2, 3, 4, 5]), tmp_path / "x.pt")
    np.save(tmp_path / "y.npy", np.ones(5, dtype=np.float32))
    return tmp_path


def _processes_in(runtime_dir: Path) -> List[int]:
    """Pids of live processes whose environment names this test's runtime dir (Linux /proc only)."""
    needle = f"SYFT_MAGICS_RUNTIME_DIR={runtime_dir}\0".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) != os.getpid() and needle in (entry / "environ").read_bytes() + b"\0":
                if "Z" not in (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]:
                    found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_help_lists_both_subcommands(cli):
    p = cli("--help")
    assert p.finish() == 0
    out = "\n".join(p.seen)
    assert "worker" in out and "demo" in out
    p = cli("worker", "--help")
    assert p.finish() == 0
    out = "\n".join(p.seen)
    assert "--share" in out and "--policy" in out and "approve N" in out


def test_worker_serves_files_to_a_client_connected_by_name(cli, files, runtime_dir, make_client):
    p = cli("worker", "Bob", "--policy", "open", "--share", f"#X={files / 'x.pt'}",
            "--share", f"#Y,#ones={files / 'y.npy'}")
    info = p.started()
    assert info["name"] == "Bob" and info["policy"] == "open"
    assert Path(info["file"]).parent == runtime_dir and Path(info["file"]).is_file()
    bob = make_client("Bob")
    assert bob.address == info["address"]
    x, y = bob.search("#X")[0], bob.search("#ones")[0]
    z = torch.add(x, y)
    assert torch.equal(z.get(), torch.tensor([2.0, 3, 4, 5, 6]))
    assert torch.equal(bob.search("#Y")[0].get(), torch.ones(5))


def test_npy_keeps_its_dtype(cli, tmp_path, make_client):
    np.save(tmp_path / "ints.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
    p = cli("worker", "Bob", "--policy", "open", "--share", f"#I={tmp_path / 'ints.npy'}")
    p.started()
    ptr = make_client("Bob").search("#I")[0]
    assert ptr.shape == (2, 3) and ptr.dtype == torch.int64
    assert torch.equal((ptr * 2).get(), torch.arange(6).reshape(2, 3) * 2)


def _get_in_thread(ptr) -> Dict[str, object]:
    box: Dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = ptr.get(timeout=20)
        except Exception as exc:  # handed to the test thread
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, name="test-get", daemon=True)
    box["thread"].start()
    return box


def test_review_get_is_approved_by_typing_approve_on_stdin(cli, files, make_client):
    p = cli("worker", "Bob", "--share", f"#X={files / 'x.pt'}")
    assert p.started()["policy"] == "review"
    x = make_client("Bob").search("#X")[0]
    box = _get_in_thread(x + 1)
    n = p.expect(r"request #(\d+): .* type 'approve \d+'").group(1)
    p.send(f"approve {n}")
    p.expect(rf"^approved request #{n}$")
    box["thread"].join(20)
    assert "error" not in box, box.get("error")
    assert torch.equal(box["value"], torch.tensor([2.0, 3, 4, 5, 6]))


def test_deny_on_stdin_raises_permission_denied_with_the_reason(cli, files, make_client):
    p = cli("worker", "Bob", "--policy", "review", "--share", f"#X={files / 'x.pt'}")
    p.started()
    x = make_client("Bob").search("#X")[0]
    box = _get_in_thread(x)
    n = p.expect(r"request #(\d+):").group(1)
    p.send(f"deny {n} too private")
    p.expect(rf"^denied request #{n}: too private$")
    box["thread"].join(20)
    assert isinstance(box.get("error"), sm.PermissionDenied)
    assert "too private" in str(box["error"])


def test_console_commands_and_their_errors(cli, files):
    p = cli("worker", "Bob", "--share", f"#X={files / 'x.pt'}")
    p.started()
    p.send("objects")
    p.expect(r"Bob holds 1 objects")
    p.expect(r"#X")
    p.send("requests")
    p.expect(r"^no get requests$")
    for bad in ("approve 99", "deny", "frobnicate"):
        p.send(bad)
    p.send("quit")
    assert p.finish() == 0
    assert "no request #99" in p.err and "usage: deny N" in p.err and "unknown command 'frobnicate'" in p.err
    assert p.seen[-1] == "Bob stopped"


def test_end_of_stdin_does_not_stop_the_worker(cli, files, runtime_dir, make_client):
    p = cli("worker", "Bob", "--policy", "open", "--share", f"#X={files / 'x.pt'}", stdin=subprocess.DEVNULL)
    info = p.started()
    p.expect(r"stdin closed: still serving")
    time.sleep(0.3)
    assert p.proc.poll() is None
    bob = make_client("Bob")
    assert torch.equal(bob.search("#X")[0].get(), torch.tensor([1.0, 2, 3, 4, 5]))
    bob.disconnect()
    p.proc.send_signal(signal.SIGTERM)
    assert p.finish() == 0
    assert not Path(info["file"]).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_removes_the_connection_file(cli, files, runtime_dir, sig, make_client):
    p = cli("worker", "Bob", "--policy", "open", "--share", f"#X={files / 'x.pt'}")
    info = p.started()
    make_client("Bob").search("#X")  # a connected client does not keep it alive
    assert Path(info["file"]).is_file()
    p.proc.send_signal(sig)
    assert p.finish() == 0, p.err
    assert "Bob stopped" in p.seen
    assert not Path(info["file"]).exists()
    assert not list(runtime_dir.glob("syft-worker-*"))
    assert "Traceback" not in p.err


@pytest.mark.parametrize("make_file, spec, message", [
    (None, "#X={dir}/missing.pt", "no such file"),
    (lambda d: (d / "x.txt").write_text("1 2 3"), "#X={dir}/x.txt", "unknown file type '.txt'"),
    (lambda d: torch.save({"w": torch.ones(2)}, d / "d.pt"), "#X={dir}/d.pt", "holds a dict, not a tensor"),
    (lambda d: np.save(d / "o.npy", np.array([{"a": 1}], dtype=object)), "#X={dir}/o.npy", "loaded safely"),
    (lambda d: (d / "bad.pt").write_bytes(b"not a torch file"), "#X={dir}/bad.pt", "weights_only=True"),
    (None, "{dir}/x.pt", "expected '#TAG[,#TAG2]=PATH'"),
    (None, "X={dir}/x.pt", "did you mean '#X'"),
])
def test_a_share_that_cannot_be_served_exits_2_with_a_clear_message(cli, tmp_path, runtime_dir, make_file, spec,
                                                                    message):
    if make_file is not None:
        make_file(tmp_path)
    p = cli("worker", "Bob", "--share", spec.format(dir=tmp_path))
    assert p.finish() == 2
    assert "usage:" in p.err and message in p.err, p.err
    assert "Traceback" not in p.err
    assert not p.seen and not list(runtime_dir.glob("syft-worker-*"))


@pytest.mark.parametrize("policy", ["open", "review"])
def test_demo_runs_the_tutorial_and_leaves_nothing_behind(cli, runtime_dir, policy):
    p = cli("demo", "--policy", policy)
    assert p.finish(timeout=60) == 0, (p.seen, p.err)
    out = "\n".join(p.seen)
    assert 'x_set = bob.search("#X")' in out and "PointerTensor(" in out
    assert "tensor([2., 3., 4., 5., 6.])" in out
    assert "tensor([1001., 1002., 1003., 1004., 1005.])" in out
    assert "Bob stopped" in out
    if policy == "review":
        assert "approved request #1" in out
    assert not list(runtime_dir.glob("syft-worker-*"))
    if Path("/proc/self/environ").exists():
        deadline = time.monotonic() + 5
        while _processes_in(runtime_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_in(runtime_dir)
