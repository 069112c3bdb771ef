"""The pure-Python twin of the header-field loops of the opening handshake.

:func:`add_header` is the body of :meth:`rapidws.core.headers.Headers.add`, and
:func:`parse_head` reads a request's or response's head into the same fields:
together they were a third of the server's cost per handshake, hence a C twin.

A server keeps every connection's handshake, and the same dozen names (and
many values: host, origin, user agent) come in each. Both are checked once and
then shared: :data:`HEADER_NAMES` maps a name found to be a token to itself and
its lower-cased form, :data:`HEADER_VALUES` maps a value to itself. Both stop
growing when full, so that a peer sending made-up names or values costs a
bounded amount of memory. Values are shared for the headers in
:data:`SHARED_VALUE_NAMES` only: never credentials (``Authorization``,
``Cookie``, tokens in subprotocols), which must not outlive their connection in
a global.
"""

from __future__ import annotations

import re

from ..exceptions import InvalidRequest, SecurityError

__all__ = [
    "HEADER_NAMES",
    "HEADER_NAMES_MAX",
    "HEADER_VALUES",
    "HEADER_VALUES_MAX",
    "SHARED_NAME_LENGTH",
    "SHARED_VALUE_LENGTH",
    "SHARED_VALUE_NAMES",
    "add_header",
    "parse_head",
]

# RFC 7230 section 3.2.6.
TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# Field values: visible characters, spaces, tabs and obs-text (RFC 7230 3.2).
_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

_NO_LIMIT = -1

HEADER_NAMES: dict[str, tuple[str, str]] = {}
HEADER_NAMES_MAX = 1024
SHARED_NAME_LENGTH = 64
HEADER_VALUES: dict[str, str] = {}
HEADER_VALUES_MAX = 1024
SHARED_VALUE_LENGTH = 256
SHARED_VALUE_NAMES = frozenset(
    {
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "host",
        "origin",
        "pragma",
        "sec-websocket-extensions",
        "sec-websocket-version",
        "server",
        "upgrade",
        "user-agent",
    }
)


def add_header(
    items: list[str], index: dict[str, str | list[str]] | None, name: str, value: str
) -> None:
    """Append a header to ``items`` (names and values alternating) and to ``index``.

    ``index`` maps each lower-cased name to its value, or to its values when
    the name repeats; ``None`` skips it.

    Raises:
        ValueError: when the name is not a token or the value has control
            characters (CR and LF would let a value inject headers) or
            characters outside Latin-1.
    """
    checked = HEADER_NAMES.get(name)
    if checked is None:
        if TOKEN_RE.fullmatch(name) is None:
            raise ValueError(f"invalid header name: {name!r}")
        key = name.lower()
        # Plain str only: a subclass would reach every later header.
        if (
            len(HEADER_NAMES) < HEADER_NAMES_MAX
            and len(name) <= SHARED_NAME_LENGTH
            and type(name) is str
        ):
            HEADER_NAMES[name] = (name, key)
    else:
        name, key = checked  # the same string object for every connection
    if _VALUE_RE.fullmatch(value) is None:
        raise ValueError(f"invalid value for header {name}: {value!r}")
    shared = HEADER_VALUES.get(value)
    if shared is not None:
        value = shared
    elif (
        key in SHARED_VALUE_NAMES
        and len(value) <= SHARED_VALUE_LENGTH
        and len(HEADER_VALUES) < HEADER_VALUES_MAX
        and type(value) is str
    ):
        HEADER_VALUES[value] = value
    items.append(name)
    items.append(value)
    if index is None:
        return
    values = index.get(key)
    if values is None:
        index[key] = value
    elif isinstance(values, str):
        index[key] = [values, value]
    else:
        values.append(value)


def parse_head(
    data: bytes,
    end: int,
    max_line: float | None,
    max_headers: float | None,
    max_header_bytes: float | None,
    /,
) -> tuple[bytes, list[str], dict[str, str | list[str]]]:
    """Read the head ``data[:end]``: a start line and header lines, each ending in CRLF.

    ``data[end:end + 4]`` is the CRLF CRLF that ends the head. Returns the start
    line and the fields as :func:`add_header` makes them: names and values
    alternating, and the index. Each limit is a number, or ``None`` (or a
    negative one) for none: ``max_line`` the longest line, ``max_headers`` the
    most fields, ``max_header_bytes`` the largest head, its last CRLF included.

    Raises:
        SecurityError: a limit is exceeded (414 for the start line, 431 else).
        InvalidRequest: a line is not a header field (400).
    """
    if not 0 <= end <= len(data):
        raise ValueError("parse_head() end is out of range")
    max_line = _NO_LIMIT if max_line is None else max_line
    max_headers = _NO_LIMIT if max_headers is None else max_headers
    if max_header_bytes is not None and 0 <= max_header_bytes < end + 2:
        raise SecurityError("HTTP head is too large")
    # Latin-1 maps each byte to one character, so lengths are still in bytes.
    lines = data[:end].decode("latin-1").split("\r\n")
    if 0 <= max_line < len(lines[0]):
        raise SecurityError("request line is too long", 414)
    if 0 <= max_headers < len(lines) - 1:
        raise SecurityError("too many header fields")
    items: list[str] = []
    index: dict[str, str | list[str]] = {}
    for line in lines[1:]:
        if 0 <= max_line < len(line):
            raise SecurityError("header line is too long")
        name, colon, value = line.partition(":")
        if not colon:
            raise InvalidRequest(f"invalid header line: {line.encode('latin-1')[:64]!r}")
        try:
            # Checks the name, then the value: the only check of each.
            add_header(items, index, name, value.strip(" \t"))
        except ValueError:
            if TOKEN_RE.fullmatch(name) is None:
                # Also catches obs-fold (a line starting with a space):
                # RFC 7230 3.2.4.
                raise InvalidRequest(f"invalid header name: {name[:64]!r}") from None
            raise InvalidRequest(f"invalid value for header {name}") from None
    return lines[0].encode("latin-1"), items, index
