"""The keys of the opening handshake (RFC 6455 section 4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

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


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` is the base64 encoding of exactly 16 bytes."""
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False
