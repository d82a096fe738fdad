"""PointerTensor over a real worker: torch functions, operators, methods, indexing all run remotely."""
from __future__ import annotations

import copy
import pickle
import traceback

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import syft_magics as sm

X = torch.tensor([1.0, 2, 3, 4, 5])
Y = torch.ones(5)


@pytest.fixture
def xy(seed):
    bob, client = seed
    return bob, client, client.search("#X")[0], client.search("#Y")[0]


def value(result):
    """Fetch pointers inside a (nested) result."""
    if isinstance(result, sm.PointerTensor):
        return result.get()
    if isinstance(result, (tuple, list)):
        return type(result)(value(r) for r in result) if type(result) in (tuple, list) else [value(r) for r in result]
    return result


def assert_remote_equals(ptr, expected):
    assert isinstance(ptr, sm.PointerTensor), f"expected a pointer, got {type(ptr).__name__}"
    assert ptr.shape == expected.shape and ptr.dtype == expected.dtype
    got = ptr.get()
    assert type(got) is torch.Tensor
    assert torch.allclose(got, expected) if got.is_floating_point() else torch.equal(got, expected)


# -- functions, operators, methods -------------------------------------------------------------------
@pytest.mark.parametrize("op", [
    lambda x, y: torch.add(x, y),
    lambda x, y: torch.add(x, y, alpha=2),
    lambda x, y: torch.matmul(x, y),
    lambda x, y: torch.mul(x, 3),
    lambda x, y: F.relu(x - 3),
    lambda x, y: F.softmax(x, dim=0),
    lambda x, y: F.linear(x, torch.arange(10.0).view(2, 5), torch.ones(2)),
    lambda x, y: torch.where(x > 2, x, y),
    lambda x, y: torch.clamp(x, min=2, max=4),
    lambda x, y: torch.exp(x / 5),
], ids=["add", "add-alpha", "matmul", "mul-scalar", "relu", "softmax", "linear-local-weight", "where", "clamp",
        "exp"])
def test_torch_functions_run_remotely(xy, op):
    _, _, x, y = xy
    assert_remote_equals(op(x, y), op(X, Y))


@pytest.mark.parametrize("op", [
    lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / (y + 1), lambda x, y: x @ y,
    lambda x, y: x ** 2, lambda x, y: x // 2, lambda x, y: x % 2, lambda x, y: x < 3, lambda x, y: x <= 3,
    lambda x, y: x > y, lambda x, y: x >= 3, lambda x, y: x == 3, lambda x, y: x != 3, lambda x, y: -x,
    lambda x, y: +x, lambda x, y: abs(x - 3), lambda x, y: ~(x > 2), lambda x, y: (x > 1) & (x < 4),
    lambda x, y: (x > 4) | (x < 2),
], ids=["add", "sub", "mul", "div", "matmul", "pow", "floordiv", "mod", "lt", "le", "gt", "ge", "eq", "ne", "neg",
        "pos", "abs", "invert", "and", "or"])
def test_operators(xy, op):
    _, _, x, y = xy
    assert_remote_equals(op(x, y), op(X, Y))


@pytest.mark.parametrize("op", [
    lambda x: 2 - x, lambda x: 1 / x, lambda x: 2 * x, lambda x: 10 + x, lambda x: 2 ** x, lambda x: 7 // x,
    lambda x: torch.ones(5) - x, lambda x: torch.ones(5, 5) @ x, lambda x: torch.arange(5.0) * x,
], ids=["rsub", "rtruediv", "rmul", "radd", "rpow", "rfloordiv", "local-minus-ptr", "local-matmul-ptr",
        "local-times-ptr"])
def test_reflected_ops_with_scalars_and_local_tensors(xy, op):
    _, _, x, _ = xy
    assert_remote_equals(op(x), op(X))


@pytest.mark.parametrize("op", [
    lambda x: x.sum(), lambda x: x.mean(0), lambda x: x.view(5, 1).mean(dim=1), lambda x: x.view(5, 1),
    lambda x: x.view(1, 5).t(), lambda x: x.reshape(5, 1), lambda x: x.long(), lambda x: x.long().float(),
    lambda x: x.double(), lambda x: x.bool(), lambda x: x.clone(), lambda x: x.unsqueeze(0),
    lambda x: x.view(1, 5).squeeze(), lambda x: x.cumsum(0), lambda x: x.flip(0), lambda x: x.argmax(),
    lambda x: x.std(), lambda x: x.view(5, 1).expand(5, 3), lambda x: x.repeat(2),
    lambda x: torch.sum(x.view(5, 1), dim=0, keepdim=True), lambda x: x.view(1, 5).T,
    lambda x: x.view(1, 5).mT,
], ids=["sum", "mean0", "mean-dim", "view", "t", "reshape", "long", "float", "double", "bool", "clone",
        "unsqueeze", "squeeze", "cumsum", "flip", "argmax", "std", "expand", "repeat", "sum-keepdim", "T", "mT"])
def test_methods(xy, op):
    _, _, x, _ = xy
    assert_remote_equals(op(x), op(X))


def test_mixed_local_tensors_and_python_scalars(xy):
    _, _, x, y = xy
    local = torch.arange(5.0)
    result = (x + local) * 2.5 - y / 4 + 1
    assert_remote_equals(result, (X + local) * 2.5 - Y / 4 + 1)
    assert_remote_equals(torch.stack([x, local]), torch.stack([X, local]))
    assert_remote_equals(x + True, X + True)


def test_cat_and_stack_of_pointers(xy):
    _, _, x, y = xy
    assert_remote_equals(torch.cat([x, y, x]), torch.cat([X, Y, X]))
    assert_remote_equals(torch.cat((x.view(1, 5), y.view(1, 5)), dim=0), torch.cat((X.view(1, 5), Y.view(1, 5))))
    assert_remote_equals(torch.stack([x, y], dim=1), torch.stack([X, Y], dim=1))


# -- indexing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [
    0, -1, slice(1, 3), slice(None, None, 2), (Ellipsis,), (None,), (Ellipsis, None), (slice(None), None),
    torch.tensor([0, 2, 4]), [1, 3],
], ids=["int", "neg-int", "slice", "step", "ellipsis", "none", "ellipsis-none", "tuple", "index-tensor", "list"])
def test_indexing_and_slicing(xy, index):
    _, _, x, _ = xy
    assert_remote_equals(x[index], X[index])


def test_two_dimensional_indexing(seed):
    bob, client = seed
    m = torch.arange(12.0).view(3, 4)
    bob.share(m, "#M")
    p = client.search("#M")[0]
    for index in [(1, 2), (slice(None), 1), (Ellipsis, -1), (slice(0, 2), slice(1, 3)), (None, 1),
                  (torch.tensor([0, 2]), slice(None))]:
        assert_remote_equals(p[index], m[index])


def test_index_with_a_pointer(xy):
    _, client, x, _ = xy
    idx = client.send(torch.tensor([4, 0]))
    assert_remote_equals(x[idx], X[torch.tensor([4, 0])])


def test_boolean_mask_takes_the_data_dependent_path_and_gets_the_right_shape(xy):
    bob, _, x, _ = xy
    masked = x[x > 2]
    assert masked.shape == (3,), "the worker says the shape; meta inference cannot"
    assert torch.equal(masked.get(), torch.tensor([3.0, 4, 5]))
    local_mask = torch.tensor([True, False, False, False, True])
    assert torch.equal(x[local_mask].get(), torch.tensor([1.0, 5]))


def test_data_dependent_ops_give_correct_shapes(seed):
    bob, client = seed
    bob.share(torch.tensor([3, 1, 3, 0, 1, 3]), "#D")
    d = client.search("#D")[0]
    nz = torch.nonzero(d)
    assert nz.shape == (5, 1) and nz.dtype == torch.int64
    assert torch.equal(nz.get(), torch.nonzero(torch.tensor([3, 1, 3, 0, 1, 3])))
    u = torch.unique(d)
    assert u.shape == (3,) and torch.equal(u.get(), torch.tensor([0, 1, 3]))
    values, counts = torch.unique(d, return_counts=True)
    assert values.shape == counts.shape == (3,)
    assert torch.equal(counts.get(), torch.tensor([1, 2, 3]))
    selected = torch.masked_select(d, d > 1)
    assert selected.shape == (3,)
    # and pointers from the data-dependent path keep working in pipelined ops
    assert torch.equal((nz.view(-1) * 2).get(), torch.tensor([0, 2, 4, 8, 10]))


# -- in place --------------------------------------------------------------------------------------------
def test_setitem_on_a_session_owned_pointer(xy):
    _, client, x, _ = xy
    z = x.clone()
    z[0] = 100.0
    z[1:3] = torch.tensor([7.0, 8.0])
    z[z > 50] = -1.0
    z[client.send(torch.tensor([4]))] = 0.5
    assert z.shape == (5,)
    assert torch.equal(z.get(), torch.tensor([-1.0, 7, 8, 4, 0.5]))
    assert torch.equal(x.get(), X), "the owner's tensor is unchanged"


def test_inplace_ops_return_the_same_pointer_and_change_the_value(xy):
    _, _, x, _ = xy
    z = x.clone()
    result = z.add_(1)
    assert result is z
    assert torch.equal(z.get(), X + 1)
    same = z
    z += 10
    z *= 2
    assert z is same
    assert torch.equal(z.get(), (X + 11) * 2)
    assert z.mul_(0.5).sub_(1).clamp_(max=8) is same
    assert torch.equal(z.get(), torch.clamp((X + 11) - 1, max=8))


def test_inplace_functional_op_on_a_session_pointer_runs(xy):
    _, _, x, _ = xy
    z = x - 3
    assert F.relu(z, inplace=True) is z
    assert torch.equal(z.get(), F.relu(X - 3))


def test_out_is_a_pointer_on_the_same_worker(xy):
    # (out= a pointer is written: test_model_layers.py)
    bob, client, x, y = xy
    with pytest.raises(TypeError, match="must be a pointer on the same worker"):
        torch.add(x, y, out=torch.empty(5))


def test_shape_changing_inplace_ops_are_refused_clearly(xy):
    _, _, x, _ = xy
    z = x.clone()
    with pytest.raises(NotImplementedError, match="unsqueeze_ changes a pointer's shape in place"):
        z.unsqueeze_(0)
    assert z.shape == (5,)
    assert torch.equal(z.get(), X)


def test_inplace_op_on_a_local_tensor_with_a_pointer_argument_is_refused(xy):
    _, _, x, _ = xy
    local = torch.ones(5)
    with pytest.raises(TypeError, match="in-place op on a local tensor cannot take a pointer"):
        local.add_(x)
    assert torch.equal(local, torch.ones(5))
    # ``local += ptr`` falls back to ``local = local + ptr`` (torch turns the TypeError into NotImplemented):
    # the name now points at a remote result, the local tensor itself is untouched
    original = local
    local += x
    assert isinstance(local, sm.PointerTensor)
    assert torch.equal(original, torch.ones(5))
    assert torch.equal(local.get(), X + 1)


def test_loading_a_remote_models_state_into_a_local_model_says_to_get_it_first(seed):
    bob, client = seed
    remote, local = client.send(nn.Linear(3, 2)), nn.Linear(3, 2)
    before = local.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"cannot be filled from a pointer; bring the value here first \(ptr.get"):
        local.load_state_dict(remote.state_dict())
    assert torch.equal(local.weight.detach(), before)
    local.load_state_dict(remote.get().state_dict())  # as the message says
    assert torch.equal(local.weight.detach(), remote.get().weight.detach())


# -- tuple results ---------------------------------------------------------------------------------------------
def test_tuple_results_are_pointers(seed):
    bob, client = seed
    m = torch.tensor([[3.0, 1, 2], [0, 5, 4]])
    bob.share(m, "#M")
    p = client.search("#M")[0]
    mx = torch.max(p, dim=1)
    assert isinstance(mx, torch.return_types.max)
    assert isinstance(mx.values, sm.PointerTensor) and isinstance(mx.indices, sm.PointerTensor)
    assert torch.equal(mx.values.get(), torch.tensor([3.0, 5])) and torch.equal(mx.indices.get(), torch.tensor([0, 1]))
    parts = torch.split(p.view(-1), 4)
    assert isinstance(parts, tuple) and [q.shape for q in parts] == [(4,), (2,)]
    assert torch.equal(parts[1].get(), torch.tensor([5.0, 4]))
    top = torch.topk(p.view(-1), 2)
    assert torch.equal(top.values.get(), torch.tensor([5.0, 4])) and torch.equal(top[1].get(), torch.tensor([4, 5]))
    values, indices = torch.sort(p.view(-1), descending=True)
    assert torch.equal(values.get(), torch.tensor([5.0, 4, 3, 2, 1, 0]))
    assert indices.dtype == torch.int64
    a, b = p.chunk(2)
    assert torch.equal(b.get(), m[1:])
    rows = list(p)  # iteration unbinds remotely
    assert len(rows) == 2 and torch.equal(rows[0].get(), m[0])


# -- metadata is local, values go through get ---------------------------------------------------------------------
def test_metadata_needs_no_round_trip(xy):
    bob, client, x, _ = xy
    m = x.view(5, 1)
    client.sync()
    bob.stop()  # nothing answers from now on
    assert len(x) == 5
    assert x.shape == (5,) and x.size() == torch.Size([5]) and x.size(0) == 5
    assert m.dim() == 2 and m.ndim == 2 and m.numel() == 5 and m.nelement() == 5
    assert x.dtype == torch.float32 and not x.requires_grad
    assert m.shape == (5, 1)
    assert x.location == "Bob"


def test_value_functions_go_through_get(xy):
    bob, _, x, _ = xy
    gets = bob.events.totals["get"]
    assert x.sum().item() == 15.0
    assert x.tolist() == [1.0, 2, 3, 4, 5]
    assert bool(x.sum() > 10) is True
    assert float(x[1]) == 2.0 and int(x[2]) == 3
    assert 3.0 in x
    assert bob.events.totals["get"] >= gets + 6


def test_a_pointer_used_as_a_number_by_torch_is_fetched(xy):
    """torch.arange(ptr), torch.eye(ptr): torch turns the size into a number below the torch-function
    layer; the value is fetched (as int(ptr) does), not refused with an internal error."""
    bob, _, x, _ = xy
    n = x[2].long()  # 3
    assert torch.equal(torch.arange(n), torch.arange(3))
    assert torch.equal(torch.eye(n), torch.eye(3))
    assert torch.equal(torch.full((2,), x[1]), torch.full((2,), 2.0))


def test_value_functions_obey_the_policy(make_worker, make_client):
    bob = make_worker("Bob", policy="closed")
    bob.share(X.clone(), "#X")
    x = make_client("Bob").search("#X")[0]
    with pytest.raises(sm.PermissionDenied, match="closed"):
        x.sum().item()
    with pytest.raises(sm.PermissionDenied):
        x.tolist()
    with pytest.raises(sm.PermissionDenied):
        bool(x.sum() > 0)
    with pytest.raises(sm.PermissionDenied):
        torch.arange(x[0].long())


def test_shape_errors_are_raised_locally_and_nothing_is_sent(xy):
    bob, client, x, y = xy
    client.sync()
    before = bob.stats["commands"], len(bob.store)
    with pytest.raises(RuntimeError) as info:
        x + torch.ones(3)  # the user's line
    assert "3" in str(info.value) and "5" in str(info.value)
    frames = traceback.extract_tb(info.tb)
    assert any(f.filename == __file__ and "x + torch.ones(3)" in (f.line or "") for f in frames)
    with pytest.raises(RuntimeError, match="invalid for input of size 5"):
        x.view(2, 3)
    with pytest.raises(RuntimeError):
        x @ torch.ones(3)
    with pytest.raises(IndexError, match="out of bounds"):
        x[10]
    with pytest.raises(RuntimeError, match="dimensions"):
        torch.cat([x, torch.ones(2, 2)])
    client.sync()
    assert (bob.stats["commands"], len(bob.store)) == before


def test_mixing_pointers_of_two_workers_raises_cross_worker_error(xy, make_worker, make_client):
    bob, _, x, _ = xy
    alice = make_worker("Alice", policy="open")
    alice.share(torch.ones(5), "#A")
    a = make_client("Alice").search("#A")[0]
    with pytest.raises(sm.CrossWorkerError) as info:
        x + a
    assert "Bob" in str(info.value) and "Alice" in str(info.value)
    with pytest.raises(sm.CrossWorkerError):
        torch.cat([a, x])
    assert isinstance(info.value, ValueError)


def test_repr_shows_id_location_remote_id_shape_dtype(xy):
    _, _, x, _ = xy
    text = repr(x)
    assert text.startswith("PointerTensor(")
    assert f"id={x.id}" in text and "location=Bob" in text and "id@loc=#X" in text
    assert "shape=(5,)" in text and "dtype=torch.float32" in text
    z = x.view(5, 1) * 2
    assert f"id@loc={z.id_at_location[:12]}" in repr(z) and "shape=(5, 1)" in repr(z)
    assert str(z) == repr(z) and f"{z}" == repr(z)
    z.delete()
    assert "freed" in repr(z)


def test_pointers_are_hashable_and_usable_as_dict_keys(xy):
    _, _, x, y = xy
    z = x + y
    table = {x: "x", y: "y", z: "z"}
    assert table[x] == "x" and table[y] == "y" and table[z] == "z"
    assert len({x, y, z, x}) == 3
    assert x.id != y.id != z.id


def test_pointers_cannot_be_pickled_or_copied(xy):
    _, _, x, _ = xy
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(x)
    with pytest.raises(TypeError):
        copy.copy(x)
    with pytest.raises(TypeError, match="deep-copied"):
        copy.deepcopy(x)


def test_pointer_metadata_properties(xy):
    _, client, x, _ = xy
    assert x.location == "Bob" and x.client is client and x.tags == ("#X",)
    assert not x.owned, "search results are the owner's: never freed by this session"
    z = x + 1
    assert z.owned and z.tags == ()
    assert len(z.id_at_location) == 32 and z.id_at_location != x.id_at_location


def test_inplace_op_on_a_pointer_with_itself_does_not_confuse_later_calls(seed):
    """Results are cached by argument signature: ``s.add_(s)`` must not make ``a.add_(b)`` return ``b``."""
    from syft_magics.scientist import inference as _inference

    _, client = seed
    _inference.clear_cache()
    s = client.send(torch.full((3, 7), 3.0))
    assert s.add_(s) is s
    a, b = client.send(torch.ones(3, 7)), client.send(torch.full((3, 7), 2.0))
    assert a.add_(b) is a
    name = a
    name += b
    assert name is a, "a += b must keep a"
    assert torch.equal(a.get(), torch.full((3, 7), 5.0))
    assert torch.equal(b.get(), torch.full((3, 7), 2.0))
    assert torch.equal(s.get(), torch.full((3, 7), 6.0))


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "softmax", "var", "normalize"])
def test_masked_ops_are_refused_clearly(seed, name):
    """torch.masked.* build tensors with device=ptr.device (the meta device of a stand-in): refused, never sent."""
    bob, client = seed
    x = client.send(torch.randn(3, 4))
    mask = client.send(torch.rand(3, 4) > 0.5)
    fn = getattr(torch.masked, name)
    args = (x, 2.0, 1) if name == "normalize" else (x, 1)
    with pytest.raises(sm.OpNotAllowed, match="torch.masked.\\* ops .* are not supported on pointers"):
        fn(*args, mask=mask)
    with pytest.raises(sm.OpNotAllowed, match="'meta' device"):
        x + torch.ones(4, device=x.device)  # the same mistake by hand
    assert torch.equal((x * 1).get(), x.get())  # nothing was sent, the link is fine


def test_contiguous_makes_a_dense_copy_on_the_worker(make_worker, make_client):
    """``x.expand(n).contiguous()``: the stand-in has no strides, so it looked contiguous and the pointer to the
    expanded tensor came back as the result, while the worker's tensor stayed one element's memory (a silent
    no-op). Now the pointer is to what the worker's ``contiguous()`` returned."""
    bob = make_worker("Bob", policy="open")
    client = make_client(bob.address, key=bob.key)
    one = client.send(torch.tensor([3.0]))
    wide = one.expand(1000)
    dense = wide.contiguous()
    client.sync()
    assert dense is not wide
    held = bob.store.get(dense.oid).tensor
    assert held.is_contiguous() and held.untyped_storage().nbytes() == 4000
    assert torch.equal(dense.get(), torch.full((1000,), 3.0))
    same = one.contiguous()  # already contiguous: the worker returns it, kept under the new pointer too
    assert torch.equal(same.get(), torch.tensor([3.0]))


def test_numpy_numbers_and_arrays_are_arguments_as_torch_takes_them(seed):
    """helper-80: ptr * np.float32(k) fetched the pointer's value and computed here, in numpy; np.int64 and numpy
    index arrays were refused."""
    import numpy as np

    bob, client = seed
    p = client.send(torch.arange(10.0))
    local = torch.arange(10.0)
    before = bob.stats["commands"]
    for ours, theirs in ((p * np.float32(2), local * np.float32(2)), (np.float32(2) * p, local * 2),
                         (p + np.int64(1), local + 1), (p[:np.int64(3)], local[:3]),
                         (p[np.array([1, 2])], local[np.array([1, 2])])):
        assert isinstance(ours, sm.PointerTensor)  # computed on the worker
        assert torch.equal(ours.get(), theirs)
    assert bob.stats["commands"] >= before + 5
