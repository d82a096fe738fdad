"""The serving thread answers warm: after a message it looks for the next one without sleeping, briefly,
and only while that pays: never while idle, nor while another thread needs the GIL (syft_magics/owner/spin.py)."""
from __future__ import annotations

import time
from typing import Any, List

import pytest
import torch
import zmq

import syft_magics as sm
from syft_magics.owner import spin
from syft_magics.owner.spin import Spin


class FakePoller:
    """Records each poll's timeout; zero-timeout looks find a message on the ``ready_on``-th look, and each
    takes ``look_seconds`` (a look that waited for the GIL takes a switch interval or more)."""

    def __init__(self, ready_on: int = 0, look_seconds: float = 0.0) -> None:
        self.timeouts: List[int] = []
        self.ready_on = ready_on
        self.look_seconds = look_seconds

    def poll(self, timeout: int) -> List[Any]:
        self.timeouts.append(timeout)
        if timeout == 0:
            if self.look_seconds:
                time.sleep(self.look_seconds)
            if len(self.timeouts) == self.ready_on or self.ready_on < 0:
                return [("socket", zmq.POLLIN)]
        return []


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """No look counts as one that waited for the GIL: on a loaded machine a look of the fake poller was once
    preempted past ``CONTENDED_SECONDS``, which backed the spin off in a test about something else (CI)."""
    monkeypatch.setattr(spin, "CONTENDED_SECONDS", 10.0)


def test_a_message_that_comes_during_the_spin_is_found_without_sleeping(unhurried):
    poller = FakePoller(ready_on=3)
    assert Spin().poll(poller, 200, 0.05) == [("socket", zmq.POLLIN)]  # type: ignore[arg-type]
    assert poller.timeouts == [0, 0, 0], "it looked three times and never blocked"


def test_with_nothing_coming_the_spin_ends_in_a_blocking_poll(unhurried):
    poller = FakePoller()
    t0 = time.perf_counter()
    assert Spin().poll(poller, 200, 0.002) == []  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 0.5
    assert poller.timeouts[-1] == 200 and set(poller.timeouts[:-1]) == {0} and len(poller.timeouts) > 2


def test_no_spin_when_turned_off_or_when_not_waiting():
    for spin_seconds, timeout in ((0.0, 200), (0.05, 0)):
        poller = FakePoller()
        Spin().poll(poller, timeout, spin_seconds)  # type: ignore[arg-type]
        assert poller.timeouts == [timeout]


def test_a_look_that_waited_for_the_gil_stops_the_spin_for_a_while():
    spinner, poller = Spin(), FakePoller(look_seconds=2 * spin.CONTENDED_SECONDS)
    spinner.poll(poller, 200, 0.05)  # type: ignore[arg-type]
    assert poller.timeouts == [0, 200], "one slow look, then it blocked"
    poller.timeouts.clear()
    spinner.poll(poller, 200, 0.05)  # type: ignore[arg-type]
    assert poller.timeouts == [200], "no spin right after"
    time.sleep(spin.BACKOFF_SECONDS)
    poller.timeouts.clear()
    poller.look_seconds = 0.0
    spinner.poll(poller, 200, 0.002)  # type: ignore[arg-type]
    assert poller.timeouts[0] == 0, "it spins again once the back-off has passed"


def test_spins_that_keep_finding_nothing_stop_until_a_probe_finds_a_message(unhurried):
    spinner, poller = Spin(), FakePoller()
    for _ in range(spin.MISSES):
        spinner.poll(poller, 200, 0.001)  # type: ignore[arg-type]
    assert poller.timeouts.count(200) == spin.MISSES and 0 in poller.timeouts
    poller.timeouts.clear()
    for _ in range(spin.PROBE_EVERY - 1):
        spinner.poll(poller, 200, 0.001)  # type: ignore[arg-type]
    assert poller.timeouts == [200] * (spin.PROBE_EVERY - 1), "quiet: no spin"
    poller.timeouts.clear()
    poller.ready_on = -1  # (from now on a message waits)
    assert spinner.poll(poller, 200, 0.001) == [("socket", zmq.POLLIN)]  # type: ignore[arg-type]
    assert poller.timeouts == [0], "the probe spun, and found one"
    poller.timeouts.clear()
    spinner.poll(poller, 200, 0.001)  # type: ignore[arg-type]
    assert poller.timeouts == [0], "it pays again: every wait spins"


@pytest.fixture
def spins(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """The spin (seconds) each wait of a serving thread was allowed, in order."""
    allowed: List[float] = []
    original = Spin.poll

    def recording(self: Spin, poller: Any, timeout_ms: int, spin_seconds: float) -> Any:
        allowed.append(spin_seconds)
        return original(self, poller, timeout_ms, spin_seconds)

    monkeypatch.setattr(Spin, "poll", recording)
    return allowed


def _serving_thread_cpu(worker: sm.Worker) -> float:
    tid = worker.server._thread.native_id
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # (utime, stime in clock ticks of 10 ms)


def test_the_worker_spins_after_answering_a_socket_client_and_not_while_idle(make_worker, make_client, spins):
    bob = make_worker("Bob", policy="open")
    bob.share(torch.ones(3), "#X")
    client = make_client(bob.address, key=bob.key)
    x, = client.search("#X")
    spins.clear()
    for _ in range(20):
        assert (x + 1).get().tolist() == [2.0, 2.0, 2.0]
    assert spins.count(sm.defaults.spin_seconds) >= 10, "a spin after answered messages"
    cpu = _serving_thread_cpu(bob)
    time.sleep(1.0)
    assert _serving_thread_cpu(bob) - cpu < 0.2, "idle, the serving thread sleeps"


def test_a_strangers_messages_are_answered_without_a_spin(make_worker, peers, spins):
    """A peer without the key could otherwise keep a CPU busy with a message every 0.3 ms."""
    bob = make_worker("Bob", policy="open")
    stranger = peers(bob.address)
    for _ in range(10):
        assert stranger.request({"t": "hello", "s": 0, "v": 1, "name": "x"}) is not None
        stranger.send_raw([b"not msgpack"])
    assert stranger.request({"t": "ping", "s": 1}) is not None, "answered all along"
    assert sm.defaults.spin_seconds not in spins
    client = peers(bob.address)
    client.login(bob.key)
    for _ in range(5):
        client.request({"t": "ping", "s": 2})
    assert sm.defaults.spin_seconds in spins, "a signed-in client's are"


def test_spin_seconds_zero_turns_it_off(make_worker, make_client, monkeypatch):
    monkeypatch.setattr(sm.defaults, "spin_seconds", 0.0)
    looks: List[int] = []
    original = zmq.Poller.poll

    def counting(self: zmq.Poller, timeout: Any = None) -> Any:
        looks.append(timeout)
        return original(self, timeout)

    bob = make_worker("Bob", policy="open")
    bob.share(torch.ones(3), "#X")
    client = make_client(bob.address, key=bob.key)
    x, = client.search("#X")
    monkeypatch.setattr(zmq.Poller, "poll", counting)
    for _ in range(20):
        (x + 1).get()
    assert 0 not in looks, "no zero-timeout looks on either side"
