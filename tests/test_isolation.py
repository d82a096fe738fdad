"""Clients are isolated from each other: another client's object reads exactly like one that does
not exist, search shows only the owner's tags, ids cannot be guessed, and the owner's log is private."""
from __future__ import annotations

import json
import os
import stat
import threading

import torch
from raw_peer import RawPeer

import syft_magics as sm


def test_another_clients_object_reads_like_one_that_does_not_exist(seed, make_client):
    bob, alice = seed
    mine = alice.send(torch.ones(3))
    mallory = RawPeer(bob.address)
    try:
        mallory.login(bob.key)
        theirs = mallory.request({"t": "get", "s": 1, "id": mine.oid})
        nothing = mallory.request({"t": "get", "s": 1, "id": b"\x00" * 16})
        used = mallory.request({"t": "op", "s": 2, "f": "torch.add", "a": [sm.wire.protocol.Ref(mine.oid), 1],
                                "m": True})
        unused = mallory.request({"t": "op", "s": 2, "f": "torch.add", "a": [sm.wire.protocol.Ref(b"\x00" * 16), 1],
                                  "m": True})
    finally:
        mallory.close()
    for a, b in ((theirs, nothing), (used, unused)):
        assert a["code"] == b["code"] == "unknown_object"
        assert a["msg"].replace(mine.oid.hex()[:8], "ID") == b["msg"].replace("00000000", "ID")


def test_search_shows_only_the_owners_tags(seed, make_client):
    bob, alice = seed
    alice.send(torch.ones(3), "#alices-secret-project")
    found = make_client("Bob").search("#X")
    assert "#alices-secret-project" not in found.available and "#X" in found.available
    assert "#alices-secret-project" in bob.store.all_tags()  # the owner sees everything


def test_result_ids_are_unpredictable(seed):
    _, alice = seed
    ids = [alice._new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 16 for i in ids)
    # no shared half, no counter: consecutive ids have nothing in common beyond chance
    assert len({i[8:] for i in ids}) == 1000 and len({i[:8] for i in ids}) == 1000



def test_result_ids_drawn_from_several_threads_are_all_distinct(seed):
    """Ids are read from the OS in blocks: each one must still be handed out once."""
    _, alice = seed
    drawn: list = []

    def draw() -> None:
        drawn.extend(alice._new_id() for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(drawn) == 8000 and len(set(drawn)) == 8000


def test_the_log_file_is_private_and_records_refusals(make_worker, tmp_path):
    path = tmp_path / "bob.log"
    bob = make_worker("Bob", policy="open", log=str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    peer = RawPeer(bob.address)
    try:
        peer.request({"t": "hello", "s": 0, "v": 1, "name": "x" * 1000})
    finally:
        peer.close()
    bob.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(line.get("event") == "refused" for line in lines)
