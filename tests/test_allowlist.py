"""The allowlist: which ops a worker runs, by name, and how the owner edits it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import syft_magics as sm
from syft_magics.owner.allowlist import Allowlist, default_names, is_inplace, short_name, wire_name
from syft_magics.wire.names import LAYER_INTERNALS


@pytest.mark.parametrize("name", ["torch.add", "Tensor.__add__", "Tensor.add_", "torch.nn.functional.relu",
                                  "Tensor.__getitem__", "Tensor.__setitem__", "torch.matmul", "Tensor.sum",
                                  "torch.nn.functional.linear", "Tensor.view", "torch.cat", "torch.nonzero"])
def test_default_ops_are_allowed(name):
    allowlist = Allowlist()
    assert name in allowlist
    assert callable(allowlist.lookup(name))
    assert name in default_names()


@pytest.mark.parametrize("name", ["torch.save", "torch.load", "Tensor.untyped_storage", "Tensor.set_",
                                  "Tensor.data_ptr", "Tensor.numpy", "Tensor.cuda", "Tensor.storage",
                                  "Tensor.resize_", "Tensor.as_strided", "Tensor.__reduce_ex__",
                                  "torch.from_file", "Tensor.tolist", "Tensor.item",
                                  # uninitialised memory can hold freed private data
                                  "torch.empty_like", "Tensor.new_empty"])
def test_dangerous_ops_are_not_allowed(name):
    allowlist = Allowlist()
    assert name not in allowlist
    assert allowlist.lookup(name) is None


def test_to_is_allowed_only_within_the_workers_devices():
    to = Allowlist().lookup("Tensor.to")
    assert to is not torch.Tensor.to
    assert to(torch.ones(2), torch.float64).dtype == torch.float64
    with pytest.raises(PermissionError, match="not allowed on this worker"):
        to(torch.ones(2), "cuda")
    with pytest.raises(PermissionError):
        to(torch.ones(2), device="meta")


def test_no_private_or_storage_names_in_the_default_list():
    for name in default_names():
        short = name.rsplit(".", 1)[-1]
        # (but the pure functions public layers call under private names: parametrizations.weight_norm's)
        assert not (short.startswith("_") and not short.endswith("__")) or short in LAYER_INTERNALS, name
        assert "storage" not in name and "ptr" not in name and "file" not in name, name


@pytest.mark.parametrize("func, name", [
    (torch.add, "torch.add"),
    (torch.matmul, "torch.matmul"),
    (torch.Tensor.add, "Tensor.add"),
    (torch.Tensor.add_, "Tensor.add_"),
    (torch.Tensor.__add__, "Tensor.__add__"),
    (torch.Tensor.__getitem__, "Tensor.__getitem__"),
    (torch.Tensor.sum, "Tensor.sum"),
    (F.relu, "torch.nn.functional.relu"),
    (F.linear, "torch.nn.functional.linear"),
    (torch.einsum, "torch.einsum"),
    (torch.split, "torch.split"),
    (torch.fft.fft, "torch.fft.fft"),
    (torch.linalg.norm, "torch.linalg.norm"),
    (torch.special.expit, "torch.special.expit"),
])
def test_wire_name_maps_functions_and_methods(func, name):
    assert wire_name(func) == name


def test_wire_name_of_something_outside_torch_is_none():
    assert wire_name(len) is None
    assert wire_name(print) is None
    assert wire_name(lambda x: x) is None


def test_allow_and_deny_edit_one_workers_list_only():
    a, b = Allowlist(), Allowlist()
    assert "torch.lu" not in a
    a.allow("torch.lu")
    assert a.lookup("torch.lu") is torch.lu
    a.allow("Tensor.exp")
    a.deny("torch.add", "Tensor.__add__", "no.such.op")
    assert "torch.add" not in a and "Tensor.__add__" not in a
    assert "torch.add" in b and "torch.lu" not in b, "each worker edits its own copy"
    assert "torch.add" in Allowlist(), "the defaults are untouched"


def test_allow_with_a_callable_under_any_name():
    a = Allowlist()

    def double(t):
        return t * 2

    a.allow("my.double", double)
    assert a.lookup("my.double") is double
    with pytest.raises(TypeError, match="does not name a callable"):
        a.allow("my.thing", 42)


@pytest.mark.parametrize("name", ["torch._C._nn.linear", "torch._utils._rebuild_tensor", "Tensor._make_subclass",
                                  "torch.nn.functional._canonical_mask"])
def test_allow_refuses_private_names(name):
    with pytest.raises(ValueError, match="private names cannot be allowed"):
        Allowlist().allow(name)


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "numpy.load", "subprocess.run"])
def test_allow_by_name_only_resolves_inside_torch(name):
    with pytest.raises(ValueError, match="starting with 'torch.' or 'Tensor.'"):
        Allowlist().allow(name)


def test_is_inplace_and_short_names():
    assert is_inplace("Tensor.add_") and is_inplace("Tensor.__setitem__") and is_inplace("Tensor.__iadd__")
    assert not is_inplace("Tensor.__add__") and not is_inplace("torch.add")
    assert short_name("torch.add") == "add"
    assert short_name("Tensor.sum") == ".sum"
    assert short_name("torch.nn.functional.relu") == "F.relu"


def test_a_worker_whose_owner_denied_an_op_refuses_it(seed):
    bob, client = seed
    bob.allowlist.deny("torch.add")
    x, y = client.search("#X")[0], client.search("#Y")[0]
    z = torch.add(x, y)  # pipelined: returns at once
    with pytest.raises(sm.OpNotAllowed) as info:
        client.sync()
    assert "add" in str(info.value) and "not on Bob's allowlist" in str(info.value)
    assert info.value.op == "torch.add"
    assert z.shape == (5,)
    # other ops still run, and the client keeps working
    assert torch.equal((x - y).get(), torch.tensor([0.0, 1, 2, 3, 4]))


def test_an_op_the_owner_allowed_runs_remotely(seed):
    bob, client = seed
    x = client.search("#X")[0]
    bob.allowlist.deny("torch.fft.fft")  # on the default list (schema-derived): take it off first
    with pytest.raises(sm.OpNotAllowed, match="fft"):
        torch.fft.fft(x).get()
    bob.allowlist.allow("torch.fft.fft")
    assert torch.allclose(torch.fft.fft(x).get(), torch.fft.fft(torch.tensor([1.0, 2, 3, 4, 5])))


def test_ops_with_no_public_torch_name_are_refused_locally(seed):
    bob, client = seed
    x = client.search("#X")[0]
    before = bob.stats["commands"]
    with pytest.raises(sm.OpNotAllowed, match="_cast_Float cannot run on a pointer"):
        torch._cast_Float(x)  # a private torch function
    client.sync()
    assert bob.stats["commands"] == before
