"""The wire schema: msgpack header + raw tensor frames, a closed set of ext types, no pickle."""
from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest
import torch
import zmq

import syft_magics
from syft_magics.wire import protocol as P
from syft_magics.errors import ProtocolError


def round_trip(header: dict) -> dict:
    return P.decode(P.encode(header))


def test_plain_values_and_nested_containers_round_trip():
    header = {"t": "op", "n": None, "b": True, "i": -7, "big": 2**62, "f": 1.5, "s": "héllo", "raw": b"\x00\xff",
              "l": [1, [2, [3, {"k": [4.0, "x"]}]]], "d": {"a": {"b": {"c": [None, False]}}}}
    assert round_trip(header) == header


@pytest.mark.parametrize("value", [
    (1, 2, 3), (), ((1, 2), (3,)), slice(1, None, 2), slice(None, None, None), slice(-3, -1, None),
    Ellipsis, torch.float32, torch.bfloat16, torch.bool, torch.Size([2, 3]), torch.Size([]),
    complex(1.5, -2.0), 0j,
])
def test_every_extension_value_round_trips_with_its_type(value):
    back = round_trip({"t": "op", "v": value})["v"]
    assert type(back) is type(value)
    assert back == value


def test_ref_round_trips_as_ref_and_through_a_resolver():
    oid = bytes(range(16))
    back = round_trip({"t": "op", "a": [P.Ref(oid)]})["a"][0]
    assert isinstance(back, P.Ref) and back.id == oid and back == P.Ref(oid)
    seen = []
    header = P.decode(P.encode({"t": "op", "a": [P.Ref(oid), (P.Ref(oid),)]}), resolve=lambda i: seen.append(i) or "X")
    assert header["a"] == ["X", ("X",)] and seen == [oid, oid]


@pytest.mark.parametrize("name", sorted(P.DTYPES))
def test_tensors_of_every_supported_dtype_round_trip_bit_exact(name):
    dtype = P.DTYPES[name]
    if dtype is torch.bool:
        t = torch.tensor([True, False, True, True])
    elif dtype.is_complex:
        t = torch.tensor([1 + 2j, -3.5 + 0.25j, 0j], dtype=dtype)
    elif dtype.is_floating_point:
        t = torch.tensor([1.5, -2.25, 0.0, float("inf")], dtype=dtype)
    else:
        t = torch.tensor([0, 1, 7, 100], dtype=dtype)
    parts = P.encode({"t": "value", "x": t})
    assert len(parts) == 1, "a small tensor travels inside the header"
    back = P.decode(parts)["x"]
    assert back.dtype == dtype and back.shape == t.shape
    assert torch.equal(back, t)
    big = t.repeat(P.INLINE_MAX_BYTES // (t.numel() * t.element_size()) + 1)
    parts = P.encode({"t": "value", "x": big})
    assert len(parts) == 2, "a larger tensor travels as its own frame"
    back = P.decode(parts)["x"]
    assert back.dtype == dtype and torch.equal(back, big)


@pytest.mark.parametrize("t", [
    torch.tensor(3.25),                                    # 0-d
    torch.empty(0),                                        # empty
    torch.empty(3, 0, 2, dtype=torch.int64),               # empty with shape
    torch.arange(12.0).reshape(3, 4).t(),                  # non-contiguous (transposed)
    torch.arange(20, dtype=torch.int32)[::3],              # non-contiguous (strided)
    torch.arange(6.0).reshape(2, 3).expand(4, 2, 3),       # zero strides
    torch.tensor([1 + 1j, 2 - 1j]).conj(),                 # lazy conjugate
    torch.arange(4.0).neg(),
], ids=["0d", "empty", "empty-3d", "transposed", "strided", "expanded", "conj", "neg"])
def test_tensor_layouts_round_trip(t):
    back = round_trip({"t": "value", "x": t})["x"]
    assert back.shape == t.shape and back.dtype == t.dtype
    assert torch.equal(back, t.resolve_conj().resolve_neg())


def test_many_tensors_nested_in_tuples_lists_and_maps_keep_their_frames_apart():
    a, b, c = torch.ones(8192), torch.zeros(3 * 8192, dtype=torch.int8), torch.tensor(True)
    parts = P.encode({"t": "op", "a": (a, [b, {"c": c}])})
    assert len(parts) == 3, "a and b in frames, c (small) inline"
    got = P.decode(parts)["a"]
    assert isinstance(got, tuple) and torch.equal(got[0], a) and torch.equal(got[1][0], b)
    assert torch.equal(got[1][1]["c"], c)


def test_unsupported_values_and_dtypes_are_refused_when_encoding():
    with pytest.raises(ProtocolError, match="cannot send a value of type object"):
        P.encode({"t": "op", "a": object()})
    with pytest.raises(ProtocolError, match="cannot be sent"):
        P.encode({"t": "op", "a": torch.ones(2, dtype=torch.uint16)})


def test_large_received_tensor_shares_the_frame_memory_small_one_is_copied():
    big = torch.arange(P.ZERO_COPY_MIN_BYTES // 4 * 2, dtype=torch.float32)
    small = torch.arange(P.INLINE_MAX_BYTES // 4 * 2, dtype=torch.float32)  # in a frame, but small
    parts = P.encode({"t": "value", "big": big, "small": small})
    frames = [parts[0]] + [bytearray(memoryview(f).cast("B")) for f in parts[1:]]
    got = P.decode(frames)
    # writing into the received frames shows which tensor is a view of them
    frames[1][0:4] = torch.tensor([42.0]).numpy().tobytes()
    frames[2][0:4] = torch.tensor([42.0]).numpy().tobytes()
    assert got["big"][0].item() == 42.0, "large tensors must be used in place (zero-copy)"
    assert got["small"][0].item() == 0.0, "small tensors must be copied out of the frame"


def test_zero_copy_receive_over_a_real_zmq_frame():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for s in (a, b):
            s.setsockopt(zmq.LINGER, 0)
        port = a.bind_to_random_port("tcp://127.0.0.1")
        b.connect(f"tcp://127.0.0.1:{port}")
        t = torch.randn(1 << 16)  # 256 KiB
        a.send_multipart(P.encode({"t": "value", "x": t}), copy=False)
        assert b.poll(5000)
        parts = b.recv_multipart(copy=False)
        x = P.decode(parts)["x"]
        frame_start = torch.frombuffer(parts[1].buffer, dtype=torch.uint8).data_ptr()
        assert x.data_ptr() == frame_start
        assert torch.equal(x, t)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def test_read_only_buffers_are_copied_so_received_tensors_are_writable():
    t = torch.arange(P.ZERO_COPY_MIN_BYTES, dtype=torch.float32)
    parts = P.encode({"t": "value", "x": t})
    x = P.decode([parts[0], bytes(memoryview(parts[1]).cast("B"))])["x"]
    x[0] = 5.0  # would fail (or warn about undefined behaviour) on a read-only buffer
    assert x[0].item() == 5.0 and t[0].item() == 0.0


# -- malformed input -------------------------------------------------------------------------------
def _tensor_ext(meta) -> msgpack.ExtType:
    return msgpack.ExtType(P.EXT_TENSOR, msgpack.packb(meta))


@pytest.mark.parametrize("parts, message", [
    ([], "empty message"),
    ([b"\xc1\xff\x00"], "malformed message header: FormatError"),
    ([b"\x92\x01"], "malformed message header: Unpack failed"),
    ([b"\x01\x02"], "malformed message header"),
    ([b""], "malformed message header"),
    ([b"\x91" * 100_000 + b"\x01"], "malformed message header"),
    ([msgpack.packb([1, 2])], "header must be a map"),
    ([msgpack.packb("op")], "header must be a map"),
    ([msgpack.packb({"x": 1})], "string field 't'"),
    ([msgpack.packb({"t": 5})], "string field 't'"),
    ([msgpack.packb({"t": "op", 1: 2})], "malformed message header"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(42, b"")})], "unknown extension type 42"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([3, "float32", [2]])}), b"\0" * 8], "frame 3, message has 1"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([-1, "float32", [2]])}), b"\0" * 8], "frame -1"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([True, "float32", [2]])}), b"\0" * 8], "frame True"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", [3]])}), b"\0" * 8],
     "frame holds 8 bytes, but shape \\[3\\] of float32 needs 12"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", [0]])}), b"\0" * 8], "holds 8 bytes"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", [2**40, 2**40]])}), b"\0" * 8], "holds 8 bytes"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", [-2, -4]])}), b"\0" * 32], "bad tensor shape"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", [None]])}), b"\0" * 4], "bad tensor shape"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32", 4])}), b"\0" * 16], "shape must be a list"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "object", [2]])}), b"\0" * 8], "unknown dtype 'object'"),
    ([msgpack.packb({"t": "op", "a": _tensor_ext([0, "float32"])}), b"\0" * 8], "malformed message header"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_DTYPE, b"float128")})], "unknown dtype 'float128'"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_DTYPE, b"\xff")})], "malformed message header"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_REF, b"abc")})], "object id must be 16 bytes, got 3"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_REF, b"x" * 17)})], "must be 16 bytes, got 17"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_SLICE, msgpack.packb([1]))})], "malformed"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_COMPLEX, msgpack.packb(["a", "b"]))})], "malformed"),
    ([msgpack.packb({"t": "op", "a": msgpack.ExtType(P.EXT_SIZE, msgpack.packb(["a"]))})], "malformed"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_input_raises_protocol_error_with_a_clear_message(parts, message):
    with pytest.raises(ProtocolError, match=message):
        P.decode(parts)


def test_random_garbage_only_ever_raises_protocol_error():
    import random

    rng = random.Random(1234)
    for _ in range(3000):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 48)))
        try:
            P.decode([blob, b"\0" * 8])
        except ProtocolError:
            pass


def test_field_checks_presence_and_type():
    header = {"t": "get", "id": b"x" * 16}
    assert P.field(header, "id", bytes) == b"x" * 16
    with pytest.raises(ProtocolError, match="'get' message lacks field 'tags'"):
        P.field(header, "tags", list)
    with pytest.raises(ProtocolError, match="field 'id' of 'get' message has the wrong type"):
        P.field(header, "id", list)


# -- no pickle, no eval -----------------------------------------------------------------------------
PACKAGE = Path(syft_magics.__file__).parent
#: Every module of the package except the CLI, which loads the owner's own files (weights_only=True).
CORE_MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "cli.py")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_no_pickle_eval_or_exec_in_the_package_source(module):
    source = (PACKAGE / module).read_text()
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    for pattern in (r"\bimport\s+pickle", r"\bpickle\.", r"\bcPickle\b", r"\bdill\b", r"\bcloudpickle\b",
                    r"\bmarshal\b", r"(?<![\w.])eval\(", r"(?<![\w.])exec\(", r"torch\.load\(",
                    r"allow_pickle\s*=\s*True", r"__import__\(", r"importlib"):
        assert not re.search(pattern, code), f"{module} matches {pattern!r}"


def test_decoding_releases_the_frames_without_waiting_for_the_garbage_collector():
    """A received frame must be freed as soon as nothing uses it (large frames are whole tensors)."""
    import gc
    import weakref

    class Frame(bytearray):
        pass

    t = torch.arange(P.INLINE_MAX_BYTES / 2)  # a frame of its own, copied out on receipt
    head, frame = P.encode({"t": "value", "x": t})
    buf = Frame(bytes(frame))
    alive = weakref.ref(buf)
    gc.disable()
    try:
        header = P.decode([head, buf])
        del buf
        assert torch.equal(header["x"], t)
        assert alive() is None
    finally:
        gc.enable()


def test_message_kinds_and_error_codes_travel_as_their_plain_names():
    header = P.decode(P.encode({"t": P.Kind.ERR, "code": P.ErrorCode.DENIED, "k": [P.Kind.OP]}))
    assert header == {"t": "err", "code": "denied", "k": ["op"]}
    assert type(header["t"]) is str
    # a received name finds its member (and its handler) as the member itself would
    assert header["t"] == P.Kind.ERR and {P.Kind.ERR: 1}[header["t"]] == 1
    assert f"{P.Kind.APPROVED}" == "approved" and str(P.ErrorCode.READ_ONLY) == "read_only"


def test_every_error_code_maps_to_the_exception_a_client_raises():
    from syft_magics import errors as E

    assert E.error_class("read_only") is E.ReadOnlyError
    assert E.error_class("denied") is E.PermissionDenied
    assert E.error_class("op_not_allowed") is E.OpNotAllowed
    assert E.error_class("unknown_object") is E.UnknownObject
    # an unknown or malformed code from a worker is still a clear remote error
    for code in ("no such code", None, 3, b"denied"):
        assert E.error_class(code) is E.RemoteError
    assert all(issubclass(E.error_class(code), E.SyftError) for code in E.ErrorCode)
