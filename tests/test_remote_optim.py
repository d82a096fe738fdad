"""An optimizer on a worker as torch's own reads: ``param_groups`` (read and set), a scheduler's
``get_last_lr()``, ``step(closure)``; what it cannot offer raises at the user's line."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import syft_magics as sm


def _pair(client, lr: float = 0.1, **options):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    remote = client.send(model)
    return (remote, client.optim.SGD(remote.parameters(), lr=lr, **options),
            model, torch.optim.SGD(model.parameters(), lr=lr, **options))


def _train(model, opt, x):
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()


def test_param_groups_and_last_lr_read_as_torchs_after_scheduler_steps(review_seed):
    """Under review, over the owner's data: the options are the client's own choices, read without approval."""
    bob, client = review_seed
    remote, opt, model, local_opt = _pair(client, momentum=0.9)
    schedule = client.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    local_schedule = torch.optim.lr_scheduler.StepLR(local_opt, step_size=1, gamma=0.5)
    x = client.search("#X")[0][:3].reshape(1, 3).float()
    local_x = bob.store.search(("#X",))[0].tensor[:3].reshape(1, 3).float()
    for _ in range(2):
        _train(remote, opt, x)
        _train(model, local_opt, local_x)
        schedule.step()
        local_schedule.step()
    group, local_group = opt.param_groups[0], local_opt.param_groups[0]
    assert group["lr"] == pytest.approx(local_group["lr"]) == 0.025
    assert group["momentum"] == 0.9 and group["nesterov"] is False
    assert set(group) == set(local_group)
    assert [p.id for p in group["params"]] == [p.id for p in remote.parameters()]
    assert schedule.get_last_lr() == pytest.approx(local_schedule.get_last_lr())
    assert schedule.last_epoch == 2
    assert opt.defaults["momentum"] == 0.9
    assert not bob.requests, "nothing asked Bob"


def test_setting_the_learning_rate_trains_as_torch_does(seed):
    bob, client = seed
    remote, opt, model, local_opt = _pair(client)
    x = torch.randn(4, 3)
    px = client.send(x)
    for step in range(3):
        for group in opt.param_groups:
            group["lr"] = 0.1 / (step + 1)
        for group in local_opt.param_groups:
            group["lr"] = 0.1 / (step + 1)
        _train(remote, opt, px)
        _train(model, local_opt, x)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 3)
    assert torch.allclose(remote.get().weight, model.weight, atol=1e-6)


def test_an_option_that_cannot_be_set_raises_at_the_users_line(seed):
    bob, client = seed
    remote, opt, _, _ = _pair(client)
    group = opt.param_groups[0]
    with pytest.raises(sm.RemoteError, match="no option 'lrr'"):
        group["lrr"] = 0.1
    with pytest.raises(TypeError, match="params"):
        group["params"] = []
    with pytest.raises(TypeError, match="must be a number"):
        group["lr"] = client.send(torch.tensor(0.1))
    with pytest.raises(sm.RemoteError, match="keep state it was not charged for"):
        group["momentum"] = 0.9  # SGD without momentum was charged for no buffer
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[0]["lr"] == 0.1


def test_the_worker_refuses_a_pointer_as_an_option_whatever_the_client_sends(seed):
    """Past the client's own check (a modified client): an option never takes a tensor, so no option
    can carry the owner's values back through param_groups."""
    bob, client = seed
    remote, opt, _, _ = _pair(client)
    x = client.search("#X")[0]
    from syft_magics.scientist.optim import _none

    with pytest.raises(sm.RemoteError, match="a value of that kind"):
        client.run(_none, "syft.optim_set", (opt._handle, 0, "lr", x.sum()), {}, described=True)
    assert opt.param_groups[0]["lr"] == 0.1


def test_step_with_a_closure_runs_it_then_steps_as_torch_does(seed):
    bob, client = seed
    remote, opt, model, local_opt = _pair(client)
    x = torch.randn(4, 3)
    px = client.send(x)

    def closure(m, o, inp):
        def again():
            o.zero_grad()
            loss = m(inp).pow(2).sum()
            loss.backward()
            return loss
        return again

    remote_loss = opt.step(closure(remote, opt, px))
    local_loss = local_opt.step(closure(model, local_opt, x))
    assert torch.allclose(remote_loss.get(), local_loss.detach())
    assert torch.allclose(remote.get().weight, model.weight, atol=1e-6)


def test_what_a_remote_optimizer_cannot_do_says_so(seed):
    bob, client = seed
    remote, opt, _, _ = _pair(client)
    schedule = client.lr_scheduler.StepLR(opt, step_size=1)
    with pytest.raises(NotImplementedError, match="stays on the worker"):
        opt.state_dict()
    with pytest.raises(NotImplementedError, match="new optimizer"):
        opt.load_state_dict({})
    with pytest.raises(NotImplementedError, match="every group at once"):
        opt.add_param_group({"params": []})
    with pytest.raises(NotImplementedError, match="last_epoch"):
        schedule.state_dict()
