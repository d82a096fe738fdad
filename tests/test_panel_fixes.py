"""What a newcomer tripped on in the owner's panel, fixed: the hints name the notebook's variable,
a busy kernel is said while requests wait, +N older folds only past the limit, the counters say
what they count, the log's summary reads, the Registry tab opens the owner's card, share() echoes
what was shared."""
from __future__ import annotations

import pytest
import torch

from syft_magics.ui.owner_card import OwnerCard
from syft_magics.ui.panels import WorkerPanel
from syft_magics.ui.panels import graph as G

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def panel_of():
    made = []

    def make(worker):
        panel = WorkerPanel(worker)
        made.append(panel)
        return panel

    yield make
    for p in made:
        p.close()


def test_the_empty_registry_hint_names_the_notebooks_variable(ip, panel_of):
    ip.run_line_magic("syft_worker", "Alice 0 --as alice")
    panel = panel_of(ip.user_ns["alice"])
    assert "share one with alice.share(x, &#x27;#X&#x27;)" in panel.registry.value


def test_a_running_cell_is_said_while_a_request_waits(ip, panel_of, review_seed):
    bob, client = review_seed
    ip.user_ns["bob_worker"] = bob
    panel = panel_of(bob)
    z = client.search("#X")[0] + 1
    client.sync()
    bob.requests.open(client="c", object_id=z.oid.hex(), shape=(5,), dtype="float32", lineage="add(#X, 1)")
    ip.events.trigger("pre_run_cell", None)  # the owner's notebook starts a cell
    panel.refresh()
    assert "running a cell: Approve and Deny take effect when it finishes" in panel.pending_title.value
    ip.events.trigger("post_run_cell", None)
    panel.refresh()
    assert "syft-busy" not in panel.pending_title.value


def test_older_objects_fold_only_past_the_limit(make_worker, panel_of):
    bob = make_worker("Bob")
    for i in range(8):
        bob.share(torch.ones(2) * i, *(() if i % 2 else (f"#t{i}",)))  # untagged ones too
    panel = panel_of(bob)
    panel.refresh()
    assert not [n for n in panel.shown_graph.nodes if n.kind == "more"]
    assert len([n for n in panel.shown_graph.nodes if n.side == G.REMOTE]) == 8


def test_the_header_says_what_the_byte_counters_count_and_the_log_summary_reads(seed, panel_of):
    bob, client = seed
    panel = panel_of(bob)
    (client.search("#X")[0] + 1).get()
    panel.refresh()
    assert "tensors sent in" in panel.header.value and "values out" in panel.header.value
    summary = panel.commands.value
    assert "So far: 1 command (no errors), 1 get, 0 requests for approval. Newest first: all" in summary
    assert "overflow-wrap:anywhere" in summary  # the op column wraps; the status column stays in view
    assert "tensors sent in" in panel.text()


def test_choosing_an_object_in_the_registry_shows_the_owners_card(seed, panel_of):
    bob, client = seed
    panel = panel_of(bob)
    panel.refresh()
    x_hex = next(e.hex for e in bob.store.entries() if "#X" in e.tags)
    assert x_hex in [value for _, value in panel.inspector.choice.options]
    panel.inspector.choice.value = x_hex  # what a click on the dropdown does
    card = panel.inspector.card
    assert isinstance(card, OwnerCard) and "tensor([1., 2., 3., 4., 5.])" in card.preview.value
    panel.inspector.choice.value = ""
    assert panel.inspector.card is None


def test_share_echoes_what_was_shared_not_a_raw_id(make_worker):
    bob = make_worker("Bob")
    oid = bob.share(torch.ones(5), "#X")
    assert isinstance(oid, str) and len(oid) == 32 and bob.store.get(bytes.fromhex(oid)) is not None
    assert repr(oid) == f"<Bob shares #X: id {oid[:8]}…, shape (5,), float32>"
