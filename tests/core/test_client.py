"""Tests for rapidws.core.client: sending the handshake and checking the answer."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from rapidws.core.client import USER_AGENT, ClientProtocol
from rapidws.core.frames import frame_header
from rapidws.core.handshake import is_valid_key
from rapidws.core.headers import Headers, HeadersLike
from rapidws.core.http11 import Request, Response
from rapidws.core.protocol import CLOSED, CONNECTING, OPEN
from rapidws.core.server import ServerProtocol
from rapidws.core.uri import parse_uri
from rapidws.exceptions import InvalidResponse, InvalidStatus

from .test_extensions import INVERT, InvertClientFactory, ShiftClientFactory

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = b"\x37\xfa\x21\x3d"


@pytest.fixture(autouse=True)
def _fixed_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rapidws.core.client.generate_key", lambda: KEY)
    monkeypatch.setattr("rapidws.core.protocol.generate_mask", lambda: MASK)


def make_client(uri: str = "ws://example.com/chat", **kwargs: object) -> ClientProtocol:
    """Return a client that sent its handshake request."""
    client = ClientProtocol(parse_uri(uri), **kwargs)  # type: ignore[arg-type]
    client.send_request(client.connect())
    client.data_to_send()
    return client


def response_bytes(
    changes: Mapping[str, str | None] | None = None,
    *,
    status_line: str = "HTTP/1.1 101 Switching Protocols",
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """Build a handshake response to ``KEY``: ``changes`` replaces or removes headers."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": ACCEPT,
        **(changes or {}),
    }
    lines = [status_line, *(f"{n}: {v}" for n, v in headers.items() if v is not None)]
    lines += [f"{n}: {v}" for n, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def refusal(status: int, body: bytes, *, length: int | None = None) -> bytes:
    """Build a refusal with ``Content-Length: length`` when given."""
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return head.encode() + b"\r\n" + body


def assert_handshake_failed(client: ClientProtocol, exc_type: type, message: str) -> Response:
    """Check the failure, and return the response that the exception carries."""
    exc = client.handshake_exc
    assert type(exc) is exc_type
    assert str(exc) == message
    assert isinstance(exc, InvalidResponse)
    assert exc.response is client.response
    assert client.state is CLOSED
    assert client.data_to_send() == [b""]
    if exc.response is not None:
        assert client.events_received() == [exc.response]
    else:
        assert client.events_received() == []
    # Whatever follows is ignored.
    client.receive_data(b"\x81\x05Hello")
    client.receive_eof()
    assert client.events_received() == []
    assert client.handshake_exc is exc
    return exc.response


# The request.


def test_connect() -> None:
    client = ClientProtocol(parse_uri("ws://example.com/chat?room=1"))
    request = client.connect()
    assert request.serialize() == (
        b"GET /chat?room=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"User-Agent: " + USER_AGENT.encode() + b"\r\n"
        b"\r\n"
    )
    assert client.state is CONNECTING
    assert client.data_to_send() == []


def test_send_request() -> None:
    client = ClientProtocol(parse_uri("ws://example.com/"))
    request = client.connect()
    client.send_request(request)
    assert client.request is request
    assert client.data_to_send() == [request.serialize()]


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("ws://example.com/", "example.com"),
        ("ws://example.com:80/", "example.com"),
        ("ws://example.com:8080/", "example.com:8080"),
        ("wss://example.com:443/", "example.com"),
        ("wss://example.com:80/", "example.com:80"),
        ("ws://127.0.0.1:9000", "127.0.0.1:9000"),
        ("ws://[::1]/", "[::1]"),
        ("wss://[2001:db8::1]:8443/", "[2001:db8::1]:8443"),
    ],
)
def test_connect_host_header(uri: str, host: str) -> None:
    request = ClientProtocol(parse_uri(uri)).connect()
    assert request.headers.get_all("Host") == [host]


def test_connect_uses_fresh_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real generate_key
    client = ClientProtocol(parse_uri("ws://example.com/"))
    keys = {client.connect().headers["Sec-WebSocket-Key"] for _ in range(5)}
    assert len(keys) == 5
    assert all(is_valid_key(key) for key in keys)


@pytest.mark.parametrize(
    "additional_headers",
    [
        {"Authorization": "Bearer t", "Cookie": "a=1"},
        [("Authorization", "Bearer t"), ("Cookie", "a=1")],
        Headers([("Authorization", "Bearer t"), ("Cookie", "a=1")]),
    ],
)
def test_connect_with_options(additional_headers: HeadersLike) -> None:
    client = ClientProtocol(
        parse_uri("wss://example.com/"),
        origin="https://example.com",
        subprotocols=["superchat", "chat"],
        extensions=[InvertClientFactory([("fast", None), ("level", "3")]), ShiftClientFactory()],
        additional_headers=additional_headers,
        user_agent=None,
    )
    headers = client.connect().headers
    assert headers["Origin"] == "https://example.com"
    assert headers["Sec-WebSocket-Protocol"] == "superchat, chat"
    assert headers["Sec-WebSocket-Extensions"] == "x-invert; fast; level=3, x-shift"
    assert headers["Authorization"] == "Bearer t"
    assert headers["Cookie"] == "a=1"
    assert "User-Agent" not in headers


def test_connect_additional_headers_come_last() -> None:
    client = ClientProtocol(
        parse_uri("ws://example.com/"), additional_headers=[("User-Agent", "custom")]
    )
    headers = client.connect().headers
    assert headers.get_all("User-Agent") == [USER_AGENT, "custom"]


# The response.


def test_receive_101() -> None:
    client = make_client()
    client.receive_data(response_bytes())
    [response] = client.events_received()
    assert isinstance(response, Response)
    assert client.response is response
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.headers["Sec-WebSocket-Accept"] == ACCEPT
    assert client.state is OPEN
    assert client.handshake_exc is None
    assert client.subprotocol is None
    assert client.extensions == []
    assert client.data_to_send() == []


def test_receive_101_byte_by_byte() -> None:
    client = make_client()
    data = response_bytes()
    for i in range(len(data) - 1):
        client.receive_data(data[i : i + 1])
        assert client.events_received() == []
    client.receive_data(data[-1:])
    assert len(client.events_received()) == 1
    assert client.state is OPEN


def test_receive_101_without_reason() -> None:
    client = make_client()
    client.receive_data(response_bytes(status_line="HTTP/1.1 101"))
    [response] = client.events_received()
    assert response.reason == ""  # type: ignore[union-attr]
    assert client.state is OPEN


def test_receive_frames_with_101() -> None:
    client = make_client()
    client.receive_data(response_bytes() + b"\x81\x05Hello\x89\x00\x82")
    events = client.events_received()
    assert events[1:] == ["Hello", b""]
    assert client.data_to_send() == [b"\x8a\x80" + MASK]  # the pong
    client.receive_data(b"\x01\xff")
    assert client.events_received() == [b"\xff"]


def test_receive_101_with_subprotocol() -> None:
    client = make_client(subprotocols=["chat", "superchat"])
    client.receive_data(response_bytes({"Sec-WebSocket-Protocol": "superchat"}))
    assert client.subprotocol == "superchat"
    assert client.state is OPEN


def test_receive_101_with_extensions() -> None:
    client = make_client(extensions=[InvertClientFactory([("fast", None)]), ShiftClientFactory()])
    client.receive_data(response_bytes({"Sec-WebSocket-Extensions": "x-shift, x-invert; fast"}))
    assert [extension.name for extension in client.extensions] == ["x-shift", "x-invert"]
    # RSV1 now means x-invert.
    client.receive_data(frame_header(0xC1, 2, None) + b"ok".translate(INVERT))
    assert client.events_received()[1:] == ["ok"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Sec-WebSocket-Accept": "wrong"}, "wrong Sec-WebSocket-Accept header 'wrong'"),
        ({"Sec-WebSocket-Accept": None}, "wrong Sec-WebSocket-Accept header None"),
        ({"Upgrade": None}, "missing Upgrade: websocket header in response"),
        ({"Upgrade": "h2c"}, "missing Upgrade: websocket header in response"),
        ({"Connection": None}, "missing Connection: Upgrade header in response"),
        ({"Connection": "close"}, "missing Connection: Upgrade header in response"),
        ({"Connection": "up grade"}, "invalid token 'up grade' in header value 'up grade'"),
        (
            {"Sec-WebSocket-Protocol": "mqtt"},
            "server chose subprotocol 'mqtt', which was not offered",
        ),
        ({"Sec-WebSocket-Protocol": "chat, superchat"}, "server chose more than one subprotocol"),
        (
            {"Sec-WebSocket-Extensions": "x-shift"},
            "server accepted extension 'x-shift', not offered",
        ),
        (
            {"Sec-WebSocket-Extensions": "x-invert, x-invert"},
            "server accepted extension 'x-invert', not offered",
        ),
        (
            {"Sec-WebSocket-Extensions": "x-invert; slow"},
            "x-invert parameters [('slow', None)] were not offered",
        ),
        (
            {"Sec-WebSocket-Extensions": 'x-invert; a="b'},
            "unterminated quoted string in 'x-invert; a=\"b'",
        ),
    ],
)
def test_receive_invalid_101(changes: dict[str, str | None], message: str) -> None:
    client = make_client(subprotocols=["chat", "superchat"], extensions=[InvertClientFactory()])
    client.receive_data(response_bytes(changes))
    response = assert_handshake_failed(client, InvalidResponse, message)
    assert response.status == 101
    assert client.extensions == []


def test_receive_101_without_offering_subprotocols() -> None:
    client = make_client()
    client.receive_data(response_bytes({"Sec-WebSocket-Protocol": "chat"}))
    assert_handshake_failed(
        client, InvalidResponse, "server chose subprotocol 'chat', which was not offered"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1\r\n\r\n", "invalid status line: b'HTTP/1.1'"),
        (b"HTTP/1.1 OK 101\r\n\r\n", "invalid status line: b'HTTP/1.1 OK 101'"),
        (b"ICY 101 Switching\r\n\r\n", "invalid status line: b'ICY 101 Switching'"),
        (
            b"HTTP/1.1 101 OK\r\nUpgrade\r\n\r\n",
            "invalid HTTP response: invalid header line: b'Upgrade'",
        ),
    ],
)
def test_receive_malformed_response(data: bytes, message: str) -> None:
    client = make_client()
    client.receive_data(data)
    assert_handshake_failed(client, InvalidResponse, message)


def test_receive_response_over_limit() -> None:
    client = make_client(max_line=100)
    client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nX-Long: " + b"x" * 100)
    assert_handshake_failed(
        client, InvalidResponse, "invalid HTTP response: header line is too long"
    )


# Refusals: the body is read for the error.


def test_receive_refusal_with_content_length() -> None:
    client = make_client()
    data = refusal(403, b"forbidden\nextra", length=10)
    client.receive_data(data[:-8])
    assert client.handshake_exc is None
    assert client.events_received() == []
    client.receive_data(data[-8:])  # the rest of the body and more
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 403"
    )
    assert response.status == 403
    assert response.reason == "Whatever"
    assert response.body == b"forbidden\n"


def test_receive_refusal_with_empty_body() -> None:
    client = make_client()
    client.receive_data(refusal(503, b"", length=0))
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 503"
    )
    assert response.body == b""


def test_receive_refusal_until_eof() -> None:
    client = make_client()
    client.receive_data(refusal(500, b"internal"))
    client.receive_data(b" error")
    assert client.handshake_exc is None
    client.receive_eof()
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 500"
    )
    assert response.body == b"internal error"


def test_receive_refusal_truncated_by_eof() -> None:
    client = make_client()
    client.receive_data(refusal(404, b"not", length=9))
    client.receive_eof()
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 404"
    )
    assert response.body == b"not"


@pytest.mark.parametrize("length", [None, 100])
def test_receive_refusal_body_capped(length: int | None) -> None:
    client = make_client(max_body=10)
    client.receive_data(refusal(400, b"0123456789"))
    assert client.handshake_exc is None
    client.receive_data(b"abcdef")  # past max_body: no need to wait for more
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 400"
    )
    assert response.body == b"0123456789"


def test_receive_refusal_with_invalid_content_length() -> None:
    client = make_client()
    data = b"HTTP/1.1 400 Bad\r\nContent-Length: lots\r\n\r\nbody"
    client.receive_data(data)
    assert client.handshake_exc is None  # read until EOF
    client.receive_eof()
    response = assert_handshake_failed(
        client, InvalidStatus, "server rejected WebSocket connection: HTTP 400"
    )
    assert response.body == b"body"


# EOF.


@pytest.mark.parametrize("data", [b"", b"HTTP/1.1 101 Switching"])
def test_receive_eof_during_handshake(data: bytes) -> None:
    client = make_client()
    client.receive_data(data)
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert str(client.handshake_exc) == "connection closed during the opening handshake"
    assert client.handshake_exc.response is None
    assert client.state is CLOSED
    assert client.events_received() == []


def test_receive_eof_after_101() -> None:
    client = make_client()
    client.receive_data(response_bytes())
    client.receive_eof()
    assert client.handshake_exc is None
    assert client.state is CLOSED


# Against the server.


def test_handshake_with_server() -> None:
    client = make_client(
        "ws://localhost:8765/chat?room=1",
        origin="http://localhost",
        subprotocols=["v2", "v1"],
        extensions=[InvertClientFactory([("fast", None)])],
    )
    server = ServerProtocol(subprotocols=["v1", "v2"])
    assert client.request is not None
    server.receive_data(client.request.serialize())
    [request] = server.events_received()
    assert isinstance(request, Request)
    assert request.query == "room=1"
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    [response] = client.events_received()
    assert client.state is server.state is OPEN
    assert client.subprotocol == server.subprotocol == "v1"
    assert client.extensions == server.extensions == []  # the server has no factory
    assert isinstance(response, Response)
    client.send_text("ping?")
    server.receive_data(b"".join(client.data_to_send()))
    assert server.events_received() == ["ping?"]


@pytest.mark.parametrize("split", [None, 17])
def test_client_accepts_any_reason_phrase_however_split(split: int | None) -> None:
    # RFC 7230: the reason phrase may hold tabs and obs-text.
    data = response_bytes(status_line="HTTP/1.1 101 Sw\titching Pr\xfctocols").replace(
        b"\xc3\xbc", b"\xfc"
    )
    client = make_client()
    for chunk in [data] if split is None else [data[:split], data[split:]]:
        client.receive_data(chunk)
    assert client.state is OPEN


@pytest.mark.parametrize(
    "status_line", ["HTTP/1.1 1\u00b21 Odd", "HTTP/1.1 1010 Long", "HTTP/1.1 10 Short"]
)
def test_client_refuses_non_ascii_or_odd_status_codes(status_line: str) -> None:
    client = make_client()
    client.receive_data(response_bytes(status_line=status_line))
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert client.state is CLOSED


def test_client_ignores_non_ascii_content_length() -> None:
    client = make_client()
    client.receive_data(b"HTTP/1.1 403 No\r\nContent-Length: \xc2\xb2\r\n\r\nbody")
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"body"


def test_client_sends_user_info_as_basic_auth() -> None:
    client = ClientProtocol(parse_uri("ws://user:pass@example.com/"))
    assert client.connect().headers["Authorization"] == "Basic dXNlcjpwYXNz"
    explicit = ClientProtocol(
        parse_uri("ws://user:pass@example.com/"), additional_headers={"Authorization": "Bearer x"}
    )
    assert explicit.connect().headers.get_all("Authorization") == ["Bearer x"]
