"""What an autograd graph keeps alive is charged to the client whose ops built it (owner/graphs.py): a client
cannot hold the worker's memory past its quota by keeping only the end of a graph, and a training loop's
charge stays flat (its graphs released as torch frees them)."""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from helpers import wait_until

from syft_magics.errors import QuotaExceeded
from syft_magics.owner.quotas import Quotas

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fresh_estimates")]
MB = 1_000_000


def _session(bob):
    return next(iter(bob.server.sessions))


def test_a_graph_kept_through_its_last_result_is_charged(make_worker, make_client):
    """The attacker's loop: each step's ``exp`` saves its 1 MB result in the graph behind the next ``z``; the
    client drops every pointer but the last. Before: 300 steps held 600 MB under a 16 MB quota, charged 1 MB."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="8MB"))
    alice = make_client(bob.address, key=bob.key)
    z = alice.send(torch.zeros(250_000)).requires_grad_()
    with pytest.raises(QuotaExceeded, match=r"max_bytes"):
        for _ in range(12):
            z = z * 1.0 + z.exp()
            gc.collect()
        alice.sync()
    assert bob.store.held_bytes(_session(bob)) <= 8 * MB
    del z
    gc.collect()
    alice.sync()
    assert bob.store.held_bytes(_session(bob)) == 0, "the graph's charge goes with its last result"


def test_an_input_a_graph_saved_stays_charged_after_its_pointer_is_freed(make_worker, make_client):
    """``(x * w).sum()`` saves ``x`` for ``w``'s gradient: freeing ``x`` and keeping the 4-byte sum must not
    free ``x``'s charge, as its memory stays held."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="4MB"))
    alice = make_client(bob.address, key=bob.key)
    w = alice.send(torch.tensor(2.0)).requires_grad_()
    sums = []
    with pytest.raises(QuotaExceeded, match=r"max_bytes"):
        for _ in range(6):  # 1 MB each
            x = alice.send(torch.ones(250_000))
            sums.append((x * w).sum())
            del x
            gc.collect()
            alice.sync()
    assert len(sums) >= 3
    sums.clear()
    gc.collect()
    alice.sync()
    assert bob.store.held_bytes(_session(bob)) == 4


def test_a_backward_releases_the_graph_it_frees_and_training_stays_flat(make_worker, make_client):
    """A training loop holds its data, its model and one graph at a time: the charge is the same after 30 steps
    as after 2, and a backward (which frees its graph's saved tensors) releases the graph's charge."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="4MB"))
    alice = make_client(bob.address, key=bob.key)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    x, y = alice.send(torch.randn(512, 64)), alice.send(torch.randint(0, 10, (512,)))
    remote = alice.send(model)
    opt = alice.optim.SGD(remote.parameters(), lr=0.1)
    held = []
    for step in range(30):
        i = (step * 64) % 512
        opt.zero_grad()
        loss = F.cross_entropy(remote(x[i:i + 64]), y[i:i + 64])
        if step == 3:
            alice.sync()
            before = bob.store.held_bytes(_session(bob))
        loss.backward()
        if step == 3:
            alice.sync()
            assert bob.store.held_bytes(_session(bob)) < before, "the backward freed the graph: its charge too"
        opt.step()
        alice.sync()
        held.append(bob.store.held_bytes(_session(bob)))
    assert held[-1] == held[2] and max(held) == held[2], held
    assert loss.get().item() < 2.3


def test_gradients_built_by_create_graph_are_charged_with_their_graph(make_worker, make_client):
    """``backward(create_graph=True)`` builds a graph behind each leaf's ``.grad``; it is charged (while the
    gradient keeps it) and the second-order gradient is right."""
    bob = make_worker("Bob", policy="open")
    alice = make_client(bob.address, key=bob.key)
    w = alice.send(torch.linspace(0, 1, 250_000)).requires_grad_()
    alice.sync()
    held = bob.store.held_bytes(_session(bob))
    w.exp().sum().backward(create_graph=True)
    alice.sync()
    assert bob.store.held_bytes(_session(bob)) >= held + MB, "exp's saved result, kept by w.grad's graph"
    (g,) = torch.autograd.grad(w.grad.sum(), [w])
    assert torch.allclose(g.get(), torch.linspace(0, 1, 250_000).exp())
    w.grad = None
    del g
    gc.collect()
    alice.sync()
    assert bob.store.held_bytes(_session(bob)) == held


def test_graphs_built_by_ops_on_the_clients_lane_are_charged_too(make_worker, make_client, monkeypatch):
    """Heavy ops run on the client's lane (a thread of their own): what their graphs save is charged the same."""
    from syft_magics.owner import costs

    monkeypatch.setattr(costs, "INLINE_SECONDS", 0.0)  # every priced op goes to the lane
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="8MB"))
    alice = make_client(bob.address, key=bob.key)
    z = alice.send(torch.zeros(250_000)).requires_grad_()
    with pytest.raises(QuotaExceeded, match=r"max_bytes"):
        for _ in range(12):
            z = z * 1.0 + z.exp()
            gc.collect()
        alice.sync()
    assert bob.store.held_bytes(_session(bob)) <= 8 * MB


def test_a_client_that_leaves_with_its_graphs_alive_leaves_no_charge_behind(make_worker, make_client):
    bob = make_worker("Bob", policy="open")
    alice = make_client(bob.address, key=bob.key)
    z = alice.send(torch.zeros(1000)).requires_grad_()
    for _ in range(5):
        z = z * 2.0 + z.exp()
    alice.sync()
    session = _session(bob)
    assert bob.store.held_bytes(session) > 4000
    alice.disconnect()
    gc.collect()
    assert wait_until(lambda: session not in bob.server.sessions)
    assert bob.store.held_bytes(session) == 0 and not bob.store._graphs
