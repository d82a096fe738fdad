"""Links bound to keys, on loopback: an encrypted worker (CurveZMQ + ZAP) admits invited keys only,
names each session after its invitation, refuses a key it never invited, and cuts a revoked client off."""
from __future__ import annotations

import json
import os
import stat
import time

import pytest
import torch
import zmq
from helpers import wait_until
from raw_peer import RawPeer

import syft_magics as sm
from syft_magics.errors import AuthenticationError, InsecureBind
from syft_magics.wire import auth, discovery
from syft_magics.wire.protocol import PROTOCOL_VERSION

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CurveZMQ")


@pytest.fixture
def bob(make_worker):
    worker = make_worker("Bob", policy="open", secure=True)
    worker.share(torch.tensor([1.0, 2, 3]), "#X")
    return worker


def _stranger_file(invitation, tmp_path, name="eve.json"):
    """A copy of an invitation with a key pair the worker never saw."""
    data = json.loads(invitation.read_text())
    data["public_key"], data["secret_key"] = auth.new_keypair()
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_an_encrypted_worker_serves_its_own_user_by_name_and_an_invited_client_by_file(bob, make_client, tmp_path):
    local = make_client("Bob")  # the connection file in the 0600 runtime folder is this user's invitation
    assert local._link.encrypted and (local.search("#X")[0] + 1).get().tolist() == [2, 3, 4]
    path = bob.invite("alice", str(tmp_path / "alice.json"), limits={"max_bytes": 1 << 20})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    alice = make_client(None, file=str(path))
    assert alice._link.encrypted and (alice.search("#X")[0] * 2).get().tolist() == [2, 4, 6]
    session = next(s for s in bob.clients if s.client == "alice")
    assert session.label.startswith("alice@"), "the owner sees the invited name, not a routing id"
    assert session.limits == {"max_bytes": 1 << 20}, "per-client limits travel with the invitation"
    assert session.fingerprint == bob.invites["alice"].fingerprint


def test_keys_are_shown_as_fingerprints_only(bob, make_client, tmp_path):
    path = bob.invite("alice", str(tmp_path / "alice.json"))
    info = discovery.read(path)
    log = tmp_path / "bob.log"
    bob.set_log(str(log))
    make_client(None, file=str(path)).search("#X")
    shown = " ".join([repr(info), repr(info.curve), repr(bob), repr(bob.invites), repr(bob.invites["alice"]),
                      repr(bob.clients)])
    for secret in (info.key, info.public_key, info.secret_key, info.server_key):
        assert secret and secret not in shown
    assert bob.invites["alice"].fingerprint in shown and bob.fingerprint in shown
    bob.stop()
    text = log.read_text()
    assert '"client": "alice@' in text and bob.invites["alice"].fingerprint in text, "the log names who connected"
    assert info.public_key not in text and info.secret_key not in text


def test_a_key_without_an_invitation_is_refused_at_once(bob, tmp_path):
    eve = _stranger_file(bob.invite("alice", str(tmp_path / "alice.json")), tmp_path)
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match="no invitation"):
        sm.connect(file=str(eve))
    assert time.monotonic() - start < 2.0, "a refused key is an error at once, not a timeout"
    assert not bob.clients
    assert wait_until(lambda: bob.stats.get("refusals", {}).get("key not invited", 0) >= 1)


def test_a_client_with_the_key_alone_cannot_reach_an_encrypted_worker(bob):
    # refused by CurveZMQ: at once where libzmq reports the mechanism mismatch, else at the handshake's timeout
    with pytest.raises((AuthenticationError, sm.WorkerUnreachable)):
        sm.connect(f"127.0.0.1:{bob.port}", key=bob.key)
    assert not bob.clients


def test_an_invited_key_must_prove_its_own_token(bob, tmp_path):
    info = discovery.read(bob.invite("alice", str(tmp_path / "alice.json")))
    peer = RawPeer(bob.address)
    try:
        auth.set_client_keys(peer.sock, info.curve)
        peer.sock.disconnect(bob.address)
        peer.sock.connect(bob.address)
        with pytest.raises(AssertionError, match="unauthenticated"):
            peer.login(bob.key)  # the worker's own key is not alice's token
        assert not bob.clients
    finally:
        peer.close()


def test_a_revoked_client_is_cut_off_at_once_and_refused_from_then_on(bob, make_client, tmp_path):
    path = bob.invite("alice", str(tmp_path / "alice.json"))
    alice = make_client(None, file=str(path))
    y = alice.search("#X")[0] + 1
    alice.sync()
    held = len(bob.store)
    bob.revoke("alice")
    assert wait_until(lambda: not any(s.client == "alice" for s in bob.clients), 2.0)
    assert len(bob.store) < held, "her objects are freed"
    with pytest.raises(AuthenticationError, match="ended this client's invitation"):
        wait_until(lambda: not alice.connected, 2.0)
        y.get()
    with pytest.raises(AuthenticationError, match="revoked"):
        sm.connect(file=str(path))
    revokes = bob.events.of_kind("revoke")
    assert revokes and revokes[-1].data["client"] == "alice"
    with pytest.raises(KeyError, match="no valid invitation"):
        bob.revoke("alice")


def test_inviting_a_name_again_replaces_its_key(bob, make_client, tmp_path):
    first = bob.invite("alice", str(tmp_path / "old.json"))
    old = make_client(None, file=str(first))
    old.search("#X")
    second = bob.invite("alice", str(tmp_path / "new.json"))
    with pytest.raises(AuthenticationError):
        sm.connect(file=str(first))
    assert wait_until(lambda: not old.connected, 2.0), "the replaced key's session ends"
    assert make_client(None, file=str(second)).search("#X")


def test_in_process_clients_of_an_encrypted_worker_still_connect(bob, make_client):
    client = make_client(bob)
    assert client.search("#X")[0].get().tolist() == [1, 2, 3]


def test_plaintext_off_loopback_is_refused_and_the_default_there_is_encrypted():
    with pytest.raises(InsecureBind, match="without encryption"):
        sm.Worker("Bob", host="0.0.0.0", secure=False)
    assert sm.Worker("Bob", host="0.0.0.0").secure, "a network bind encrypts without being asked"
    assert sm.Worker("Bob", host="10.1.2.3").secure
    assert not sm.Worker("Bob").secure, "loopback keeps today's link unless --secure"


def test_invitations_need_an_encrypted_worker(make_worker, tmp_path):
    plain = make_worker("Bob")
    with pytest.raises(InsecureBind, match="--secure"):
        plain.invite("alice", str(tmp_path / "alice.json"))
    assert not (tmp_path / "alice.json").exists()


def test_an_invitation_does_not_overwrite_a_file_that_is_not_one(bob, tmp_path):
    precious = tmp_path / "alice.json"
    precious.write_text('{"my": "notes"}')
    with pytest.raises(FileExistsError):
        bob.invite("alice", str(precious))
    assert precious.read_text() == '{"my": "notes"}'
    with pytest.raises(ValueError, match="name"):
        bob.invite("../alice", str(tmp_path / "x.json"))


def test_magics_start_a_secure_worker_and_connect_with_an_invitation_file(ip, tmp_path, capsys):
    ip.run_line_magic("syft_worker", "Bob --secure --policy open")
    assert "encrypted, key" in capsys.readouterr().out
    bob = ip.user_ns["bob"]
    bob.share(torch.ones(2), "#X")
    path = bob.invite("alice", str(tmp_path / "alice.json"))
    ip.run_line_magic("syft_connect", f"Bob --file {path} --as alice")
    assert ip.user_ns["alice"].search("#X")[0].get().tolist() == [1, 1]
    assert any(s.client == "alice" for s in bob.clients)


def test_cli_worker_invites_and_revokes_from_its_console(tmp_path, capsys):
    from syft_magics.ui.cli import OwnerConsole

    worker = sm.Worker("Bob", secure=True).start()
    try:
        console = OwnerConsole(worker)
        console.onecmd(f"invite alice {tmp_path / 'alice.json'}")
        console.onecmd("invites")
        console.onecmd("revoke alice")
        out = capsys.readouterr().out
        assert "invited alice (key " in out and "hand over" in out and "revoked alice" in out
        assert worker.invites["alice"].revoked is not None
    finally:
        worker.stop()


def test_a_revoked_raw_peer_is_refused_and_its_connection_is_shut_down(bob, tmp_path):
    info = discovery.read(bob.invite("alice", str(tmp_path / "alice.json")))
    peer = RawPeer(bob.address)
    watch = None
    try:
        auth.set_client_keys(peer.sock, info.curve)
        peer.sock.disconnect(bob.address)
        peer.sock.connect(bob.address)
        peer.login(info.key)
        watch = peer.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        bob.revoke("alice")
        assert peer.reply(timeout=2)["t"] == "bye", "she is told"
        reply = peer.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "again"}, timeout=2)
        assert reply is None or reply["t"] == "err"
        assert not bob.clients
        # a peer that ignores the goodbye still loses its connection: the worker shuts it down
        assert watch.poll(3000), "the revoked client's TCP connection was not closed"
    finally:
        if watch is not None:
            watch.close(0)
        peer.close()


def test_sessions_are_bounded_per_invited_client_and_per_worker(bob, make_client, tmp_path, monkeypatch):
    """helper-56 (High): quotas are per session, and an invitation limited to 16 MB held 300 MB through 20
    ``connect()`` calls. An invited client has at most ``MAX_SESSIONS_PER_CLIENT`` sessions, a worker
    ``MAX_SESSIONS``; beyond, the link is refused with a clear ``QuotaExceeded``."""
    from syft_magics.wire import limits

    monkeypatch.setattr(limits, "MAX_SESSIONS_PER_CLIENT", 2, raising=False)
    alice = str(bob.invite("alice", str(tmp_path / "alice.json")))
    first = make_client(None, file=alice)
    make_client(None, file=alice)
    with pytest.raises(sm.QuotaExceeded, match="at most .* per invited client"):
        make_client(None, file=alice)
    carol = make_client(None, file=str(bob.invite("carol", str(tmp_path / "carol.json"))))
    assert (carol.search("#X")[0] + 1).get().tolist() == [2, 3, 4], "another client is served"
    first.disconnect()
    assert wait_until(lambda: sum(s.client == "alice" for s in bob.clients) == 1)
    assert make_client(None, file=alice).search("#X"), "room again once one closed"
    monkeypatch.setattr(limits, "MAX_SESSIONS", len(bob.clients), raising=False)
    with pytest.raises(sm.QuotaExceeded, match="at most"):
        make_client("Bob")
    assert bob.stats["refusals"]["too many sessions"] == 2
