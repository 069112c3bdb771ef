"""The keys of the opening handshake (RFC 6455 section 4)."""

from __future__ import annotations

import base64
import os
import re

from ..speedups import accept_key
from ..speedups.pure_handshake import GUID

__all__ = ["GUID", "accept_key", "generate_key", "is_valid_key"]


def generate_key() -> str:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode()


# What base64 of exactly 16 bytes looks like: 22 characters, 2 of padding.
_KEY_RE = re.compile(r"[A-Za-z0-9+/]{22}==")


def is_valid_key(key: str) -> bool:
    """Tell whether ``key`` is the base64 encoding of exactly 16 bytes."""
    return _KEY_RE.fullmatch(key) is not None
