"""The magics in an in-process IPython shell: arguments, bindings, restarts, errors."""
from __future__ import annotations

import socket

import pytest
import torch
from IPython.core.error import UsageError


def test_worker_magic_binds_a_running_worker_and_share_magic_tags_data(ip, capsys):
    ip.run_line_magic("syft_worker", "Bob --policy open")
    bob = ip.user_ns["bob"]
    assert bob.running and bob.policy.name == "open" and bob.address.startswith("tcp://127.0.0.1:")
    ip.user_ns["y"] = torch.ones(5)
    ip.run_cell("%syft_share y #Y #ones")
    assert [e.tags for e in bob.objects.values()] == [("#Y", "#ones")]
    assert "Bob shares `y` as #Y #ones" in capsys.readouterr().out


def test_connect_magic_finds_worker_by_name_and_runs_the_seed_flow(ip):
    ip.run_cell("import torch\n%syft_worker Bob --policy open --as owner\n"
                "owner.share(torch.tensor([1., 2, 3, 4, 5]), '#X')\nowner.share(torch.ones(5), '#Y')")
    ip.run_line_magic("syft_connect", "Bob --as c --timeout 2")
    ip.run_cell("z = torch.add(c.search('#X')[0], c.search('#Y')[0])\nresult = z.get()")
    assert torch.equal(ip.user_ns["result"], torch.tensor([2.0, 3, 4, 5, 6]))
    ip.run_line_magic("syft_disconnect", "Bob")
    assert not ip.user_ns["c"].connected


def test_connect_magic_serves_a_worker_of_this_kernel_directly(ip, capsys, fast_defaults):
    from syft_magics.scientist.direct import DirectLink

    ip.run_line_magic("syft_worker", "Bob --policy open")
    ip.run_line_magic("syft_connect", "Bob --as c")
    assert isinstance(ip.user_ns["c"]._link, DirectLink)
    assert "connected to Bob in this kernel" in capsys.readouterr().out
    fast_defaults.in_process_direct = False
    ip.run_line_magic("syft_connect", "Bob --as c")
    assert ip.user_ns["c"].address.endswith(f":{ip.user_ns['bob'].port}"), "by name through the connection file"


def test_connect_magic_accepts_an_address_or_a_port(ip):
    ip.run_line_magic("syft_worker", "Bob --policy open")
    port = ip.user_ns["bob"].port
    ip.run_line_magic("syft_connect", f"Bob {port} --as c")
    assert ip.user_ns["c"].name == "Bob"
    ip.run_line_magic("syft_connect", f"Bob tcp://127.0.0.1:{port} --as c")
    assert ip.user_ns["c"].connected


def test_rerunning_the_worker_cell_on_the_same_port_restarts_it(ip, capsys):
    ip.run_line_magic("syft_worker", "Bob 0")
    port = ip.user_ns["bob"].port
    first = ip.user_ns["bob"]
    ip.run_line_magic("syft_worker", f"Bob {port}")
    assert not first.running and ip.user_ns["bob"].running and ip.user_ns["bob"].port == port
    assert "restarted" in capsys.readouterr().out


def test_port_held_by_another_process_is_a_clear_usage_error_with_strict_port(ip):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} .*in use by another process"):
            ip.run_line_magic("syft_worker", f"Bob {port} --strict-port")


def test_port_held_by_another_process_falls_back_to_a_free_port_found_by_name(ip, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ip.run_line_magic("syft_worker", f"Bob {port}")
        bob = ip.user_ns["bob"]
        assert bob.running and bob.port != port
        out = capsys.readouterr().out
        assert f"port {port} is taken by another process, so Bob serves on port {bob.port} instead" in out
        assert "%syft_connect Bob" in out
        ip.run_line_magic("syft_connect", "Bob --as c")  # by name (in this kernel: directly, no port needed)
        assert ip.user_ns["c"].connected and ip.user_ns["c"].name == "Bob"


def test_the_restart_line_says_the_registry_starts_empty(ip, capsys):
    ip.run_line_magic("syft_worker", "Bob 0")
    port = ip.user_ns["bob"].port
    ip.user_ns["x"] = torch.ones(3)
    ip.run_line_magic("syft_share", "x #X")
    capsys.readouterr()
    ip.run_line_magic("syft_worker", f"Bob {port}")
    out = capsys.readouterr().out
    assert "restarted: a new, empty registry; the 1 objects shared before are gone, share them again" in out


def test_share_magic_without_a_tag_uses_the_variable_name_and_never_shares_twice(ip, capsys):
    ip.run_line_magic("syft_worker", "Bob 0")
    bob = ip.user_ns["bob"]
    ip.user_ns["x"] = torch.ones(3)
    ip.user_ns["y"] = torch.zeros(2)
    ip.run_line_magic("syft_share", "x")
    assert "Bob shares `x` as #x" in capsys.readouterr().out
    ip.run_line_magic("syft_share", "x")
    assert "Bob already shares `x` as #x" in capsys.readouterr().out
    bob.share(ip.user_ns["y"], "#Y")
    ip.run_line_magic("syft_share", "y")
    assert "Bob already shares `y` as #Y" in capsys.readouterr().out
    assert len(bob.store) == 2


@pytest.mark.parametrize("line, message", [
    ("Bob --policy wrong", "invalid choice"),
    ("Bob notaport", "invalid int value"),
    ("Bob 70000", "between 0 and 65535"),
    ("Bob --as 1abc", "not a valid variable name"),
    ("", "required"),
])
def test_bad_worker_arguments_raise_usage_error(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("syft_worker", line)


def test_share_magic_errors_name_what_is_wrong(ip):
    with pytest.raises(UsageError, match="no worker runs in this kernel"):
        ip.run_line_magic("syft_share", "x #X")
    ip.run_line_magic("syft_worker", "Bob")
    with pytest.raises(UsageError, match="no variable named 'x'"):
        ip.run_line_magic("syft_share", "x #X")
    ip.user_ns["x"] = torch.ones(2)
    with pytest.raises(UsageError, match="bad tag 'X'"):
        ip.run_line_magic("syft_share", "x X")
    ip.user_ns["x"] = [1, 2]
    with pytest.raises(UsageError, match="torch.Tensor"):
        ip.run_line_magic("syft_share", "x #X")
    ip.run_line_magic("syft_worker", "Alice")
    ip.user_ns["x"] = torch.ones(2)
    with pytest.raises(UsageError, match="several workers"):
        ip.run_line_magic("syft_share", "x #X")
    ip.run_line_magic("syft_share", "x #X --to Alice")
    assert len(ip.user_ns["alice"].objects) == 1


def test_connect_to_unknown_name_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="no worker named 'Nobody'"):
        ip.run_line_magic("syft_connect", "Nobody")


def test_stop_and_workers_table(ip, capsys):
    ip.run_line_magic("syft_workers", "")
    assert "no workers or connections" in capsys.readouterr().out
    ip.run_line_magic("syft_worker", "Bob")
    ip.run_line_magic("syft_connect", "Bob")
    ip.run_line_magic("syft_workers", "")
    table = capsys.readouterr().out
    assert "worker" in table and "connection" in table and "Bob" in table
    ip.run_line_magic("syft_stop", "Bob")
    with pytest.raises(UsageError, match="no worker named 'Bob'"):
        ip.run_line_magic("syft_stop", "Bob")
    with pytest.raises(UsageError, match="no connection to 'Alice'"):
        ip.run_line_magic("syft_disconnect", "Alice")


def test_unload_stops_workers_and_removes_the_magics(ip):
    ip.run_line_magic("syft_worker", "Bob")
    bob = ip.user_ns["bob"]
    ip.run_line_magic("unload_ext", "syft_magics")
    assert not bob.running
    assert "syft_worker" not in ip.magics_manager.magics["line"]
    ip.run_line_magic("load_ext", "syft_magics")  # the fixture unloads again


def test_worker_magic_usage_is_documented(ip):
    doc = ip.magics_manager.magics["line"]["syft_worker"].__doc__
    assert "--policy" in doc and "port" in doc and "--as VAR" in doc


def test_unwritable_log_file_is_a_usage_error_and_no_worker_is_left(ip, tmp_path):
    with pytest.raises(UsageError, match="cannot start worker Bob"):
        ip.run_line_magic("syft_worker", f"Bob --log {tmp_path}/missing-dir/bob.log")
    assert "bob" not in ip.user_ns


def test_inspect_magic_shows_the_card_of_a_variable_or_an_item(ip, monkeypatch):
    import IPython.display

    from syft_magics.ui.card import PointerCard

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    ip.run_line_magic("syft_worker", "Bob 0 --policy open")
    ip.user_ns["x"] = torch.ones(3)
    ip.run_line_magic("syft_share", "x #X")
    ip.run_line_magic("syft_connect", "Bob --as c")
    ip.run_cell("x_set = c.search('#X')")
    ip.run_line_magic("syft_inspect", "x_set[0]")
    card = shown[-1]
    try:
        assert isinstance(card, PointerCard) and card.name == "x_set[0]" and card.state == "shared"
    finally:
        card.close()
    with pytest.raises(UsageError, match="not a pointer"):
        ip.run_line_magic("syft_inspect", "x")
    with pytest.raises(UsageError, match="no variable named 'nope'"):
        ip.run_line_magic("syft_inspect", "nope")
    with pytest.raises(UsageError, match="takes a variable"):
        ip.run_line_magic("syft_inspect", "__import__('os')")
