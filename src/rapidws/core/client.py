"""The client side of the engine: sending the handshake and checking the answer.

The flow, for any I/O layer::

    request = protocol.connect()
    protocol.send_request(request)
    protocol.receive_data(data)          # until a Response event comes out
    if protocol.handshake_exc: raise it  # refused, or an invalid answer
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from ..exceptions import InvalidHandshake, InvalidResponse, InvalidStatus
from ..version import __version__
from .extensions.base import ClientExtensionFactory, Extension
from .handshake import accept_key, generate_key
from .headers import Headers, HeadersLike, parse_extensions, parse_token_list, serialize_extensions
from .http11 import HeadReader, Request, Response, parse_version
from .limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, MAX_MESSAGE_SIZE, MAX_RESPONSE_BODY
from .protocol import CLOSED, OPEN, Protocol, State
from .uri import WebSocketURI

__all__ = ["ClientProtocol"]

USER_AGENT = f"rapidws/{__version__}"


class ClientProtocol(Protocol):
    """The client side of a WebSocket connection, from the opening handshake on.

    Args:
        uri: where to connect.
        origin: the ``Origin`` header to send, if any.
        subprotocols: the subprotocols to offer, in order of preference.
        extensions: the extension factories whose offers to send.
        additional_headers: more headers for the request (auth, cookies).
        user_agent: the ``User-Agent`` header; ``None`` omits it.
        max_message_size: see :class:`~rapidws.core.protocol.Protocol`.
        max_frame_size: see :class:`~rapidws.core.protocol.Protocol`.
        auto_pong: see :class:`~rapidws.core.protocol.Protocol` (a testing knob).
        max_line: the longest status or header line of the response, in bytes.
        max_headers: the most header fields in the response.
        max_header_bytes: the largest response head, in bytes.
        max_body: the most bytes of a refusal's body to read.
    """

    __slots__ = (
        "_body_expected",
        "_key",
        "_reader",
        "additional_headers",
        "available_subprotocols",
        "extension_factories",
        "handshake_exc",
        "max_body",
        "origin",
        "uri",
        "user_agent",
    )

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        extensions: Sequence[ClientExtensionFactory] = (),
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = USER_AGENT,
        max_message_size: int | None = MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        auto_pong: bool = True,
        max_line: int | None = MAX_LINE,
        max_headers: int | None = MAX_HEADERS,
        max_header_bytes: int | None = MAX_HEADER_BYTES,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> None:
        super().__init__(
            is_client=True,
            state=State.CONNECTING,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            auto_pong=auto_pong,
        )
        self.uri = uri
        self.origin = origin
        self.available_subprotocols = list(subprotocols or ())
        self.extension_factories = list(extensions)
        self.additional_headers = additional_headers
        self.user_agent = user_agent
        self.max_body = max_body
        self._reader = HeadReader(
            max_line=max_line, max_headers=max_headers, max_header_bytes=max_header_bytes
        )
        self._key = ""
        #: Why the handshake failed, when it did.
        self.handshake_exc: InvalidHandshake | None = None
        self._body_expected: int | None = None  # length of a refusal's body

    def connect(self) -> Request:
        """Build the handshake request, with a fresh key; send it with :meth:`send_request`."""
        headers = Headers()
        headers["Host"] = self.uri.host_header
        headers.update(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", generate_key()),
                ("Sec-WebSocket-Version", "13"),
            ]
        )
        if self.origin is not None:
            headers["Origin"] = self.origin
        if self.available_subprotocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(self.available_subprotocols)
        if self.extension_factories:
            offers = [(f.name, f.offer()) for f in self.extension_factories]
            headers["Sec-WebSocket-Extensions"] = serialize_extensions(offers)
        if self.user_agent is not None:
            headers["User-Agent"] = self.user_agent
        if self.additional_headers is not None:
            headers.update(self.additional_headers)
        if self.uri.user_info is not None and "Authorization" not in headers:
            credentials = ":".join(self.uri.user_info).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        return Request("GET", self.uri.resource, headers)

    def send_request(self, request: Request) -> None:
        """Send the handshake request."""
        self.request = request
        self._key = request.headers["Sec-WebSocket-Key"]
        self._out.append(request.serialize())

    def _receive_handshake(self, data: bytes) -> None:
        if self.response is not None:
            # The body of a refusal.
            self._buf += data
            self._finish_refusal(eof=False)
            return
        try:
            head = self._reader.feed(data)
        except InvalidHandshake as exc:
            self._handshake_failed(InvalidResponse(f"invalid HTTP response: {exc}"))
            return
        if head is None:
            return
        status_line, headers, rest = head
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or parse_version(parts[0]) is None or not _is_status(parts[1]):
            self._handshake_failed(InvalidResponse(f"invalid status line: {status_line[:100]!r}"))
            return
        self._buf += rest
        self._response_received(
            Response(int(parts[1]), b"", headers, parts[2] if len(parts) == 3 else "")
        )

    def _accepts(self, status: int) -> bool:
        """Tell whether ``status`` accepts the handshake (RFC 6455 section 4.1: 101)."""
        return status == 101

    def _response_received(self, response: Response) -> None:
        # The response's head: a WebSocket opens, or a refusal's body follows.
        self.response = response
        if not self._accepts(response.status):
            length = response.headers.get("Content-Length") or ""
            self._body_expected = int(length) if length.isascii() and length.isdigit() else None
            self._finish_refusal(eof=False)
            return
        try:
            self._check_response(response)
        except InvalidResponse as exc:
            self._handshake_failed(exc)
            return
        self.state = OPEN
        # Kept as long as the connection, read rarely if ever.
        response.headers.compact()
        self._events.append(response)
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self.receive_data(data)

    def _finish_refusal(self, *, eof: bool) -> None:
        assert self.response is not None
        expected = self._body_expected
        incomplete = expected is None or len(self._buf) < expected
        if not eof and incomplete and len(self._buf) <= self.max_body:
            return
        limit = self.max_body if expected is None else min(expected, self.max_body)
        self.response.body = bytes(self._buf[:limit])
        self._handshake_failed(InvalidStatus(self.response))

    def _receive_eof_hook(self) -> None:
        if self.handshake_exc is not None:
            return
        if self.response is not None and not self._accepts(self.response.status):
            self._finish_refusal(eof=True)
        elif self.response is None:
            self.handshake_exc = InvalidResponse("connection closed during the opening handshake")

    def _handshake_failed(self, exc: InvalidResponse) -> None:
        self.handshake_exc = exc
        if self.response is not None:
            self._events.append(self.response)
        self.state = CLOSED
        self._discard = True
        self._buf.clear()
        self.send_eof()

    def _check_response(self, response: Response) -> None:
        """Validate a 101 response (RFC 6455 section 4.1, the client's checks)."""
        headers = response.headers
        try:
            upgrade = parse_token_list(headers.get_all("Upgrade"), lower=True)
            connection = parse_token_list(headers.get_all("Connection"), lower=True)
        except InvalidHandshake as exc:
            raise InvalidResponse(str(exc), response) from None
        if "websocket" not in upgrade:
            raise InvalidResponse("missing Upgrade: websocket header in response", response)
        if "upgrade" not in connection:
            raise InvalidResponse("missing Connection: Upgrade header in response", response)
        accept = headers.get("Sec-WebSocket-Accept")
        if accept != accept_key(self._key):
            raise InvalidResponse(f"wrong Sec-WebSocket-Accept header {accept!r}", response)
        self._negotiate(response)

    def _negotiate(self, response: Response) -> None:
        """Take the subprotocol and extensions that the server chose among the offers."""
        headers = response.headers
        try:
            chosen = parse_token_list(headers.get_all("Sec-WebSocket-Protocol"))
            answers = parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
        except InvalidHandshake as exc:
            raise InvalidResponse(str(exc), response) from None
        if len(chosen) > 1:
            raise InvalidResponse("server chose more than one subprotocol", response)
        if chosen:
            if chosen[0] not in self.available_subprotocols:
                raise InvalidResponse(
                    f"server chose subprotocol {chosen[0]!r}, which was not offered", response
                )
            self.subprotocol = chosen[0]
        extensions: list[Extension] = []
        for name, params in answers:
            factory = next((f for f in self.extension_factories if f.name == name), None)
            if factory is None or any(e.name == name for e in extensions):
                raise InvalidResponse(f"server accepted extension {name!r}, not offered", response)
            try:
                extensions.append(factory.accept(params))
            except InvalidHandshake as exc:
                raise InvalidResponse(str(exc), response) from None
        self._use_extensions(extensions)


def _is_status(text: str) -> bool:
    # Not str.isdigit() alone: it is true for "²", which int() refuses.
    return len(text) == 3 and text.isascii() and text.isdigit()
