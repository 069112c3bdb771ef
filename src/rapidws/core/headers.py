"""HTTP headers: a case-insensitive multi-map, and the header grammars of RFC 6455.

RFC 7230 section 3.2.6 defines tokens and quoted strings; RFC 6455 section 9.1
the ``Sec-WebSocket-Extensions`` grammar built from them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping

from ..exceptions import InvalidHandshake
from ..speedups import add_header
from ..speedups.pure_http import TOKEN_RE

__all__ = [
    "ExtensionHeader",
    "ExtensionParameter",
    "Headers",
    "HeadersLike",
    "parse_extensions",
    "parse_token_list",
    "serialize_extensions",
]


class Headers:
    """HTTP headers: names are case-insensitive; a name may repeat.

    ``headers["Name"]`` gives the value, or every value joined with ``", "``
    when the name repeats (RFC 7230 section 3.2.2), and raises ``KeyError`` when
    it is absent; :meth:`get_all` gives the values one by one. Setting an item
    replaces every value; :meth:`add` appends one.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: HeadersLike | None = None) -> None:
        # Names and values alternate in one flat list: a server keeps every
        # connection's headers, and a tuple per field would cost 56 bytes.
        self._items: list[str] = []
        # The values of each name, in order, keyed by the lower-cased name, so
        # that a lookup is one dict access: a handshake makes a dozen. A name
        # with one value (nearly all) maps to it, without a list. None after
        # compact(), until the next lookup rebuilds it. Every method that
        # changes _items changes it too; it never holds an empty or one-item
        # list.
        self._index: dict[str, str | list[str]] | None = {}
        if items is not None:
            self.update(items)

    def update(self, items: HeadersLike) -> None:
        """Append every header of ``items`` (a mapping, pairs or ``Headers``)."""
        if isinstance(items, Headers):
            # Its fields were checked when they were added.
            self._items.extend(items._items)
            index, theirs = self._index, items._index
            if index is None:
                return
            if theirs is None:
                self._index = None  # rebuilt by the next lookup
                return
            for key, values in theirs.items():
                mine = index.get(key)
                if mine is None:
                    index[key] = values if type(values) is str else list(values)
                else:
                    index[key] = values_of(mine) + values_of(values)
            return
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append a header, keeping any earlier one with the same name.

        Raises:
            ValueError: when the name is not a token or the value has control
                characters (CR and LF would let a value inject headers) or
                characters outside Latin-1.
        """
        add_header(self._items, self._index, name, value)

    @classmethod
    def _from_fields(cls, items: list[str], index: dict[str, str | list[str]] | None) -> Headers:
        # The fields as add_header() or parse_head() made them; without an
        # index, the first lookup builds it.
        headers = cls.__new__(cls)
        headers._items = items
        headers._index = index
        return headers

    def compact(self) -> None:
        """Free the lookup index until the next lookup needs it again.

        For headers kept long and rarely read, such as every open
        connection's handshake: it saves a dict per object, and the room
        the list of fields kept to grow.
        """
        self._index = None
        self._items = self._items[:]

    def _rebuild_index(self) -> dict[str, str | list[str]]:
        # After compact(): the fields are added again to a new object, rarely,
        # and its index is taken whole. Nothing changes here before that one
        # assignment, so that readers in other threads never see half of it.
        items = self._items
        fresh = Headers()
        for i in range(0, len(items), 2):
            fresh.add(items[i], items[i + 1])
        index = self._index = fresh._index
        assert index is not None
        return index

    def get_all(self, name: str) -> list[str]:
        """Return every value of the header ``name``, in order."""
        index = self._index if self._index is not None else self._rebuild_index()
        values = index.get(name.lower())
        return values_of(values)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the value of ``name`` as ``headers[name]`` does, or ``default``."""
        index = self._index if self._index is not None else self._rebuild_index()
        values = index.get(name.lower())
        if values is None:
            return default
        return values if type(values) is str else ", ".join(values)

    def items(self) -> list[tuple[str, str]]:
        """Return the headers as ``(name, value)`` pairs, in order."""
        pairs = iter(self._items)
        return list(zip(pairs, pairs, strict=True))

    def __getitem__(self, name: str) -> str:
        index = self._index if self._index is not None else self._rebuild_index()
        values = index.get(name.lower())
        if values is None:
            raise KeyError(name)
        return values if type(values) is str else ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        index = self._index if self._index is not None else self._rebuild_index()
        if index.pop(key, None) is not None:
            self._items = [x for n, v in self.items() if n.lower() != key for x in (n, v)]

    def __contains__(self, name: object) -> bool:
        index = self._index if self._index is not None else self._rebuild_index()
        return isinstance(name, str) and name.lower() in index

    def __iter__(self) -> Iterator[str]:
        return iter(self._items[::2])

    def __len__(self) -> int:
        return len(self._items) // 2

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self.items()] == [
            (n.lower(), v) for n, v in other.items()
        ]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def serialize(self) -> bytes:
        """Serialize the headers as HTTP/1.1 header lines, each ending in CRLF."""
        if not self._items:
            return b""
        pairs = iter(self._items)
        return ("\r\n".join(map(": ".join, zip(pairs, pairs, strict=True))) + "\r\n").encode(
            "latin-1"
        )


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


def index_of(headers: Headers) -> Mapping[str, str | list[str]]:
    """Return the lookup index of ``headers``, to read, never to change.

    It maps each lower-cased name to its value, or to the list of its values
    when the name repeats: a dozen lookups cost a dozen dict accesses, for a
    handshake's checks.
    """
    index = headers._index
    return index if index is not None else headers._rebuild_index()


def values_of(entry: str | list[str] | None) -> list[str]:
    """Return an entry of :func:`index_of` as a new list of its values."""
    return [] if entry is None else [entry] if type(entry) is str else list(entry)


_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS_RE = re.compile(r"[ \t]*")


def is_token(value: str) -> bool:
    """Tell whether ``value`` is an RFC 7230 token."""
    return TOKEN_RE.fullmatch(value) is not None


def parse_token_list(values: Iterable[str], *, lower: bool = False) -> list[str]:
    """Parse comma-separated token lists (``Connection``, ``Upgrade``, subprotocols).

    Empty elements are skipped, as RFC 7230 section 7 requires. An element with
    a protocol version (``websocket/13``) is kept whole.

    Raises:
        InvalidHandshake: when an element is not a token.
    """
    tokens: list[str] = []
    for value in values:
        for element in value.split(","):
            token = element.strip(" \t")
            if not token:
                continue
            if not all(is_token(part) for part in token.split("/", 1)):
                raise InvalidHandshake(f"invalid token {token!r} in header value {value!r}")
            tokens.append(token.lower() if lower else token)
    return tokens


ExtensionParameter = tuple[str, str | None]
ExtensionHeader = tuple[str, list[ExtensionParameter]]


def parse_extensions(values: Iterable[str]) -> list[ExtensionHeader]:
    """Parse ``Sec-WebSocket-Extensions`` values into ``(name, parameters)`` offers.

    ``"permessage-deflate; client_max_window_bits, x-foo; a=1"`` gives
    ``[("permessage-deflate", [("client_max_window_bits", None)]), ("x-foo",
    [("a", "1")])]``. A quoted parameter value is unquoted; it must then be a
    token (RFC 6455 section 9.1).

    Raises:
        InvalidHandshake: when a value does not follow the grammar.
    """
    result: list[ExtensionHeader] = []
    for value in values:
        cached = len(value) <= _CACHED_VALUE_LENGTH
        offers = _parsed_offers(value) if cached else _parse_offers(value)
        # Lists of their own: the caller may change them.
        result.extend((name, list(params)) for name, params in offers)
    return result


def _parse_offers(value: str) -> tuple[tuple[str, tuple[ExtensionParameter, ...]], ...]:
    offers: list[tuple[str, tuple[ExtensionParameter, ...]]] = []
    pos = _skip(value, 0)
    while pos < len(value):
        name, pos = _token(value, pos)
        params: list[ExtensionParameter] = []
        pos = _skip(value, pos)
        while pos < len(value) and value[pos] == ";":
            pos = _skip(value, pos + 1)
            pname, pos = _token(value, pos)
            pvalue: str | None = None
            pos = _skip(value, pos)
            if pos < len(value) and value[pos] == "=":
                pos = _skip(value, pos + 1)
                pvalue, pos = _param_value(value, pos)
                pos = _skip(value, pos)
            params.append((pname, pvalue))
        offers.append((name, tuple(params)))
        if pos < len(value):
            if value[pos] != ",":
                raise InvalidHandshake(f"invalid extension header {value!r}")
            pos = _skip(value, pos + 1)
    return tuple(offers)


# Browsers send the same few offers ("permessage-deflate;
# client_max_window_bits"): each is parsed once. Bounded in entries and in
# size, as the peer chooses the values; errors are not kept.
_CACHED_VALUE_LENGTH = 256
_parsed_offers = functools.lru_cache(maxsize=64)(_parse_offers)


def _skip(value: str, pos: int) -> int:
    match = _OWS_RE.match(value, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _token(value: str, pos: int) -> tuple[str, int]:
    match = TOKEN_RE.match(value, pos)
    if match is None:
        raise InvalidHandshake(f"expected a token at position {pos} of {value!r}")
    return match.group(), match.end()


def _param_value(value: str, pos: int) -> tuple[str, int]:
    if value.startswith('"', pos):
        match = _QUOTED_RE.match(value, pos)
        if match is None:
            raise InvalidHandshake(f"unterminated quoted string in {value!r}")
        unquoted = re.sub(r"\\(.)", r"\1", match.group(1))
        if not is_token(unquoted):
            raise InvalidHandshake(f"invalid quoted parameter value in {value!r}")
        return unquoted, match.end()
    return _token(value, pos)


def serialize_extensions(extensions: Iterable[ExtensionHeader]) -> str:
    """Serialize ``(name, parameters)`` pairs as a ``Sec-WebSocket-Extensions`` value."""
    return ", ".join(
        "; ".join([name, *(p if v is None else f"{p}={v}" for p, v in params)])
        for name, params in extensions
    )
