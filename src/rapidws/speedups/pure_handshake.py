"""The pure-Python twin of the opening handshake's string work.

:func:`parse_request_line` reads a request line, :func:`accept_key` answers a
key and :func:`serialize_head` writes a request or response head. With the
header fields (:mod:`~rapidws.speedups.pure_http`) they were most of what a
server spends per handshake in Python, hence a C twin (``_handshake.c``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from ..exceptions import InvalidRequest
from .pure_http import TOKEN_RE

__all__ = ["GUID", "accept_key", "parse_request_line", "parse_version", "serialize_head"]

#: The GUID that RFC 6455 section 1.3 appends to the key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_ABSOLUTE_RE = re.compile(r"(?i)(wss?|https?)://[^/?#]+")
_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")


def accept_key(key: str, /) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value that answers ``key``.

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def parse_version(text: str) -> tuple[int, int] | None:
    """Parse ``HTTP/1.1`` into ``(1, 1)``; ``None`` when it is not a version."""
    if text == "HTTP/1.1":
        return (1, 1)  # nearly always: one tuple for every request, not one each
    match = _VERSION_RE.fullmatch(text)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def parse_request_line(line: bytes, /) -> tuple[str, str, tuple[int, int]]:
    """Parse a request line into method, target and version.

    Raises:
        InvalidRequest: when the line is malformed (400), or not HTTP/1 (505).
    """
    parts = line.decode("latin-1").split(" ")
    version = parse_version(parts[2]) if len(parts) == 3 else None
    if version is None or TOKEN_RE.fullmatch(parts[0]) is None or not parts[1]:
        raise InvalidRequest(f"invalid request line: {line[:100]!r}")
    if version[0] != 1:
        raise InvalidRequest(f"HTTP/{version[0]}.{version[1]} is not supported", 505)
    target = parts[1]
    if not target.isprintable() or not target.isascii():
        raise InvalidRequest("invalid request target")
    # Origin-form ("/chat?x=1"), or absolute-form with a web scheme (RFC 7230
    # 5.3); anything else ("*", "x") has no WebSocket meaning.
    if not target.startswith("/") and not _ABSOLUTE_RE.match(target):
        raise InvalidRequest(f"invalid request target {target[:100]!r}")
    return parts[0], target, version


def serialize_head(start_line: str, items: list[str], body: bytes, /) -> bytes:
    """Write a head: the start line, the fields (names and values alternating), a blank line.

    Then ``body``. The text is Latin-1.

    Raises:
        UnicodeEncodeError: a character is outside Latin-1.
    """
    pairs = iter(items)
    fields = "".join([f"{name}: {value}\r\n" for name, value in zip(pairs, pairs, strict=True)])
    return f"{start_line}\r\n{fields}\r\n".encode("latin-1") + body
