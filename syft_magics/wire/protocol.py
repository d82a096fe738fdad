"""The wire schema: a msgpack header followed by raw tensor frames.

A message is a ZeroMQ multipart: ``[header, frame0, frame1, ...]``. The header
is a msgpack map whose ``"t"`` field names the message kind (:class:`Kind`); an
``err`` reply's ``"code"`` is an :class:`ErrorCode` (defined next to the exceptions
it maps to, in :mod:`syft_magics.errors`). Values inside a header use a closed set
of msgpack extension types, never pickle:

=====  =============  ===================================================
code   Python value   payload
=====  =============  ===================================================
1      ``Ref``        16-byte object id (a pointer argument)
2      torch.Tensor   ``[frame index, dtype name, shape]``, bytes in that frame;
                      or ``[bytes, dtype name, shape]`` for small tensors, inline
3      tuple          msgpack list
4      slice          ``[start, stop, step]``
5      Ellipsis       empty
6      torch.dtype    dtype name (from :data:`DTYPES` only)
7      torch.Size     msgpack list
8      complex        ``[real, imag]``
9      torch.Tensor   ``[fd, inode, offset, dtype name, shape]``: bytes in the sender's
                      pool, same host only (:mod:`syft_magics.wire.samehost`)
10     memory_format  its name (from :data:`MEMORY_FORMATS` only)
=====  =============  ===================================================

Pipelined messages may travel together as one ``batch``: ``[{"t": "batch", "m":
[header0, header1, ...], "n": [k0, k1, ...]}, k0 frames of message 0, k1 frames of
message 1, ...]`` (the headers packed, as bytes); the worker handles them in order,
each exactly as if it had come alone.

Tensors of ``defaults.stream_min_bytes`` and more that travel by TCP are streamed in chunks, with
credit-based flow control, so that small messages interleave with them and a transfer can be
cancelled or shown with a progress bar (:mod:`syft_magics.wire.chunks`).

Tensor bytes travel zero-copy: the sender hands ZeroMQ a view of the
tensor's memory, the receiver wraps the received frame with
``torch.frombuffer``. The protocol version is agreed once, in the handshake.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable, List, Optional, Sequence

import msgpack
import torch

from ..errors import ErrorCode as ErrorCode  # the codes of "err" replies, part of this vocabulary
from ..errors import ProtocolError, WireEnum
from . import limits, samehost

PROTOCOL_VERSION = 1


class Kind(WireEnum):
    """What a message is (its header's ``"t"``). Received headers carry the plain string, which
    compares and hashes equal to the member: ``header["t"] == Kind.OP``, ``HANDLERS[header["t"]]``."""

    # the client's
    HELLO = "hello"  # opens the handshake: protocol version, who is asking
    AUTH = "auth"  # the HMAC proof of the key
    OP = "op"  # run an op; result ids chosen by the client (or described back, ``"m"``)
    GET = "get"  # a value, as the owner's policy allows
    SEND = "send"  # store a tensor of the client's
    SEARCH = "search"  # pointers to the owner's objects by tag
    FREE = "free"  # forget objects of this session
    SYNC = "sync"  # answered when everything sent before has run
    PING = "ping"  # heartbeat
    BATCH = "batch"  # pipelined messages travelling together
    HOST = "host"  # the client's half of the same-host check (its memory-file probe)
    RELEASE = "release"  # regions of the worker's memory file the client has read
    TICKET = "ticket"  # ask the worker for a one-time ticket to receive a moved object (owner/tickets.py)
    MOVE = "move"  # send an object to another worker with its ticket (owner/moves.py)
    DELIVER = "deliver"  # a worker's courier hands over the moved object (owner/tickets.py)
    PUT = "put"  # declares a streamed upload (:mod:`syft_magics.wire.chunks`)
    CANCEL = "cancel"  # stops a stream and drops its partial state
    TOLD = "told"  # the client raised a failure to its user: the worker runs its ops again (owner/halts.py)
    # the worker's
    CHALLENGE = "challenge"
    WELCOME = "welcome"
    OK = "ok"
    ERR = "err"  # a failure: ``code`` (:class:`ErrorCode`), ``msg``, ``etype``
    PENDING = "pending"  # a get waits for the owner's decision
    APPROVED = "approved"  # the owner allowed a pending get: ask again
    VALUE = "value"
    PONG = "pong"
    # both
    CHUNK = "chunk"  # one byte range of a streamed tensor
    CREDIT = "credit"  # the bytes of a stream received so far: the sender may send more
    BYE = "bye"  # the client leaves, or the worker stops


EXT_REF, EXT_TENSOR, EXT_TUPLE, EXT_SLICE, EXT_ELLIPSIS, EXT_DTYPE, EXT_SIZE, EXT_COMPLEX, EXT_SHARED, \
    EXT_MEMORY_FORMAT = range(1, 11)
#: The memory layouts an op may name (``x.float(memory_format=...)``, ``torch.zeros_like(p,
#: memory_format=torch.preserve_format)`` in torch's optimizers), by name.
MEMORY_FORMATS = {str(f).split(".")[-1]: f for f in (torch.contiguous_format, torch.preserve_format,
                                                     torch.channels_last, torch.channels_last_3d)}
_FORMAT_NAMES = {f: name.encode() for name, f in MEMORY_FORMATS.items()}

#: The only dtypes that may cross the wire, by name.
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16, torch.bfloat16, torch.float32, torch.float64,
        torch.complex64, torch.complex128,
        torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
    )
}
_DTYPE_NAMES = {d: n for n, d in DTYPES.items()}
_ITEMSIZE = {d: d.itemsize for d in DTYPES.values()}

#: Tensors up to this size travel inside the header (one frame less to send and receive).
INLINE_MAX_BYTES = 16 << 10

#: Tensors smaller than this are copied out of the received frame, so the
#: frame's memory can be released at once; larger ones are used in place.
ZERO_COPY_MIN_BYTES = 1 << 16

ID_BYTES = 16


class Ref:
    """A pointer argument on the wire: the id of an object held by the worker."""

    __slots__ = ("id",)

    def __init__(self, id: bytes) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"Ref({self.id.hex()[:8]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


_new_ext = tuple.__new__


def ref_ext(oid: bytes) -> msgpack.ExtType:
    """The packed form of ``Ref(oid)``, for senders that cache it (a pointer's id never changes)."""
    return _new_ext(msgpack.ExtType, (EXT_REF, oid))  # (ExtType's own __new__ checks its types in Python)


def dtype_name(dtype: torch.dtype) -> str:
    """The wire name of ``dtype``; raises ``ProtocolError`` for a dtype we do not carry."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ProtocolError(f"dtype {dtype} cannot be sent (supported: {', '.join(DTYPES)})") from None


def tensor_buffer(t: torch.Tensor) -> Any:
    """A buffer sharing ``t``'s memory (a copy only if ``t`` is not contiguous on the CPU)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy()


def _small_bytes(t: torch.Tensor) -> bytes:
    """A copy of a small tensor's bytes, in row-major order."""
    try:
        return (t.detach() if t.requires_grad else t).numpy().tobytes()
    except (TypeError, RuntimeError):  # bfloat16, conjugate or negative views, other devices
        return bytes(tensor_buffer(t))


def tensor_from_buffer(buf: Any, dtype: torch.dtype, shape: Sequence[int], owned: bool = False) -> torch.Tensor:
    """Wrap a received frame (or bytes) as a tensor; zero-copy for large frames, and for
    ``owned`` buffers (used by nothing else)."""
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in shape):
        raise ProtocolError(f"bad tensor shape {list(shape)!r}")
    numel = math.prod(shape)
    view = getattr(buf, "buffer", buf)
    if not isinstance(view, memoryview):
        view = memoryview(view)
    itemsize = _ITEMSIZE[dtype]
    if view.nbytes != numel * itemsize:
        raise ProtocolError(
            f"tensor frame holds {view.nbytes} bytes, "
            f"but shape {list(shape)} of {dtype_name(dtype)} needs {numel * itemsize}"
        )
    if numel == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    if view.readonly:
        view = memoryview(bytearray(view))
    t = torch.frombuffer(view, dtype=dtype)
    if len(shape) != 1:  # (each torch call may give the GIL away: skip the ones not needed)
        t = t.view(tuple(shape))
    if view.nbytes < ZERO_COPY_MIN_BYTES and not owned:
        t = t.clone()
    return t


class Encoder:
    """Packs one header; tensors met on the way become frames in :attr:`frames`.

    One encoder per thread is reused by :func:`encode` (building a msgpack
    ``Packer`` costs more than packing a small header).
    """

    __slots__ = ("frames", "pool", "lend", "_packer")

    def __init__(self) -> None:
        self.frames: List[Any] = []
        #: where large tensors go instead of frames, for a peer on this host (``samehost.Pool``)
        self.pool: Optional[samehost.Pool] = None
        #: whether the pool may lend (rather than copy) a tensor's memory
        self.lend = True
        self._packer = msgpack.Packer(default=self._default, use_bin_type=True, strict_types=True)

    def pack(self, obj: Any) -> bytes:
        return self._packer.pack(obj)

    def _nested(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=self._default, use_bin_type=True, strict_types=True)

    def _default(self, obj: Any) -> Any:
        if isinstance(obj, WireEnum):  # every header's kind: first
            return obj._value_
        if isinstance(obj, Ref):
            return msgpack.ExtType(EXT_REF, obj.id)
        if isinstance(obj, torch.Tensor):
            name = dtype_name(obj.dtype)
            nbytes = obj.numel() * obj.element_size()
            if nbytes <= INLINE_MAX_BYTES:
                return msgpack.ExtType(EXT_TENSOR, msgpack.packb([_small_bytes(obj), name, list(obj.shape)]))
            if self.pool is not None and nbytes >= samehost.SHARED_MIN_BYTES:
                where = self.pool.put(tensor_buffer(obj), self.lend)
                if where is not None:
                    return msgpack.ExtType(EXT_SHARED, msgpack.packb([*where, name, list(obj.shape)]))
            self.frames.append(tensor_buffer(obj))
            return msgpack.ExtType(EXT_TENSOR, msgpack.packb([len(self.frames) - 1, name, list(obj.shape)]))
        if isinstance(obj, torch.Size):
            return msgpack.ExtType(EXT_SIZE, msgpack.packb(list(obj)))
        if isinstance(obj, tuple):
            return msgpack.ExtType(EXT_TUPLE, self._nested(list(obj)))
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, slice):
            return msgpack.ExtType(EXT_SLICE, self._nested([obj.start, obj.stop, obj.step]))
        if obj is Ellipsis:
            return msgpack.ExtType(EXT_ELLIPSIS, b"")
        if isinstance(obj, torch.dtype):
            return msgpack.ExtType(EXT_DTYPE, dtype_name(obj).encode())
        if isinstance(obj, torch.memory_format):
            return msgpack.ExtType(EXT_MEMORY_FORMAT, _FORMAT_NAMES[obj])
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, complex):
            return msgpack.ExtType(EXT_COMPLEX, msgpack.packb([obj.real, obj.imag]))
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, dict):
            return dict(obj)
        raise ProtocolError(f"cannot send a value of type {type(obj).__name__} to a worker")


_encoders = threading.local()


def encode(header: dict, pool: Optional[samehost.Pool] = None, lend: bool = True) -> List[Any]:
    """``[packed header, *tensor frames]``, ready to send (large frames zero-copy).

    With a ``pool`` (the peer was verified to run on this host), large tensors are lent to the
    peer or copied into the pool instead of frames, where it has room (:mod:`syft_magics.wire.samehost`);
    ``lend=False``: copied, never lent (the sender will not wait until the peer has read them).
    """
    enc = getattr(_encoders, "enc", None)
    if enc is None:
        enc = _encoders.enc = Encoder()
    enc.pool = pool
    enc.lend = lend
    kind = header.get("t")
    if type(kind) is Kind:  # packed as its plain string here rather than by the packer's fallback hook
        header = {**header, "t": kind._value_}
    try:
        packed = enc.pack(header)
        return [packed, *enc.frames]
    except BaseException:
        enc._packer.reset()
        if pool is not None:
            pool.release(pool.written)
        raise
    finally:
        enc.frames = []
        enc.pool = None


class _Decoder:
    """Unpacks one message. A class rather than closures: a closure cycle would keep the
    message's frames (possibly large) alive until the garbage collector runs."""

    __slots__ = ("frames", "resolve", "peer", "depth")

    def __init__(self, frames: Sequence[Any], resolve: Optional[Callable[[bytes], Any]],
                 peer: Optional[samehost.Peer] = None) -> None:
        self.frames = frames
        self.resolve = resolve
        self.peer = peer
        self.depth = 0

    def unpack(self, data: Any) -> Any:
        # each extension value holding msgpack is one more nested decode on the C stack
        if self.depth >= limits.MAX_EXT_DEPTH:
            raise ProtocolError(f"values nested more than {limits.MAX_EXT_DEPTH} deep")
        self.depth += 1
        try:
            return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=True,
                                   max_array_len=limits.MAX_ITEMS, max_map_len=limits.MAX_ITEMS)
        finally:
            self.depth -= 1

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == EXT_REF:
            if len(data) != ID_BYTES:
                raise ProtocolError(f"object id must be {ID_BYTES} bytes, got {len(data)}")
            return self.resolve(bytes(data)) if self.resolve else Ref(bytes(data))
        if code == EXT_TENSOR:
            frames = self.frames
            idx, dname, shape = _plain(data)
            if isinstance(shape, list) and len(shape) > limits.MAX_NDIM:
                raise ProtocolError(f"tensor has more than {limits.MAX_NDIM} dimensions")
            if type(idx) is bytes:
                if dname not in DTYPES or not isinstance(shape, list):
                    raise ProtocolError(f"bad inline tensor ({dname!r}, {shape!r})")
                return tensor_from_buffer(bytearray(idx), DTYPES[dname], shape, owned=True)
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(frames):
                raise ProtocolError(f"tensor refers to frame {idx!r}, message has {len(frames)}")
            if dname not in DTYPES:
                raise ProtocolError(f"unknown dtype {dname!r}")
            if not isinstance(shape, list):
                raise ProtocolError("tensor shape must be a list")
            return tensor_from_buffer(frames[idx], DTYPES[dname], shape)
        if code == EXT_SHARED:
            return self._shared(data)
        if code == EXT_TUPLE:
            return tuple(self.unpack(data))
        if code == EXT_SIZE:
            dims = _plain(data)
            if not isinstance(dims, list) or len(dims) > limits.MAX_NDIM or \
                    any(type(d) is not int or not 0 <= d < 1 << 62 for d in dims):
                raise ProtocolError("malformed message header: a size must be a list of at most 64 "
                                    "non-negative integers")
            return torch.Size(dims)
        if code == EXT_SLICE:
            start, stop, step = self.unpack(data)
            return slice(start, stop, step)
        if code == EXT_ELLIPSIS:
            return Ellipsis
        if code == EXT_DTYPE:
            name = bytes(data).decode()
            if name not in DTYPES:
                raise ProtocolError(f"unknown dtype {name!r}")
            return DTYPES[name]
        if code == EXT_MEMORY_FORMAT:
            fmt = MEMORY_FORMATS.get(bytes(data).decode(errors="replace"))
            if fmt is None:
                raise ProtocolError("unknown memory format")
            return fmt
        if code == EXT_COMPLEX:
            re, im = _plain(data)
            return complex(re, im)
        raise ProtocolError(f"unknown extension type {code}")


    def _shared(self, data: bytes) -> torch.Tensor:
        if self.peer is None:
            raise ProtocolError("a same-host tensor from a peer not verified to run on this host")
        fields = _plain(data)
        if not isinstance(fields, list) or len(fields) != 5:
            raise ProtocolError("bad same-host tensor reference")
        fd, ino, offset, dname, shape = fields
        if dname not in DTYPES or not isinstance(shape, list) or len(shape) > limits.MAX_NDIM or \
                any(type(n) is not int or n < 0 for n in shape):
            raise ProtocolError(f"bad same-host tensor ({dname!r}, {shape!r})")
        return self.peer.take(fd, ino, offset, DTYPES[dname], shape)


def _plain(data: bytes) -> Any:
    """The payload of an extension value that holds plain msgpack (nested extensions stay opaque)."""
    return msgpack.unpackb(data, raw=False, max_array_len=limits.MAX_NDIM + 3, max_map_len=0)


def decode(
    parts: Sequence[Any],
    resolve: Optional[Callable[[bytes], Any]] = None,
    peer: Optional[samehost.Peer] = None,
    max_header: int = limits.MAX_HEADER_BYTES,
) -> dict:
    """Unpack a multipart message into its header, tensors rebuilt from frames.

    ``resolve`` turns an object id into the object (the worker passes its store
    lookup); without it ids come back as :class:`Ref`. ``peer`` opens same-host
    tensors (only for a peer verified at the handshake). Anything off-schema, too
    large (``max_header`` bytes, :data:`limits.MAX_FRAMES`) or too deeply nested
    raises :class:`ProtocolError`.
    """
    if not parts:
        raise ProtocolError("empty message")
    if len(parts) > limits.MAX_FRAMES + 1:
        raise ProtocolError(f"message has {len(parts) - 1} frames, more than {limits.MAX_FRAMES}")
    head = _frame_bytes(parts[0])
    if len(head) > max_header:
        raise ProtocolError(f"message header of {len(head)} bytes exceeds the limit of {max_header}")
    return _header(_Decoder(parts[1:], resolve, peer).unpack, head, "malformed message header: ",
                   lambda exc: str(exc) or type(exc).__name__)


def decode_handshake(parts: Sequence[Any]) -> dict:
    """Unpack a message from a peer not yet authenticated: one small frame of plain msgpack,
    no extension values (nothing an unauthenticated peer sends reaches the tensor decoder)."""
    if len(parts) != 1:
        raise ProtocolError("a handshake message is one frame")
    head = _frame_bytes(parts[0])
    if len(head) > limits.MAX_HANDSHAKE_BYTES:
        raise ProtocolError(f"handshake message of {len(head)} bytes exceeds {limits.MAX_HANDSHAKE_BYTES}")

    def no_ext(code: int, data: bytes) -> Any:
        raise ProtocolError("a handshake message holds no extension values")

    def unpack(data: Any) -> Any:
        return msgpack.unpackb(data, ext_hook=no_ext, raw=False, strict_map_key=True)

    return _header(unpack, head, "malformed handshake: ", lambda exc: type(exc).__name__)


def peek(frame: Any, max_bytes: int = limits.MAX_HEADER_BYTES) -> dict:
    """The plain fields of a header whose extension values could not be (or must not be) decoded:
    each extension value reads as None; ``{}`` if the header is unreadable or over ``max_bytes``."""
    head = _frame_bytes(frame)
    if len(head) > max_bytes:
        return {}
    try:
        header = msgpack.unpackb(head, ext_hook=lambda code, data: None, raw=False)
    except Exception:
        return {}
    return header if isinstance(header, dict) else {}


def _frame_bytes(frame: Any) -> Any:
    return frame.bytes if hasattr(frame, "bytes") else frame


def _header(unpack: Callable[[Any], Any], head: Any, what: str, detail: Callable[[Exception], str]) -> dict:
    """``unpack(head)``, checked to be a message header; unpacking errors become ``ProtocolError(what + detail)``."""
    try:
        header = unpack(head)
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(what + detail(exc)) from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ProtocolError("message header must be a map with a string field 't'")
    return header


def field(header: dict, name: str, kind: type | tuple) -> Any:
    """``header[name]``, checked against ``kind``; a clear ``ProtocolError`` otherwise."""
    try:
        value = header[name]
    except KeyError:
        raise ProtocolError(f"'{header.get('t')}' message lacks field '{name}'") from None
    if not isinstance(value, kind):
        raise ProtocolError(f"field '{name}' of '{header.get('t')}' message has the wrong type "
                            f"({type(value).__name__})")
    return value
