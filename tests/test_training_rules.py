"""Owner rules for training: scalar losses and trained models come back without a click when the owner
allows them (allow_get), everything else still follows the policy; each automatic decision is logged."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import syft_magics as sm


def test_scalars_are_allowed_by_rule_and_the_rest_still_waits(review_seed):
    bob, client = review_seed
    rule = bob.policy.allow_get(max_numel=1)
    assert "numel<=1" in bob.policy.summary and list(bob.policy.rules) == [rule]
    x = client.search("#X")[0]
    loss = (x * x).mean()
    assert loss.get() == pytest.approx(11.0)
    assert not bob.requests.pending
    assert any(str(e.data.get("status")) == "auto-allowed (numel<=1)" for e in bob.events.of_kind("get"))
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.3)
    assert len(bob.requests.pending) == 1


def test_models_are_allowed_by_rule_and_tensors_are_not(review_seed):
    bob, client = review_seed
    bob.policy.allow_get(kind="model")
    model = nn.Sequential(nn.Linear(5, 2))
    remote = client.send(model)
    trained = remote.get()
    assert torch.equal(trained[0].weight, model[0].weight)
    with pytest.raises(sm.GetTimeout):
        remote(client.search("#X")[0]).get(timeout=0.3)


def test_an_automatic_decision_is_an_event_and_the_panel_shows_the_rules(review_seed):
    bob, client = review_seed
    seen = []
    unsubscribe = bob.events.subscribe(seen.append)
    try:
        bob.policy.allow_get(max_numel=1)
        client.search("#X")[0].sum().get()
    finally:
        unsubscribe()
    assert any(e.kind == "get" and str(e.data.get("status")) == "auto-allowed (numel<=1)" for e in seen)
    assert "auto-allow numel<=1" in repr(bob.policy)
    from syft_magics.ui.panels import WorkerPanel

    panel = WorkerPanel(bob)
    try:
        assert "auto-allow numel<=1" in panel.text()
    finally:
        panel.close()


def test_rules_are_checked():
    with pytest.raises(ValueError, match="policy='open'"):
        sm.ReviewPolicy().allow_get()
    with pytest.raises(ValueError, match="kind"):
        sm.ReviewPolicy().allow_get(kind="everything")


def test_closed_policy_with_no_rule_still_denies(make_worker, make_client):
    bob = make_worker("Bob", policy="closed")
    bob.share(torch.ones(3), "#X")
    client = make_client("Bob")
    with pytest.raises(sm.PermissionDenied):
        client.search("#X")[0].sum().get()
    bob.policy.allow_get(max_numel=1)
    assert client.search("#X")[0].sum().get() == 3.0


def test_a_size_rule_counts_a_complex_number_as_two(review_seed):
    """helper-61: ``x[i:i+4].view(torch.complex128)`` is one element and four float32 values of ``#X``;
    ``allow_get(max_numel=1)`` let it go, 16 gets for 64 values, no click. A rule counts real numbers."""
    bob, client = review_seed
    bob.policy.allow_get(max_numel=1)
    x = client.search("#X")[0]
    with pytest.raises(sm.GetTimeout):
        x[0:4].view(torch.complex128).get(timeout=0.3)
    with pytest.raises(sm.GetTimeout):
        torch.complex(x[0], x[1]).get(timeout=0.3)
    assert x.sum().get() == 15.0

