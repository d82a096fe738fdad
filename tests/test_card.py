"""The pointer card and the owner's card, read through their widget state (no browser).

Each state a person can see on a card: shared, queued, computed, failed, freed, waiting,
approved, denied; the Request value button does the get from a background thread, so the
test's own thread (the notebook's) stays free while the owner decides.
"""
from __future__ import annotations

import pytest
import torch
from helpers import wait_until

from syft_magics.ui.card import PointerCard, mimebundle, policy_text
from syft_magics.ui.owner_card import OwnerCard
from syft_magics.ui.preview import preview_html

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def card_of():
    cards = []

    def make(ptr, name=None):
        card = PointerCard(ptr, name=name)
        cards.append(card)
        return card

    yield make
    for card in cards:
        card.wait(10)
        card.close()


def state_badge(card) -> str:
    return card.header.value.split("syft-card-state syft-state-")[1].split(" ")[0]


def test_a_searched_pointer_shows_where_it_lives_and_the_policy(review_seed, card_of):
    bob, client = review_seed
    x = client.search("#X")[0]
    card = card_of(x, "x")
    assert card.state == "shared" and state_badge(card) == "shared"
    details = card.details.value
    assert "Bob" in details and x.id_at_location in details and "(5,)" in details and "float32" in details
    assert "Bob&#x27;s data (#X)" in details
    assert "Bob reviews each get" in details
    assert not card.request_button.disabled and card.preview.value == ""


def test_an_op_is_queued_until_the_worker_confirms_it_then_computed(review_seed, card_of):
    bob, client = review_seed
    x, y = client.search("#X")[0], client.search("#Y")[0]
    z = torch.add(x, y)
    card = card_of(z, "z")
    assert card.state == "queued"
    assert "add(#X, #Y)" in card.details.value and "<span class=\"syft-title\">z</span>" in card.header.value
    client.sync()
    card.refresh()
    assert card.state == "computed" and state_badge(card) == "computed"
    w = (z * 2).sum()
    assert PointerCard(w).lineage() == "sum(mul(add(#X, #Y)))"


def test_request_value_waits_for_the_owner_then_shows_the_value(review_seed, card_of):
    bob, client = review_seed
    z = torch.add(client.search("#X")[0], client.search("#Y")[0])
    card = card_of(z, "z")
    card.request_button.click()  # returns at once: the get runs in a background thread
    assert wait_until(lambda: card.state == "waiting", timeout=10)
    assert "waiting for Bob to approve request #1" in card.status.value
    assert card.request_button.disabled and state_badge(card) == "waiting"
    bob.approve(card.request_n)
    card.wait(10)
    assert card.state == "approved" and state_badge(card) == "approved"
    assert "tensor([2., 3., 4., 5., 6.])" in card.preview.value
    assert torch.equal(card.value, torch.tensor([2.0, 3, 4, 5, 6]))
    assert "Bob let the value through" in card.status.value


def test_a_denied_request_shows_the_owners_reason(review_seed, card_of):
    bob, client = review_seed
    z = client.search("#X")[0] * 3
    card = card_of(z, "z")
    card.request_value()
    assert wait_until(lambda: card.state == "waiting", timeout=10)
    bob.deny(card.request_n, "raw values stay here")
    card.wait(10)
    assert card.state == "denied" and state_badge(card) == "denied"
    assert "raw values stay here" in card.status.value and "syft-bad" in card.status.value
    assert card.preview.value == "" and not card.request_button.disabled


def test_an_op_that_failed_on_the_worker_shows_its_message(make_worker, make_client, card_of):
    bob = make_worker("Bob", policy="open")
    bob.share(torch.tensor([3, 0, 2]), "#counts")
    client = make_client("Bob")
    bad = torch.div(client.search("#counts")[0], 0, rounding_mode="floor")
    card = card_of(bad, "bad")
    with pytest.raises(Exception):
        client.sync()
    card.refresh()
    assert card.state == "failed" and state_badge(card) == "failed"
    assert "ZeroDivisionError" in card.details.value
    assert card.request_button.disabled


def test_a_deleted_pointer_shows_freed_and_cannot_be_requested(seed, card_of):
    bob, client = seed
    z = client.search("#X")[0] + 1
    card = card_of(z, "z")
    z.delete()
    assert card.state == "freed" and state_badge(card) == "freed"  # the delete event refreshed it
    assert card.request_button.disabled and "freed" in card.status.value
    w = client.search("#X")[0] + 2
    card2 = card_of(w, "w")
    del w  # the card does not keep the pointer alive
    card2.refresh()
    assert card2.state == "freed"


def test_under_an_open_policy_the_value_comes_at_once(seed, card_of):
    bob, client = seed
    big = client.send(torch.linspace(0, 1, 200))
    doubled = big * 2
    card = card_of(doubled, "doubled")
    assert "policy is open" in card.details.value
    card.request_value()
    card.wait(10)
    assert card.state == "approved"
    html = card.preview.value
    assert "min <b>0</b>" in html and "max <b>2</b>" in html and "mean <b>1</b>" in html
    assert "<svg class=\"syft-histogram\"" in html and html.count("<rect") == 20


def test_the_text_repr_of_a_pointer_stays_outside_a_kernel(seed):
    bob, client = seed
    x = client.search("#X")[0]
    assert mimebundle(x) == {"text/plain": repr(x)}
    assert x._repr_mimebundle_() == {"text/plain": repr(x)}
    assert repr(x).startswith("PointerTensor(")


def test_policy_sentences():
    assert "approves" in policy_text("Bob", "review")
    assert "no value leaves Bob" in policy_text("Bob", "closed")
    assert "'custom'" in policy_text("Bob", "custom")


def test_preview_of_a_small_and_an_integer_tensor():
    assert "tensor([1, 2, 3])" in preview_html(torch.tensor([1, 2, 3]))
    html = preview_html(torch.arange(100))
    assert "min <b>0</b>" in html and "max <b>99</b>" in html and "syft-histogram" not in html


def test_the_owners_card_of_a_clients_model_shows_its_layers(review_seed):
    """helper-75: any client's model made the owner's card fail (a model has no ``numel``): the owner could not look
    at a model before approving its get. Its class, size and layers now, escaped (the client named them)."""
    import torch.nn as nn

    bob, client = review_seed
    layers = nn.Sequential()
    layers.add_module("fc", nn.Linear(3, 2))
    remote = client.send(layers)
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    client.sync()
    model = next(e for e in bob.store.entries() if isinstance(e.tensor, nn.Module))
    optimizer = next(e for e in bob.store.entries() if isinstance(e.tensor, torch.optim.Optimizer))
    for entry, shown in ((model, ["model Sequential, 8 weights", "(fc): Linear(in_features=3, out_features=2"]),
                         (optimizer, ["optimizer SGD over 2 parameters"])):
        card = bob.inspect(entry.hex)
        try:
            assert all(text in card.preview.value for text in shown), card.preview.value
        finally:
            card.close()
    named = nn.Sequential()
    named.add_module("<b>x", nn.ReLU())
    assert "<b>" not in preview_html(named) and "&lt;b&gt;x" in preview_html(named)
    del remote, opt


def test_the_owners_card_shows_values_holders_accesses_requests_and_lineage(review_seed):
    bob, client = review_seed
    x, y = client.search("#X")[0], client.search("#Y")[0]
    z = torch.add(x, y)
    client.sync()
    card = bob.inspect("#X")
    try:
        assert isinstance(card, OwnerCard)
        details = card.details.value
        assert "#X" in details and "shared by you" in details
        assert bob.clients[0].label in details  # the session whose search found it
        assert "used by 1 command" in details
        assert "tensor([1., 2., 3., 4., 5.])" in card.preview.value  # the owner sees his own data
    finally:
        card.close()
    result = next(e for e in bob.store.entries() if e.op)
    card = bob.inspect(result.hex[:10])
    try:
        assert card.lineage() == "add(#X, #Y)"
        assert "tensor([2., 3., 4., 5., 6.])" in card.preview.value
    finally:
        card.close()
    with pytest.raises(KeyError, match="holds no object '#nope'.*#X"):
        bob.inspect("#nope")
    del z
