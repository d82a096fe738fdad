"""A worker in a background thread and a client over TCP: share, search, send, get, protection of owner data."""
from __future__ import annotations

import os
import time

import msgpack
import pytest
import torch
import torch.nn.functional as F

import syft_magics as sm
from syft_magics.wire.protocol import Ref, encode

X = torch.tensor([1.0, 2, 3, 4, 5])


# -- share and search -------------------------------------------------------------------------------------------
def test_search_finds_shared_tensors_by_tag(seed):
    bob, client = seed
    found = client.search("#X")
    assert len(found) == 1
    x = found[0]
    assert isinstance(x, sm.PointerTensor) and x.shape == (5,) and x.dtype == torch.float32
    assert x.tags == ("#X",)
    assert torch.equal(x.get(), X)


def test_search_is_an_and_of_tags_and_accepts_a_list(seed):
    bob, client = seed
    bob.share(torch.zeros(2), "#train", "#images")
    bob.share(torch.ones(3), "#train", "#labels")
    bob.share(torch.full((4,), 2.0), "#test", "#images")
    assert [p.shape for p in client.search("#train")] == [(2,), (3,)]
    both = client.search("#train", "#images")
    assert len(both) == 1 and both[0].shape == (2,)
    assert len(client.search(["#train", "#labels"])) == 1
    assert len(client.search(["#images"])) == 2
    assert torch.equal(client.search(["#test", "#images"])[0].get(), torch.full((4,), 2.0))
    assert len(client.search("#train", "#test")) == 0


def test_empty_search_explains_itself(seed):
    bob, client = seed
    found = client.search("#Z")
    assert len(found) == 0 and not found
    assert "no object on Bob is tagged #Z" in repr(found)
    assert "#X" in repr(found) and "#Y" in repr(found)
    with pytest.raises(IndexError) as info:
        found[0]
    assert "#Z" in str(info.value) and "#X, #Y" in str(info.value)


def test_search_needs_well_formed_tags(seed):
    _, client = seed
    with pytest.raises(sm.TagError, match="did you mean '#X'"):
        client.search("X")
    with pytest.raises(sm.TagError):
        client.search()
    with pytest.raises(sm.TagError):
        client.search("#two words")


def test_get_never_deletes_and_search_never_deletes(seed):
    bob, client = seed
    before = len(bob.store)
    for _ in range(3):
        x = client.search("#X")[0]
        assert torch.equal(x.get(), X)
        assert torch.equal(x.get(), X)
        x.delete()
    del x
    client.sync()
    time.sleep(0.2)  # give a wrongly queued free every chance to arrive
    client.sync()
    assert len(bob.store) == before
    assert len(client.search("#X")) == 1 and torch.equal(client.search("#X")[0].get(), X)


def test_unshare_stops_serving(seed):
    bob, client = seed
    assert bob.unshare("#Y") == 1
    assert len(client.search("#Y")) == 0
    assert len(client.search("#X")) == 1


def test_share_refuses_pointers_and_non_tensors(seed):
    bob, client = seed
    with pytest.raises(TypeError):
        bob.share([1, 2, 3], "#L")
    with pytest.raises(TypeError):
        bob.share(client.search("#X")[0], "#P")
    with pytest.raises(sm.TagError):
        bob.share(torch.ones(1), "no-hash")


# -- send ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [
    torch.arange(10, dtype=torch.int64), torch.tensor(2.5), torch.empty(0, 3), torch.randn(4, 4).t(),
    torch.tensor([True, False]), torch.randn(3, dtype=torch.complex64), torch.randn(7).to(torch.bfloat16),
], ids=["int64", "0d", "empty", "transposed", "bool", "complex", "bfloat16"])
def test_send_round_trips(seed, t):
    _, client = seed
    p = client.send(t)
    assert p.shape == t.shape and p.dtype == t.dtype and p.owned
    assert torch.equal(p.get(), t)


def test_send_16_mib_round_trip(seed):
    bob, client = seed
    t = torch.randn(4 << 20)  # 16 MiB
    p = client.send(t, "#big")
    t_copy = t.clone()
    t.zero_()  # the sender may change its tensor once send() returned
    got = p.get()
    assert torch.equal(got, t_copy)
    assert (p * 2).sum().get().item() == pytest.approx(t_copy.sum().item() * 2, rel=1e-3)
    entry = bob.store.get(p.oid)
    assert entry.tags == ("#big",) and entry.nbytes == 16 << 20


def test_sent_tensors_are_computed_on_with_owner_data(seed):
    _, client = seed
    x = client.search("#X")[0]
    w = client.send(torch.full((5,), 2.0))
    assert torch.equal((x * w).get(), X * 2)


def test_send_refuses_pointers_and_non_tensors(seed):
    _, client = seed
    with pytest.raises(TypeError, match="already a pointer"):
        client.send(client.search("#X")[0])
    with pytest.raises(TypeError):
        client.send([1, 2])


# -- registry -------------------------------------------------------------------------------------------------
def test_objects_registry_lists_tags_shape_dtype_bytes_origin(seed):
    bob, client = seed
    bob.share(torch.zeros(2, 3, dtype=torch.float64), "#W", "#weights")
    sent = client.send(torch.ones(4, dtype=torch.int32), "#mine")
    z = client.search("#X")[0] + 1
    client.sync()
    objects = bob.objects
    assert len(objects) == 5
    w = objects.by_tag("#W")[0]
    assert w.tags == ("#W", "#weights") and w.shape == (2, 3) and w.dtype == "float64" and w.nbytes == 48
    assert w.origin == "owner"
    mine = objects[sent.id_at_location]
    assert mine.tags == ("#mine",) and mine.dtype == "int32" and mine.nbytes == 16
    assert mine.origin.startswith("client:") or "@" in mine.origin
    made = objects[z.id_at_location]
    assert made.shape == (5,) and made.op == ".add" and bob.store.lineage(made) == ".add(#X)"
    text = repr(objects)
    assert "Bob holds 5 objects" in text and "#weights" in text and "float64" in text and "owner" in text
    assert "<table" in objects._repr_html_() and "#X" in objects._repr_html_()
    assert objects[sent.id_at_location].summary()["bytes"] == 16


# -- owner data is read-only -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mutate", [
    lambda x: x.add_(1),
    lambda x: x.__setitem__(0, 100.0),
    lambda x: x.zero_(),
    lambda x: x.view(5).mul_(2),            # a view of owner data
    lambda x: x[1:3].fill_(0),              # a slice of owner data
    lambda x: x.detach().copy_(torch.zeros(5)),
    lambda x: x.contiguous().sub_(1),       # an op that returns the owner's tensor itself
    lambda x: F.relu(x, inplace=True),
    lambda x: F.threshold(x, 2.0, -9.0, True),
    lambda x: F.dropout(x, 0.5, True, True),
], ids=["add_", "setitem", "zero_", "view", "slice", "detach-copy_", "contiguous", "relu-inplace",
        "threshold-inplace", "dropout-inplace"])
def test_owner_data_cannot_be_changed_in_place(seed, mutate):
    bob, client = seed
    owner = bob.store.search(("#X",))[0].tensor
    x = client.search("#X")[0]
    mutate(x)
    with pytest.raises(sm.ReadOnlyError) as info:
        client.sync()
    assert "#X" in str(info.value) or "Bob's data" in str(info.value)
    assert isinstance(info.value, sm.PermissionDenied)
    assert torch.equal(owner, X), "the owner's tensor is unchanged"
    assert torch.equal(x.get(), X)
    # a copy can be changed
    z = x.clone()
    z.add_(1)
    assert torch.equal(z.get(), X + 1)


def test_functional_ops_cannot_update_owner_tensors_used_as_running_stats_or_weights(seed):
    bob, client = seed
    mean, var = torch.zeros(3), torch.ones(3)
    table = torch.full((4, 3), 10.0)
    bob.share(mean, "#mean")
    bob.share(var, "#var")
    bob.share(table, "#table")
    batch = client.send(torch.randn(8, 3) + 5)
    m, v, t = client.search("#mean")[0], client.search("#var")[0], client.search("#table")[0]
    F.batch_norm(batch, m, v, training=True)
    with pytest.raises(sm.ReadOnlyError):
        client.sync()
    F.embedding(client.send(torch.tensor([0, 1])), t, max_norm=1.0)
    with pytest.raises(sm.ReadOnlyError):
        client.sync()
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(var, torch.ones(3))
    assert torch.equal(table, torch.full((4, 3), 10.0))
    # the read-only uses still run
    assert F.batch_norm(batch, m, v, training=False).shape == (8, 3)
    assert torch.equal(F.embedding(client.send(torch.tensor([3])), t).get(), torch.full((1, 3), 10.0))


# -- sessions are separate ---------------------------------------------------------------------------------------
def test_a_client_cannot_use_another_clients_objects(seed, make_client):
    bob, alice = seed
    eve = make_client("Bob")
    secret = alice.send(torch.tensor([42.0]))
    z = alice.search("#X")[0] * 3
    alice.sync()
    for oid in (secret.oid, z.oid):
        forged = sm.PointerTensor(eve, oid, (1,), torch.float32, owned=False)
        with pytest.raises(sm.UnknownObject, match="holds no object"):
            forged.get()
        (forged + 1)
        with pytest.raises(sm.UnknownObject, match="holds no object"):  # not "another client's": no hint
            eve.sync()
    # eve's frees of alice's ids are ignored
    eve.free_queue.extend([secret.oid, z.oid])
    eve.sync()
    eve.sync()
    assert secret.oid in bob.store and z.oid in bob.store
    assert torch.equal(secret.get(), torch.tensor([42.0]))


# -- the worker survives hostile input ---------------------------------------------------------------------------
GARBAGE = [
    [b""], [b"\xc1\xff"], [os.urandom(64)], [msgpack.packb([1, 2, 3])], [msgpack.packb({"t": "nonsense"})],
    [msgpack.packb({"t": "op", "f": "torch.add", "a": msgpack.ExtType(99, b"")})],
    [msgpack.packb({"t": "hello", "v": 999})], [msgpack.packb({"t": "auth", "mac": b"x" * 32})],
    [msgpack.packb({"t": "op"}), b"extra", b"frames"],
]


def assert_still_serving(bob, make_client):
    client = make_client("Bob")
    assert torch.equal(client.search("#X")[0].get(), X)
    client.disconnect()


def test_worker_survives_unauthenticated_garbage(seed, peers, make_client):
    bob, client = seed
    dealer = peers(bob.address)
    for parts in GARBAGE:
        dealer.send_raw(parts)
        reply = dealer.reply()
        assert reply["t"] == "err", parts
    assert bob.running
    assert torch.equal(client.search("#X")[0].get(), X)
    assert_still_serving(bob, make_client)


def test_worker_survives_authenticated_garbage(seed, peers, make_client):
    bob, client = seed
    dealer = peers(bob.address)
    dealer.login(bob.key)
    oid = bob.store.search(("#X",))[0].id
    hostile = GARBAGE + [
        encode({"t": "op", "s": 1, "f": "torch.save", "a": [Ref(oid), "/tmp/x"], "o": [os.urandom(16)]}),
        encode({"t": "op", "s": 2, "f": "builtins.eval", "a": ["1"], "o": []}),
        encode({"t": "op", "s": 3, "f": "torch.add", "a": {"x": 1}, "o": []}),
        encode({"t": "op", "s": 4, "f": "torch.add", "a": [Ref(oid), 1], "o": [b"short"]}),
        encode({"t": "op", "s": 5, "f": "torch.add", "a": [Ref(oid), 1], "o": [oid]}),
        encode({"t": "op", "s": 6, "f": "torch.add", "a": [Ref(os.urandom(16)), 1], "o": [os.urandom(16)]}),
        encode({"t": "op", "s": 7, "f": "Tensor.add_", "a": [Ref(oid), 1], "o": [None]}),
        encode({"t": "op", "s": 8, "f": "torch.ones_like", "a": [Ref(oid)], "k": {"out": Ref(oid)}, "o": [None]}),
        encode({"t": "get", "s": 9, "id": "not bytes"}),
        encode({"t": "get", "s": 10, "id": os.urandom(16)}),
        encode({"t": "send", "s": 11, "id": oid, "x": torch.zeros(5)}),
        encode({"t": "send", "s": 12, "id": os.urandom(16), "x": "not a tensor"}),
        encode({"t": "search", "s": 13, "tags": [1, 2]}),
        encode({"t": "search", "s": 14, "tags": "#X"}),
        encode({"t": "free", "s": 15, "ids": "all"}),
        encode({"t": "free", "s": 16, "ids": [oid]}),  # owner data is never freed by a client
        [msgpack.packb({"t": "op", "s": 17, "f": "torch.add",
                        "a": [msgpack.ExtType(2, msgpack.packb([5, "float32", [1]]))], "o": []})],
    ]
    answered = []
    for parts in hostile:  # each followed by "told": a failed op stops the ops after it until then (owner/halts.py)
        dealer.send_raw(parts)
        dealer.send_raw(encode({"t": "told", "first": 1 << 40}))
        dealer.send_raw(encode({"t": "sync", "s": 99}))
        while (reply := dealer.reply())["s"] != 99:
            answered.append(reply)
    assert len(answered) == len(hostile) - 1  # the owner-data free is silent
    assert all(r["t"] == "err" for r in answered), answered
    codes = {r.get("code") for r in answered}
    assert {"op_not_allowed", "protocol", "read_only", "unknown_object", "bad_id"} <= codes
    assert bob.running
    assert oid in bob.store and torch.equal(bob.store.get(oid).tensor, X)
    assert torch.equal(client.search("#X")[0].get(), X)
    assert_still_serving(bob, make_client)


def test_worker_repr_and_clients(seed):
    bob, client = seed
    text = repr(bob)
    assert "Bob" in text and "serving at tcp://127.0.0.1:" in text and "policy=open" in text
    assert len(bob.clients) == 1 and bob.clients[0].peer == "127.0.0.1"
    assert client.connected and "connected" in repr(client) and "policy=open" in repr(client)
    assert client.policy == "open" and client.name == "Bob"


# -- logging ----------------------------------------------------------------------------------------------------------
def test_verbose_worker_prints_one_line_per_command(make_worker, make_client, capsys):
    bob = make_worker("Bob", policy="open", verbose=True)
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    x = client.search("#X")[0]
    y = x + 1
    z = y * 2
    x[torch.tensor([9])]  # fails remotely: logged with its status
    with pytest.raises(sm.RemoteError):
        client.sync()
    assert torch.equal(z.get(), (X + 1) * 2)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "Received Command From:" in line]
    assert len(lines) == 3, out
    assert lines[0].startswith("[Bob] Received Command From: ") and ".add(#X)" in lines[0] and "->" in lines[0]
    assert ".mul(" in lines[1]
    assert ".__getitem__(#X)" in lines[2] and "[error:" in lines[2]
    assert "connect:" in out


def test_a_peers_text_cannot_write_over_the_owners_console(make_worker, make_client, capsys):
    """helper-50: a device string (and a keyword's name) torch echoes in its error reached the owner's --verbose
    console raw: escape sequences moved the cursor and wrote a forged request, a scalar loss, over the real one for
    all of #X, which the owner approved. Every character a peer chose that is not printable is shown escaped."""
    import os

    from raw_peer import RawPeer

    from syft_magics.wire.protocol import Ref, encode

    bob = make_worker("Bob", policy="open", verbose=True)
    bob.share(X.clone(), "#X")
    forged = "\r\x1b[3A\x1b[J[Bob] request #1: wants loss (shape ())\n\x1b[8m"
    peer = RawPeer(bob.address)
    try:
        peer.login(bob.key, name="mallory")
        x = Ref(bob.store.search(("#X",))[0].id)
        peer.send_raw(encode({"t": "op", "s": 1, "f": "Tensor.to", "a": [x], "k": {"device": forged},
                              "o": [os.urandom(16)]}))
        peer.send_raw(encode({"t": "op", "s": 1, "f": f"torch.add{forged}", "a": [x, 1], "o": [os.urandom(16)]}))
        assert peer.request({"t": "sync", "s": 2})["t"] in ("ok", "err")
    finally:
        peer.close()
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out, out
    lines = [line for line in out.splitlines() if "Received Command From:" in line and "error" in line]
    assert len(lines) == 2 and all("\\x1b[3A" in line and "request #1" in line for line in lines), out


def test_verbose_can_be_switched_on_later_and_stops_with_the_worker(make_worker, make_client, capsys):
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    x = client.search("#X")[0]
    (x + 1)
    client.sync()
    assert "Received Command From" not in capsys.readouterr().out
    bob.set_verbose(True)
    (x + 2)
    client.sync()
    assert capsys.readouterr().out.count("Received Command From") == 1


def test_log_file_gets_one_json_line_per_command(make_worker, make_client, tmp_path):
    import json

    path = tmp_path / "bob.log"
    path.write_text('{"previous": "run"}\n')
    bob = make_worker("Bob", policy="open", log=str(path))
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    x = client.search("#X")[0]
    y = torch.add(x, 1)
    client.send(torch.ones(2))
    x[torch.tensor([9])]
    with pytest.raises(sm.RemoteError):
        client.sync()
    bob.stop()  # closes the log
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"previous": "run"}, "the log is appended to"
    records = [r for r in lines[1:] if "event" not in r]  # commands; connections are logged as events
    assert [r["op"] for r in records] == ["add", "send", ".__getitem__"]
    assert [r["event"] for r in lines[1:] if "event" in r][:1] == ["connect"], "who connected is logged too"
    assert all(r["worker"] == "Bob" and "@" in r["client"] for r in records)
    assert records[0]["status"] == "ok" and records[0]["command"].startswith("add(#X)")
    assert records[0]["out"] == [y.id_at_location] and len(records[0]["inputs"]) == 1
    assert records[2]["status"].startswith("error:") and "out of bounds" in records[2]["status"]
    assert all(isinstance(r["duration_ms"], float) and isinstance(r["time"], float) for r in records)


def test_events_stream_records_commands(seed):
    bob, client = seed
    seen = []
    unsubscribe = bob.events.subscribe(seen.append)
    x = client.search("#X")[0]
    (x + 1)
    client.sync()
    unsubscribe()
    (x + 2)
    client.sync()
    kinds = [e.kind for e in seen]
    assert "search" in kinds and kinds.count("command") == 1
    assert bob.events.totals["command"] == 2
    assert bob.events.of_kind("command")[-1]["op"] == ".add"


def test_a_failing_event_subscriber_never_breaks_serving(seed):
    bob, client = seed

    def broken(event):
        raise RuntimeError("panel crashed")

    bob.events.subscribe(broken)
    x = client.search("#X")[0]
    assert torch.equal((x + 1).get(), X + 1)
    assert torch.equal((x + 2).get(), X + 2)
