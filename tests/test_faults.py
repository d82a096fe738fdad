"""Faults: each ends in a clear error or a clean recovery within the configured timeout.

A worker killed during a get, a client killed while it holds objects, a worker paused and resumed,
a worker restarted on the same port, a connection file naming something that is not our worker, a
kernel interrupt during a waiting ``.get()``, and a process that exits right after queuing ops.
The behaviour each test pins is described in SECURITY.md ("Faults").
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import free_port, wait_until

import syft_magics as sm
from syft_magics.wire import discovery

X = torch.tensor([1.0, 2, 3, 4, 5])
HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": str(HERE.parent)}  # child processes import this checkout


class ChildWorker:
    """``tests/worker_process.py`` in its own process (it may be killed, paused or restarted)."""

    def __init__(self, port: int, key: str, policy: str = "open") -> None:
        self.port, self.key = port, key
        self.address = f"tcp://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "worker_process.py"), str(port), key, policy],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"the worker process did not start: {line!r}"

    def signal(self, sig: int) -> None:
        """Send ``sig``; for SIGSTOP and SIGCONT, return once the process is stopped, or running again."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGSTOP, signal.SIGCONT):
                wait_until(lambda: self._stopped() == (sig == signal.SIGSTOP), timeout=5)

    def _stopped(self) -> bool:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except OSError:
            return False

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        if not self.proc.stdin.closed:
            self.proc.stdin.close()


@pytest.fixture
def child_worker(fast_defaults):
    """``child_worker(policy=..., port=...)``: a worker process, stopped (or reaped) at the end of the test."""
    fast_defaults.heartbeat_interval = 0.2
    fast_defaults.heartbeat_timeout = 1.5
    made = []

    def make(policy: str = "open", port: int = 0, key: str = "") -> ChildWorker:
        made.append(ChildWorker(port or free_port(), key or sm.wire.auth.new_key(), policy))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def fails_at_once(call, error=sm.WorkerUnreachable, within: float = 0.5) -> None:
    start = time.monotonic()
    with pytest.raises(error):
        call()
    took = time.monotonic() - start
    assert took < within, f"a dead link must fail at once, not wait out a timeout again ({took:.1f} s: {call})"


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


@pytest.mark.timeout(90)
def test_a_worker_killed_during_a_get_ends_it_with_a_clear_error_and_later_calls_fail_at_once(
        child_worker, make_client, fast_defaults):
    bob = child_worker(policy="review")
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    killer = later(0.5, lambda: bob.signal(signal.SIGKILL))
    start = time.monotonic()
    with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
        x.get()  # waits for Bob's approval; Bob dies meanwhile
    killer.join()
    assert time.monotonic() - start < 0.5 + fast_defaults.heartbeat_timeout + 3
    for call in (x.get, client.sync, lambda: client.search("#X"), lambda: x + 1,
                 lambda: client.send(torch.ones(2)), lambda: client.send(torch.ones(4 << 20)),
                 lambda: client.send(torch.ones(1 << 10))):
        fails_at_once(call)
    assert not client.connected and "disconnected" in repr(client)


@pytest.mark.timeout(90)
def test_a_paused_worker_is_waited_for_briefly_marked_disconnected_when_silent_and_usable_again_when_resumed(
        child_worker, make_client, fast_defaults, ip, capsys):
    from syft_magics.ui.panels import ConnectionPanel

    fast_defaults.heartbeat_timeout = 4.0  # a resumed process answers late on a loaded machine
    bob = child_worker()
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    assert torch.equal((x + 1).get(), X + 1)  # the worker's first op is slow (torch warms up): not timed here
    # a pause shorter than the heartbeat timeout: a get issued meanwhile simply waits
    bob.signal(signal.SIGSTOP)
    resume = later(0.3, lambda: bob.signal(signal.SIGCONT))
    assert torch.equal(x.get(), X)
    resume.join()  # (the get may be answered before the stop takes effect: the resume must not land after the next)
    # a longer one: the first call that waits raises, and the link is marked dead at once
    bob.signal(signal.SIGSTOP)
    with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
        (x + 1).get()
    fails_at_once(x.get)
    fails_at_once(lambda: x * 2)
    assert not client.connected
    panel = ConnectionPanel(client)
    try:
        assert "disconnected" in panel.header.value
        ip.run_line_magic("syft_workers", "")
        row = [line for line in capsys.readouterr().out.splitlines() if bob.address in line]
        assert row and "disconnected" in row[0], row
        bob.signal(signal.SIGCONT)
        # heartbeats went on: the worker's first answer revives the link, session and pointers intact
        assert wait_until(lambda: client.connected, timeout=10)
        assert torch.equal((x + 1).get(), X + 1)
        panel.refresh()
        assert "disconnected" not in panel.header.value and "connected" in panel.header.value
        ip.run_line_magic("syft_workers", "")
        row = [line for line in capsys.readouterr().out.splitlines() if bob.address in line]
        assert "disconnected" not in row[0] and "connected" in row[0], row
    finally:
        panel.close()


@pytest.mark.timeout(90)
def test_a_worker_killed_and_restarted_on_the_same_port_raises_worker_restarted(child_worker, make_client,
                                                                                  fast_defaults):
    """Decided: no silent reconnect. The old pointers name objects the new worker never had, so the
    client's next call raises WorkerRestarted (connect again); it never blocks past the heartbeat timeout."""
    bob = child_worker()
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    bob.signal(signal.SIGKILL)
    bob.stop()
    bob2 = child_worker(port=bob.port, key=bob.key)

    def restarted() -> bool:
        try:
            client.sync()
        except sm.WorkerRestarted:
            return True
        except sm.WorkerUnreachable:
            return False
        return False

    assert wait_until(restarted, timeout=fast_defaults.heartbeat_timeout + 10, interval=0.1)
    fails_at_once(x.get, sm.WorkerRestarted)
    again = make_client(bob2.address, key=bob2.key)
    assert torch.equal(again.search("#X")[0].get(), X)


CLIENT_SCRIPT = """
import sys, time, torch
import syft_magics as sm
client = sm.connect(sys.argv[1], key=sys.argv[2])
mine = [client.send(torch.full((1000,), float(i))) for i in range(5)]
total = sum(mine[1:], mine[0]) * 2
client.sync()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(90)
def test_a_client_killed_while_holding_objects_has_them_freed(make_worker, tmp_path, fast_defaults):
    fast_defaults.lease_timeout = 3.0
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    baseline = len(bob.store)
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), bob.address, bob.key], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(bob.store) >= baseline + 6 and len(bob.clients) == 1
        proc.kill()
        proc.wait(10)
        start = time.monotonic()
        assert wait_until(lambda: len(bob.store) == baseline and not bob.clients,
                          timeout=fast_defaults.lease_timeout + 5)
        assert time.monotonic() - start < fast_defaults.lease_timeout + 5
        assert torch.equal(bob.store.search(("#X",))[0].tensor, X)  # the owner's data stays
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


@pytest.fixture
def impostor():
    """A TCP server on a free port that is not a worker: it answers every connection with an HTTP error."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_connection_file_pointing_at_another_program_is_a_clear_error_within_the_timeout(impostor, fast_defaults):
    fast_defaults.connect_timeout = 1.0
    info = discovery.ConnectionInfo(name="Bob", address=f"tcp://127.0.0.1:{impostor}", key="0" * 64,
                                    pid=os.getpid(), hostname=socket.gethostname(), instance="?", policy="open",
                                    protocol=1, started=time.time())
    discovery.runtime_dir().mkdir(parents=True, exist_ok=True)
    discovery.write(info)
    start = time.monotonic()
    with pytest.raises(sm.WorkerUnreachable) as caught:
        sm.connect("Bob")
    assert time.monotonic() - start < fast_defaults.connect_timeout + 2
    message = str(caught.value)
    assert f"127.0.0.1:{impostor}" in message and str(os.getpid()) in message and "not answering" in message


EXIT_SCRIPT = """
import sys, torch
import syft_magics as sm
client = sm.connect(sys.argv[1], key=sys.argv[2])
x = client.search("#X")[0]
# nothing leaves on its own within this script's life: the exit alone must send the batch
sm.defaults.flush_interval = sm.defaults.free_interval = 60.0
for _ in range(200):
    x = x + 1
"""  # and exits at once: the 200 ops are still in the link's batch


@pytest.mark.timeout(90)
def test_ops_queued_right_before_the_process_exits_reach_the_worker(make_worker, tmp_path):
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    before = bob.stats["commands"]
    subprocess.run([sys.executable, str(script), bob.address, bob.key], check=True, timeout=60, env=ENV)
    assert wait_until(lambda: bob.stats["commands"] - before >= 200, timeout=5), bob.stats["commands"] - before
    assert wait_until(lambda: not bob.clients, timeout=5)  # and its goodbye: nothing is left behind


KERNEL_SETUP = """
import syft_magics as sm
c = sm.connect({address!r}, key={key!r})
x = c.search("#X")[0]
"""


@pytest.mark.timeout(180)
def test_a_kernel_interrupt_during_a_waiting_get_leaves_the_link_usable(make_worker, runtime_dir):
    from kernel_driver import Kernel

    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    kernel = Kernel({"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir), "PYTHONPATH": str(HERE.parent)})
    try:
        kernel.run(KERNEL_SETUP.format(address=bob.address, key=bob.key), timeout=120)
        waiting = kernel.start("x.get()")
        assert wait_until(lambda: bob.requests.pending, timeout=30)
        for attempt in range(3):  # (pyzmq drops a KeyboardInterrupt raised while it frees a frame: press again)
            kernel.km.interrupt_kernel()
            try:
                out = kernel.collect(waiting, timeout=10)
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        assert "KeyboardInterrupt" in out.error, out
        out = kernel.run("y = (x + 1) * 2\nc.sync()\nprint(c.connected, len(c.search('#X')))", timeout=30)
        assert out.stdout.strip() == "True 1"
        # the request stays with the owner; once approved, the next get receives the value
        bob.approve(bob.requests.pending[0].n)
        out = kernel.run("print(x.get().tolist())", timeout=30)
        assert out.stdout.strip() == str(X.tolist())
    finally:
        kernel.shutdown()
