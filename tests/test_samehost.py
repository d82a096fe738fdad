"""The same-host tensor path: large tensors through a memory file, verified at the handshake, leak-free."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import wait_until

import syft_magics as sm
from syft_magics.errors import ProtocolError
from syft_magics.wire import samehost
from syft_magics.wire.protocol import PROTOCOL_VERSION, decode, encode

pytestmark = pytest.mark.skipif(not samehost.available(), reason="the same-host path needs Linux memfd")

MIB = 1 << 20
#: child processes import the package from this checkout, whatever is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def memory_files() -> list:
    """The memory files this process holds open (pools and probes)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("/memfd:syft"):
            found.append(target)
    return found


def shm_names() -> set:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture(params=["lend", "pool"])
def big(request, make_worker, make_client, monkeypatch):
    """A worker sharing 16 MiB and a same-host client, on each same-host path: tensors lent (read once out of
    the other process) where the peers may read each other's memory, else the memory-file pool."""
    if request.param == "pool":  # as where ptrace rules (Yama's ptrace_scope) forbid reading a sibling
        monkeypatch.setattr(samehost, "_process_vm_readv", None)
    # (worker and client in this process, over TCP: a peer is never this process, but for these tests of the
    # path's mechanics; tests below and in other processes check the real rule)
    monkeypatch.setattr(samehost, "_SELF_PEER", True, raising=False)
    bob = make_worker("Bob", policy="open")
    x = torch.randn(4 * MIB)  # 16 MiB
    bob.share(x, "#B")
    client = make_client("Bob")
    session, = bob.clients
    assert client._link.pool.lend is session.pool.lend is (request.param == "lend")
    return bob, client, x


def test_a_client_on_the_same_host_is_verified_at_the_handshake(big):
    bob, client, _ = big
    assert client.same_host
    session, = bob.clients
    assert session.pool is not None and session.host_peer is not None and session.host_peer.pid == os.getpid()


def test_lent_memory_is_read_once_and_held_only_until_the_reader_says_so(big, monkeypatch):
    bob, client, x = big
    if not client._link.pool.lend:
        pytest.skip("the pool path")
    reads = []
    read_memory = samehost._read_memory
    monkeypatch.setattr(samehost, "_read_memory", lambda pid, at, buf: (reads.append(pid), read_memory(pid, at, buf)))
    ptr, = client.search("#B")
    assert torch.equal(ptr.get(), x)
    session, = bob.clients
    assert reads == [os.getpid()] and session.pool.fd == -1, "lent and read once, not copied into a memory file"
    client.sync()  # the release rides the next message
    assert wait_until(lambda: len(session.pool) == 0), "the worker drops the lent buffer once read"
    p = client.send(torch.ones(2 * MIB))  # 8 MiB: sent by itself, as a zero-copy TCP send would be
    assert len(reads) == 2 and len(client._link.pool) == 0 and client._link.pool.fd == -1, \
        "a lent send is read once and released at the acknowledgement"
    assert p.get().sum() == 2 * MIB


def test_a_send_under_8_mib_is_pipelined_through_the_memory_file(big):
    """Below 8 MiB a same-host send waits for nothing, as over TCP: copied into the memory file (never lent: the
    caller may change its tensor at once), the region held until a later request is answered."""
    bob, client, _ = big
    link = client._link
    sent = [torch.arange(MIB, dtype=torch.float32) + i for i in range(3)]  # 4 MiB each
    ptrs = [client.send(t) for t in sent]
    for t in sent:
        t.fill_(-1.0)  # right after send() returns
    assert len(link.pool) == 3 and len(link.held) == 3 and link.pool.fd >= 0, \
        "three regions of the memory file in flight, none lent, no acknowledgement awaited"
    client.sync()
    assert len(link.pool) == 0 and not link.held, "the sync's answer shows the worker read them"
    for i, p in enumerate(ptrs):
        assert torch.equal(p.get(), torch.arange(MIB, dtype=torch.float32) + i)


def test_a_bad_lent_reference_is_a_clear_error_not_a_crash(monkeypatch):
    monkeypatch.setattr(samehost, "_SELF_PEER", True, raising=False)
    peer = samehost.Peer(os.getpid())
    with pytest.raises(samehost.SameHostError, match="cannot read the peer's lent memory"):
        peer.take(samehost.LENT, -1, 8, torch.float32, [MIB])  # address 8: not mapped
    with pytest.raises(samehost.SameHostError, match="bad lent-memory key"):
        peer.take(samehost.LENT, 5, 4096, torch.float32, [MIB])
    with pytest.raises(samehost.SameHostError, match="bad same-host tensor"):
        peer.take(samehost.LENT, -1, 4096, torch.float32, [samehost.POOL_MAX_BYTES])
    assert peer.read == []


def test_get_and_send_through_the_memory_file_give_the_same_values(big):
    bob, client, x = big
    ptr, = client.search("#B")
    assert torch.equal(ptr.get(), x)
    sent = torch.arange(MIB, dtype=torch.float64)  # 8 MiB
    p = client.send(sent)
    assert torch.equal((p * 2).get(), sent * 2)
    session, = bob.clients
    assert wait_until(lambda: len(session.pool) == 0), "the client frees the regions it read"
    assert len(client._link.pool) == 0, "the worker's acknowledgement frees the send's region"


def test_a_received_tensor_is_the_receivers_own_and_a_sent_one_may_change_at_once(big):
    bob, client, x = big
    ptr, = client.search("#B")
    value = ptr.get()
    value.zero_()
    assert torch.equal(ptr.get(), x), "changing a received value must not touch the owner's data"
    t = torch.ones(MIB)
    p = client.send(t)
    t.fill_(7.0)  # right after send() returns
    assert torch.equal(p.get(), torch.ones(MIB))


def test_tensors_below_the_threshold_and_above_the_pool_take_tcp(big):
    bob, client, _ = big
    small = client.send(torch.ones(1000))
    huge = torch.ones(samehost.POOL_MAX_BYTES // 4 + 1)
    large = client.send(huge)
    assert small.get().sum() == 1000
    assert torch.equal(large.get(), huge)
    assert client._link.pool.size <= samehost.POOL_MAX_BYTES


def test_same_host_false_keeps_every_tensor_on_tcp(make_worker, make_client, monkeypatch):
    monkeypatch.setattr(sm.defaults, "same_host", False)
    bob = make_worker("Bob", policy="open")
    x = torch.randn(MIB)
    bob.share(x, "#B")
    client = make_client("Bob")
    assert not client.same_host
    assert torch.equal(client.search("#B")[0].get(), x)


def test_a_same_host_tensor_from_an_unverified_peer_is_refused(make_worker, peers):
    bob = make_worker("Bob", policy="open")
    dealer = peers(bob.address)
    dealer.login(bob.key)
    probe = samehost.make_probe(b"x" * 16)  # a real memory file, but this peer never proved itself
    try:
        pool = samehost.Pool()
        parts = encode({"t": "send", "s": 5, "id": os.urandom(16), "x": torch.ones(MIB), "ack": True}, pool)
        dealer.send_raw(parts)
        reply = dealer.reply()
        assert reply["t"] == "err" and "not verified to run on this host" in reply["msg"]
        pool.close()
    finally:
        probe.close()
    assert len(bob.store) == 0


def test_a_forged_probe_does_not_make_a_peer_same_host(make_worker, peers):
    """A peer that names some other process's file (here the worker's own probe) fails the nonce check."""
    bob = make_worker("Bob", policy="open")
    dealer = peers(bob.address)
    challenge = dealer.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "raw", "host": b"n" * 16,
                                "pid": 4242})
    from syft_magics.wire import auth

    welcome = dealer.request({"t": "auth", "s": 0, "mac": auth.proof(bob.key, challenge["nonce"], dealer.ident)})
    offer = welcome["host"]
    reply = dealer.request({"t": "host", "s": 1, "probe": offer["probe"]})  # the worker's file: wrong nonce
    assert reply["t"] == "ok" and reply["host"] is False
    session, = bob.clients
    assert session.host_peer is None and session.pool is None


@pytest.mark.parametrize("self_peer", [False, True], ids=["as-shipped", "own-process-peers-allowed"])
def test_another_sessions_probe_does_not_make_a_peer_same_host(make_worker, peers, monkeypatch, self_peer):
    """helper-54 (Critical): a second session's hello carried the first session's challenge nonce as its own, so the
    worker wrote it into its own probe file; the first session named that file as its probe, the worker took itself
    for the client's same-host peer and then copied any address of its own memory (``#X``) into the client's objects.
    A probe holds a proof bound to the key, both nonces of its own handshake, its role and both pids; and a worker is
    never its own peer (refused even where the proof would pass)."""
    monkeypatch.setattr(samehost, "_SELF_PEER", self_peer, raising=False)
    from syft_magics.wire import auth

    bob = make_worker("Bob", policy="review")
    bob.share(torch.randn(4 * MIB), "#X")

    def hello(peer, host):
        return peer.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "raw", "pid": 4242, "host": host})

    def auth_(peer, challenge):
        return peer.request({"t": "auth", "s": 0, "mac": auth.proof(bob.key, challenge["nonce"], peer.ident)})

    a, b = peers(bob.address), peers(bob.address)
    welcome_a = auth_(a, hello(a, b"a" * 16))
    w_a = welcome_a["host"]["nonce"]  # the nonce session A must prove it holds in a file of its own
    welcome_b = auth_(b, hello(b, w_a))  # B asks the worker to write A's nonce into the worker's own probe
    for offer in (welcome_b["host"]["probe"], welcome_a["host"]["probe"]):
        reply = a.request({"t": "host", "s": 1, "probe": offer, "lend": True})
        assert reply["t"] == "ok" and reply["host"] is False and reply["lend"] is False, reply
    assert all(s.host_peer is None and s.pool is None for s in bob.clients)


def test_a_probe_nobody_answers_is_closed(make_worker, make_client, fast_defaults, peers):
    """The worker's probe stayed open for the session's life when the client's check failed (a client on another
    host, or in this very process): the client says so at once, and a probe nobody answers is closed after
    ``PROBE_SECONDS``."""
    fast_defaults.in_process_direct = False
    bob = make_worker("Bob", policy="open")
    client = make_client(bob.address, key=bob.key)  # over TCP, from this process: never its own peer
    assert not client.same_host
    session, = bob.server.sessions.values()
    assert session.host_probe is None and memory_files() == [], "declined: the worker's probe is closed"
    from syft_magics.wire import auth

    silent = peers(bob.address)  # asks for the path, then never answers the offer
    challenge = silent.request({"t": "hello", "s": 0, "v": PROTOCOL_VERSION, "name": "raw", "pid": 4242,
                                "host": b"h" * 16})
    assert "host" in silent.request({"t": "auth", "s": 0, "mac": auth.proof(bob.key, challenge["nonce"],
                                                                            silent.ident)})
    waiting = bob.server.sessions[silent.ident]
    assert waiting.host_probe is not None and len(memory_files()) == 1
    waiting.expire(time.monotonic() + samehost.PROBE_SECONDS + 1)
    assert waiting.host_probe is None and memory_files() == []


def test_this_process_is_never_read_as_a_same_host_peer():
    """Whatever a session proved, reading "the peer's" memory or files never reads this process's own."""
    peer = samehost.Peer(os.getpid())
    buffer = torch.ones(16, dtype=torch.uint8)
    with pytest.raises(samehost.SameHostError, match="never this one"):
        peer.take(samehost.LENT, -1, buffer.data_ptr(), torch.uint8, [16])
    pool = samehost.Pool()
    try:
        fd, ino, offset = pool.put(torch.ones(MIB).numpy())
        with pytest.raises(samehost.SameHostError, match="never this one"):
            peer.take(fd, ino, offset, torch.float32, [MIB])
    finally:
        pool.close()


def test_a_bad_region_reference_is_a_clear_error_not_a_crash(monkeypatch):
    monkeypatch.setattr(samehost, "_SELF_PEER", True, raising=False)
    peer = samehost.Peer(os.getpid())
    pool = samehost.Pool()
    try:
        fd, ino, offset = pool.put(torch.ones(MIB).numpy())
        with pytest.raises(ProtocolError, match="bad same-host tensor"):
            peer.take(fd, ino, offset, torch.float32, [1 << 40])  # far more than a pool holds
        with pytest.raises(ProtocolError, match="shorter than announced"):
            peer.take(fd, ino, offset + 4096, torch.float32, [MIB])  # runs past the end of the file
        with pytest.raises(ProtocolError, match="not the one announced"):
            peer.take(fd, ino + 1, offset, torch.float32, [MIB])
    finally:
        peer.close()
        pool.close()


CLIENT_LOOP = textwrap.dedent("""
    import sys, syft_magics as sm
    client = sm.connect(sys.argv[1], key=sys.argv[2])
    assert client.same_host
    ptr, = client.search("#B")
    print("connected", flush=True)
    while True:
        ptr.get()
""")


def test_a_client_killed_mid_transfer_leaves_nothing_behind(make_worker, tmp_path):
    bob = make_worker("Bob", policy="open", lease_timeout=1.0)
    bob.share(torch.randn(8 * MIB), "#B")  # 32 MiB: each get takes a while
    before_files, before_shm = memory_files(), shm_names()
    script = tmp_path / "client.py"
    script.write_text(CLIENT_LOOP)
    proc = subprocess.Popen([sys.executable, str(script), bob.address, bob.key], stdout=subprocess.PIPE, text=True,
                            env=CHILD_ENV)
    try:
        assert proc.stdout.readline().strip() == "connected"
        assert wait_until(lambda: bob.stats["bytes_out"] > 64 * MIB, timeout=60)  # a few gets done
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    assert wait_until(lambda: not bob.clients, timeout=10), "the dead client's session ends with its lease"
    assert memory_files() == before_files, "the session's memory file is closed"
    assert shm_names() == before_shm


WORKER = textwrap.dedent("""
    import sys, torch, syft_magics as sm
    bob = sm.Worker("Bob", port=0, policy="open", connection_file=False).start()
    bob.share(torch.randn(8 << 20), "#B")
    print(bob.address, bob.key, flush=True)
    sys.stdin.read()
""")


def test_a_worker_killed_mid_transfer_gives_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sm.defaults, "heartbeat_timeout", 2.0)
    monkeypatch.setattr(sm.defaults, "reply_timeout", 5.0)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    before_shm = shm_names()
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=CHILD_ENV)
    errors: list = []
    try:
        address, key = proc.stdout.readline().split()
        client = sm.connect(address, key=key)
        try:
            assert client.same_host
            ptr, = client.search("#B")
            ptr.get()
            stop = threading.Event()

            def loop() -> None:
                try:
                    while not stop.is_set():
                        ptr.get()
                except sm.SyftError as exc:
                    errors.append(exc)

            t = threading.Thread(target=loop)
            t.start()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            t.join(30)
            stop.set()
            assert not t.is_alive()
        finally:
            client.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()
    assert errors and isinstance(errors[0], (sm.WorkerUnreachable, sm.ReplyTimeout, ProtocolError)), errors
    assert memory_files() == []
    assert shm_names() == before_shm


def test_the_probe_holds_only_its_proof_and_is_checked_by_content(monkeypatch):
    monkeypatch.setattr(samehost, "_SELF_PEER", True, raising=False)  # (this process plays the peer)
    a, b = b"a" * 32, b"b" * 32
    probe = samehost.make_probe(a)
    announce = probe.announce
    pid = os.getpid()
    try:
        assert samehost.check_probe(announce, lambda writer: a) == pid
        assert samehost.check_probe(announce, lambda writer: b) is None
        assert samehost.check_probe([pid, probe.fd, announce[2] + 1], lambda writer: a) is None
        assert samehost.check_probe("not a probe", lambda writer: a) is None
        # the proof in memory: readable by a process allowed to (here: this one), checked by content too
        assert samehost.can_read_memory(announce, pid, a)
        assert not samehost.can_read_memory(announce, pid, b)
        assert not samehost.can_read_memory([*announce[:3], 8], pid, a), "an unmapped address"
        assert not samehost.can_read_memory(announce[:3], pid, a)
        assert not samehost.can_read_memory([pid + 1, *announce[1:]], pid, a), "another pid"
        monkeypatch.setattr(samehost, "_SELF_PEER", False, raising=False)
        assert samehost.check_probe(announce, lambda writer: a) is None, "never this process as its own peer"
        assert not samehost.can_read_memory(announce, pid, a)
    finally:
        probe.close()
    assert decode(encode({"t": "ok", "s": 1}))["t"] == "ok"


def test_a_probe_in_a_file_that_is_not_our_memory_file_is_refused(tmp_path):
    """A regular file holding the nonce (a worker may read files the peer cannot) does not prove anything."""
    path = tmp_path / "nonce"
    path.write_bytes(b"a" * 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert samehost.check_probe([os.getpid(), fd, os.fstat(fd).st_ino], lambda writer: b"a" * 16) is None
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a worker that can read other users' processes")
def test_a_root_worker_does_not_take_another_users_process_for_a_same_host_peer(tmp_path):
    """Root can open any process's files through /proc: a probe from a process of another user that holds
    the nonce must still fail, or that user's client could make a root worker read files it cannot."""
    script = ("import os, sys, json\nfd = os.memfd_create('syft-probe', os.MFD_CLOEXEC)\n"
              "os.pwrite(fd, b'a' * 16, 0)\nprint(json.dumps([os.getpid(), fd, os.fstat(fd).st_ino]), flush=True)\n"
              "sys.stdin.read()\n")
    python = next((exe for exe in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
                   if _runs_as_nobody(exe)), None)
    if python is None:
        pytest.skip("no Python that user nobody may run")
    child = subprocess.Popen([python, "-c", script], user=65534, group=65534, cwd="/",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        probe = json.loads(child.stdout.readline())
        assert probe[0] == child.pid
        assert samehost.check_probe(probe, lambda writer: b"a" * 16) is None
        with pytest.raises(samehost.SameHostError, match="does not run as this user"):
            samehost.Peer(child.pid).take(probe[1], probe[2], 0, torch.uint8, [16])
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()


def _runs_as_nobody(exe: str) -> bool:
    try:
        return subprocess.run([exe, "-c", "pass"], user=65534, group=65534, cwd="/", timeout=30,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
