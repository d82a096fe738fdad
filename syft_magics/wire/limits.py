"""Bounds on what a peer can make a worker decode, keep or echo.

A worker faces untrusted peers: every decode, table and string that a peer can make
grow has a bound here, so that no message, however crafted, can exhaust the stack,
the memory or the log. Before authentication the bounds are tight (a hello is a
few hundred bytes and holds no extension values); after it they still cap nesting
and counts, since an authenticated client is not trusted either.
"""
from __future__ import annotations

import unicodedata
from typing import Any

#: Largest header (first frame) of a message sent before authentication, in bytes.
MAX_HANDSHAKE_BYTES = 1024
#: Largest header of an authenticated client's message, in bytes (a batch of pipelined
#: ops travels as one header; tensors above 16 KiB travel as frames, not in it).
MAX_HEADER_BYTES = 16 << 20
#: Most frames in one message (a batch of pipelined sends carries one per tensor).
MAX_FRAMES = 1 << 16
#: Deepest nesting of extension values (tuples in tuples, slices...): each level is a
#: nested decode on the C stack, and a few hundred levels crash the process.
MAX_EXT_DEPTH = 32
#: Most elements of one array or map in a header.
MAX_ITEMS = 1 << 20
#: Most dimensions of a tensor or size on the wire (torch allows 64 at most anyway).
MAX_NDIM = 64
#: Longest client name or host name a hello may give.
MAX_NAME_CHARS = 64
#: Longest op name or tag.
MAX_OP_NAME_CHARS = 128
#: Most tags on one sent object, or in one search.
MAX_TAGS = 32
#: Handshakes (hello without auth yet) kept at once; the oldest is dropped beyond it.
MAX_PENDING_HANDSHAKES = 64
#: Replies queued for one peer that does not read them; beyond, ZeroMQ drops them.
MAX_QUEUED_REPLIES = 50_000
#: Messages received from one peer and not yet served; beyond, TCP slows the peer down.
MAX_QUEUED_REQUESTS = 10_000
#: Seconds a peer that said hello has to authenticate.
HANDSHAKE_TIMEOUT = 5.0
#: Sessions a worker serves at once, and sessions of one invited client (its key): quotas are per session, and an
#: invitation limited to 16 MB held 300 MB through 20 sessions (helper-56). Clients of the shared key have no identity
#: of their own: only the first bound applies to them.
MAX_SESSIONS = 256
MAX_SESSIONS_PER_CLIENT = 8
#: A TCP connection that carries no session, handshake or courier is cut after this long (s) ...
UNBOUND_SECONDS = 10.0
#: ... and at once beyond this many such connections (the oldest first): 1,100 idle connections of a peer without the
#: key held every descriptor of a worker (limit 1,024), and no client could connect (helper-56).
MAX_UNBOUND = 128
#: Longest error text sent to a client or written to a log line, in characters.
MAX_ECHO_CHARS = 500
#: Streamed tensors (wire/chunks.py): smallest and largest chunk a peer may declare, most chunks in flight.
MIN_CHUNK_BYTES = 64 << 10
MAX_CHUNK_BYTES = 64 << 20
MAX_CHUNK_WINDOW = 64
#: Streamed uploads one session may have in progress at once, and the bytes they may declare together
#: (each is allocated whole when declared: a peer never makes the worker hold more than it declared).
MAX_UPLOADS = 4
MAX_UPLOAD_BYTES = 16 << 30
#: Streamed downloads one session may have in progress at once (beyond, a value goes as one frame).
MAX_DOWNLOADS = 4
#: A stream with no progress for this long is dropped and its memory freed (a peer that went quiet).
STREAM_IDLE_SECONDS = 60.0


def clip(text: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how much was cut, so a peer's huge
    string is never echoed whole into a reply, a log or the owner's panel; its control and format characters
    escaped (:func:`printable`)."""
    s = text if isinstance(text, str) else str(text)
    if len(s) > limit:
        s = f"{s[:limit]}… ({len(s) - limit} more characters)"
    return printable(s)


def printable(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable escaped as Python writes it (``\\x1b``, ``\\n``,
    ``\\u202e``), but those in ``keep``: a peer's string (an op name, a keyword, a device torch echoes in its error)
    printed on the owner's console could move the cursor and write a forged request over the real one
    (helper-50)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


#: Characters Python counts as printable that show as nothing (a Braille blank, Hangul fillers): a tag padded with
#: them pushed the owner's data out of a request's view (helper-51).
_BLANK = frozenset("\u2800\u3164\u115f\u1160\uffa0")


def is_visible(text: str) -> bool:
    """Whether every character of ``text`` shows: printable, none of :data:`_BLANK`, and no more than two combining
    marks on one letter (more stack over the text around them)."""
    if not text.isprintable():
        return False
    marks = 0
    for c in text:
        if c in _BLANK:
            return False
        marks = marks + 1 if unicodedata.category(c).startswith("M") else 0
        if marks > 2:
            return False
    return True


def is_name(value: Any) -> bool:
    """Whether ``value`` is a name a peer may give (a client's, a host's, a move's target or source): a string of at
    most :data:`MAX_NAME_CHARS` visible characters (:func:`is_visible`). Names reach the owner's requests, console
    and panels: a control or format character (an escape sequence, a bidi override) made the move an owner approved
    read as going to Carol's address while it went to another (helper-49)."""
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS and is_visible(value)
