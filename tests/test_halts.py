"""After one of a client's pipelined ops fails on the worker, nothing the client sent after it runs until the
client has been told: as locally, where the failing line raises and the lines after it never run. Then the
client's ops run again; frees are always served; a notebook cell shows the failure of the ops it sent."""
from __future__ import annotations

import os

import pytest
import torch
from helpers import wait_until
from test_lanes import Gate, op

import syft_magics as sm
from syft_magics.errors import RemoteError
from syft_magics.owner.quotas import Quotas
from syft_magics.wire.protocol import encode, ref_ext

pytestmark = pytest.mark.timeout(90)

SINGULAR = torch.zeros(2, 2)  # its inverse fails on the worker only (the client's shape inference passes it)


@pytest.fixture(params=["tcp", "direct"])
def bob_and_client(request, make_worker, make_client):
    bob = make_worker("Bob", policy="open")
    bob.share(torch.arange(3.0), "#X")
    return bob, make_client(bob if request.param == "direct" else bob.address, key=bob.key)


def test_ops_sent_after_a_failed_op_do_not_run_until_the_client_is_told(bob_and_client):
    bob, client = bob_and_client
    x = client.search("#X")[0]
    w = client.send(torch.zeros(3))
    bad = torch.linalg.inv(client.send(SINGULAR))  # fails on the worker
    w.add_(1)  # independent of the failure: run, it would change w past a failure the user has not seen
    later = x * 2
    sent = client.send(torch.ones(2))
    with pytest.raises(RemoteError) as info:
        client.sync()
    text = str(info.value)
    assert text.startswith("linalg.inv failed on Bob") and "singular" in text, text
    assert "test_halts.py" in text  # names the line that sent it
    assert "3 later ops or sends were not run" in text, text
    assert torch.equal(w.get(), torch.zeros(3))  # the write after the failure never happened
    for ptr in (later, sent, bad):
        with pytest.raises(RemoteError, match="came from an op that failed"):
            ptr.get()
    with pytest.raises(RemoteError, match=r"not run: an op this client sent before it \(linalg.inv\) had failed"):
        later.get()
    # told: what it sends now runs
    assert torch.equal((x * 2).get(), torch.arange(3.0) * 2)
    w.add_(1)
    assert torch.equal(w.get(), torch.ones(3))


def test_a_request_the_client_waits_on_is_not_run_either_and_the_stop_ends_once_the_failure_is_raised(
        make_worker, make_client):
    bob = make_worker("Bob")  # review: a get that ran would ask the owner
    bob.share(torch.arange(3.0), "#X")
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    torch.linalg.inv(client.send(SINGULAR))
    with pytest.raises(RemoteError, match="linalg.inv failed on Bob"):
        x.get(timeout=5)  # not run: the failure is raised instead, and the owner was not asked
    assert len(bob.requests) == 0
    client.sync()  # (the client told the worker when it raised the failure: the sync runs)
    assert all(s.halted is None for s in bob.server.sessions.values())
    y = x * 2  # told: a new op runs
    client.sync()
    assert torch.equal(bob.store.get(y.oid).tensor, torch.arange(3.0) * 2)


def test_a_failed_request_the_client_waits_on_stops_nothing(make_worker, make_client):
    bob = make_worker("Bob", policy="closed")
    bob.share(torch.arange(3.0), "#X")
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    with pytest.raises(sm.PermissionDenied):
        x.get()  # refused, and raised at once: the client knows
    w = client.send(torch.zeros(3))
    w.add_(1)
    client.sync()
    assert torch.equal(bob.store.get(w.oid).tensor, torch.ones(3))


def test_frees_are_served_while_a_client_is_stopped(bob_and_client):
    bob, client = bob_and_client
    torch.linalg.inv(client.send(SINGULAR))
    pointers = [client.send(torch.ones(2)) + i for i in range(50)]  # not run: their results exist, failed
    del pointers  # their frees leave with the next message: they must be served
    with pytest.raises(RemoteError, match="linalg.inv"):
        client.sync()
    client.sync()
    # every object of the session is gone (nothing kept a pointer), the failed ones as the others
    assert wait_until(lambda: bob.store.session_count(client._link.session) == 0, timeout=5), \
        bob.store.session_count(client._link.session)


def test_an_op_that_fails_on_its_lane_stops_the_ops_queued_behind_it(gated):
    """A slow op runs on its client's lane while the client's later messages wait; if it fails, they do not run."""
    gate, bob, x, alice = gated()
    op(alice, 1, "test.failing_gate", ref_ext(x))
    assert gate.entered.wait(20), "the gated op never started"
    later = op(alice, 2, "Tensor.__add__", ref_ext(x), 1.0)  # queued behind it on the lane
    alice.send_raw(encode({"t": "get", "s": 3, "id": later}))
    gate.open.set()
    first = alice.reply(timeout=20)
    assert first["t"] == "err" and first["s"] == 1 and "the slow op failed" in first["msg"], first
    second = alice.reply(timeout=20)  # (the op queued behind it is not run, silently: the get is answered)
    assert second["t"] == "err" and second["s"] == 3 and second["code"] == "not_run", second
    assert second["first"] == 1 and second["n"] == 1, second
    assert bob.store.get(later).error is not None  # failed, never computed
    assert alice.request({"t": "get", "s": 4, "id": x})["code"] == "not_run"  # (a wait raised nothing yet)
    alice.send_raw(encode({"t": "told", "first": 1}))  # the client raised it to its user
    assert alice.request({"t": "get", "s": 5, "id": x})["t"] == "value"  # served again


def test_a_notebook_cell_fails_with_the_failure_of_the_ops_it_sent(ip, make_worker):
    bob = make_worker("Bob", policy="open")
    ip.user_ns["bob"] = sm.connect(bob.address, key=bob.key)
    try:
        result = ip.run_cell("import torch\nw = bob.send(torch.zeros(3))\n"
                             "bad = torch.linalg.inv(bob.send(torch.zeros(2, 2)))\nw.add_(1)\nw.sum() * 0")
        assert not result.success, "the cell fails, as a local one would (helper-79: Run All went on)"
        text = str(result.error_in_exec)
        assert "linalg.inv failed on Bob" in text and "singular" in text and "3 later ops or sends were not run" in text
        result = ip.run_cell("w.get()")
        assert result.success and torch.equal(result.result, torch.zeros(3))  # the write after it never ran
        result = ip.run_cell("w.add_(1)\nw.sum() * 1")  # a cell whose ops all run: its last value is shown
        assert result.success and isinstance(result.result, sm.PointerTensor)
        assert torch.equal(bob.store.get(ip.user_ns["w"].oid).tensor, torch.ones(3))
    finally:
        ip.user_ns.pop("bob").disconnect()


def test_a_stopped_worker_is_not_reported_after_every_cell(ip, make_worker):
    bob = make_worker("Bob", policy="open")
    client = sm.connect(bob.address, key=bob.key)
    try:
        client.send(torch.ones(2)) + 1  # an op whose outcome the client has not waited for
        bob.stop()
        assert wait_until(lambda: client._link.broken is not None, timeout=10)
        assert ip.run_cell("1").success and ip.run_cell("2").success  # (its next use raises WorkerStopped, once)
        with pytest.raises(sm.WorkerStopped):
            client.sync()
    finally:
        client.disconnect()


def test_a_cells_ops_may_run_on_behind_the_next_cells(ip, make_worker, fast_defaults):
    fast_defaults.sync_at_cell_end = False
    bob = make_worker("Bob", policy="open")
    ip.user_ns["bob"] = sm.connect(bob.address, key=bob.key)
    try:
        assert ip.run_cell("import torch\nbad = torch.linalg.inv(bob.send(torch.zeros(2, 2)))").success
        result = ip.run_cell("bob.sync()")
        assert not result.success and "linalg.inv failed on Bob" in str(result.error_in_exec)
    finally:
        ip.user_ns.pop("bob").disconnect()


@pytest.fixture
def gated(make_worker, peers, fresh_estimates):
    """``gated(**quotas)``: Bob with an op that holds its client's lane until its gate opens, then fails (priced as
    cheap on fake tensors: only the lane keeps it off the serving thread), and alice, a raw peer. Gates open at
    the end."""
    gates = []

    def make(**quotas):
        gate = Gate()
        gates.append(gate)

        def failing_gate(x: torch.Tensor) -> torch.Tensor:
            gate(x)
            if not isinstance(x, torch._subclasses.fake_tensor.FakeTensor):
                raise RuntimeError("the slow op failed")
            return x * 2

        bob = make_worker("Bob", policy="open", lease_timeout=120, quotas=Quotas(**quotas))
        bob.allowlist.allow("test.failing_gate", failing_gate)
        x = bytes.fromhex(bob.share(torch.arange(4.0), "#X"))
        alice = peers(bob.address)
        alice.login(bob.key, name="alice")
        return gate, bob, x, alice

    yield make
    for gate in gates:
        gate.open.set()


def test_a_message_refused_when_the_queue_was_full_stops_what_follows_it_not_what_came_before(gated):
    """helper-78: the refusal stopped the session at once, and the messages queued before it were not run."""
    gate, bob, x, alice = gated(max_queued=3)
    bob.allowlist.allow("test.gate", gate)  # (holds the lane, then succeeds)
    op(alice, 1, "test.gate", ref_ext(x))
    assert gate.entered.wait(20), "the gated op never started"
    before = [op(alice, seq, "Tensor.__add__", ref_ext(x), float(seq)) for seq in (2, 3, 4)]  # queued
    refused = op(alice, 5, "Tensor.__add__", ref_ext(x), 5.0)  # over max_queued: refused at once
    assert alice.reply(timeout=20)["code"] == "quota"
    gate.open.set()
    assert wait_until(lambda: not bob.server.sessions[alice.ident].lane.holds(), timeout=20)
    reply = alice.request({"t": "get", "s": 6, "id": before[-1]}, timeout=20)
    assert reply["code"] == "not_run" and reply["first"] == 5, reply  # stopped at the refused one, in its turn
    assert all(bob.store.get(oid).error is None for oid in before)  # sent before it: run
    assert bob.store.get(refused).error is not None  # (refused: its pointer names why)
    alice.send_raw(encode({"t": "told", "first": 5}))
    assert torch.equal(alice.request({"t": "get", "s": 7, "id": before[-1]}, timeout=20)["x"], torch.arange(4.0) + 4)


def test_a_batch_refused_whole_stops_its_session(make_worker, peers):
    """helper-78: a batch over the client's message size was refused, and the ops sent after it ran."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_message_bytes="64KB"))
    alice = peers(bob.address)
    alice.login(bob.key, name="alice")
    big, later = os.urandom(16), os.urandom(16)
    sent = encode({"t": "send", "s": 1, "id": big, "x": torch.zeros(40_000)})
    alice.send_raw(encode({"t": "batch", "m": [sent[0]], "n": [len(sent) - 1]}) + sent[1:])
    assert alice.reply(timeout=20)["code"] == "quota"
    alice.send_raw(encode({"t": "op", "s": 2, "f": "torch.zeros", "a": [3], "o": [later]}))
    reply = alice.request({"t": "sync", "s": 3}, timeout=20)
    assert reply["code"] == "not_run" and reply["n"] == 1, reply
    assert bob.store.get(later).error is not None


def test_a_failed_ops_results_keep_a_bounded_name(make_worker, peers):
    """helper-78: 4,096 results of an unreadable op each kept its unchecked name (448 MB from 174 KB)."""
    bob = make_worker("Bob", policy="open")
    alice = peers(bob.address)
    alice.login(bob.key, name="alice")
    out = [os.urandom(16) for _ in range(64)]
    alice.send_raw(encode({"t": "op", "s": 1, "f": "x" * 100_000, "a": [ref_ext(os.urandom(16))], "o": out}))
    assert alice.reply(timeout=20)["t"] == "err"
    kept = [bob.store.get(oid) for oid in out]
    assert all(e is not None and len(e.op) <= 200 and len(e.error) <= 2_000 for e in kept)


def test_a_script_whose_last_ops_fail_says_so_when_it_ends(make_worker, tmp_path):
    """helper-79: a script whose last ops failed and that never waited exited with no word of it."""
    import subprocess
    import sys

    bob = make_worker("Bob", policy="open")
    script = tmp_path / "script.py"
    script.write_text("import sys, torch, syft_magics as sm\n"
                      "c = sm.connect(sys.argv[1], key=sys.argv[2])\n"
                      "torch.linalg.inv(c.send(torch.zeros(2, 2)))\n")
    done = subprocess.run([sys.executable, str(script), bob.address, bob.key], capture_output=True, text=True,
                          timeout=60)
    assert "an op this script sent failed after its last wait" in done.stderr, done.stderr
    assert "linalg.inv failed on Bob" in done.stderr and "script.py:3" in done.stderr


def test_disconnecting_while_ops_still_run_warns(make_worker, monkeypatch):
    """helper-79: disconnect() waited 5 s for them, then dropped a later failure without a word."""
    from syft_magics.scientist import client as client_module

    monkeypatch.setattr(client_module, "DISCONNECT_SYNC_SECONDS", 0.001)
    bob = make_worker("Bob", policy="open")
    client = sm.connect(bob.address, key=bob.key)
    big = client.send(torch.ones(1200, 1200))
    for _ in range(5):
        big = big @ big / 1200
    with pytest.warns(RuntimeWarning, match="still running ops this client sent when it disconnected"):
        client.disconnect()
