"""Tests for rapidws.core.server: reading, checking and answering the handshake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from rapidws.core.frames import frame_header
from rapidws.core.headers import Headers
from rapidws.core.http11 import Request, Response
from rapidws.core.protocol import CLOSED, CONNECTING, OPEN
from rapidws.core.server import SERVER, ServerProtocol, wants_upgrade
from rapidws.exceptions import InvalidRequest, SecurityError
from rapidws.speedups import apply_mask

from .test_extensions import INVERT, InvertServerFactory, ShiftServerFactory

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
PEER_MASK = b"\x12\x34\x56\x78"

# RFC 6455 section 1.3 (with the Host of section 4.1).
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

BASE_HEADERS = {
    "Host": "server.example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
}


def request_bytes(
    changes: Mapping[str, str | None] | None = None,
    *,
    line: str = "GET /chat HTTP/1.1",
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Build a handshake request: ``changes`` replaces (or with ``None`` removes) headers."""
    headers = {**BASE_HEADERS, **(changes or {})}
    lines = [line, *(f"{n}: {v}" for n, v in headers.items() if v is not None)]
    lines += [f"{n}: {v}" for n, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def masked_frame(first: int, payload: bytes) -> bytes:
    """A frame as a client sends it."""
    return frame_header(first, len(payload), PEER_MASK) + apply_mask(payload, PEER_MASK)


def receive_request(server: ServerProtocol, data: bytes) -> Request:
    server.receive_data(data)
    [request] = server.events_received()
    assert isinstance(request, Request)
    assert server.request is request
    return request


def handshake(data: bytes, **kwargs: object) -> tuple[ServerProtocol, Response]:
    """Feed a request to a new server; return the server and accept()'s answer."""
    server = ServerProtocol(server_header=None, **kwargs)  # type: ignore[arg-type]
    response = server.accept(receive_request(server, data))
    return server, response


def assert_refused(response: Response, status: int, text: str) -> None:
    assert response.status == status
    assert response.body == f"Failed to open a WebSocket connection: {text}.\n".encode()
    assert response.headers["Connection"] == "close"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def assert_engine_answered(server: ServerProtocol, status: int, text: str) -> None:
    """Check that the engine refused the request itself, with no event."""
    assert server.events_received() == []
    [response, eof] = server.data_to_send()
    assert eof == b""
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert server.response is not None
    assert_refused(server.response, status, text)
    assert isinstance(server.handshake_exc, InvalidRequest)
    assert server.handshake_exc.status == status
    assert str(server.handshake_exc) == text
    assert server.state is CLOSED
    # Whatever follows is ignored.
    server.receive_data(request_bytes())
    assert server.events_received() == []
    assert server.data_to_send() == []


# The RFC example.


def test_rfc_handshake() -> None:
    server = ServerProtocol(server_header=None)
    request = receive_request(server, RFC_REQUEST)
    assert request.method == "GET"
    assert request.target == request.path == "/chat"
    assert request.headers["Sec-WebSocket-Key"] == KEY
    response = server.accept(request)
    assert response.status == 101
    assert response.headers["Sec-WebSocket-Accept"] == ACCEPT
    assert "Sec-WebSocket-Protocol" not in response.headers  # no subprotocol configured
    server.send_response(response)
    assert server.data_to_send() == [
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    ]
    assert server.state is OPEN
    assert server.response is response
    assert server.handshake_exc is None


def test_rfc_handshake_byte_by_byte() -> None:
    server = ServerProtocol()
    for i in range(len(RFC_REQUEST) - 1):
        server.receive_data(RFC_REQUEST[i : i + 1])
        assert server.events_received() == []
    server.receive_data(RFC_REQUEST[-1:])
    [request] = server.events_received()
    assert isinstance(request, Request)
    assert request.headers["Origin"] == "http://example.com"


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_request_from_any_bytes_like_object(kind: type[bytearray | memoryview]) -> None:
    server = ServerProtocol()
    frame = frame_header(0x81, 2, b"\x00" * 4) + b"hi"
    server.receive_data(kind(RFC_REQUEST + frame))
    [request] = server.events_received()
    assert isinstance(request, Request) and request.headers["Origin"] == "http://example.com"
    server.send_response(server.accept(request))
    assert server.events_received() == ["hi"]


def test_response_has_server_header() -> None:
    server = ServerProtocol()
    response = server.accept(receive_request(server, RFC_REQUEST))
    assert response.headers["Server"] == SERVER
    assert SERVER.startswith("rapidws/")


def test_frames_pipelined_after_request() -> None:
    server = ServerProtocol()
    request = receive_request(server, RFC_REQUEST + masked_frame(0x81, b"early"))
    # More arrives before the application answers: it waits too.
    server.receive_data(masked_frame(0x82, b"later"))
    assert server.events_received() == []
    server.send_response(server.accept(request))
    assert server.events_received() == ["early", b"later"]


def test_frames_pipelined_after_refused_request() -> None:
    server = ServerProtocol()
    receive_request(server, RFC_REQUEST + masked_frame(0x81, b"early"))
    server.send_response(Response(403, "go away"))
    assert server.events_received() == []
    assert server.state is CLOSED


def test_send_response_twice() -> None:
    server = ServerProtocol()
    server.send_response(server.accept(receive_request(server, RFC_REQUEST)))
    with pytest.raises(ValueError, match="sent already"):
        server.send_response(Response(500))


def test_send_other_response() -> None:
    # A hook may answer an HTTP request (a health check) instead of accept().
    server = ServerProtocol()
    receive_request(server, b"GET /health HTTP/1.1\r\nHost: example.com\r\n\r\n")
    server.send_response(Response(200, "ok\n"))
    assert server.data_to_send() == [
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 3\r\n"
        b"\r\nok\n",
        b"",
    ]
    assert server.state is CLOSED
    with pytest.raises(ValueError, match="sent already"):
        server.send_response(Response(500))


def test_reject() -> None:
    server = ServerProtocol()
    response = server.reject(401, "log in first")
    assert_refused(response, 401, "log in first")
    assert response.headers["Server"] == SERVER
    response = ServerProtocol(server_header=None).reject(401, "no", {"WWW-Authenticate": "Basic"})
    assert "Server" not in response.headers
    assert response.headers["WWW-Authenticate"] == "Basic"


# Requests that the engine cannot read: answered before any event.


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"GET /chat\r\nHost: x\r\n\r\n", "invalid request line: b'GET /chat'"),
        (b"GET /chat HTTP/x\r\n\r\n", "invalid request line: b'GET /chat HTTP/x'"),
        (b"G(T / HTTP/1.1\r\n\r\n", "invalid request line: b'G(T / HTTP/1.1'"),
        (b"GET  HTTP/1.1\r\n\r\n", "invalid request line: b'GET  HTTP/1.1'"),
        (b"GET /\xe9 HTTP/1.1\r\n\r\n", "invalid request target"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", "invalid request target"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "invalid header line: b'Host x'"),
        (b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", "invalid header name: 'Ho st'"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "invalid header line: b' folded'"),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", "invalid header name: ' folded'"),
        (b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", "invalid value for header Host"),
    ],
)
def test_malformed_request(data: bytes, text: str) -> None:
    server = ServerProtocol()
    server.receive_data(data)
    assert_engine_answered(server, 400, text)


def test_request_line_too_long() -> None:
    server = ServerProtocol(max_line=100)
    server.receive_data(b"GET /" + b"a" * 96)  # 101 bytes, still no CRLF
    assert_engine_answered(server, 414, "request line is too long")
    assert isinstance(server.handshake_exc, SecurityError)


def test_header_line_too_long() -> None:
    server = ServerProtocol(max_line=100)
    server.receive_data(b"GET / HTTP/1.1\r\nCookie: " + b"a" * 93)
    assert_engine_answered(server, 431, "header line is too long")


def test_too_many_headers() -> None:
    server = ServerProtocol(max_headers=3)
    server.receive_data(b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 3)
    assert server.data_to_send() == []
    server.receive_data(b"X-A: 1\r\n")  # the fourth, and no blank line yet
    assert_engine_answered(server, 431, "too many header fields")


def test_head_too_large() -> None:
    server = ServerProtocol(max_header_bytes=1000)
    server.receive_data(b"GET / HTTP/1.1\r\n" + b"X-A: 12345678\r\n" * 70)
    assert_engine_answered(server, 431, "HTTP head is too large")


def test_request_at_every_limit_byte_by_byte() -> None:
    data = request_bytes(line="GET /" + "a" * 95 + " HTTP/1.1")
    lines = data.split(b"\r\n")
    server = ServerProtocol(
        max_line=max(len(line) for line in lines),
        max_headers=len(lines) - 3,
        max_header_bytes=len(data) - 2,
    )
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
    assert len(server.events_received()) == 1
    assert server.data_to_send() == []


def test_limits_disabled() -> None:
    server = ServerProtocol(max_line=None, max_headers=None, max_header_bytes=None)
    extra = [(f"X-{i}", "x" * 10_000) for i in range(200)]
    request = receive_request(server, request_bytes(extra=extra))
    assert len(request.headers) == 205


# accept(): readable requests that are not valid handshakes.


def test_accept_wrong_method() -> None:
    _, response = handshake(request_bytes(line="POST /chat HTTP/1.1"))
    assert_refused(response, 405, "method POST is not allowed, use GET")
    assert response.headers["Allow"] == "GET"


def test_accept_http_1_0() -> None:
    server, response = handshake(request_bytes(line="GET /chat HTTP/1.0"))
    assert_refused(response, 400, "HTTP/1.1 or later is required")
    assert isinstance(server.handshake_exc, InvalidRequest)


@pytest.mark.parametrize(
    ("changes", "extra", "status", "text"),
    [
        ({"Host": None}, [], 400, "missing or repeated Host header"),
        ({}, [("Host", "other.example.com")], 400, "missing or repeated Host header"),
        ({}, [("Content-Length", "5")], 400, "a handshake request cannot have a body"),
        ({}, [("Transfer-Encoding", "chunked")], 400, "a handshake request cannot have a body"),
        ({"Upgrade": None}, [], 426, "missing Upgrade: websocket header"),
        ({"Upgrade": "h2c"}, [], 426, "missing Upgrade: websocket header"),
        ({"Connection": None}, [], 426, "missing Connection: Upgrade header"),
        ({"Connection": "keep-alive"}, [], 426, "missing Connection: Upgrade header"),
        ({"Sec-WebSocket-Version": None}, [], 426, "missing Sec-WebSocket-Version header"),
        (
            {"Sec-WebSocket-Version": "8"},
            [],
            426,
            "unsupported Sec-WebSocket-Version '8', use 13",
        ),
        ({"Sec-WebSocket-Key": None}, [], 400, "missing Sec-WebSocket-Key header"),
        (
            {"Sec-WebSocket-Key": "not base64!"},
            [],
            400,
            "invalid Sec-WebSocket-Key header 'not base64!'",
        ),
        (
            {"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"},  # 15 bytes
            [],
            400,
            "invalid Sec-WebSocket-Key header 'AAAAAAAAAAAAAAAAAAAA'",
        ),
        (
            {"Upgrade": "web socket"},
            [],
            400,
            "invalid token 'web socket' in header value 'web socket'",
        ),
        (
            # Malformed is a 400 whatever the other header says.
            {"Upgrade": "h2c", "Connection": "Up grade"},
            [],
            400,
            "invalid token 'Up grade' in header value 'Up grade'",
        ),
        (
            {},
            [("Sec-WebSocket-Extensions", "x-invert;")],
            400,
            "expected a token at position 9 of 'x-invert;'",
        ),
        (
            {},
            [("Sec-WebSocket-Protocol", "chat, [x]")],
            400,
            "invalid token '[x]' in header value 'chat, [x]'",
        ),
    ],
)
def test_accept_invalid_request(
    changes: dict[str, str | None], extra: list[tuple[str, str]], status: int, text: str
) -> None:
    server, response = handshake(request_bytes(changes, extra=extra))
    assert_refused(response, status, text)
    assert server.handshake_exc is not None
    assert str(server.handshake_exc) == text
    if status == 426:
        assert response.headers["Upgrade"] == "websocket"
        assert response.headers["Sec-WebSocket-Version"] == "13"
    else:
        assert "Sec-WebSocket-Version" not in response.headers
    # The application sends the refusal: the connection then closes.
    server.send_response(response)
    [data, eof] = server.data_to_send()
    assert data.startswith(f"HTTP/1.1 {status} ".encode())
    assert eof == b""
    assert server.state is CLOSED


@pytest.mark.parametrize(
    "changes",
    [
        {"Connection": "keep-alive, Upgrade"},
        {"Connection": "keep-alive,upgrade"},
        {"Connection": "UPGRADE"},
        {"Upgrade": "WebSocket"},
        {"Upgrade": "h2c, websocket"},
        {"Sec-WebSocket-Version": " 13 "},
        {"Content-Length": "0"},
    ],
)
def test_accept_valid_variants(changes: dict[str, str]) -> None:
    _, response = handshake(request_bytes(changes))
    assert response.status == 101


def test_accept_repeated_connection_headers() -> None:
    data = request_bytes({"Connection": "keep-alive"}, extra=[("Connection", "Upgrade")])
    _, response = handshake(data)
    assert response.status == 101


def test_response_fields_in_order() -> None:
    server = ServerProtocol(subprotocols=["chat"], extensions=[InvertServerFactory()])
    data = request_bytes({"Sec-WebSocket-Protocol": "chat", "Sec-WebSocket-Extensions": "x-invert"})
    server.send_response(server.accept(receive_request(server, data)))
    assert server.data_to_send() == [
        b"HTTP/1.1 101 Switching Protocols\r\n"
        + f"Server: {SERVER}\r\n".encode()
        + b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: x-invert\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    ]


def test_responses_share_no_headers() -> None:
    # The fields common to every 101 are copied, not shared.
    _, first = handshake(request_bytes())
    first.headers["Upgrade"] = "changed"
    first.headers.add("Connection", "close")
    _, second = handshake(request_bytes())
    assert second.headers.items() == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", ACCEPT),
    ]


def test_invalid_server_header_is_refused() -> None:
    server = ServerProtocol(server_header="rapidws\r\nX-Injected: 1")
    request = receive_request(server, request_bytes())
    with pytest.raises(ValueError, match="invalid value for header Server"):
        server.accept(request)


# Origins.


@pytest.mark.parametrize(
    ("origins", "origin", "status"),
    [
        (None, "https://anything.example", 101),
        (None, None, 101),
        (["https://example.com"], "https://example.com", 101),
        (["https://example.com"], "HTTPS://EXAMPLE.COM", 101),
        (["https://example.com"], "https://evil.com", 403),
        (["https://example.com"], "https://example.com.evil.com", 403),
        (["https://example.com"], None, 403),
        (["https://*.example.com"], "https://chat.example.com", 101),
        (["https://*.example.com"], "https://example.com", 403),
        (["https://*.example.com"], "https://chat.example.com.evil.com", 403),
        (["https://example.com", None], None, 101),
        ([None], "https://example.com", 403),
        ([], None, 403),
    ],
)
def test_accept_origin(origins: list[str | None] | None, origin: str | None, status: int) -> None:
    _, response = handshake(request_bytes({"Origin": origin}), origins=origins)
    assert response.status == status
    if status == 403:
        assert_refused(response, 403, f"origin {origin!r} is not allowed")


# Subprotocols.


@pytest.mark.parametrize(
    ("supported", "offered", "chosen"),
    [
        (["superchat", "chat"], "chat, superchat", "superchat"),  # the server's preference
        (["chat", "superchat"], "superchat, chat", "chat"),
        (["chat"], None, None),
        (None, "chat", None),
        ([], "chat", None),
    ],
)
def test_accept_subprotocol(
    supported: list[str] | None, offered: str | None, chosen: str | None
) -> None:
    server, response = handshake(
        request_bytes({"Sec-WebSocket-Protocol": offered}), subprotocols=supported
    )
    assert response.status == 101
    assert response.headers.get("Sec-WebSocket-Protocol") == chosen
    assert server.subprotocol == chosen


def test_accept_subprotocol_from_repeated_headers() -> None:
    extra = [("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b, chat")]
    _, response = handshake(request_bytes(extra=extra), subprotocols=["chat"])
    assert response.headers["Sec-WebSocket-Protocol"] == "chat"


def test_accept_no_supported_subprotocol() -> None:
    data = request_bytes({"Sec-WebSocket-Protocol": "chat, superchat"})
    server, response = handshake(data, subprotocols=["mqtt"])
    assert_refused(response, 400, "none of the subprotocols chat, superchat is supported")
    assert server.subprotocol is None


def test_accept_select_subprotocol() -> None:
    calls: list[tuple[Request, Sequence[str]]] = []

    def select(request: Request, offered: Sequence[str]) -> str | None:
        calls.append((request, offered))
        return offered[-1]

    server, response = handshake(
        request_bytes({"Sec-WebSocket-Protocol": "chat, superchat"}),
        subprotocols=["chat"],  # select_subprotocol takes over
        select_subprotocol=select,
    )
    assert response.headers["Sec-WebSocket-Protocol"] == "superchat"
    assert server.subprotocol == "superchat"
    [(request, offered)] = calls
    assert request is server.request
    assert offered == ["chat", "superchat"]


def test_accept_select_subprotocol_none() -> None:
    _, response = handshake(
        request_bytes({"Sec-WebSocket-Protocol": "chat"}),
        select_subprotocol=lambda request, offered: None,
    )
    assert response.status == 101
    assert "Sec-WebSocket-Protocol" not in response.headers


def test_accept_select_subprotocol_not_offered() -> None:
    server = ServerProtocol(select_subprotocol=lambda request, offered: "mqtt")
    request = receive_request(server, request_bytes({"Sec-WebSocket-Protocol": "chat"}))
    with pytest.raises(ValueError, match="select_subprotocol chose 'mqtt', which was not offered"):
        server.accept(request)


# Extensions.


def test_accept_extension() -> None:
    factory = InvertServerFactory()
    data = request_bytes({"Sec-WebSocket-Extensions": "x-invert"})
    server, response = handshake(data, extensions=[factory])
    assert response.headers["Sec-WebSocket-Extensions"] == "x-invert"
    assert factory.offers == [[]]
    assert [extension.name for extension in server.extensions] == ["x-invert"]
    # Once open, RSV1 is allowed on the first frame of a message only.
    server.send_response(response)
    server.receive_data(masked_frame(0xC1, b"Hello".translate(INVERT)))
    assert server.events_received() == ["Hello"]
    server.receive_data(masked_frame(0x41, b"a".translate(INVERT)))
    server.receive_data(masked_frame(0xC0, b"b".translate(INVERT)))
    assert str(server.parser_exc) == "RSV bits set on a continuation frame"


def test_accept_again_without_an_offer_drops_the_extensions() -> None:
    # A sans-I/O user may accept() more than once: the last answer counts.
    server, response = handshake(
        request_bytes({"Sec-WebSocket-Extensions": "x-invert"}), extensions=[InvertServerFactory()]
    )
    assert [extension.name for extension in server.extensions] == ["x-invert"]
    response = server.accept(receive_request(ServerProtocol(), request_bytes()))
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert server.extensions == []
    server.send_response(response)
    server.receive_data(masked_frame(0xC1, b"x"))
    assert str(server.parser_exc) == "RSV bits set without an extension that defines them"


def test_accept_without_extension_refuses_rsv1() -> None:
    server, response = handshake(request_bytes({"Sec-WebSocket-Extensions": "x-invert"}))
    assert "Sec-WebSocket-Extensions" not in response.headers
    server.send_response(response)
    server.receive_data(masked_frame(0xC1, b"x"))
    assert str(server.parser_exc) == "RSV bits set without an extension that defines them"


def test_accept_extension_offers_in_client_order() -> None:
    # The first offer is declined (unsupported parameter), the second accepted,
    # the third skipped: one answer per extension.
    factory = InvertServerFactory(supported=["fast"])
    offers = "x-unknown, x-invert; secure=1, x-invert; fast, x-invert"
    server, response = handshake(
        request_bytes({"Sec-WebSocket-Extensions": offers}), extensions=[factory]
    )
    assert response.headers["Sec-WebSocket-Extensions"] == "x-invert; fast"
    assert factory.offers == [[("secure", "1")], [("fast", None)]]
    assert len(server.extensions) == 1


def test_accept_several_extensions() -> None:
    offers = ["x-shift", "x-invert; fast"]
    extra = [("Sec-WebSocket-Extensions", offer) for offer in offers]
    server, response = handshake(
        request_bytes(extra=extra),
        extensions=[InvertServerFactory(supported=["fast"]), ShiftServerFactory()],
    )
    # The client's order, not the server's.
    assert response.headers["Sec-WebSocket-Extensions"] == "x-shift, x-invert; fast"
    assert [extension.name for extension in server.extensions] == ["x-shift", "x-invert"]
    assert server._allowed_rsv == 0x60


def test_accept_all_extension_offers_declined() -> None:
    factory = InvertServerFactory()
    server, response = handshake(
        request_bytes({"Sec-WebSocket-Extensions": "x-invert; a, x-invert; b"}),
        extensions=[factory],
    )
    assert response.status == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert server.extensions == []


def test_accept_malformed_extension_offer() -> None:
    server, response = handshake(
        request_bytes({"Sec-WebSocket-Extensions": "x-invert; broken"}),
        extensions=[InvertServerFactory()],
    )
    assert_refused(response, 400, "malformed x-invert offer")
    assert server.extensions == []


def test_accept_keeps_state_until_response() -> None:
    server, _ = handshake(request_bytes())
    assert server.state is CONNECTING
    assert server.response is None


@pytest.mark.parametrize(
    ("upgrade", "wanted"),
    [
        (None, False),
        ("websocket", True),
        ("WebSocket", True),
        ("h2c, websocket", True),
        ("h2c", False),
        ("(", True),  # malformed: counted as an upgrade, for accept() to refuse with 400
    ],
)
def test_wants_upgrade(upgrade: str | None, wanted: bool) -> None:
    headers = Headers([("Host", "x")] + ([("Upgrade", upgrade)] if upgrade else []))
    assert wants_upgrade(Request("GET", "/", headers)) is wanted


# Plain HTTP requests: bodies, keep-alive, pipelining, HEAD.


def plain(method: str = "GET", target: str = "/", *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


KEEP = [("Connection", "keep-alive")]


def test_pipelined_requests_are_handed_over_one_at_a_time_in_order() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("GET", "/a") + plain("GET", "/b") + plain("GET", "/c"))
    answered = []
    for path in ("/a", "/b", "/c"):
        [request] = server.events_received()  # the next one waits for this answer
        assert isinstance(request, Request) and request.path == path
        server.send_response(Response(200, path, KEEP))
        answered.append(server.data_to_send())
    assert server.state is CONNECTING
    assert [b"".join(out).split(b"\r\n\r\n")[1] for out in answered] == [b"/a", b"/b", b"/c"]
    assert server.events_received() == []


def test_an_upgrade_after_plain_requests_on_the_same_connection() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("GET", "/page"))
    [_page] = server.events_received()
    server.send_response(Response(200, "<html>", KEEP))
    server.data_to_send()
    server.receive_data(RFC_REQUEST)
    [handshake] = server.events_received()
    assert isinstance(handshake, Request)
    server.send_response(server.accept(handshake))
    assert server.state is OPEN
    assert b"".join(server.data_to_send()).startswith(b"HTTP/1.1 101 ")


def test_a_response_without_keep_alive_closes() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("GET", "/a") + plain("GET", "/b"))
    server.events_received()
    server.send_response(Response(200, "a"))
    assert server.state is CLOSED
    assert server.data_to_send()[-1] == b""  # EOF
    assert server.events_received() == []  # /b is never read


def test_a_client_that_asks_to_close_is_not_kept() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("GET", "/", "Connection: close"))
    server.events_received()
    server.send_response(Response(200, "bye", KEEP))
    assert server.state is CLOSED


def test_bodies_are_read_whole_before_the_request_event() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("POST", "/a", "Content-Length: 11", body=b"hello"))
    assert server.events_received() == []
    server.receive_data(b" world" + plain("POST", "/b", "Transfer-Encoding: chunked"))
    [first] = server.events_received()
    assert isinstance(first, Request) and first.body == b"hello world"
    server.send_response(Response(200, "", KEEP))
    server.receive_data(b"3\r\nabc\r\n0\r\n\r\n")
    [second] = server.events_received()
    assert isinstance(second, Request) and (second.path, second.body) == ("/b", b"abc")


def test_expect_100_continue() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("POST", "/", "Content-Length: 2", "Expect: 100-continue"))
    assert server.data_to_send() == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    server.receive_data(b"ok")
    [request] = server.events_received()
    assert isinstance(request, Request) and request.body == b"ok"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (["Content-Length: 2000"], 413),
        (["Content-Length: 1", "Transfer-Encoding: chunked"], 400),
        (["Transfer-Encoding: gzip"], 501),
    ],
)
def test_bad_bodies_are_refused_before_any_event(headers: list[str], status: int) -> None:
    server = ServerProtocol(server_header=None, max_body_size=1000)
    server.receive_data(plain("POST", "/", *headers, "Expect: 100-continue"))
    assert server.events_received() == []
    out = b"".join(server.data_to_send())
    assert out.startswith(f"HTTP/1.1 {status} ".encode())  # and no 100 Continue
    assert server.state is CLOSED


def test_an_oversized_chunked_body_is_refused_as_it_comes() -> None:
    server = ServerProtocol(server_header=None, max_body_size=10)
    server.receive_data(plain("POST", "/", "Transfer-Encoding: chunked") + b"8\r\n12345678\r\n")
    server.receive_data(b"8\r\n")
    assert server.events_received() == []
    assert b"".join(server.data_to_send()).startswith(b"HTTP/1.1 413 ")


def test_a_head_request_gets_no_body_even_in_a_refusal() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(plain("HEAD", "/missing") + plain("GET", "/next"))
    [_head] = server.events_received()
    server.send_response(Response(404, "Not Found\n", KEEP))
    out = b"".join(server.data_to_send())
    assert out.endswith(b"Content-Length: 10\r\n\r\n")  # the length, not the bytes
    [following] = server.events_received()
    assert isinstance(following, Request) and following.path == "/next"


def test_an_upgrade_request_that_declares_a_body_is_refused_not_read() -> None:
    server = ServerProtocol(server_header=None)
    server.receive_data(request_bytes(extra=[("Content-Length", "5")]))
    [request] = server.events_received()  # at once: the body is not waited for
    assert isinstance(request, Request)
    assert server.accept(request).status == 400
