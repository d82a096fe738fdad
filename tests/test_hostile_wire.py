"""What an attacker's raw messages can do to a worker: before and after authentication, nothing
they send crashes it, grows its memory beyond a small bound, or lets them speak as another client."""
from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack
import pytest
import torch
from helpers import wait_until, worker_child

from syft_magics import config
from syft_magics.owner import serving
from syft_magics.owner.quotas import Quotas
from syft_magics.wire import limits
from syft_magics.wire.protocol import EXT_TUPLE, PROTOCOL_VERSION, encode

X = torch.tensor([1.0, 2, 3, 4, 5])
HERE = Path(__file__).parent


def nested_tuples(depth: int) -> msgpack.ExtType:
    """``((((1,),),),)`` ``depth`` levels deep: each level is one more nested decode on the worker."""
    value: object = 1
    for _ in range(depth):
        value = msgpack.ExtType(EXT_TUPLE, msgpack.packb(value))
    return value


@pytest.fixture
def worker_process():
    """A worker in a child process (it may crash without taking the tests down)."""
    with worker_child(grace=10) as child:
        yield child


@pytest.mark.timeout(60)
def test_deeply_nested_values_before_and_after_auth_do_not_crash_the_worker(worker_process, peers, make_client):
    proc, address, key = worker_process
    hello = msgpack.packb({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": nested_tuples(250)})
    assert len(hello) < 1024  # the payload: under 1 KB, a few hundred levels deep
    stranger = peers(address)
    stranger.send_raw([hello])
    assert stranger.reply()["t"] == "err"
    stranger.send_raw([msgpack.packb({"t": "op", "s": 1, "f": "torch.add", "a": [nested_tuples(3000)]})])
    assert stranger.reply()["code"] == "unknown_session"
    mallory = peers(address)
    mallory.login(key)
    for depth in (33, 300, 3000):
        op = msgpack.packb({"t": "op", "s": 1, "f": "torch.add", "a": [nested_tuples(depth)], "m": True})
        mallory.send_raw([op])
        reply = mallory.reply()
        assert reply["t"] == "err" and "nested" in reply["msg"], reply
    assert proc.poll() is None, "the worker process died"
    client = make_client(address, key=key)
    assert torch.equal(client.search("#X")[0].get(), X)


def test_a_handshake_holds_no_extension_values_and_no_long_names(seed, peers):
    bob, _ = seed
    p = peers(bob.address)
    reply = p.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": (1, 2)})
    assert reply["t"] == "err" and reply["code"] == "unknown_session"
    reply = p.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "m" * (limits.MAX_NAME_CHARS + 1)})
    assert reply["t"] == "err" and reply["code"] == "bad_args" and "m" * 60 not in reply["msg"]
    # helper-75: a name is shown as name@address, and one with an '@' read as another host
    reply = p.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "alice@10.0.0.7 (your analyst VM)"})
    assert reply["t"] == "err" and reply["code"] == "bad_args" and "'@'" in reply["msg"], reply
    big = p.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "m" * (100 << 20)}, timeout=20)
    assert big["t"] == "err" and len(big["msg"]) < 1000
    assert not bob.server.handshakes
    assert bob.stats["refused"] >= 3 and bob.stats["refusals"]["malformed handshake"] >= 2


def test_pending_handshakes_are_few_and_expire(seed, peers, monkeypatch):
    bob, _ = seed
    for _ in range(limits.MAX_PENDING_HANDSHAKES + 20):
        assert peers(bob.address).request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION})["t"] == "challenge"
    assert len(bob.server.handshakes) <= limits.MAX_PENDING_HANDSHAKES
    assert bob.stats["refusals"]["too many handshakes"] >= 20
    monkeypatch.setattr(serving, "HANDSHAKE_TIMEOUT", 0.3)  # (after the flood: a loaded machine is slow to send it)
    assert wait_until(lambda: not bob.server.handshakes, timeout=5)


def test_huge_strings_are_not_echoed(seed, peers):
    bob, _ = seed
    p = peers(bob.address)
    p.login(bob.key)
    for header in ({"t": "op", "s": 1, "f": "x" * (1 << 20), "a": [], "m": True},
                   {"t": "search", "s": 2, "tags": ["#" + "y" * (1 << 20)]},
                   {"t": "frobnicate" + "z" * (1 << 20), "s": 3}):
        reply = p.request(header)
        assert reply["t"] == "err" and len(reply["msg"]) <= limits.MAX_ECHO_CHARS + 100, len(reply["msg"])
    for event in list(bob.events.recent):
        assert len(repr(event)) < 10_000


def test_a_message_over_the_size_limit_is_dropped_and_others_are_served(make_worker, peers, make_client):
    config.defaults.max_message_bytes = 1 << 20
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    p = peers(bob.address)
    p.login(bob.key)
    p.send_raw([msgpack.packb({"t": "send", "s": 1, "id": os.urandom(16), "x": 0}), b"\0" * (2 << 20)])
    assert p.reply(timeout=1) is None  # the connection was dropped before the frame was read
    assert torch.equal(make_client(bob.address, key=bob.key).search("#X")[0].get(), X)


def test_a_dropped_clients_routing_id_does_not_give_its_session(seed, peers):
    bob, _ = seed
    victim = peers(bob.address)
    victim.login(bob.key, name="victim")
    oid = os.urandom(16)
    assert victim.request({"t": "send", "s": 1, "id": oid, "x": torch.arange(3.0), "ack": True})["t"] == "ok"
    assert victim.ident in bob.server.sessions
    victim.sock.close(0)  # gone without saying goodbye
    assert wait_until(lambda: victim.ident not in bob.server.sessions, timeout=5)
    assert oid not in bob.store  # the session ended with its connection, and its objects with it
    thief = peers(bob.address, ident=victim.ident)
    for header in ({"t": "get", "s": 2, "id": oid}, {"t": "search", "s": 3, "tags": ["#X"]},
                   {"t": "op", "s": 4, "f": "torch.add", "a": [1, 2], "m": True}):
        reply = thief.request(header)
        assert reply["t"] == "err" and reply["code"] == "unknown_session", reply
        assert "x" not in reply and "r" not in reply
    assert victim.ident not in bob.server.sessions


def test_tags_per_object_and_per_search_are_bounded(seed, peers):
    bob, _ = seed
    p = peers(bob.address)
    p.login(bob.key)
    many = [f"#t{i}" for i in range(limits.MAX_TAGS + 1)]
    oid = os.urandom(16)
    reply = p.request({"t": "send", "s": 1, "id": oid, "x": torch.zeros(2), "tags": many, "ack": True})
    assert reply["t"] == "err" and reply["code"] == "bad_tag" and oid not in bob.store, reply
    reply = p.request({"t": "search", "s": 2, "tags": ["#X"] * (100_000)})
    assert reply["t"] == "err" and reply["code"] == "bad_tag" and len(reply["msg"]) < 200, reply
    assert p.request({"t": "send", "s": 3, "id": oid, "x": torch.zeros(2), "tags": many[:3], "ack": True})["t"] == "ok"


def _hog_asks(bob, hog, asked: int, nbytes: int = 1 << 16) -> bytes:
    """``hog`` (a peer that reads nothing) sends an object of ``nbytes`` and asks ``asked`` times for
    it; returns once the worker has answered every ask (sent it, or refused it)."""
    oid = os.urandom(16)
    assert hog.request({"t": "send", "s": 1, "id": oid, "x": torch.ones(nbytes // 4), "ack": True})["t"] == "ok"
    for s in range(asked):
        hog.send_raw(encode({"t": "get", "s": 10 + s, "id": oid}))

    def answered() -> int:
        return bob.stats["bytes_out"] // nbytes + bob.stats.get("refusals", {}).get("values not read, over a quota", 0)

    assert wait_until(lambda: answered() >= asked, timeout=60), answered()
    return oid


def test_a_client_that_never_reads_has_a_bounded_reply_queue_and_others_are_served(make_worker, make_client,
                                                                                   monkeypatch, peers):
    monkeypatch.setattr(limits, "MAX_QUEUED_REPLIES", 20)  # read when the worker starts
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    hog = peers(bob.address, rcvhwm=1)
    hog.login(bob.key)
    asked = 1000  # 64 KiB each: 64 MiB of replies if they all queued
    _hog_asks(bob, hog, asked)  # (all answered before the hog reads: it never read meanwhile)
    client = make_client(bob.address, key=bob.key)
    assert torch.equal((client.search("#X")[0] + 1).get(), X + 1)  # the worker serves others meanwhile
    got = 0
    while hog.reply(timeout=1.0) is not None:
        got += 1
    # the rest were dropped at the worker's queue bound (and the kernel's buffers), not kept
    assert got < asked // 2, got


def test_values_a_client_does_not_read_are_bounded_in_bytes_per_client(make_worker, make_client, peers):
    """ZeroMQ bounds how many replies wait for a peer, not their bytes: under review each approved value
    of a client's object leaves as a copy, so asking for a big one again and again without reading
    would pile copies up in the worker. Each client's unread bytes are a quota."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_unread_bytes="2MB"))
    bob.share(X.clone(), "#X")
    hog = peers(bob.address, rcvhwm=1)  # (its ZeroMQ takes in one message, then TCP stops the worker)
    hog.login(bob.key)
    asked = 400  # 64 KiB each: 25 MiB
    oid = _hog_asks(bob, hog, asked)
    refused = bob.stats["refusals"]["values not read, over a quota"]
    assert refused > asked // 2, refused  # beyond 2 MiB held by ZeroMQ (and what the kernel buffers took)
    client = make_client(bob.address, key=bob.key)  # another client is served, values included
    assert torch.equal((client.search("#X")[0] + 1).get(), X + 1)
    values = errors = 0
    while (reply := hog.reply(timeout=1.0)) is not None:
        values += reply["t"] == "value"
        if reply["t"] == "err":
            errors += 1
            assert reply["code"] == "quota" and "max_unread_bytes" in reply["msg"], reply
    assert values + errors == asked and values == asked - refused
    # once it has read, it may ask again
    assert hog.request({"t": "get", "s": 9, "id": oid})["t"] == "value"


def test_streamed_values_a_client_does_not_read_count_as_unread_too(make_worker, peers):
    """helper-55 (High): a streamed value's chunks counted nowhere: a client that never read its socket, asking for
    a streamed value of its own (the first window covering all of it) then freeing it, made the worker hold every
    chunk of every value, past both quotas (+480 MiB of 16 MiB gets under 64 MB quotas). Each chunk counts as
    unread until ZeroMQ has written it, a window holds no more than the quota leaves, and a freed object's stream
    ends."""
    mib = 1 << 20
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_unread_bytes="8MB", max_bytes="16MB"))
    hog = peers(bob.address, rcvhwm=1)
    hog.login(bob.key)
    asked = 12  # 4 MiB each: 48 MiB, never read
    for i in range(asked):
        oid = os.urandom(16)
        hog.send_raw(encode({"t": "send", "s": 3 * i, "id": oid, "x": torch.ones(mib), "tags": []}))
        hog.send_raw(encode({"t": "get", "s": 3 * i + 1, "id": oid, "c": [1 * mib, 8, mib]}))  # streamed, 1 window
        hog.send_raw(encode({"t": "free", "s": 3 * i + 2, "ids": [oid]}))
    assert wait_until(lambda: bob.stats.get("refusals", {}).get("values not read, over a quota", 0) >= asked // 2,
                      timeout=10), bob.stats.get("refusals")
    held = sum(s.unread.nbytes() for s in bob.server.sessions.values())
    assert held <= 8 * mib + mib, held  # the quota, and at most one chunk past it


def test_small_values_a_client_does_not_read_count_as_unread_too(make_worker, peers):
    """helper-56 (High): values under 64 KiB were bounded by ZeroMQ's count of replies alone (50,000): gets of 60 KiB
    values a client never read held 3.2 GiB per session. Values of ``TRACK_BYTES`` and more count as unread."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_unread_bytes="2MB"))
    hog = peers(bob.address, rcvhwm=1)
    hog.login(bob.key)
    asked = 1600  # 16 KiB each: 25 MiB, never read (beyond what the kernel's buffers take)
    _hog_asks(bob, hog, asked, nbytes=16 << 10)
    refused = bob.stats.get("refusals", {}).get("values not read, over a quota", 0)
    assert refused > asked // 2, refused
    assert max(s.unread.nbytes() for s in bob.server.sessions.values()) <= 2 << 20  # ("2MB": 2 MiB)


def test_credits_for_chunks_never_read_do_not_open_the_window(make_worker, peers):
    """helper-56 (Medium): a stream sent its next chunk whenever the client's credit said it held every chunk sent, so
    credits for chunks it never read kept chunks coming past ``max_unread_bytes`` (240 MiB under 64 MB). Whether a
    chunk is still in flight is ZeroMQ's word now, not the client's."""
    mib = 1 << 20
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_unread_bytes=16 * mib, max_bytes="64MB"))
    hog = peers(bob.address, rcvhwm=1)
    hog.login(bob.key)
    for i in range(4):  # four downloads of 12 MiB (48 MiB) in 1 MiB chunks, one chunk in flight each
        oid = os.urandom(16)
        hog.send_raw(encode({"t": "send", "s": 10 + i, "id": oid, "x": torch.ones(3 * mib), "tags": []}))
        hog.send_raw(encode({"t": "get", "s": 20 + i, "id": oid, "c": [mib, 1, mib]}))
    session, = bob.server.sessions.values()
    assert wait_until(lambda: len(session.streams.downloads) == 4)
    for sent in range(1, 12):  # a credit for every chunk "received", none of them read
        for i in range(4):
            hog.send_raw(encode({"t": "credit", "s": 20 + i, "o": sent * mib}))
        time.sleep(0.05)
    time.sleep(0.5)
    assert session.unread.nbytes() <= 20 * mib, session.unread.nbytes()  # the quota, and a chunk per stream


def test_connections_that_carry_nothing_are_cut(make_worker, make_client, monkeypatch):
    """helper-56 (High): a peer without the key opened 1,100 idle TCP connections that never said hello; they held
    every descriptor of the worker and no client could connect. A connection with no session, handshake or courier is
    cut after ``UNBOUND_SECONDS``, and at once beyond ``MAX_UNBOUND``; a signed-in client's idle link stays."""
    import socket as socket_

    monkeypatch.setattr(limits, "UNBOUND_SECONDS", 1.0, raising=False)
    monkeypatch.setattr(limits, "MAX_UNBOUND", 8, raising=False)
    bob = make_worker("Bob", policy="open")
    bob.share(X.clone(), "#X")
    client = make_client(bob.address, key=bob.key)
    x, = client.search("#X")
    host, port = bob.address.rsplit("/", 1)[1].rsplit(":", 1)
    idle = [socket_.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    try:
        def closed(sock: socket_.socket) -> bool:
            sock.settimeout(0.01)
            try:
                return sock.recv(1 << 16) == b""
            except socket_.timeout:
                return False
            except OSError:
                return True

        assert wait_until(lambda: sum(map(closed, idle)) >= 12, timeout=5), "beyond 8, cut at once"
        assert wait_until(lambda: all(map(closed, idle)), timeout=10), "all of them after UNBOUND_SECONDS"
        # (counted just after the shutdown the test sees; and any stale peer reconnecting)
        assert wait_until(lambda: bob.stats["refusals"]["connection without a session"] >= 20, timeout=5)
        time.sleep(1.5)
        assert torch.equal((x + 1).get(), X + 1), "the signed-in client's idle link was left alone"
    finally:
        for sock in idle:
            sock.close()


def test_a_freed_objects_stream_ends(make_worker, peers):
    """A stream held its object's memory after the object was freed, uncharged, for as long as its client sent a
    credit now and then (helper-55): freeing the object ends it."""
    mib = 1 << 20
    bob = make_worker("Bob", policy="open")
    peer = peers(bob.address)
    peer.login(bob.key)
    oid = os.urandom(16)
    assert peer.request({"t": "send", "s": 1, "id": oid, "x": torch.ones(mib), "tags": [], "ack": True})["t"] == "ok"
    assert peer.request({"t": "get", "s": 2, "id": oid, "c": [mib // 4, 1, mib]})["t"] == "value"  # 1 of 4 chunks
    session, = bob.server.sessions.values()
    assert wait_until(lambda: len(session.streams.downloads) == 1)
    peer.send_raw(encode({"t": "free", "s": 3, "ids": [oid]}))
    assert wait_until(lambda: not session.streams.downloads and len(bob.store) == 0)


def test_failed_ops_record_no_more_results_than_the_clients_objects_quota(make_worker, raw):
    """A failed op records each result it names as failed (a later op on it names the error): a hand-made op
    naming 880,000 results left that many records, uncharged, 600 MB per message (an attacker probe)."""
    bob = make_worker("Bob", policy="open", quotas=Quotas(max_objects=1000))
    p = raw(bob)
    reply = p.request({"t": "op", "s": 1, "f": "no.such.op", "a": [], "k": {}, "o": [os.urandom(16)] * 5000})
    assert reply["t"] == "err" and "at most 4096 results" in reply["msg"]
    for seq in range(2, 6):  # within the bound each, past the quota together
        p.send_raw(encode({"t": "op", "s": seq, "f": "no.such.op", "a": [], "k": {},
                           "o": [os.urandom(16) for _ in range(400)]}))
    assert wait_until(lambda: bob.stats["errors"] == 4, timeout=10)
    session, = bob.server.sessions.values()
    assert bob.store.session_count(session.ident) == 1000
