"""WebSockets over HTTP/2 (RFC 8441), the sans-I/O part: one stream's request and response.

An HTTP/2 stream carries one request. On a server, the I/O layer decodes its
header block (HPACK, with the ``h2`` package) and hands the fields to
:func:`request_from_fields`; the stream's engine is an
:class:`Http2ServerProtocol`, fed the request with
:meth:`~Http2ServerProtocol.receive_request` and then the stream's DATA as
bytes; :func:`response_fields` turns its answer back into header fields.

On a client, the stream's engine is an :class:`Http2ClientProtocol`: the I/O
layer sends its request as the fields of :func:`request_fields`, feeds it the
response's fields with :meth:`~Http2ClientProtocol.receive_response`, then
the stream's DATA as bytes (and END_STREAM as EOF).

Two translations keep one request model for both HTTP versions, so that
hooks, interceptors and App routes written for HTTP/1.1 serve HTTP/2 unchanged
(an HTTP/2 to HTTP/1.1 gateway makes the same ones):

- An extended CONNECT with ``:protocol websocket`` (RFC 8441 section 4)
  reaches them as the HTTP/1.1 handshake it replaces (section 5: "the
  extended CONNECT method ... replaces the Upgrade mechanism"): method
  ``GET``, ``Host`` from ``:authority``, ``Upgrade: websocket``,
  ``Connection: Upgrade``, no ``Sec-WebSocket-Key``, and version ``(2, 0)``
  to tell it apart.
- The engine's accepted response keeps status 101, which is what hooks, the
  App and the metrics know as "accepted"; it goes out as ``:status 200``
  (RFC 8441 section 5), without the fields HTTP/2 forbids.

A client's request is built the same way, as the handshake that the server
reads (``GET`` with ``Upgrade: websocket``, version ``(2, 0)``, no key), and
goes out as the extended CONNECT. Its response keeps the status received (a
2xx accepts), and is checked for the subprotocol and extensions with the code
of the HTTP/1.1 client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..exceptions import InvalidRequest, InvalidResponse
from .client import ClientProtocol
from .headers import Headers, index_of
from .http11 import Request, Response
from .limits import MAX_HEADERS
from .protocol import CLOSED, CONNECTING, OPEN
from .server import ServerProtocol, wants_upgrade
from .uri import WebSocketURI

__all__ = [
    "Http2ClientProtocol",
    "Http2ServerProtocol",
    "request_fields",
    "request_from_fields",
    "response_fields",
    "response_from_fields",
]

#: The HTTP version of the requests that come over HTTP/2.
HTTP2 = (2, 0)

# RFC 9113 section 8.2.2: connection-specific fields are malformed in HTTP/2
# (TE is allowed with "trailers" only, which a server may ignore).
_CONNECTION_FIELDS = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")
)
_PSEUDO_FIELDS = frozenset((":method", ":scheme", ":path", ":authority", ":protocol"))
# What an extended CONNECT stands for in HTTP/1.1, after its Host field.
_UPGRADE_FIELDS = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


def request_from_fields(
    fields: Iterable[tuple[bytes, bytes]], *, max_headers: int | None = MAX_HEADERS
) -> Request:
    """Make the request of an HTTP/2 stream from its decoded header fields.

    An extended CONNECT for a WebSocket becomes its HTTP/1.1 handshake (see
    the module's docstring); any other request keeps its method and target.
    The version is ``(2, 0)``. The body, if any, is the I/O layer's to add.

    Raises:
        InvalidRequest: a malformed request (RFC 9113 section 8.3; 400), one
            with more than ``max_headers`` fields (431), an ordinary CONNECT
            (a proxy tunnel, 405) or an extended CONNECT for another protocol
            than ``websocket`` (400).
    """
    pseudo: dict[str, str] = {}
    regular: list[tuple[str, str]] = []
    for raw_name, raw_value in fields:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name.startswith(":"):
            # Section 8.3: known, once each, before the regular fields.
            if name not in _PSEUDO_FIELDS or name in pseudo or regular:
                raise InvalidRequest(f"invalid or misplaced pseudo-header field {name}")
            pseudo[name] = value
        elif (
            name in _CONNECTION_FIELDS
            or name != name.lower()
            or (name == "te" and value != "trailers")
        ):
            raise InvalidRequest(f"header field {name!r} is not allowed in HTTP/2")
        else:
            regular.append((name, value))
    if max_headers is not None and len(regular) > max_headers:
        raise InvalidRequest(f"more than {max_headers} header fields", 431)
    method = pseudo.get(":method")
    if method is None:
        raise InvalidRequest("missing :method pseudo-header field")
    protocol = pseudo.get(":protocol")
    authority = pseudo.get(":authority")
    if method == "CONNECT" and protocol is None:
        if ":path" in pseudo or ":scheme" in pseudo:
            # RFC 9113 section 8.5: malformed; surely an extended CONNECT
            # that lost its :protocol.
            raise InvalidRequest("missing :protocol pseudo-header field in a CONNECT")
        raise InvalidRequest("CONNECT without :protocol (a tunnel) is not supported", 405)
    if protocol is not None:
        if method != "CONNECT":
            raise InvalidRequest(f":protocol in a {method} request, which is not a CONNECT")
        # RFC 8441 section 4: an extended CONNECT has the full target.
        if authority is None:
            raise InvalidRequest("missing :authority pseudo-header field")
        if protocol.lower() != "websocket":
            raise InvalidRequest(f"unsupported :protocol {protocol!r}, use websocket")
    path = pseudo.get(":path")
    if path is None or ":scheme" not in pseudo:
        raise InvalidRequest("missing :scheme or :path pseudo-header field")
    if not path:
        raise InvalidRequest("empty :path pseudo-header field")
    headers = Headers()
    try:
        if authority is not None and not any(name == "host" for name, _ in regular):
            headers.add("Host", authority)
        if protocol is not None:
            method = "GET"
            headers.update(_UPGRADE_FIELDS)
        headers.update(regular)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return Request(method, path, headers, HTTP2)


def response_fields(response: Response, *, head_only: bool = False) -> list[tuple[str, str]]:
    """Return the HTTP/2 header fields of ``response``, ``:status`` first.

    An accepted handshake (101) is sent as 200 (RFC 8441 section 5). The
    fields that HTTP/2 forbids (``Connection``, ``Upgrade``...) are left out,
    and names are lower-cased (RFC 9113 section 8.2.1). Other answers carry
    their ``content-length``, that of the body a ``HEAD`` request does not get.
    """
    accepted = response.status == 101
    fields = [(":status", "200" if accepted else str(response.status))]
    for name, value in response.headers.items():
        lower = name.lower()
        if lower not in _CONNECTION_FIELDS:
            fields.append((lower, value))
    if not accepted and "Content-Length" not in response.headers:
        fields.append(("content-length", str(len(response.body))))
    return fields


class Http2ServerProtocol(ServerProtocol):
    """The server side of one HTTP/2 stream: a WebSocket, or a plain HTTP request.

    It takes the same arguments as :class:`~rapidws.core.server.ServerProtocol`
    and negotiates subprotocols and extensions with the same code; only the
    checks of the request (RFC 8441 instead of RFC 6455 section 4.2.1) and
    what the response turns into differ. The I/O layer sends the response's
    fields (:func:`response_fields`) as the stream's HEADERS; the engine's
    output after that is the stream's DATA, and the end of its output
    (``b""``) is END_STREAM.
    """

    __slots__ = ()

    def receive_request(self, request: Request) -> None:
        """Take the stream's request, read by the I/O layer: a Request event comes out."""
        if self.request is not None:
            raise ValueError("a stream carries one request")
        self._reader = None  # bytes from now on are the stream's DATA
        self.request = request
        self._events.append(request)

    def accept(self, request: Request) -> Response:
        """Check an extended CONNECT and build the response that accepts it.

        The response has status 101 when the request opens a WebSocket (sent
        as 200), else it is the refusal: 400, 403 (origin) or 426 (version).
        """
        try:
            self._check_connect(request)
            items = self._negotiate(request)
        except InvalidRequest as exc:
            return self._refusal(exc, upgrade=False)
        # Checked as they were added.
        return Response(101, headers=Headers._from_fields(items, None))

    def _check_connect(self, request: Request) -> None:
        """Validate an extended CONNECT (RFC 8441 sections 4 and 5) as its translation reads."""
        if request.version != HTTP2 or not wants_upgrade(request):
            # An HTTP/2 request cannot ask for an upgrade but by translation.
            raise InvalidRequest("not an extended CONNECT with :protocol websocket (RFC 8441)")
        version = index_of(request.headers).get("sec-websocket-version")
        if version != "13":
            if version is None:
                raise InvalidRequest("missing Sec-WebSocket-Version header", 426)
            shown = version if type(version) is str else ", ".join(version)
            raise InvalidRequest(f"unsupported Sec-WebSocket-Version {shown!r}, use 13", 426)
        if self._origins is not None:
            origin = request.headers.get("Origin")
            if not any(match(origin) for match in self._origins):
                raise InvalidRequest(f"origin {origin!r} is not allowed", 403)

    def send_response(self, response: Response) -> None:
        """Take the response, whose fields the I/O layer sends: a 101 opens the WebSocket.

        Anything else is a complete answer: its body (none for ``HEAD``),
        then the end of the stream.
        """
        if self.state is not CONNECTING or self.response is not None:
            raise ValueError("the handshake response was sent already")
        self.response = response
        request = self.request
        if response.status == 101:
            self.state = OPEN
            # Frames that came before the response are parsed now.
            if self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                self.receive_data(data)
            return
        if response.body and (request is None or request.method != "HEAD"):
            self._out.append(response.body)
        self.send_eof()
        self.state = CLOSED
        self._discard = True
        self._buf.clear()


# The client side.


def request_fields(request: Request, *, scheme: str) -> list[tuple[str, str]]:
    """Return the HTTP/2 header fields of a WebSocket handshake: an extended CONNECT.

    ``request`` is the handshake as :meth:`Http2ClientProtocol.connect` builds
    it; ``scheme`` is ``"https"`` for ``wss://``, ``"http"`` for ``ws://``
    (RFC 8441 section 5). ``Host`` becomes ``:authority``; the fields HTTP/2
    forbids (``Connection``, ``Upgrade``) and a ``Sec-WebSocket-Key`` are left
    out, and names are lower-cased (RFC 9113 section 8.2.1).
    """
    fields = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", scheme),
        (":path", request.target),
        (":authority", request.headers["Host"]),
    ]
    for name, value in request.headers.items():
        lower = name.lower()
        if lower not in _CONNECTION_FIELDS and lower not in _NOT_SENT:
            fields.append((lower, value))
    return fields


# Sent as :authority; no key nor accept over HTTP/2 (RFC 8441 section 5).
_NOT_SENT = frozenset(("host", "sec-websocket-key"))


def response_from_fields(
    fields: Iterable[tuple[bytes, bytes]], *, max_headers: int | None = MAX_HEADERS
) -> Response:
    """Make the response of an HTTP/2 stream from its decoded header fields.

    Raises:
        InvalidResponse: a malformed response (RFC 9113 section 8.3.2: one
            ``:status`` of three digits, first), or one with more than
            ``max_headers`` fields.
    """
    status: int | None = None
    regular: list[tuple[str, str]] = []
    for raw_name, raw_value in fields:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name.startswith(":"):
            if name != ":status" or status is not None or regular:
                raise InvalidResponse(f"invalid or misplaced pseudo-header field {name}")
            if not (len(value) == 3 and value.isascii() and value.isdigit()):
                raise InvalidResponse(f"invalid :status {value[:20]!r}")
            status = int(value)
        elif name in _CONNECTION_FIELDS or name != name.lower():
            raise InvalidResponse(f"header field {name!r} is not allowed in HTTP/2")
        else:
            regular.append((name, value))
    if status is None:
        raise InvalidResponse("missing :status pseudo-header field")
    if max_headers is not None and len(regular) > max_headers:
        raise InvalidResponse(f"more than {max_headers} header fields")
    try:
        headers = Headers(regular)
    except ValueError as exc:
        raise InvalidResponse(str(exc)) from None
    return Response(status, b"", headers)


class Http2ClientProtocol(ClientProtocol):
    """The client side of a WebSocket over one HTTP/2 stream (RFC 8441).

    It takes the same arguments as :class:`~rapidws.core.client.ClientProtocol`
    and offers and negotiates subprotocols and extensions with the same code;
    only the request (no key), the accepting status (2xx instead of 101) and
    the checks of the response (no ``Upgrade`` nor ``Sec-WebSocket-Accept``)
    differ. The I/O layer sends the request's fields (:func:`request_fields`)
    as the stream's HEADERS; the engine's output is the stream's DATA, and the
    end of its output (``b""``) is END_STREAM. A refusal's body is the DATA
    that follows a response other than 2xx, until END_STREAM (EOF). The
    client ends the stream once the closing handshake is done.
    """

    __slots__ = ("max_headers",)

    def __init__(
        self, uri: WebSocketURI, *, max_headers: int | None = MAX_HEADERS, **kwargs: Any
    ) -> None:
        super().__init__(uri, max_headers=max_headers, **kwargs)
        #: The most header fields in the response.
        self.max_headers = max_headers

    def connect(self) -> Request:
        """Build the handshake request, as the server reads it (see the module's docstring)."""
        request = super().connect()
        del request.headers["Sec-WebSocket-Key"]
        request.version = HTTP2
        return request

    def send_request(self, request: Request) -> None:
        """Take the request, whose fields the I/O layer sends as the stream's HEADERS."""
        self.request = request

    def receive_response(self, fields: Iterable[tuple[bytes, bytes]]) -> None:
        """Take the response's header fields, decoded by the I/O layer.

        A 2xx opens the WebSocket (a Response event comes out, as over
        HTTP/1.1); any other status waits for its body, until EOF.
        """
        if self.response is not None or self.handshake_exc is not None:
            raise ValueError("a stream carries one response")
        try:
            response = response_from_fields(fields, max_headers=self.max_headers)
        except InvalidResponse as exc:
            self._handshake_failed(exc)
            return
        self._response_received(response)

    def _receive_handshake(self, data: bytes) -> None:
        if self.response is None:
            # h2 refuses DATA before HEADERS; another I/O layer might not.
            self._handshake_failed(InvalidResponse("data before the response"))
        else:
            super()._receive_handshake(data)  # a refusal's body

    def _accepts(self, status: int) -> bool:
        # RFC 8441 section 5 and RFC 9113 section 8.5: a 2xx accepts a CONNECT.
        return 200 <= status < 300

    def _check_response(self, response: Response) -> None:
        self._negotiate(response)

    def _close_handshake_done(self) -> None:
        # Both close frames have crossed: the stream ends. RFC 6455 section
        # 7.1.1 has the server close TCP first, for its TIME_WAIT state; a
        # stream has none, and some servers never end theirs (hypercorn 0.18).
        self.send_eof()
