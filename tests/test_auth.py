"""Links are authenticated with the worker's key (HMAC over a fresh nonce); nothing runs before that."""
from __future__ import annotations

import os

import pytest
import torch
import zmq

import syft_magics as sm
from syft_magics.wire import auth
from syft_magics.wire.protocol import PROTOCOL_VERSION, Ref

X = torch.tensor([1.0, 2, 3, 4, 5])


def owner_id(bob) -> bytes:
    return bob.store.search(("#X",))[0].id


def assert_nothing_ran(bob, before) -> None:
    assert bob.stats["commands"] == before[0] and len(bob.store) == before[1]
    assert torch.equal(bob.store.get(owner_id(bob)).tensor, X)


def test_messages_without_a_handshake_get_an_error_and_nothing_runs(seed, peers):
    bob, _ = seed
    before = bob.stats["commands"], len(bob.store)
    dealer = peers(bob.address)
    oid = owner_id(bob)
    for header in ({"t": "op", "s": 1, "f": "Tensor.add_", "a": [Ref(oid), 1], "o": [None]},
                   {"t": "get", "s": 2, "id": oid},
                   {"t": "search", "s": 3, "tags": ["#X"]},
                   {"t": "send", "s": 4, "id": os.urandom(16), "x": torch.ones(2)},
                   {"t": "free", "s": 5, "ids": [oid]}):
        reply = dealer.request(header)
        assert reply["t"] == "err" and reply["code"] == "unknown_session", reply
        assert "value" not in reply and "r" not in reply and "x" not in reply
    assert_nothing_ran(bob, before)
    assert len(bob.clients) == 1


def test_a_wrong_proof_is_refused_and_the_link_stays_unauthenticated(seed, peers):
    bob, _ = seed
    before = bob.stats["commands"], len(bob.store)
    dealer = peers(bob.address)
    challenge = dealer.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "mallory"})
    assert challenge["t"] == "challenge" and len(challenge["nonce"]) == 16 and challenge["name"] == "Bob"
    reply = dealer.request({"t": "auth", "s": 0, "mac": auth.proof("0" * 64, challenge["nonce"], dealer.ident)})
    assert reply["t"] == "err" and reply["code"] == "unauthenticated"
    assert bob.events.totals["auth_failed"] == 1
    reply = dealer.request({"t": "op", "s": 1, "f": "Tensor.add_", "a": [Ref(owner_id(bob)), 1], "o": [None]})
    assert reply["code"] == "unknown_session"
    assert_nothing_ran(bob, before)


def test_auth_without_hello_and_a_proof_for_another_session_are_refused(seed, peers):
    bob, _ = seed
    first = peers(bob.address)
    reply = first.request({"t": "auth", "s": 0, "mac": b"\0" * 32})
    assert reply["code"] == "unauthenticated"
    # a proof is bound to the nonce and to the session id: replaying it from another link fails
    victim, thief = peers(bob.address), peers(bob.address)
    challenge = victim.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION})
    thief.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION})
    stolen = auth.proof(bob.key, challenge["nonce"], victim.ident)
    assert thief.request({"t": "auth", "s": 0, "mac": stolen})["code"] == "unauthenticated"
    assert victim.request({"t": "auth", "s": 0, "mac": stolen})["t"] == "welcome"


def test_a_correct_proof_opens_a_session(seed, peers):
    bob, _ = seed
    dealer = peers(bob.address)
    challenge = dealer.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "raw"})
    welcome = dealer.request({"t": "auth", "s": 0, "mac": auth.proof(bob.key, challenge["nonce"], dealer.ident)})
    assert welcome["t"] == "welcome" and welcome["instance"] == bob.instance and welcome["policy"] == "open"
    reply = dealer.request({"t": "search", "s": 7, "tags": ["#X"]})
    assert reply["t"] == "ok" and reply["s"] == 7 and len(reply["r"]) == 1


def test_a_different_protocol_version_is_refused(seed, peers):
    bob, _ = seed
    reply = peers(bob.address).request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION + 1})
    assert reply["code"] == "version" and "protocol" in reply["msg"]


def test_proof_and_verify():
    key, nonce, session = auth.new_key(), auth.new_nonce(), os.urandom(16)
    mac = auth.proof(key, nonce, session)
    assert auth.verify(key, nonce, session, mac)
    assert not auth.verify(auth.new_key(), nonce, session, mac)
    assert not auth.verify(key, auth.new_nonce(), session, mac)
    assert not auth.verify(key, nonce, os.urandom(16), mac)
    assert auth.new_key() != auth.new_key() and len(auth.new_key()) == 64


def test_each_worker_has_its_own_key_and_an_explicit_key_is_used(make_worker, make_client):
    a, b = make_worker("A"), make_worker("B")
    assert a.key != b.key
    c = make_worker("C", key="k" * 64, policy="open")
    c.share(X.clone(), "#X")
    assert torch.equal(make_client(c.address, key="k" * 64).search("#X")[0].get(), X)
    with pytest.raises(sm.AuthenticationError):
        sm.connect(c.address, key=a.key)


def test_the_key_never_crosses_the_wire(seed, make_client, monkeypatch):
    bob, _ = seed
    sent = []
    original = zmq.Socket.send  # every frame goes through it, whichever helper sends the message

    def recording(self, data, *args, **kwargs):
        sent.append(bytes(memoryview(data).cast("B")) if not isinstance(data, bytes) else data)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(zmq.Socket, "send", recording)
    client = make_client("Bob")
    x = client.search("#X")[0]
    assert torch.equal((x + 1).get(), X + 1)
    client.disconnect()
    monkeypatch.undo()
    assert len(sent) > 4, "traffic in both directions was recorded"
    secrets = (bob.key.encode(), bytes.fromhex(bob.key))
    for frame in sent:
        for secret in secrets:
            assert secret not in frame
