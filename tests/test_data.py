"""Mini-batches of remote data: slicing, torch's own DataLoader over pointers (its collate passes out=None),
and syft_magics.data.DataLoader, which shuffles and cuts batches on the worker in a few ops."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import syft_magics as sm
from syft_magics import data


def test_torchs_dataloader_over_pointers(seed):
    bob, client = seed
    X, Y = torch.randn(20, 3), torch.arange(20)
    x, y = client.send(X), client.send(Y)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=8))
    assert [tuple(b[0].shape) for b in batches] == [(8, 3), (8, 3), (4, 3)]
    assert isinstance(batches[0][0], sm.PointerTensor)
    assert torch.equal(batches[1][0].get(), X[8:16]) and torch.equal(batches[2][1].get(), Y[16:])
    shuffled = torch.cat([b[1].get() for b in DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)])
    assert sorted(shuffled.tolist()) == list(range(20))


def test_out_none_is_accepted_and_out_tensor_is_refused(seed):
    bob, client = seed
    x = client.send(torch.ones(2))
    assert torch.equal(torch.stack([x, x], 0, out=None).get(), torch.ones(2, 2))
    with pytest.raises(TypeError, match="out="):
        torch.stack([x, x], 0, out=torch.empty(2, 2))


def test_syft_dataloader_shuffles_on_the_worker_in_few_ops(seed):
    bob, client = seed
    X, Y = torch.randn(50, 3), torch.arange(50)
    x, y = client.send(X), client.send(Y)
    client.sync()
    before = bob.stats["commands"]
    loader = data.DataLoader(x, y, batch_size=16, shuffle=True, seed=3)
    batches = list(loader)
    client.sync()
    assert len(batches) == len(loader) == 4
    assert bob.stats["commands"] - before == 1 + 4 * 3  # randperm, then per batch: a slice of it, two index ops
    labels = torch.cat([b[1].get() for b in batches])
    assert sorted(labels.tolist()) == list(range(50)) and labels.tolist() != list(range(50))
    for bx, by in batches:
        assert torch.equal(bx.get(), X[by.get()])
    again = torch.cat([b[1].get() for b in data.DataLoader(x, y, batch_size=16, shuffle=True, seed=3)])
    assert torch.equal(again, labels)  # same seed, same first epoch
    plain = list(data.DataLoader(x, y, batch_size=16, drop_last=True))
    assert len(plain) == 3 and torch.equal(plain[2][0].get(), X[32:48])


def test_randperm_is_drawn_on_the_worker_and_bounded(seed):
    bob, client = seed
    x = client.send(torch.ones(1))
    perm = data.randperm(x, 10, seed=0)
    assert isinstance(perm, sm.PointerTensor) and sorted(perm.get().tolist()) == list(range(10))
    data.randperm(x, 1 << 40)
    with pytest.raises(sm.RemoteError, match="randperm needs"):
        client.sync()


def test_the_data_and_federated_helpers_come_with_the_package():
    """helper-80: syft_magics.data and syft_magics.federated were not reachable after a plain import."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import syft_magics as sm; print(sm.data.DataLoader.__name__, "
                           "sm.federated.fedavg.__name__)"], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["DataLoader", "fedavg"], done.stderr
