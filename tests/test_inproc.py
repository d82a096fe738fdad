"""A client in the worker's own process connects over inproc:// and behaves as over TCP."""
from __future__ import annotations

import pytest
import torch
from helpers import owner_approves, wait_until

import syft_magics as sm
from syft_magics import config

X = torch.tensor([1.0, 2, 3, 4, 5])


@pytest.fixture
def bob(make_worker):
    worker = make_worker("Bob", policy="open")
    worker.share(X.clone(), "#X")
    worker.share(torch.ones(5), "#Y")
    return worker


def test_connect_to_a_worker_object_uses_inproc(bob, make_client):
    client = make_client(bob)
    assert client.address.startswith("inproc://") and client.address == bob.inproc_address
    assert client.name == "Bob" and client.policy == "open"
    assert bob.clients[0].peer == "inproc"
    also = make_client(bob.inproc_address)
    assert also.address == bob.inproc_address


def test_inproc_behaves_like_tcp(bob, make_client):
    for client in (make_client(bob), make_client("Bob")):
        x, y = client.search("#X")[0], client.search("#Y")[0]
        assert torch.equal((x + y * 2).get(), X + 2)
        assert x[x > 2].shape == (3,)
        top = torch.topk(x, 2)
        assert torch.equal(top.values.get(), torch.tensor([5.0, 4]))
        z = x.clone()
        z[0] = 9.0
        assert torch.equal(z.get(), torch.tensor([9.0, 2, 3, 4, 5]))
        x[torch.tensor([7])]
        with pytest.raises(sm.RemoteError, match="out of bounds"):
            client.sync()
        x.add_(1)
        with pytest.raises(sm.ReadOnlyError):
            client.sync()
        y_ = x
        for _ in range(1000):
            y_ = y_ + 1
        assert torch.equal(y_.get(), X + 1000)


def test_inproc_send_of_a_large_tensor_returns_and_copies(bob, make_client):
    """Zero-copy over inproc would hand the client's own memory to the worker (and wait until it let go)."""
    config.defaults.reply_timeout = 5.0
    client = make_client(bob)
    t = torch.randn(4 << 20)  # 16 MiB
    expected = t.clone()
    p = client.send(t)  # used to block until reply_timeout, then raise zmq.NotDone
    client.sync()
    stored = bob.store.get(p.oid).tensor
    assert stored.data_ptr() != t.data_ptr()
    t.zero_()  # the sender's later changes do not reach the worker
    assert torch.equal(stored, expected)
    assert torch.equal(p.get(), expected)


def test_inproc_large_local_argument_is_not_shared_with_the_worker(bob, make_client):
    client = make_client(bob)
    x = client.search("#X")[0]
    weight = torch.ones(1 << 16, 5)
    out = torch.nn.functional.linear(x, weight)
    client.sync()
    weight.zero_()
    assert torch.equal(out.get(), torch.full((1 << 16,), 15.0))


def test_inproc_get_does_not_hand_out_the_owners_memory(make_worker, make_client):
    owner = torch.arange(1 << 16, dtype=torch.float32)  # large enough to travel zero-copy
    bob = make_worker("Bob", policy="open")
    bob.share(owner, "#D")
    client = make_client(bob)
    got = client.search("#D")[0].get()
    assert got.data_ptr() != owner.data_ptr()
    got[0] = 42.0
    assert owner[0].item() == 0.0, "changing the value you got must not change the owner's data"
    assert torch.equal(client.search("#D")[0].get()[:3], torch.tensor([0.0, 1, 2]))


def test_inproc_review_policy(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    client = make_client(bob)
    x = client.search("#X")[0]

    with owner_approves(bob):
        assert torch.equal(x.get(), X)


def test_inproc_stop_and_disconnect(bob, make_client):
    client = make_client(bob)
    z = client.search("#X")[0] * 2
    client.sync()
    assert len(bob.store) == 3
    other = make_client(bob)
    other.disconnect()
    client.sync()
    assert len(bob.store) == 3
    bob.stop()
    assert wait_until(lambda: not client.connected)
    with pytest.raises(sm.WorkerStopped):
        z.get()


def test_connect_to_an_unknown_inproc_address():
    with pytest.raises(sm.UnknownWorker, match="no worker in this process"):
        sm.connect("inproc://syft-nothing")
