"""The server side of the engine: reading and answering the opening handshake.

The flow, for any I/O layer::

    protocol.receive_data(data)          # until a Request event comes out
    response = hook(request)             # optional: a hook may answer instead
    response = response or protocol.accept(request)
    protocol.send_response(response)     # 101 opens; anything else closes...

...unless the response says ``Connection: keep-alive`` and the request allows
it (:func:`~rapidws.core.http11.keeps_alive`): then the engine reads the next
request on the same connection, and the next Request event comes out (plain
HTTP beside WebSocket routes: a page, its script, then the upgrade). Requests
are handed over one at a time, in order: bytes of a pipelined request wait
until the one before is answered. A request body (``Content-Length`` or
chunked) is read whole, within ``max_body_size``, before its request event.

A request too malformed to read (bad request line, oversized headers) is
answered by the engine itself, with 400, 414 or 431, before any event. A
readable request that is not a valid WebSocket handshake is answered by
:meth:`ServerProtocol.accept` with the right status, so that hooks may still
answer plain HTTP requests (a health check) on the same port.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping, Sequence

from ..exceptions import InvalidHandshake, InvalidRequest
from ..speedups import add_header
from ..version import __version__
from .extensions.base import Extension, ServerExtensionFactory
from .handshake import accept_key, is_valid_key
from .headers import (
    ExtensionHeader,
    Headers,
    index_of,
    parse_extensions,
    parse_token_list,
    serialize_extensions,
    values_of,
)
from .http11 import BodyReader, HeadReader, Request, Response, keeps_alive, parse_request_line
from .limits import MAX_BODY_SIZE, MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, MAX_MESSAGE_SIZE
from .protocol import CLOSED, CONNECTING, OPEN, Protocol

__all__ = ["SelectSubprotocol", "ServerProtocol", "wants_upgrade"]

#: A callable choosing the subprotocol: it gets the request and the subprotocols
#: the client offered, and returns one of them or ``None``.
SelectSubprotocol = Callable[[Request, Sequence[str]], "str | None"]

SERVER = f"rapidws/{__version__}"

# The fixed fields of every 101 response (valid: they are added unchecked).
_UPGRADE_FIELDS = ("Upgrade", "websocket", "Connection", "Upgrade")


class ServerProtocol(Protocol):
    """The server side of a WebSocket connection, from the opening handshake on.

    Args:
        origins: the ``Origin`` values to accept; ``None`` accepts any. Entries may
            use ``*`` wildcards (``https://*.example.com``); include ``None`` to
            accept clients that send no ``Origin`` (non-browser clients).
        subprotocols: the supported subprotocols, in order of preference.
        select_subprotocol: a callable that chooses the subprotocol instead.
        extensions: the extension factories, in order of preference.
        max_message_size: see :class:`~rapidws.core.protocol.Protocol`.
        max_frame_size: see :class:`~rapidws.core.protocol.Protocol`.
        auto_pong: see :class:`~rapidws.core.protocol.Protocol` (a testing knob).
        max_line: the longest request or header line, in bytes.
        max_headers: the most header fields.
        max_header_bytes: the largest request head, in bytes.
        max_body_size: the largest body of a plain HTTP request, in bytes.
        server_header: the value of the ``Server`` header; ``None`` omits it.
    """

    __slots__ = (
        "_body_reader",
        "_head_limits",
        "_origins",
        "_reader",
        "available_subprotocols",
        "extension_factories",
        "handshake_exc",
        "max_body_size",
        "select_subprotocol",
        "server_header",
    )

    def __init__(
        self,
        *,
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        max_message_size: int | None = MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        auto_pong: bool = True,
        max_line: int | None = MAX_LINE,
        max_headers: int | None = MAX_HEADERS,
        max_header_bytes: int | None = MAX_HEADER_BYTES,
        max_body_size: int | None = MAX_BODY_SIZE,
        server_header: str | None = SERVER,
    ) -> None:
        super().__init__(
            is_client=False,
            state=CONNECTING,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            auto_pong=auto_pong,
        )
        self._origins = None if origins is None else [_origin_matcher(o) for o in origins]
        self.available_subprotocols = tuple(subprotocols or ())
        self.select_subprotocol = select_subprotocol
        self.extension_factories = tuple(extensions)
        self.server_header = server_header
        self._head_limits = (max_line, max_headers, max_header_bytes)
        self._reader: HeadReader | None = HeadReader(
            max_line=max_line, max_headers=max_headers, max_header_bytes=max_header_bytes
        )
        self._body_reader: BodyReader | None = None
        #: The largest request body, in bytes (413 above it); ``None`` for any.
        self.max_body_size = max_body_size
        #: Why the handshake failed, when it did.
        self.handshake_exc: InvalidHandshake | None = None

    def _receive_handshake(self, data: bytes) -> None:
        if self._body_reader is not None:
            self._receive_body(data)
            return
        if self._reader is None:
            # Bytes after the request (the client did not wait for the 101,
            # or pipelined its next request): kept for later.
            self._buf += data
            return
        try:
            head = self._reader.feed(data)
            if head is None:
                return
            start_line, headers, rest = head
            method, target, version = parse_request_line(start_line)
            self._reader = None
            request = Request(method, target, headers, version)
            index = index_of(headers)
            if ("content-length" in index or "transfer-encoding" in index) and not wants_upgrade(
                request
            ):
                # A handshake has no body: accept() refuses one that says it has.
                self._body_reader = BodyReader.for_request(request, self.max_body_size)
        except InvalidRequest as exc:
            self._refuse(exc)
            return
        self.request = request
        if self._body_reader is None:
            self._buf += rest
            self._events.append(request)
            return
        # RFC 9110 section 10.1.1: a client that asked waits for this before
        # sending the body.
        if "100-continue" in (headers.get("Expect") or "").lower() and version >= (1, 1):
            self._out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._receive_body(rest)

    def _receive_body(self, data: bytes) -> None:
        reader = self._body_reader
        assert reader is not None and self.request is not None
        try:
            done = reader.feed(data)
        except InvalidRequest as exc:
            self._refuse(exc)
            return
        if done is not None:
            self._body_reader = None
            self.request.body, rest = done
            self._buf += rest
            self._events.append(self.request)

    def _refuse(self, exc: InvalidRequest) -> None:
        """Answer a request that cannot be read, and close."""
        self._reader = self._body_reader = None
        self.handshake_exc = exc
        self.send_response(self.reject(exc.status, str(exc)))

    def accept(self, request: Request) -> Response:
        """Check the handshake request and build the response that answers it.

        Negotiates the subprotocol and the extensions on the way. The response
        is 101 when the request is a valid WebSocket handshake, else the error
        response for it: 400, 403 (origin), 405 (method) or 426 (upgrade or
        version). Send it with :meth:`send_response`.
        """
        try:
            key = self._check_request(request)
            items = self._negotiate(request)
        except InvalidRequest as exc:
            response = self._refusal(exc, upgrade=True)
            if exc.status == 405:
                response.headers["Allow"] = "GET"
            return response
        items += _UPGRADE_FIELDS
        items += ("Sec-WebSocket-Accept", accept_key(key))
        # Checked as they were added; indexed when first read (rarely).
        return Response(101, headers=Headers._from_fields(items, None))

    def _refusal(self, exc: InvalidRequest, *, upgrade: bool) -> Response:
        """Keep why the handshake failed and build the refusal that says it.

        A 426 names what to upgrade to (RFC 9110 section 15.5.22): the
        version, and ``Upgrade: websocket`` when ``upgrade`` (HTTP/1.1; an
        HTTP/2 extended CONNECT has no Upgrade field, RFC 8441 section 4).
        """
        self.handshake_exc = exc
        response = self.reject(exc.status, str(exc))
        if exc.status == 426:
            if upgrade:
                response.headers["Upgrade"] = "websocket"
            response.headers["Sec-WebSocket-Version"] = "13"
        return response

    def reject(self, status: int, text: str, headers: Headers | None = None) -> Response:
        """Build a response that refuses the handshake with a plain-text reason."""
        response = Response(status, f"Failed to open a WebSocket connection: {text}.\n", headers)
        response.headers["Connection"] = "close"
        if self.server_header is not None:
            response.headers["Server"] = self.server_header
        return response

    def send_response(self, response: Response) -> None:
        """Send the response to the request: a 101 opens the connection, others close it.

        Unless the response keeps the connection alive
        (:func:`~rapidws.core.http11.keeps_alive`): then the next request is
        read. The answer to a ``HEAD`` request goes without its body.
        """
        if self.state is not CONNECTING or self.response is not None:
            raise ValueError("the handshake response was sent already")
        request = self.request
        self.response = response
        head_only = request is not None and request.method == "HEAD"
        self._out.append(response.serialize(head_only=head_only))
        if request is not None and self._reader is None and keeps_alive(request, response):
            self._next_request()
            return
        if response.status == 101:
            self.state = OPEN
            # Kept as long as the connection, read rarely if ever.
            response.headers.compact()
            if self.request is not None:
                self.request.headers.compact()
            # Frames that came with the request are parsed now.
            if self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                self.receive_data(data)
        else:
            self.send_eof()
            self.state = CLOSED
            self._discard = True
            self._buf.clear()

    def _next_request(self) -> None:
        # Back to reading a request head; the bytes of a pipelined request may
        # bring it at once.
        self.response = None
        self.handshake_exc = None
        max_line, max_headers, max_header_bytes = self._head_limits
        self._reader = HeadReader(
            max_line=max_line, max_headers=max_headers, max_header_bytes=max_header_bytes
        )
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._receive_handshake(data)

    def _check_request(self, request: Request) -> str:
        """Validate the request (RFC 6455 section 4.2.1); return its key."""
        index = index_of(request.headers)
        get = index.get
        if request.version < (1, 1):
            raise InvalidRequest("HTTP/1.1 or later is required")
        if request.method != "GET":
            raise InvalidRequest(f"method {request.method} is not allowed, use GET", 405)
        if type(get("host")) is not str:
            raise InvalidRequest("missing or repeated Host header")
        if "transfer-encoding" in index or get("content-length", "0") != "0":
            raise InvalidRequest("a handshake request cannot have a body")
        # Both read before either is checked: a malformed list is a 400
        # whatever the other says.
        upgrade = _has_token(index, "upgrade", "websocket")
        connection = _has_token(index, "connection", "upgrade")
        if not upgrade:
            raise InvalidRequest("missing Upgrade: websocket header", 426)
        if not connection:
            raise InvalidRequest("missing Connection: Upgrade header", 426)
        version = get("sec-websocket-version")
        if version != "13":
            if version is None:
                raise InvalidRequest("missing Sec-WebSocket-Version header", 426)
            version = _joined(version)
            if version.strip() != "13":
                raise InvalidRequest(f"unsupported Sec-WebSocket-Version {version!r}, use 13", 426)
        key = get("sec-websocket-key")
        if key is None:
            raise InvalidRequest("missing Sec-WebSocket-Key header")
        if type(key) is not str or not is_valid_key(key):
            raise InvalidRequest(f"invalid Sec-WebSocket-Key header {_joined(key)!r}")
        if self._origins is not None:
            origin = request.headers.get("Origin")
            if not any(match(origin) for match in self._origins):
                raise InvalidRequest(f"origin {origin!r} is not allowed", 403)
        return key

    def _negotiate(self, request: Request) -> list[str]:
        """Choose the subprotocol and extensions; return the response's first fields."""
        items = list(_server_fields(self.server_header))
        # Most clients offer neither: then there is nothing to parse.
        index = index_of(request.headers)
        protocols = values_of(index.get("sec-websocket-protocol"))
        offers = values_of(index.get("sec-websocket-extensions"))
        accepted: list[ExtensionHeader] = []
        extensions: list[Extension] = []
        try:
            offered = parse_token_list(protocols) if protocols else []
            if offers:
                accepted, extensions = self._negotiate_extensions(parse_extensions(offers))
        except InvalidHandshake as exc:
            raise InvalidRequest(str(exc)) from None
        subprotocol = self._choose_subprotocol(request, offered)
        if subprotocol is not None:
            add_header(items, None, "Sec-WebSocket-Protocol", subprotocol)
        if accepted:
            add_header(items, None, "Sec-WebSocket-Extensions", serialize_extensions(accepted))
        self.subprotocol = subprotocol
        if extensions or self.extensions:  # else nothing changes
            self._use_extensions(extensions)
        return items

    def _choose_subprotocol(self, request: Request, offered: list[str]) -> str | None:
        if self.select_subprotocol is not None:
            chosen = self.select_subprotocol(request, offered)
            if chosen is not None and chosen not in offered:
                raise ValueError(f"select_subprotocol chose {chosen!r}, which was not offered")
            return chosen
        if not self.available_subprotocols or not offered:
            return None
        for subprotocol in self.available_subprotocols:
            if subprotocol in offered:
                return subprotocol
        raise InvalidRequest(f"none of the subprotocols {', '.join(offered)} is supported")

    def _negotiate_extensions(
        self, offers: list[ExtensionHeader]
    ) -> tuple[list[ExtensionHeader], list[Extension]]:
        # RFC 6455 section 9.1: the client's order is its preference; accept at
        # most one offer of each extension.
        accepted: list[ExtensionHeader] = []
        extensions: list[Extension] = []
        used: set[str] = set()
        for name, params in offers:
            if name in used:
                continue
            for factory in self.extension_factories:
                if factory.name != name:
                    continue
                result = factory.negotiate(params)
                if result is not None:
                    answer, extension = result
                    accepted.append((name, answer))
                    extensions.append(extension)
                    used.add(name)
                break
        return accepted, extensions


def wants_upgrade(request: Request) -> bool:
    """Tell whether ``request`` asks to upgrade to WebSocket, valid or not.

    A router uses it to tell a WebSocket handshake from a plain HTTP request
    on the same path (RFC 6455 section 4.1: ``Upgrade: websocket`` among the
    ``Upgrade`` tokens); :meth:`ServerProtocol.accept` then checks the rest.
    A malformed ``Upgrade`` list counts as an upgrade, for ``accept`` to refuse.
    """
    headers = request.headers
    index = headers._index if headers._index is not None else headers._rebuild_index()
    value = index.get("upgrade")
    if value == "websocket" or (type(value) is str and value.lower() == "websocket"):
        return True  # what nearly every client sends: the App asks once per request
    try:
        return _has_token(index, "upgrade", "websocket")
    except InvalidRequest:
        return True


@functools.lru_cache(maxsize=16)
def _server_fields(server_header: str | None) -> tuple[str, ...]:
    # Checked once per value (a server has one): the response's Server field.
    items: list[str] = []
    if server_header is not None:
        add_header(items, None, "Server", server_header)
    return tuple(items)


def _joined(values: str | list[str]) -> str:
    # A header's value as Headers.get() gives it: repeated values joined.
    return values if type(values) is str else ", ".join(values)


def _has_token(index: Mapping[str, str | list[str]], key: str, token: str) -> bool:
    """Tell whether the token lists of header ``key`` hold ``token`` (both lower case)."""
    values = index.get(key)
    if values == token or (type(values) is str and values.lower() == token):
        return True  # what nearly every client sends: no list to parse
    try:
        return token in parse_token_list(values_of(values), lower=True)
    except InvalidHandshake as exc:
        raise InvalidRequest(str(exc)) from None


# A ServerProtocol is made for each connection, and translating a pattern
# into a regex costs more than the rest of its __init__: reuse the matchers of
# the patterns seen last, which in a server are those of its configuration.
@functools.lru_cache(maxsize=256)
def _origin_matcher(pattern: str | None) -> Callable[[str | None], bool]:
    if pattern is None:
        return lambda origin: origin is None
    regex = re.compile(fnmatch.translate(pattern.lower()))
    return lambda origin: origin is not None and regex.match(origin.lower()) is not None
