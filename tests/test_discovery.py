"""Connection files: how a client finds a worker and its key on this machine."""
from __future__ import annotations

import json
import os
import socket
import stat

import pytest
import torch

import syft_magics as sm
from syft_magics.wire import discovery

X = torch.tensor([1.0, 2, 3, 4, 5])


@pytest.fixture
def bob(make_worker):
    worker = make_worker("Bob", policy="open")
    worker.share(X.clone(), "#X")
    return worker


def test_connection_file_is_private_and_holds_address_key_pid(bob, runtime_dir):
    path = bob.connection_file
    assert path is not None and os.path.dirname(path) == str(runtime_dir)
    assert os.path.basename(path) == f"syft-worker-Bob-{bob.port}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(open(path).read())
    assert data["address"] == f"tcp://127.0.0.1:{bob.port}" == bob.address
    assert data["key"] == bob.key and len(bob.key) == 64
    assert data["pid"] == os.getpid() and data["name"] == "Bob" and data["instance"] == bob.instance
    assert data["hostname"] == socket.gethostname() and data["policy"] == "open"
    assert not list(runtime_dir.glob("*.tmp*")), "no temporary file is left behind"


def test_connection_file_is_removed_on_stop(bob):
    path = bob.connection_file
    assert os.path.exists(path)
    bob.stop()
    assert not os.path.exists(path)
    with pytest.raises(sm.UnknownWorker):
        sm.connect("Bob")


def test_no_connection_file_when_asked_not_to(make_worker, runtime_dir):
    worker = make_worker("Quiet", connection_file=False)
    assert worker.connection_file is None
    assert not list(runtime_dir.glob("syft-worker-*.json"))


def check(client) -> None:
    assert client.name == "Bob"
    assert torch.equal(client.search("#X")[0].get(), X)


def test_connect_by_name(bob, make_client):
    check(make_client("Bob"))
    check(make_client("bob"))  # a name in another case still finds it


def test_connect_by_address_finds_the_key_in_the_file(bob, make_client):
    client = make_client(bob.address)
    check(client)
    assert client.connection_file == bob.connection_file


@pytest.mark.parametrize("form", ["host:port", "localhost:port", "port", "port-string"])
def test_connect_by_host_port_or_port(bob, make_client, form):
    target = {"host:port": f"127.0.0.1:{bob.port}", "localhost:port": f"localhost:{bob.port}",
              "port": bob.port, "port-string": str(bob.port)}[form]
    check(make_client(target))


def test_connect_by_connection_file_path(bob, make_client):
    client = make_client(bob.connection_file)
    check(client)
    assert client.connection_file == bob.connection_file


def test_connect_by_address_with_an_explicit_key(bob, make_client):
    check(make_client(f"tcp://127.0.0.1:{bob.port}", key=bob.key))


def test_all_files_and_find(bob, make_worker):
    alice = make_worker("Alice")
    names = {info.name for info in discovery.all_files()}
    assert names == {"Bob", "Alice"}
    assert discovery.find("Alice").address == alice.address
    assert discovery.find_by_address(f"tcp://localhost:{bob.port}").key == bob.key
    assert discovery.find_by_address("tcp://127.0.0.1:1") is None


def test_unreadable_files_are_ignored(bob, runtime_dir):
    (runtime_dir / "syft-worker-Broken-1.json").write_text("{not json")
    (runtime_dir / "syft-worker-Other-2.json").write_text(json.dumps({"unexpected": 1}))
    assert [i.name for i in discovery.all_files()] == ["Bob"]
    with pytest.raises(ValueError, match="not a syft_magics connection file"):
        discovery.read(runtime_dir / "syft-worker-Other-2.json")


def test_a_worker_name_with_odd_characters_gets_a_safe_file_name(make_worker, make_client):
    worker = make_worker("Bob/../x y")
    assert os.path.basename(worker.connection_file) == f"syft-worker-Bob_.._x_y-{worker.port}.json"
    worker.share(X.clone(), "#X")
    client = make_client("Bob/../x y")
    assert client.name == "Bob/../x y"
