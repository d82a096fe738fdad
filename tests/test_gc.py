"""Remote garbage collection: dead pointers free their objects, owner data is never freed by a client."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import syft_magics as sm

from helpers import wait_until

X = torch.tensor([1.0, 2, 3, 4, 5])


def test_ten_thousand_temporaries_leave_the_store_at_baseline(seed):
    bob, client = seed
    x = client.search("#X")[0]
    baseline = len(bob.store)
    for _ in range(10_000):
        x = x + 1
    client.sync()
    assert wait_until(lambda: (client.sync(), len(bob.store))[1] <= baseline + 1), \
        f"{len(bob.store) - baseline} objects left after 10,000 temporaries"
    assert len(bob.store) == baseline + 1, "the last result stays"
    assert torch.equal(x.get(), X + 10_000)


def test_dropping_a_result_frees_it(seed):
    bob, client = seed
    x = client.search("#X")[0]
    baseline = len(bob.store)
    y = x * 2
    client.sync()
    assert len(bob.store) == baseline + 1
    del y
    gc.collect()
    assert wait_until(lambda: (client.sync(), len(bob.store))[1] == baseline)


def test_deleting_search_pointers_never_removes_owner_data(seed):
    bob, client = seed
    owner_ids = {e.id for e in bob.store.entries()}
    for _ in range(20):
        x = client.search("#X")[0]
        y = client.search("#Y")[0]
        x.delete()
        del y
    gc.collect()
    time.sleep(0.2)  # frees are batched by the link's thread: give them time to arrive
    client.sync()
    assert {e.id for e in bob.store.entries()} == owner_ids
    assert torch.equal(client.search("#X")[0].get(), X)


def test_delete_frees_now_and_later_use_raises_pointer_freed(seed):
    bob, client = seed
    x = client.search("#X")[0]
    z = x + 1
    client.sync()
    assert z.oid in bob.store
    z.delete()
    assert wait_until(lambda: (client.sync(), z.oid not in bob.store)[1])
    with pytest.raises(sm.PointerFreed, match="was deleted"):
        z.get()
    with pytest.raises(sm.PointerFreed):
        z + 1
    with pytest.raises(sm.PointerFreed):
        torch.add(x, z)
    assert "freed" in repr(z) and z.deleted and z.freed
    assert [p.id for p in client.pointers] == [x.id]
    z.delete()  # twice is harmless
    assert torch.equal(x.get(), X), "the search pointer is untouched"
    assert not x.deleted and not x.freed
    client.disconnect()
    assert client.closed and x.freed and not x.deleted, "a closed client's pointers read as freed"


def test_delete_of_a_search_pointer_forgets_it_only(seed):
    bob, client = seed
    x = client.search("#X")[0]
    x.delete()
    with pytest.raises(sm.PointerFreed):
        x.get()
    client.sync()
    assert torch.equal(client.search("#X")[0].get(), X)


def test_disconnect_frees_the_sessions_objects(seed):
    bob, client = seed
    baseline = len(bob.store)
    x = client.search("#X")[0]
    kept = [x + i for i in range(10)]
    sent = client.send(torch.ones(100))
    client.sync()
    assert len(bob.store) == baseline + 11
    client.disconnect()
    assert wait_until(lambda: len(bob.store) == baseline)
    assert wait_until(lambda: not bob.clients)
    assert {e.origin for e in bob.store.entries()} == {"owner"}
    assert kept and sent is not None
    with pytest.raises(sm.WorkerUnreachable, match="closed"):
        kept[0].get()


def test_lease_expiry_frees_a_silent_clients_objects(make_worker, make_client, fast_defaults):
    fast_defaults.heartbeat_interval = 0.1  # well inside the lease while the client is alive
    bob = make_worker("Bob", policy="open", lease_timeout=1.0)
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    x = client.search("#X")[0]
    kept = [x + 1, client.send(torch.zeros(3))]
    client.sync()
    assert len(bob.store) == 3
    # simulate a client whose heartbeats stop (a frozen or vanished process)
    client._link._stop.set()
    client._link._thread.join(5)
    assert wait_until(lambda: len(bob.store) == 1, timeout=10)
    assert not bob.clients
    reasons = [e["reason"] for e in bob.events.of_kind("disconnect")]
    assert reasons == ["lease expired"]
    assert bob.store.search(("#X",)), "owner data survives"
    with pytest.raises(sm.SessionExpired, match="no heartbeat"):
        (x + 1).get()
    assert kept


def test_heartbeats_keep_an_idle_client_alive(make_worker, make_client, fast_defaults):
    fast_defaults.heartbeat_interval = 0.1
    bob = make_worker("Bob", policy="open", lease_timeout=1.0)
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    z = client.search("#X")[0] * 2
    client.sync()
    time.sleep(2.5)  # idle for well over the lease (and two of the worker's once-a-second checks)
    assert len(bob.clients) == 1
    assert torch.equal(z.get(), X * 2)


CLIENT_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    import syft_magics as sm
    sm.defaults.heartbeat_interval = 0.2
    client = sm.connect(sys.argv[1])
    x = client.search("#X")[0]
    kept = [x + 1, x * 2, client.send(torch.zeros(1000))]
    client.sync()
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_killed_client_process_has_its_objects_freed(make_worker, tmp_path):
    bob = make_worker("Bob", policy="open", lease_timeout=2.0)
    bob.share(X.clone(), "#X")
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), "Bob"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ), text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            pytest.fail(f"the client process did not start: {line!r} {proc.communicate(timeout=10)[1]}")
        assert len(bob.store) == 4 and len(bob.clients) == 1
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: len(bob.store) == 1, timeout=10)
        assert not bob.clients
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
