"""Ops are pipelined: they return at once; errors surface at the next sync point, naming the op and the line."""
from __future__ import annotations

import pytest
import torch
from helpers import wait_until

import syft_magics as sm

X = torch.tensor([1.0, 2, 3, 4, 5])


def test_ten_thousand_ops_without_waiting_then_one_get(seed):
    bob, client = seed
    x = client.search("#X")[0]
    y = x
    for _ in range(10_000):
        y = y + 1
    assert torch.equal(y.get(), X + 10_000)
    assert bob.stats["commands"] >= 10_000
    assert bob.stats["errors"] == 0


def test_ops_return_before_the_worker_ran_them(seed):
    """Pipelined ops queue on the link; the worker's thread runs them later, in order."""
    bob, client = seed
    x = client.search("#X")[0]
    results = [x * i for i in range(200)]
    assert all(isinstance(r, sm.PointerTensor) and r.shape == (5,) for r in results)
    client.sync()
    assert bob.stats["commands"] >= 200
    assert torch.equal(results[-1].get(), X * 199)


def test_a_remote_failure_surfaces_at_the_next_sync_naming_op_message_and_line(seed):
    bob, client = seed
    x = client.search("#X")[0]
    bad = x[torch.tensor([10])]  # meta inference cannot check index values
    assert bad.shape == (1,)
    with pytest.raises(sm.RemoteError) as info:
        client.sync()
    err = info.value
    text = str(err)
    assert "__getitem__" in text and "failed on Bob" in text
    assert "out of bounds" in text and "10" in text, "the worker's message"
    assert f"{__file__}:" in text and "bad = x[torch.tensor([10])]" in text, "the user's line"
    assert err.op == "Tensor.__getitem__" and "out of bounds" in err.remote_message
    assert err.line.startswith(__file__) and err.remote_type == "IndexError"


def test_a_remote_failure_surfaces_at_get(seed):
    bob, client = seed
    x = client.search("#X")[0]
    bad = torch.gather(x, 0, torch.tensor([7]))
    with pytest.raises(sm.RemoteError, match="gather"):
        bad.get()


def test_a_denied_op_surfaces_as_op_not_allowed(seed):
    bob, client = seed
    bob.allowlist.deny("Tensor.exp")
    x = client.search("#X")[0]
    x.exp()
    with pytest.raises(sm.OpNotAllowed) as info:
        client.sync()
    assert ".exp" in str(info.value) and "x.exp()" in str(info.value)


def test_dependent_ops_fail_too_but_the_root_is_reported_first(seed):
    bob, client = seed
    x = client.search("#X")[0]
    root = x[torch.tensor([99])]
    child = root + 1
    grandchild = child * 2
    with pytest.raises(sm.RemoteError) as info:
        grandchild.get()
    text = str(info.value)
    assert "__getitem__" in text and "out of bounds" in text
    assert "root = x[torch.tensor([99])]" in text
    assert "2 later ops or sends were not run" in text  # (they would have failed too: their input did)
    # asking for a dependent value names its failed input
    with pytest.raises(sm.RemoteError, match="came from an op that failed"):
        child.get()


def test_after_an_error_the_client_keeps_working(seed):
    bob, client = seed
    x = client.search("#X")[0]
    x[torch.tensor([50])]
    with pytest.raises(sm.RemoteError):
        client.sync()
    client.sync()  # the error was reported once
    y = client.search("#Y")[0]
    assert torch.equal((x + y).get(), X + 1)
    z = x.clone()
    z.add_(1)
    assert torch.equal(z.get(), X + 1)


def test_errors_of_ops_before_a_search_surface_there(seed):
    bob, client = seed
    x = client.search("#X")[0]
    x[torch.tensor([50])]
    with pytest.raises(sm.RemoteError, match="__getitem__"):
        client.search("#Y")
    assert len(client.search("#Y")) == 1


def test_an_error_inside_a_long_pipeline(seed):
    bob, client = seed
    x = client.search("#X")[0]
    y = x
    for i in range(2000):
        y = y + 1
        if i == 1000:
            y[torch.tensor([5])]  # fails: as locally, nothing after it runs
    ran = bob.stats["commands"]
    with pytest.raises(sm.RemoteError, match="out of bounds") as info:
        client.sync()
    assert "999 later ops or sends were not run" in str(info.value)
    with pytest.raises(sm.RemoteError, match=r"not run: an op this client sent before it \(.__getitem__\) had failed"):
        y.get()
    assert bob.stats["commands"] - ran <= 1002  # (at most: the 1,001 additions and the failed index)


def test_queued_ops_reach_the_worker_soon_without_any_sync(seed):
    """Ops travel in batches, but one left alone is still sent within defaults.flush_interval."""
    bob, client = seed
    x = client.search("#X")[0]
    before = bob.stats["commands"]
    z = x * 3
    assert wait_until(lambda: bob.stats["commands"] == before + 1, timeout=2.0)
    assert z.id_at_location in bob.objects


def test_ops_a_get_and_frees_travel_as_one_message(seed):
    bob, client = seed
    x = client.search("#X")[0]
    client.sync()
    batches = bob.events.totals["command"]
    zs = [x + i for i in range(5)]
    del zs[:2]  # two frees queued behind the ops
    assert torch.equal(zs[-1].get(), X + 4)
    assert bob.events.totals["command"] == batches + 5
    assert wait_until(lambda: bob.events.totals["free"] >= 1)
    assert len([e for e in bob.objects.values() if e.origin != "owner"]) == 3


def test_a_failing_op_inside_a_batch_stops_the_ops_after_it_not_those_before(seed):
    bob, client = seed
    x = client.search("#X")[0]
    a = x + 1
    bad = x[torch.tensor([10])]
    b = a * 2
    with pytest.raises(sm.RemoteError, match="__getitem__"):
        client.sync()
    assert torch.equal(a.get(), X + 1)
    with pytest.raises(sm.RemoteError, match="came from an op that failed: .mul: not run"):
        b.get()
    with pytest.raises(sm.RemoteError, match="came from an op that failed: .__getitem__: index 10"):
        bad.get()
    assert torch.equal((a * 2).get(), (X + 1) * 2)  # sent after the failure was raised: it runs


def test_a_local_tensor_changed_after_the_op_was_issued_does_not_change_the_op(seed):
    """Queued ops keep a copy of small local tensors: the batch leaves later, the values are those of the call."""
    bob, client = seed
    x = client.search("#X")[0]
    local = torch.ones(5)
    z = x + local
    local.mul_(100)
    assert torch.equal(z.get(), X + 1)


def test_a_malformed_batch_gets_an_error_and_the_worker_keeps_serving(seed, make_client):
    from syft_magics.wire.protocol import encode

    bob, client = seed
    link = client._link
    with link.lock:
        sync = encode({"t": "sync", "s": 999})[0]
        link._sock.send_multipart([*encode({"t": "batch", "m": [sync, sync], "n": [0, 5]}), b"frame"])
    with pytest.raises(sm.ProtocolError, match="batch of 2 messages does not match its 1 frames"):
        client.sync()
    nested = encode({"t": "batch", "m": [encode({"t": "batch", "m": [], "n": []})[0]], "n": [0]})
    with link.lock:
        link._sock.send_multipart(nested)
    with pytest.raises(sm.ProtocolError, match="unknown message type 'batch'"):
        client.sync()
    assert torch.equal(client.search("#X")[0].get(), X)
    assert bob.running


@pytest.mark.parametrize("nbytes", [64, 1 << 20, 8 << 20], ids=["inline", "copied-1MiB", "zero-copy-8MiB"])
def test_a_tensor_changed_right_after_send_returns_arrives_as_it_was(make_worker, make_client, nbytes):
    """send() may keep a view of the tensor (large ones go zero-copy over TCP): once it returns, the
    caller may change the tensor and the worker still has the values of the call."""
    bob = make_worker("Bob", policy="open")
    client = make_client(bob.address)  # TCP, where large frames are not copied
    local = torch.ones(nbytes // 4)
    ptr = client.send(local)
    local.fill_(7)
    assert torch.equal(ptr.get(), torch.ones(nbytes // 4))


def test_result_ids_are_unique_and_read_differently_when_shortened(seed, make_client):
    """Ids come from a counter (no system call per op), yet the short ids in logs and panels differ."""
    bob, client = seed
    other = make_client("Bob")
    x = client.search("#X")[0]
    ids = [(x + i).oid for i in range(1000)] + [other.send(torch.ones(1)).oid for _ in range(10)]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)
    assert len({i.hex()[:8] for i in ids}) == len(ids)


@pytest.mark.parametrize("nbytes", [1 << 20, 12 << 20], ids=["copied-1MiB", "zero-copy-12MiB"])
def test_a_local_tensor_in_an_op_changed_right_after_the_op_returns_does_not_change_it(make_worker, make_client,
                                                                                        nbytes):
    bob = make_worker("Bob", policy="open")
    bob.share(torch.zeros(nbytes // 4), "#Z")
    client = make_client(bob.address)
    z = client.search("#Z")[0]
    queued = z + 1  # waits in the batch; the large op below goes out with it
    local = torch.ones(nbytes // 4)
    total = queued + local
    local.fill_(5)
    assert torch.equal((total * 2).get(), torch.full((nbytes // 4,), 4.0))


def test_a_failed_op_the_client_waited_on_names_the_op_and_the_line(seed):
    """helper-79: the op's origin was forgotten before its error was made: "an op failed", no line."""
    bob, client = seed
    x = client.search("#X")[0]
    i = client.send(torch.tensor(10))
    with pytest.raises(sm.RemoteError) as info:
        x[i]  # its shape depends on the value: the client waits for the worker's description
    text = str(info.value)
    assert text.startswith(".__getitem__ failed on Bob") and "test_pipelining.py" in text and "x[i]" in text, text
