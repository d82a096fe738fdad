"""An approval covers exactly what the owner saw: the object's whole history, in-place ops included,
and the version approved; a write after the approval voids it."""
from __future__ import annotations

import os

import pytest
import torch
from helpers import wait_until
from raw_peer import RawPeer

from syft_magics.wire.protocol import Ref, encode

X = torch.tensor([1.0, 2, 3, 4, 5])


@pytest.fixture
def review(make_worker):
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    mallory = RawPeer(bob.address)
    mallory.login(bob.key, name="mallory")
    yield bob, mallory, Ref(bob.store.search(("#X",))[0].id)
    mallory.close()


def _run(peer: RawPeer, f: str, *args) -> bytes:
    oid = os.urandom(16)
    peer.send_raw(encode({"t": "op", "s": 0, "f": f, "a": list(args), "o": [oid]}))
    return oid


def _sync(peer: RawPeer) -> None:
    assert peer.request({"t": "sync", "s": 99})["t"] == "ok"


def _approved_zeros(bob, mallory: RawPeer, x: Ref) -> bytes:
    """``z = zeros_like(#X)``, asked for (request #1) and approved by the owner."""
    z = _run(mallory, "torch.zeros_like", x)
    assert mallory.request({"t": "get", "s": 1, "id": z})["n"] == 1
    bob.approve(1)
    assert mallory.reply()["t"] == "approved"
    return z


def test_a_write_before_the_approval_shows_in_the_request_and_voids_the_old_one(review):
    bob, mallory, x = review
    z = _run(mallory, "torch.zeros_like", x)
    assert mallory.request({"t": "get", "s": 1, "id": z})["t"] == "pending"
    assert bob.requests[1].lineage == "zeros_like(#X)"
    mallory.send_raw(encode(
        {"t": "op", "s": 0, "f": "Tensor.copy_", "a": [Ref(z), x], "o": [None]}))
    _sync(mallory)
    bob.approve(1)  # the owner approves what it saw: zeros
    assert mallory.reply()["t"] == "approved"
    reply = mallory.request({"t": "get", "s": 2, "id": z})
    assert reply["t"] == "pending" and reply["n"] == 2, reply  # not the value: it is no longer zeros
    assert bob.requests[2].lineage == "zeros_like(#X), then .copy_(#X)"
    assert "void" in bob.requests[1].reason


def test_a_write_after_the_request_cancels_it_and_a_new_one_shows_the_write(review):
    bob, mallory, x = review
    z = _run(mallory, "torch.zeros_like", x)
    assert mallory.request({"t": "get", "s": 1, "id": z})["n"] == 1
    mallory.send_raw(encode(
        {"t": "op", "s": 0, "f": "Tensor.add_", "a": [Ref(z), x], "o": [None]}))
    reply = mallory.request({"t": "get", "s": 2, "id": z})
    assert reply["t"] == "pending" and reply["n"] == 2
    assert bob.requests[1].status == "cancelled" and bob.requests[2].lineage == "zeros_like(#X), then .add_(#X)"


def test_a_write_through_a_view_shows_and_voids(review):
    bob, mallory, x = review
    z = _run(mallory, "torch.zeros_like", x)
    view = _run(mallory, "Tensor.__getitem__", Ref(z), slice(0, 3, None))
    assert mallory.request({"t": "get", "s": 1, "id": z})["n"] == 1
    bob.approve(1)
    assert mallory.reply()["t"] == "approved"
    mallory.send_raw(encode(
        {"t": "op", "s": 0, "f": "Tensor.copy_", "a": [Ref(view), torch.ones(3)], "o": [None]}))
    reply = mallory.request({"t": "get", "s": 2, "id": z})
    assert reply["t"] == "pending", reply
    assert bob.requests[2].lineage.endswith("then written through a view or alias")


def test_the_approved_version_is_what_arrives(review):
    bob, mallory, x = review
    z = _approved_zeros(bob, mallory, x)
    # the get and a write right behind it, pipelined: the value sent is the approved zeros
    mallory.send_raw(encode({"t": "get", "s": 2, "id": z}))
    mallory.send_raw(encode(
        {"t": "op", "s": 0, "f": "Tensor.copy_", "a": [Ref(z), x], "o": [None]}))
    reply = mallory.reply()
    assert reply["t"] == "value" and torch.equal(reply["x"], torch.zeros(5))
    assert wait_until(lambda: bob.stats["commands"] >= 2)


def test_an_approval_does_not_pass_to_another_object_given_the_same_id(review):
    # helper-35: approve z = zeros_like(#X), free z, make #X.clone() under z's id (version 0 again), get z
    bob, mallory, x = review
    z = _approved_zeros(bob, mallory, x)
    mallory.send_raw(encode({"t": "free", "ids": [z]}))
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "Tensor.clone", "a": [x], "o": [z]}))
    _sync(mallory)
    assert bob.store.get(z).version == 0 and bob.store.lineage(bob.store.get(z)) == ".clone(#X)"
    reply = mallory.request({"t": "get", "s": 2, "id": z})
    assert reply["t"] == "pending" and reply["n"] == 2, reply  # never #X's values on zeros' approval
    assert bob.requests[2].lineage == ".clone(#X)" and "void" in bob.requests[1].reason


def test_set_data_is_a_write_an_approval_sees_and_makes_the_target_the_owners(review):
    # helper-36: syft.set_data_ wrote through .data, whose version counter is its own: z = zeros approved, then
    # set_data_(z, #X), and the next get returned #X; a client's own z so filled showed #X in error text
    bob, mallory, x = review
    z = _approved_zeros(bob, mallory, x)
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "syft.set_data_", "a": [Ref(z), x], "o": [None]}))
    _sync(mallory)
    reply = mallory.request({"t": "get", "s": 2, "id": z})
    assert reply["t"] == "pending" and reply["n"] == 2, reply
    assert "set_data_(#X)" in bob.requests[2].lineage and "void" in bob.requests[1].reason
    assert bob.store.get(z).provenance.owner, "it holds #X's values now"


def test_an_optimizer_step_voids_an_approval_of_its_parameters(review):
    # helper-36: a fused SGD step wrote -#X into p (its gradient set from #X) without moving p's version: an
    # approval of p's zeros let -#X leave
    bob, mallory, x = review
    p = os.urandom(16)
    assert mallory.request({"t": "send", "s": 7, "id": p, "x": torch.zeros(5), "rg": True, "ack": True})["t"] == "ok"
    assert mallory.request({"t": "get", "s": 1, "id": p})["n"] == 1
    bob.approve(1)
    assert mallory.reply()["t"] == "approved"
    opt = os.urandom(16)
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "syft.optim.SGD", "a": [[Ref(p)]], "k": {"lr": 1.0, "fused": True},
                             "o": [opt]}))
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "syft.set_grad_", "a": [Ref(p), x], "o": [None]}))
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "syft.optim_step", "a": [Ref(opt)], "o": [None]}))
    _sync(mallory)
    assert torch.equal(bob.store.get(p).tensor.detach(), -X), "the step ran"
    reply = mallory.request({"t": "get", "s": 2, "id": p})
    assert reply["t"] == "pending" and reply["n"] == 2, reply


def test_a_write_into_a_models_weight_voids_the_models_approval(review):
    # helper-36: a model has no version counter of its own: after copy_(w, #X) its approval let #X leave
    bob, mallory, x = review
    w = _run(mallory, "torch.zeros_like", x)
    mw = os.urandom(16)
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "syft.model_weights", "a": [["w"], Ref(w)], "o": [mw]}))
    assert mallory.request({"t": "get", "s": 1, "id": mw})["n"] == 1
    bob.approve(1)
    assert mallory.reply()["t"] == "approved"
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "Tensor.copy_", "a": [Ref(w), x], "o": [None]}))
    _sync(mallory)
    reply = mallory.request({"t": "get", "s": 2, "id": mw})
    assert reply["t"] == "pending" and reply["n"] == 2, reply


def test_a_client_cannot_fill_the_owners_list_of_requests(review, monkeypatch):
    """Every object, and every target of a move, is another request; each new one was matched against all the book
    kept, and nothing bounded them: a client could fill the owner's list, and the serving thread's time, without
    end. A client has at most MAX_PENDING_PER_SESSION requests waiting; decided ones are kept up to MAX_DECIDED."""
    from syft_magics.owner import policy

    monkeypatch.setattr(policy, "MAX_PENDING_PER_SESSION", 3)
    monkeypatch.setattr(policy, "MAX_DECIDED", 2)
    bob, mallory, x = review
    objects = [_run(mallory, "torch.add", x, i) for i in range(6)]
    for i, oid in enumerate(objects[:3]):
        assert mallory.request({"t": "get", "s": 10 + i, "id": oid})["t"] == "pending"
    refused = mallory.request({"t": "get", "s": 20, "id": objects[3]})
    assert refused["code"] == "quota" and "requests of this client to decide already" in refused["msg"], refused
    for req in bob.requests.pending:
        bob.deny(req.n)
        assert mallory.reply()["code"] == "denied"
    for i, oid in enumerate(objects[3:]):
        assert mallory.request({"t": "get", "s": 30 + i, "id": oid})["t"] == "pending"
    assert len(bob.requests) <= 2 + 3  # (the decided ones trimmed)
