"""Authenticating a link: a shared key from the connection file, proven by HMAC.

The worker sends a fresh nonce; the client answers with
``HMAC-SHA256(key, "syft-auth" | nonce | session id)``. Only then does the
worker run anything for that session. The key never crosses the wire.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets


def new_key() -> str:
    """A new random key, hex-encoded (256 bits)."""
    return secrets.token_hex(32)


def new_nonce() -> bytes:
    return secrets.token_bytes(16)


def proof(key: str, nonce: bytes, session: bytes) -> bytes:
    """What a client sends to prove it knows ``key``."""
    return hmac.new(key.encode(), b"syft-auth\x00" + nonce + session, hashlib.sha256).digest()


def verify(key: str, nonce: bytes, session: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(proof(key, nonce, session), mac)
