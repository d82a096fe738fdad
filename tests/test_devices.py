"""``Worker(device=...)`` / ``%syft_worker Bob 3000 --device cuda``: where a worker keeps tensors and models.

Tested on the CPU everywhere; the CUDA tests run only where CUDA is present."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from IPython.core.error import UsageError

import syft_magics as sm

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_worker_keeps_everything_on_the_cpu(make_worker, make_client):
    bob = make_worker("Bob", policy="open", device="cpu")
    bob.share(torch.ones(3), "#x")
    client = make_client("Bob")
    assert bob.device == torch.device("cpu") and client.devices == ("cpu",)
    x = client.search("#x")[0]
    assert x.to("cpu") is x and x.cpu() is x  # nothing to move
    assert torch.equal(x.to(torch.float64).get(), torch.ones(3, dtype=torch.float64))
    remote = client.send(nn.Linear(3, 2))
    assert remote.to("cpu") is remote
    assert all(e.tensor.device.type == "cpu" for e in bob.store.entries() if isinstance(e.tensor, torch.Tensor))


def test_a_device_the_worker_does_not_allow_is_refused_clearly(make_worker, make_client):
    make_worker("Bob", policy="open")
    client = make_client("Bob")
    x = client.send(torch.ones(2))
    with pytest.raises(sm.OpNotAllowed, match="Bob allows the devices cpu, not cuda"):
        x.to("cuda")
    with pytest.raises(sm.OpNotAllowed, match="Bob has no CUDA device"):
        x.cuda()
    # a client that asks the worker anyway (an old client, a hostile one) is refused there too
    client.run(lambda t, device: t.clone(), "Tensor.to", (x,), {"device": "cuda"})
    with pytest.raises(sm.RemoteError, match="device cuda is not allowed on this worker \\(allowed: cpu\\)"):
        client.sync()


def test_a_worker_refuses_a_device_it_lacks():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this machine has no CUDA device"):
            sm.Worker("Bob", device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        sm.Worker("Bob", device="gpu")
    with pytest.raises(ValueError, match="not supported"):
        sm.Worker("Bob", device="meta")


def test_the_magic_takes_a_device(ip):
    ip.run_line_magic("syft_worker", "Bob 0 --device cpu --policy open")
    try:
        assert ip.user_ns["bob"].device == torch.device("cpu")
    finally:
        ip.run_line_magic("syft_stop", "Bob")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            ip.run_line_magic("syft_worker", "Bob 0 --device cuda")


@cuda
def test_a_cuda_worker_keeps_data_and_models_there_and_answers_on_the_cpu(make_worker, make_client):
    bob = make_worker("Bob", policy="open", device="cuda")
    bob.share(torch.arange(4.0), "#x")
    client = make_client("Bob")
    assert "cuda" in client.devices
    x = client.search("#x")[0]
    y = client.send(torch.ones(4))
    z = x * 2 + y
    value = z.get()
    assert value.device.type == "cpu" and torch.equal(value, torch.arange(4.0) * 2 + 1)
    assert {e.tensor.device.type for e in bob.store.entries() if isinstance(e.tensor, torch.Tensor)} == {"cuda"}
    remote = client.send(nn.Linear(4, 2))
    out = remote(x)
    assert out.get().device.type == "cpu"
    assert remote.get().weight.device.type == "cpu"
    assert x.cpu().get().device.type == "cpu"


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


@cuda
@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(4, 2)), _Custom], ids=["standard", "custom"])
def test_a_model_moves_between_the_cpu_and_cuda_and_trains_there(make_worker, make_client, make):
    bob = make_worker("Bob", policy="open", device="cuda")
    client = make_client("Bob")
    remote = client.send(make())
    x = client.send(torch.ones(3, 4))
    for device in ("cpu", "cuda"):
        remote.to(device)
        client.sync()
        assert {t.device.type for e in bob.store.entries() if isinstance(e.tensor, nn.Module)
                for t in e.tensor.state_dict().values()} == {device}
        opt = client.optim.SGD(remote.parameters(), lr=0.1)
        remote(x.to(device)).sum().backward()
        opt.step()
    assert remote.get().state_dict().keys() == make().state_dict().keys()


@cuda
def test_a_move_between_cuda_workers(make_worker, make_client):
    bob = make_worker("Bob", policy="open", device="cuda")
    alice = make_worker("Alice", policy="open", device="cuda")
    b, a = make_client("Bob"), make_client("Alice")
    z = b.send(torch.randn(8)).move(a)
    assert next(e for e in alice.store.entries()).tensor.device.type == "cuda"
    assert z.get().device.type == "cpu"
    assert bob.running
