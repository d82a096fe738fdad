"""A client in the worker's own process talks to it directly (no socket): same worker, same rules."""
from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from helpers import owner_approves, wait_until

import syft_magics as sm
from syft_magics.scientist.direct import DirectLink
from syft_magics.scientist.link import Link

X = torch.tensor([1.0, 2, 3, 4, 5])


@pytest.fixture
def bob(make_worker):
    worker = make_worker("Bob", policy="open")
    worker.share(X.clone(), "#X")
    return worker


def test_a_worker_of_this_process_is_served_directly_unless_turned_off(bob, make_client, fast_defaults):
    client = make_client(bob)
    assert isinstance(client._link, DirectLink)
    assert client.name == "Bob" and client.policy == "open" and client.connected
    assert [c.peer for c in bob.clients] == ["inproc"]
    fast_defaults.in_process_direct = False
    assert isinstance(make_client(bob)._link, Link), "the inproc:// socket stays available"


def test_a_chain_and_data_dependent_ops_run_on_the_worker(bob, make_client):
    client = make_client(bob)
    x = client.search("#X")[0]
    z = x
    for _ in range(300):
        z = z + 1
    assert torch.equal(z.get(), X + 300)
    assert torch.equal(x[x > 2].get(), torch.tensor([3.0, 4, 5]))
    assert torch.equal(torch.topk(x, 2).values.get(), torch.tensor([5.0, 4]))
    client.sync()
    assert len(bob.store) < 20, "dead pointers' objects are freed"


def test_queued_ops_reach_the_worker_without_a_request_and_in_order(bob, make_client):
    """Ops travel in batches (as over a socket): a full batch runs at once, a partial one within
    flush_interval, so the owner's panel sees a loop that never asks for a value; frees go after the ops
    that may still use their objects; an op's error waits for the next request, naming its line."""
    client = make_client(bob)
    x = client.search("#X")[0]
    before = bob.stats["commands"]
    z = x
    for _ in range(600):  # each z dies as the next is made
        z = z + 1
    assert wait_until(lambda: bob.stats["commands"] - before == 600, timeout=5)
    assert torch.equal(z.get(), X + 600)
    x[torch.tensor([10])]; line = sys._getframe().f_lineno  # out of range: only the worker can tell  # noqa: E702
    with pytest.raises(sm.RemoteError, match=f"issued at .*test_direct.py:{line}"):
        client.sync()


def test_a_caller_still_issuing_ops_runs_its_batches_itself(bob, make_client, fast_defaults, monkeypatch):
    """The background thread takes only batches their caller stopped adding to: taking the worker's turn while
    the caller still queued ops only traded the GIL between two threads (a chain of ops 20-40% slower)."""
    import syft_magics.scientist.direct as direct

    fast_defaults.heartbeat_interval = 60.0
    monkeypatch.setattr(direct, "STALE_AFTER", 60.0, raising=False)
    client = make_client(bob)
    x = client.search("#X")[0]
    client.sync()
    mine = threading.current_thread().name
    last_issued = [time.monotonic()]
    turns = []  # (thread, seconds since the caller last issued an op)
    call_many = bob.server.call_many

    def recording(ident, messages):
        turns.append((threading.current_thread().name, time.monotonic() - last_issued[0]))
        return call_many(ident, messages)

    monkeypatch.setattr(bob.server, "call_many", recording)
    z = x
    for _ in range(8 * direct.BATCH):  # ops keep coming, batches of them
        z = z + 1
        last_issued[0] = time.monotonic()
    issued = turns[:]
    z.get()
    assert sum(who == mine for who, _ in issued) >= 4, issued
    # the thread's turns come only after a tick with no new op (a pause of the caller's: descheduled, collecting)
    assert all(since >= 0.002 for who, since in issued if who != mine), issued
    before = bob.stats["commands"]
    z = z + 1  # a lone op nobody waits for still runs, from the background thread
    assert wait_until(lambda: bob.stats["commands"] > before, timeout=5)
    assert turns[-1][0] != mine


def test_dead_pointers_are_freed_among_the_ops_of_a_long_batch(bob, make_client, monkeypatch):
    """A batch run at the next get (a training epoch queued whole) frees dead pointers' objects as it goes: they
    were all kept to its end (an op over the owner's data that writes gradients looks at each of its client's
    objects, so a guarded epoch cost 72 ms against 40)."""
    client = make_client(bob)
    x = client.search("#X")[0]
    client.sync()
    sizes = []
    put = bob.store.put

    def counting(entry, *args, **kwargs):
        sizes.append(len(bob.store))
        return put(entry, *args, **kwargs)

    monkeypatch.setattr(bob.store, "put", counting)
    z = x
    for _ in range(200):  # less than a batch: run whole at the get, each z dead once the next is made
        z = z + 1
    assert torch.equal(z.get(), X + 200)
    assert len(sizes) == 200 and max(sizes) < 64, max(sizes)


def test_ops_handed_over_under_no_grad_keep_the_grad_mode_they_were_issued_in(bob, make_client):
    """Queued ops run when something waits: a sync() under no_grad ran the ops issued before it with grad off
    (the loss said requires_grad here, had no graph on the worker, and backward failed)."""
    client = make_client(bob)
    w = client.send(torch.ones(5, requires_grad=True))
    x = client.search("#X")[0]
    loss = (x * w).sum()
    with torch.no_grad():
        client.sync()
        inside = (x * w).sum()
    assert loss.requires_grad and not inside.requires_grad
    loss.backward()
    assert torch.equal(w.grad.get(), X)
    assert not bob.store.get(inside.oid).tensor.requires_grad


def test_the_callers_torch_modes_do_not_reach_the_worker(bob, make_client):
    """The worker's handler runs on the caller's thread: the caller's inference mode or own torch-function mode
    must not change what the worker computes or stores (as over a socket); autocast is refused, as there."""
    from torch.overrides import TorchFunctionMode

    class Spy(TorchFunctionMode):
        seen: list = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not any(isinstance(a, sm.PointerTensor) for a in args):  # (the caller's own op is a pointer's)
                Spy.seen.append(getattr(func, "__name__", func))
            return func(*args, **(kwargs or {}))

    client = make_client(bob)
    x = client.search("#X")[0]
    with torch.inference_mode():
        y = x * 2
    client.sync()
    stored = bob.store.get(y.oid).tensor
    assert not stored.is_inference(), "an inference tensor in the worker's store breaks later autograd"
    with Spy():
        z = (y + 1).get()
    assert torch.equal(z, X * 2 + 1)
    assert "add" not in Spy.seen, Spy.seen  # the worker's own torch.add did not reach the caller's mode
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(sm.OpNotAllowed, match="autocast"):
        x @ x  # (refused at the line, as over a socket: the worker would not run it in bfloat16)


def test_the_wrong_key_is_refused(bob):
    with pytest.raises(sm.AuthenticationError, match="wrong key"):
        sm.connect(bob, key="not-the-key")
    assert not bob.clients


def test_the_owners_policy_applies(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    client = make_client(bob)
    x = client.search("#X")[0]

    with owner_approves(bob):
        assert torch.equal((x * 2).get(), X * 2), "the owner's approval releases the waiting get"
    closed = make_worker("Carol", policy="closed")
    closed.share(X.clone(), "#X")
    with pytest.raises(sm.PermissionDenied, match="refused"):
        make_client(closed).search("#X")[0].get()


def test_owner_data_is_read_only_and_errors_name_the_users_line(bob, make_client):
    client = make_client(bob)
    x = client.search("#X")[0]
    x.add_(1)  # the line the error must name
    line = __import__("inspect").currentframe().f_lineno - 1
    with pytest.raises(sm.ReadOnlyError) as info:
        client.sync()
    assert f"test_direct.py:{line}: x.add_(1)" in str(info.value)
    assert torch.equal(bob.store.search(("#X",))[0].tensor, X)
    x[torch.tensor([7])]
    with pytest.raises(sm.RemoteError, match="out of bounds"):
        client.sync()
    assert torch.equal((x + 1).get(), X + 1), "the link serves on after errors"


def test_the_command_log_and_both_event_streams_are_fed(bob, make_client):
    client = make_client(bob)
    seen = []
    unsubscribe = bob.events.subscribe(lambda e: seen.append(e.kind))
    try:
        x = client.search("#X")[0]
        (x * 3).get()
    finally:
        unsubscribe()
    commands = bob.events.of_kind("command")
    assert commands[-1]["op"] in ("mul", ".mul") and commands[-1]["client"].endswith("@inproc")
    assert {"search", "command", "get"} <= set(seen)
    assert [e.kind for e in client.events.recent][-3:] == ["search", "op", "get"]


def test_nothing_is_shared_between_the_client_and_the_worker(make_worker, make_client):
    owner = torch.arange(1 << 16, dtype=torch.float32)  # large enough to travel as a frame
    bob = make_worker("Bob", policy="open")
    bob.share(owner, "#D")
    client = make_client(bob)
    got = client.search("#D")[0].get()
    got[0] = 42.0
    assert owner[0].item() == 0.0, "a value got is the client's own"
    for n in (5, 1 << 16):  # inline and framed
        t = torch.ones(n)
        p = client.send(t)
        t.zero_()  # before the queued send reaches the worker
        client.sync()
        assert bool((bob.store.get(p.oid).tensor == 1).all()), "a sent tensor is the worker's own"
        weight = torch.ones(n)
        out = client.search("#D")[0][:n] * weight
        weight.zero_()
        assert torch.equal(out.get(), owner[:n]), "a local argument is copied when the op is issued"
    stored = bob.store.get(p.oid).tensor
    stored.add_(5)
    assert t.sum().item() == 0, "the worker's tensor is not the caller's"


def test_an_idle_client_keeps_its_session_past_the_lease(make_worker, make_client, fast_defaults):
    fast_defaults.heartbeat_interval = 0.1
    bob = make_worker("Bob", policy="open", lease_timeout=0.6)
    bob.share(X.clone(), "#X")
    client = make_client(bob)
    z = client.search("#X")[0] + 1
    time.sleep(1.5)
    assert torch.equal(z.get(), X + 1)


def test_disconnect_and_stop_end_cleanly(bob, make_client):
    client = make_client(bob)
    kept = client.search("#X")[0] * 2
    client.sync()
    other = make_client(bob)
    other.search("#X")[0] + 1
    other.disconnect()
    assert wait_until(lambda: len(bob.clients) == 1)
    assert len(bob.store) == 2, "the other client's objects are freed, the owner's data stays"
    bob.stop()
    assert not client.connected
    with pytest.raises(sm.WorkerStopped):
        kept.get()
    with pytest.raises(sm.WorkerStopped):
        kept + 1
