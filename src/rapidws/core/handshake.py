"""The keys of the opening handshake (RFC 6455 section 4)."""

from __future__ import annotations

import base64
import hashlib
import os
import re

__all__ = ["GUID", "accept_key", "generate_key", "is_valid_key"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def generate_key() -> str:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value that answers ``key``.

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


# What base64 of exactly 16 bytes looks like: 22 characters, 2 of padding.
_KEY_RE = re.compile(r"[A-Za-z0-9+/]{22}==")


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` is the base64 encoding of exactly 16 bytes."""
    return _KEY_RE.fullmatch(key) is not None
