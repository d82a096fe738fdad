"""The acceptance test of remote training: the issue's MLP trained on scikit-learn's digits (Bob's data,
never seen by the scientist) reaches the accuracy of the same training done locally, on both module paths,
and 20 epochs leave the worker's store and memory flat."""
from __future__ import annotations

import gc

import psutil
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sklearn_datasets = pytest.importorskip("sklearn.datasets")


class MLP(nn.Module):
    """The same MLP as a custom module: its forward runs on the client, op by op on pointers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def _sequential() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _digits():
    digits = sklearn_datasets.load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    Y = torch.tensor(digits.target, dtype=torch.long)
    return X, Y


def _epoch(model, opt, data, target, n: int, batch: int = 64):
    loss = None
    for i in range(0, n, batch):
        opt.zero_grad()
        loss = F.cross_entropy(model(data[i:i + batch]), target[i:i + batch])
        loss.backward()
        opt.step()
    return loss


@pytest.fixture
def bob_digits(make_worker, make_client):
    """Bob shares the digits under review; he allows scalar metrics and trained models back."""
    X, Y = _digits()
    bob = make_worker("Bob", policy="review")
    bob.share(X, "#digits", "#data")
    bob.share(Y, "#digits", "#target")
    bob.policy.allow_get(max_numel=1)
    bob.policy.allow_get(kind="model")
    return bob, make_client("Bob"), X, Y


@pytest.mark.parametrize("make,path", [(_sequential, "worker"), (MLP, "client")])
def test_remote_training_on_digits_matches_local_training(bob_digits, make, path):
    bob, client, X, Y = bob_digits
    data, target = client.search("#digits", "#data")[0], client.search("#digits", "#target")[0]
    torch.manual_seed(0)
    model = make()
    local = make()
    local.load_state_dict(model.state_dict())
    remote = client.send(model)
    assert remote.path == path
    opt = client.optim.SGD(remote.parameters(), lr=0.1, momentum=0.9)
    local_opt = torch.optim.SGD(local.parameters(), lr=0.1, momentum=0.9)
    n = len(data)
    for _ in range(5):
        loss = _epoch(remote, opt, data, target, n)
        local_loss = _epoch(local, local_opt, X, Y, n)
    assert loss.get() == pytest.approx(local_loss.item(), abs=1e-4)  # a scalar: allowed by Bob's rule
    remote.eval()
    accuracy = (remote(data).argmax(1) == target).float().mean().get().item()
    local_accuracy = (local(X).argmax(1) == Y).float().mean().item()
    assert accuracy == pytest.approx(local_accuracy, abs=0.005) and accuracy > 0.9
    trained = remote.get()  # a model: allowed by Bob's rule
    assert (trained(X).argmax(1) == Y).float().mean().item() == pytest.approx(local_accuracy, abs=0.005)
    assert not bob.requests.pending  # nothing waited for a click


@pytest.mark.timeout(300)
@pytest.mark.parametrize("make", [_sequential, MLP])
def test_twenty_epochs_leave_the_store_and_memory_flat(bob_digits, make):
    bob, client, X, Y = bob_digits
    data, target = client.search("#digits", "#data")[0], client.search("#digits", "#target")[0]
    remote = client.send(make())
    opt = client.optim.Adam(remote.parameters(), lr=0.01)
    process = psutil.Process()
    counts, held, rss = [], [], []
    for _ in range(20):
        _epoch(remote, opt, data, target, len(data))
        client.sync()
        gc.collect()
        client.sync()  # the frees queued by the collection have run
        counts.append(len(bob.store))
        held.append(bob.store.nbytes)
        rss.append(process.memory_info().rss)
    assert len(set(counts[1:])) == 1, f"store count grows: {counts}"
    assert len(set(held[1:])) == 1, f"bytes held grow: {held}"
    assert rss[-1] - rss[1] < 32 << 20, f"memory grows: {[(r - rss[1]) >> 20 for r in rss]} MiB"
