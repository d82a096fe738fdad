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

    with pytest.raises(sm.RemoteError, match="plain values"):  # (an optimizer's ops take no other object)
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


def _secret(bob):
    bob.share(torch.tensor([0.1234567, 7.654321, 42.4242]), "#S")


def test_no_argument_of_a_refused_option_names_the_owners_values(review_seed):
    """A pointer to the owner's data given as the group or the option name was named in the refusal's text,
    which optimizer refusals show: a probe read a 3000-value #X back bit-exactly, 25 values per call."""
    from syft_magics.scientist.optim import _none

    bob, client = review_seed
    _secret(bob)
    s = client.search("#S")[0]
    remote, opt, _, _ = _pair(client)
    for args in ((opt._handle, s, "lr", 0.1), (opt._handle, 0, s, 0.1), (opt._handle, s.int(), "lr", 0.1)):
        with pytest.raises(sm.RemoteError) as caught:
            client.run(_none, "syft.optim_set", args, {}, described=True)
        text = str(caught.value)
        assert "a tensor" in text and not any(v in text for v in ("0.123", "7.65", "42.4", "42,", "[0, 7")), text
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_refusal_raised_by_any_other_ops_code_is_withheld_over_the_owners_data(review_seed):
    """Decided once, in ops.py: an op's own Reject is shown only for the ops that vet its text."""
    from syft_magics.owner.replies import Reject
    from syft_magics.wire.protocol import ErrorCode

    bob, client = review_seed
    _secret(bob)

    def leaky(t):
        raise Reject(ErrorCode.BAD_ARGS, f"not this one: {t!r}")

    bob.allowlist.allow("test.leaky", leaky)
    s = client.search("#S")[0]
    with pytest.raises(sm.RemoteError) as caught:
        client.run(lambda t: t.clone(), "test.leaky", (s,), {})
        client.sync()
    assert "0.123" not in str(caught.value) and "withheld" in str(caught.value).lower()


@pytest.mark.parametrize("make,match", [
    (lambda c, p: c.optim.SGD([{"params": p, "x" * 1000: True}], lr=0.1), "no option"),
    (lambda c, p: c.optim.SGD([{"params": p}] + [{"params": []}], lr=0.1), "needs parameters"),
    (lambda c, p: c.lr_scheduler.MultiStepLR(c.optim.SGD(p, lr=0.1), milestones=tuple(range(2000))),
     "at most 1024"),
], ids=["unknown group option", "empty group", "huge milestones"])
def test_options_that_would_cost_the_worker_uncharged_memory_are_refused(seed, make, match):
    """Found by a probe: unknown names in a group grew a process-wide table (4 MiB names: 160 MB in 1.4 s,
    never freed), a scheduler's milestones held 200 MB charged 12 bytes, empty groups cost quadratic time."""
    bob, client = seed
    params = list(client.send(nn.Linear(3, 2)).parameters())
    with pytest.raises(sm.RemoteError, match=match):
        make(client, params)
        client.sync()


def test_setting_options_cannot_grow_the_workers_tables_or_change_an_options_kind(seed):
    from syft_magics.owner import optimizers
    from syft_magics.scientist.optim import _none

    bob, client = seed
    remote, opt, _, _ = _pair(client)
    adam = client.optim.Adam(remote.parameters(), lr=0.1)
    before = len(optimizers._ratios)
    for key in [f"k{i}" for i in range(50)] + ["foreach", "fused", "initial_lr"]:
        with pytest.raises(sm.RemoteError, match="no option"):
            client.run(_none, "syft.optim_set", (adam._handle, 0, key, True), {}, described=True)
    assert len(optimizers._ratios) <= before + 1
    with pytest.raises(sm.RemoteError, match="a bool"):
        adam.param_groups[0]["amsgrad"] = 0
    with pytest.raises(sm.RemoteError, match="a tuple of 2 numbers"):
        adam.param_groups[0]["betas"] = (0.9, 0.99, 0.5)
    adam.param_groups[0]["betas"] = (0.8, 0.9)
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)


def test_a_described_answer_is_read_as_text_only_for_the_ops_that_answer_text():
    """A worker cannot make ``ptr.grad`` (or any other described op) come back as a string."""
    from syft_magics.errors import ProtocolError
    from syft_magics.wire.results import from_wire

    desc = [0, [["V", "hello"]]]
    tree, _ = from_wire(desc)
    assert tree.leaves == (("V", None),)
    tree, _ = from_wire(desc, text=True)
    assert tree.leaves == (("V", "hello"),)
    with pytest.raises(ProtocolError):
        from_wire([0, [["V"]]], text=True)


def test_defaults_are_the_options_the_optimizer_was_made_with_as_torchs(seed):
    bob, client = seed
    remote, opt, model, local_opt = _pair(client, momentum=0.9)
    schedule = client.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train(remote, opt, client.send(torch.ones(1, 3)))
    schedule.step()
    opt.param_groups[0]["lr"] = 1.0
    assert opt.defaults == local_opt.defaults


def test_a_bad_option_raises_at_the_constructors_line_as_torchs_does(seed):
    """It was refused at the next sync, and named by a later line's error (a user's walk-through)."""
    bob, client = seed
    remote = client.send(nn.Linear(3, 2))
    with pytest.raises(sm.RemoteError, match="Invalid learning rate"):
        client.optim.Adam(remote.parameters(), lr=-1.0)
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    schedule = client.lr_scheduler.MultiStepLR(opt, milestones=[1, 2], gamma=0.5)  # (a list, as torch shows it)
    for _ in range(2):
        opt.step()
        schedule.step()
    assert schedule.get_last_lr() == pytest.approx([0.025])


def test_a_scheduler_resumes_with_last_epoch_after_initial_lr_is_set(seed):
    bob, client = seed
    remote, opt, model, local_opt = _pair(client)
    opt.param_groups[0]["initial_lr"] = 0.1
    local_opt.param_groups[0]["initial_lr"] = 0.1
    schedule = client.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5, last_epoch=2)
    local_schedule = torch.optim.lr_scheduler.StepLR(local_opt, step_size=1, gamma=0.5, last_epoch=2)
    local_opt.step()
    opt.step()
    schedule.step()
    local_schedule.step()
    assert schedule.get_last_lr() == pytest.approx(local_schedule.get_last_lr())


@pytest.mark.parametrize("make", [
    lambda c, p: c.lr_scheduler.ExponentialLR(c.optim.SGD(p, lr=10_000), gamma=[1] * 1024),
    lambda c, p: c.optim.SGD([{"params": p, "lr": [1] * 1024}], lr=0.1),
    lambda c, p: c.optim.Adam(p, lr=0.1, amsgrad=1),
], ids=["list gamma", "list rate in a group", "int for a bool"])
def test_an_option_takes_only_its_defaults_kind(seed, make):
    """Found by a probe once lists were accepted for milestones: a scheduler multiplied a list-valued rate by
    its gamma each step (10 million items in one step, 8 GB in three, charged 16 bytes)."""
    bob, client = seed
    params = list(client.send(nn.Linear(3, 2)).parameters())
    with pytest.raises(sm.RemoteError, match="must be"):
        make(client, params)


def test_a_scheduler_is_charged_for_what_it_holds(make_worker, make_client):
    """2,000 schedulers of 1,024 milestones held 160 MB, each charged nothing (its optimizer's memory was
    held already): a probe."""
    from syft_magics import Quotas

    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="1MB"))
    client = make_client(bob.address, key=bob.key)
    opt = client.optim.SGD(client.send(nn.Linear(3, 2)).parameters(), lr=0.1)
    kept = []
    with pytest.raises(sm.QuotaExceeded):
        for _ in range(40):
            kept.append(client.lr_scheduler.MultiStepLR(opt, milestones=list(range(1024))))
    assert 10 <= len(kept) < 20, "about 65 KiB each"


def test_changing_the_lists_read_from_a_remote_optimizer_raises(seed):
    """helper-77: ``opt.param_groups`` is read from the worker, a new list each time: ``opt.param_groups[0] = {...}``,
    ``.append(...)`` and ``param_groups[0]["params"].append(p)`` changed a copy and nothing on the worker, silently.
    Each raises now, naming what works; setting an option through a group still does."""
    _, client = seed
    remote = client.send(torch.nn.Linear(3, 2))
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    groups = opt.param_groups
    for change in (lambda: groups.__setitem__(0, {**groups[0], "lr": 0.9}), lambda: groups.append({}),
                   lambda: groups[0]["params"].append(client.send(torch.ones(2))), lambda: groups.pop()):
        with pytest.raises(TypeError, match="cannot be changed: set an option"):
            change()
    opt.param_groups[0]["lr"] = 0.5
    assert opt.param_groups[0]["lr"] == 0.5 and len(opt.param_groups[0]["params"]) == 2
    assert list(groups) == list(groups[:])  # (reads work as on a list)


def test_an_optimizer_takes_named_parameters_as_torch_does(seed):
    """helper-77: ``client.optim.SGD(remote.named_parameters())`` (torch 2.x takes the pairs) reached the worker as
    tuples and failed there, after the user's line; the pairs' pointers are the parameters now."""
    _, client = seed
    remote = client.send(torch.nn.Linear(3, 2))
    opt = client.optim.SGD(remote.named_parameters(), lr=0.1)
    before = remote.get().weight.clone()
    remote(client.send(torch.ones(4, 3))).sum().backward()
    opt.step()
    assert not torch.equal(remote.get().weight, before) and len(opt.param_groups[0]["params"]) == 2


def test_a_scheduler_not_on_workers_says_what_works_instead(seed):
    """helper-80: LambdaLR, ReduceLROnPlateau... were refused with no workable hint."""
    _, client = seed
    remote = client.send(nn.Linear(2, 2))
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    with pytest.raises(AttributeError, match=r"param_groups\[0\]\['lr'\] = .*torch's own torch.optim"):
        client.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9)
    local_opt = torch.optim.SGD(remote.parameters(), lr=0.1)  # as the message says: torch's own, op by op
    torch.optim.lr_scheduler.LambdaLR(local_opt, lambda epoch: 0.5).step()
    assert local_opt.param_groups[0]["lr"] == 0.05
