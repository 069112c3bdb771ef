"""The sans-I/O part of WebSockets over HTTP/2 (RFC 8441): fields in, requests, responses."""

from __future__ import annotations

from typing import Any

import pytest

from rapidws.core.extensions.permessage_deflate import (
    ClientPerMessageDeflate,
    ServerPerMessageDeflate,
)
from rapidws.core.http2 import (
    Http2ClientProtocol,
    Http2ServerProtocol,
    request_fields,
    request_from_fields,
    response_fields,
    response_from_fields,
)
from rapidws.core.http11 import Request, Response
from rapidws.core.protocol import CLOSED, CONNECTING, OPEN
from rapidws.core.server import wants_upgrade
from rapidws.core.uri import parse_uri
from rapidws.exceptions import InvalidRequest, InvalidResponse, InvalidStatus


def fields(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


# RFC 8441 section 5.1's example request, as h2 decodes it.
CONNECT = (
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "https"),
    (":path", "/chat"),
    (":authority", "server.example.com"),
    ("sec-websocket-protocol", "chat, superchat"),
    ("sec-websocket-extensions", "permessage-deflate"),
    ("sec-websocket-version", "13"),
    ("origin", "http://www.example.com"),
)
GET = ((":method", "GET"), (":scheme", "https"), (":path", "/healthz?x=1"), (":authority", "a"))


def connect_request(*extra: tuple[str, str], version: str = "13") -> Request:
    base = [(n, version if n == "sec-websocket-version" else v) for n, v in CONNECT]
    return request_from_fields(fields(*base, *extra))


# Requests from fields.


def test_extended_connect_becomes_its_http11_handshake() -> None:
    request = connect_request()
    assert request.method == "GET"
    assert request.target == "/chat"
    assert request.version == (2, 0)
    assert request.headers.items() == [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("sec-websocket-protocol", "chat, superchat"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("sec-websocket-version", "13"),
        ("origin", "http://www.example.com"),
    ]
    assert "Sec-WebSocket-Key" not in request.headers
    assert wants_upgrade(request)


def test_plain_request_keeps_its_method_and_target() -> None:
    request = request_from_fields(fields(*GET, ("accept", "*/*")))
    assert (request.method, request.target, request.path, request.query) == (
        "GET",
        "/healthz?x=1",
        "/healthz",
        "x=1",
    )
    assert request.headers.items() == [("Host", "a"), ("accept", "*/*")]
    assert request.body == b""
    assert not wants_upgrade(request)


def test_host_field_wins_over_authority() -> None:
    request = request_from_fields(fields(*GET, ("host", "b")))
    assert request.headers.get_all("Host") == ["b"]


@pytest.mark.parametrize(
    ("pairs", "status", "message"),
    [
        (CONNECT[2:], 400, "missing :method pseudo-header field"),
        (
            [p for p in CONNECT if p[0] != ":protocol"],
            400,
            "missing :protocol pseudo-header field in a CONNECT",
        ),
        (
            [(":method", "CONNECT"), (":authority", "proxy.example:443")],
            405,
            "CONNECT without :protocol (a tunnel) is not supported",
        ),
        (
            [(":method", "GET"), (":protocol", "websocket"), *CONNECT[2:]],
            400,
            ":protocol in a GET request, which is not a CONNECT",
        ),
        (
            [(":method", "CONNECT"), (":protocol", "connect-udp"), *CONNECT[2:]],
            400,
            "unsupported :protocol 'connect-udp', use websocket",
        ),
        (
            [p for p in CONNECT if p[0] != ":authority"],
            400,
            "missing :authority pseudo-header field",
        ),
        (
            [p for p in CONNECT if p[0] != ":path"],
            400,
            "missing :scheme or :path pseudo-header field",
        ),
        (
            [p for p in GET if p[0] != ":scheme"],
            400,
            "missing :scheme or :path pseudo-header field",
        ),
        ([*GET[:2], (":path", ""), GET[3]], 400, "empty :path pseudo-header field"),
        ([*GET, (":method", "GET")], 400, "invalid or misplaced pseudo-header field :method"),
        ([*GET, (":status", "200")], 400, "invalid or misplaced pseudo-header field :status"),
        (
            [GET[0], ("accept", "*/*"), *GET[1:]],
            400,
            "invalid or misplaced pseudo-header field :scheme",
        ),
        (
            [*GET, ("connection", "close")],
            400,
            "header field 'connection' is not allowed in HTTP/2",
        ),
        ([*GET, ("upgrade", "websocket")], 400, "header field 'upgrade' is not allowed in HTTP/2"),
        ([*GET, ("te", "gzip")], 400, "header field 'te' is not allowed in HTTP/2"),
        ([*GET, ("Accept", "*/*")], 400, "header field 'Accept' is not allowed in HTTP/2"),
        ([*GET, ("x", "a\nb")], 400, "invalid value for header x"),
    ],
)
def test_malformed_requests_are_refused(
    pairs: list[tuple[str, str]], status: int, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        request_from_fields(fields(*pairs))
    assert info.value.status == status
    assert str(info.value).startswith(message)


def test_te_trailers_is_allowed() -> None:
    assert request_from_fields(fields(*GET, ("te", "trailers"))).headers["te"] == "trailers"


def test_too_many_fields_are_refused_with_431() -> None:
    pairs = [(f"x-{i}", "v") for i in range(11)]
    request_from_fields(fields(*GET, *pairs[:10]), max_headers=10)
    with pytest.raises(InvalidRequest) as info:
        request_from_fields(fields(*GET, *pairs), max_headers=10)
    assert info.value.status == 431


# Responses to fields.


def test_accepted_handshake_is_sent_as_200_without_http11_fields() -> None:
    response = Response(101, headers=[("Sec-WebSocket-Protocol", "chat"), ("Server", "x")])
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    assert response_fields(response) == [
        (":status", "200"),
        ("sec-websocket-protocol", "chat"),
        ("server", "x"),
    ]


def test_answer_carries_its_content_length() -> None:
    response = Response(404, "Not Found\n", [("Connection", "keep-alive")])
    expected = [
        (":status", "404"),
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", "10"),
    ]
    assert response_fields(response) == expected
    # A HEAD request gets the length of the body it does not get.
    assert response_fields(response, head_only=True) == expected
    response.headers["Content-Length"] = "10"
    assert response_fields(response)[-1] == ("content-length", "10")


# The engine of a stream.


def test_accept_negotiates_like_the_http11_handshake() -> None:
    protocol = Http2ServerProtocol(
        subprotocols=["superchat", "chat"], extensions=[ServerPerMessageDeflate()]
    )
    request = connect_request()
    protocol.receive_request(request)
    assert protocol.events_received() == [request]
    response = protocol.accept(request)
    assert response.status == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "superchat"
    assert response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert "Sec-WebSocket-Accept" not in response.headers
    assert "Upgrade" not in response.headers
    assert protocol.subprotocol == "superchat"
    assert [type(e).__name__ for e in protocol.extensions] == ["PerMessageDeflate"]
    assert response_fields(response)[0] == (":status", "200")


@pytest.mark.parametrize(
    ("request_", "status", "reason"),
    [
        (connect_request(version="8"), 426, "unsupported Sec-WebSocket-Version '8', use 13"),
        (
            request_from_fields(fields(*[p for p in CONNECT if p[0] != "sec-websocket-version"])),
            426,
            "missing Sec-WebSocket-Version header",
        ),
        (
            request_from_fields(fields(*GET)),
            400,
            "not an extended CONNECT with :protocol websocket (RFC 8441)",
        ),
        (connect_request(("origin", "https://evil.example")), 403, "origin"),
    ],
)
def test_accept_refuses_with_a_status(request_: Request, status: int, reason: str) -> None:
    protocol = Http2ServerProtocol(origins=["http://www.example.com"])
    response = protocol.accept(request_)
    assert response.status == status
    assert reason in response.body.decode()
    assert protocol.handshake_exc is not None
    if status == 426:
        assert response.headers["Sec-WebSocket-Version"] == "13"
    # Fields that HTTP/2 forbids stay out of the HEADERS frame.
    names = [name for name, _ in response_fields(response)]
    assert "connection" not in names and "upgrade" not in names


def test_an_http11_request_is_not_an_extended_connect() -> None:
    request = Request("GET", "/", connect_request().headers)  # version 1.1
    assert Http2ServerProtocol().accept(request).status == 400


def test_frames_sent_before_the_response_are_parsed_after_it() -> None:
    protocol = Http2ServerProtocol()
    request = connect_request()
    protocol.receive_request(request)
    protocol.events_received()
    # A masked text frame "Hi", from RFC 6455 section 5.7.
    protocol.receive_data(b"\x81\x82\x37\xfa\x21\x3d\x7f\x93")
    assert protocol.events_received() == []
    protocol.send_response(protocol.accept(request))
    assert protocol.state is OPEN
    assert protocol.data_to_send() == []  # the response is HEADERS, not bytes
    assert protocol.events_received() == ["Hi"]
    protocol.send_text("Hi")
    assert protocol.data_to_send() == [b"\x81\x02Hi"]


def test_other_answer_is_its_body_then_the_end_of_the_stream() -> None:
    protocol = Http2ServerProtocol()
    request = request_from_fields(fields(*GET))
    protocol.receive_request(request)
    protocol.send_response(Response(200, "ok\n"))
    assert protocol.state is CLOSED
    assert protocol.data_to_send() == [b"ok\n", b""]


def test_head_answer_has_no_body() -> None:
    protocol = Http2ServerProtocol()
    protocol.receive_request(request_from_fields(fields((":method", "HEAD"), *GET[1:])))
    protocol.send_response(Response(200, "ok\n"))
    assert protocol.data_to_send() == [b""]


def test_one_request_and_one_response_per_stream() -> None:
    protocol = Http2ServerProtocol()
    request = request_from_fields(fields(*GET))
    protocol.receive_request(request)
    assert protocol.state is CONNECTING
    with pytest.raises(ValueError, match="one request"):
        protocol.receive_request(request)
    protocol.send_response(Response(204))
    with pytest.raises(ValueError, match="sent already"):
        protocol.send_response(Response(204))


# The client: its request as fields.


def make_client(uri: str = "wss://server.example.com/chat", **kwargs: Any) -> Http2ClientProtocol:
    return Http2ClientProtocol(parse_uri(uri), user_agent=None, **kwargs)


def test_client_request_is_rfc_8441_example() -> None:
    client = make_client(
        origin="http://www.example.com",
        subprotocols=["chat", "superchat"],
        extensions=[ClientPerMessageDeflate()],
    )
    request = client.connect()
    client.send_request(request)
    assert client.request is request
    assert client.data_to_send() == []  # the request is HEADERS, not bytes
    assert (request.method, request.target, request.version) == ("GET", "/chat", (2, 0))
    assert "Sec-WebSocket-Key" not in request.headers
    assert request_fields(request, scheme="https") == [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/chat"),
        (":authority", "server.example.com"),
        ("sec-websocket-version", "13"),
        ("origin", "http://www.example.com"),
        ("sec-websocket-protocol", "chat, superchat"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
    ]


def test_client_request_carries_additional_headers_and_credentials() -> None:
    client = make_client(
        "ws://user:pw@localhost:8080/a?b=1",
        additional_headers=[("Cookie", "id=1"), ("X-Trace", "t")],
    )
    assert request_fields(client.connect(), scheme="http") == [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/a?b=1"),
        (":authority", "localhost:8080"),
        ("sec-websocket-version", "13"),
        ("cookie", "id=1"),
        ("x-trace", "t"),
        ("authorization", "Basic dXNlcjpwdw=="),
    ]


def test_client_request_reads_as_the_server_sees_it() -> None:
    client = make_client(subprotocols=["chat"])
    request = client.connect()
    encoded = [(n.encode(), v.encode()) for n, v in request_fields(request, scheme="https")]
    assert request_from_fields(encoded) == request


# The client: the response from fields.


def test_response_from_fields() -> None:
    response = response_from_fields(fields((":status", "200"), ("sec-websocket-protocol", "c")))
    assert (response.status, response.body) == (200, b"")
    assert response.headers.items() == [("sec-websocket-protocol", "c")]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("server", "x")], "missing :status pseudo-header field"),
        ([(":status", "2000")], "invalid :status '2000'"),
        ([(":status", "\uff12\uff10\uff10")], "invalid :status"),  # fullwidth digits
        ([(":status", "200"), (":status", "200")], "invalid or misplaced pseudo-header field"),
        ([("server", "x"), (":status", "200")], "invalid or misplaced pseudo-header field"),
        ([(":status", "200"), (":path", "/")], "invalid or misplaced pseudo-header field :path"),
        ([(":status", "200"), ("upgrade", "websocket")], "header field 'upgrade' is not allowed"),
        ([(":status", "200"), ("Server", "x")], "header field 'Server' is not allowed"),
        ([(":status", "200"), ("x", "a\nb")], "invalid value for header x"),
    ],
)
def test_malformed_responses_are_refused(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        response_from_fields(fields(*pairs))


def test_too_many_response_fields_are_refused() -> None:
    pairs = [(":status", "200"), *[(f"x-{i}", "v") for i in range(3)]]
    response_from_fields(fields(*pairs), max_headers=3)
    with pytest.raises(InvalidResponse, match="more than 2 header fields"):
        response_from_fields(fields(*pairs), max_headers=2)


# The client: the engine of a stream.


def opened_client(*pairs: tuple[str, str], **kwargs: Any) -> Http2ClientProtocol:
    client = make_client(**kwargs)
    client.send_request(client.connect())
    client.receive_response(fields(*pairs))
    return client


def test_client_accepts_200_and_negotiates_like_http11() -> None:
    client = opened_client(
        (":status", "200"),
        ("sec-websocket-protocol", "superchat"),
        ("sec-websocket-extensions", "permessage-deflate; server_no_context_takeover"),
        subprotocols=["chat", "superchat"],
        extensions=[ClientPerMessageDeflate()],
    )
    assert client.state is OPEN
    assert client.handshake_exc is None
    [response] = client.events_received()
    assert isinstance(response, Response) and response.status == 200
    assert client.subprotocol == "superchat"
    assert [type(e).__name__ for e in client.extensions] == ["PerMessageDeflate"]
    # An unmasked text frame "Hello", from RFC 6455 section 5.7.
    client.receive_data(b"\x81\x05Hello")
    assert client.events_received() == ["Hello"]
    client.send_text("Hi " * 100)
    [frame] = client.data_to_send()
    assert frame[0] == 0xC1 and frame[1] & 0x80  # compressed (RSV1) and masked


def test_client_accepts_any_2xx() -> None:
    assert opened_client((":status", "204")).state is OPEN


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (
            [(":status", "200"), ("sec-websocket-protocol", "other")],
            "server chose subprotocol 'other', which was not offered",
        ),
        (
            [(":status", "200"), ("sec-websocket-extensions", "permessage-deflate")],
            "server accepted extension 'permessage-deflate', not offered",
        ),
        ([(":status", "200"), (":status", "200")], "invalid or misplaced pseudo-header field"),
    ],
)
def test_client_refuses_invalid_200(pairs: list[tuple[str, str]], message: str) -> None:
    client = opened_client(*pairs, subprotocols=["chat"])
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert message in str(client.handshake_exc)
    assert client.state is CLOSED
    assert client.data_to_send() == [b""]  # END_STREAM


def test_client_refusal_is_invalid_status_with_body_at_end_of_stream() -> None:
    client = opened_client((":status", "403"), ("content-type", "text/plain"))
    assert client.handshake_exc is None
    client.receive_data(b"go ")
    client.receive_data(b"away")
    assert client.handshake_exc is None  # the body ends with the stream
    client.receive_eof()
    exc = client.handshake_exc
    assert isinstance(exc, InvalidStatus)
    assert (exc.response.status, exc.response.body) == (403, b"go away")
    assert str(exc) == "server rejected WebSocket connection: HTTP 403"


def test_client_refusal_with_content_length_ends_with_its_body() -> None:
    client = opened_client((":status", "404"), ("content-length", "2"))
    client.receive_data(b"no")
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"no"


def test_client_refuses_data_before_the_response() -> None:
    client = make_client()
    client.send_request(client.connect())
    client.receive_data(b"\x81\x05Hello")
    assert isinstance(client.handshake_exc, InvalidResponse)
    assert str(client.handshake_exc) == "data before the response"


def test_client_end_of_stream_before_the_response() -> None:
    client = make_client()
    client.send_request(client.connect())
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidResponse)


def test_client_takes_one_response() -> None:
    client = opened_client((":status", "200"))
    with pytest.raises(ValueError, match="one response"):
        client.receive_response(fields((":status", "200")))


def test_client_and_server_engines_talk() -> None:
    # Both ends of one stream, the header fields as h2 hands them over.
    client = make_client(subprotocols=["chat"], extensions=[ClientPerMessageDeflate()])
    server = Http2ServerProtocol(subprotocols=["chat"], extensions=[ServerPerMessageDeflate()])
    request = client.connect()
    client.send_request(request)
    sent = request_fields(request, scheme="https")
    server.receive_request(request_from_fields(fields(*sent)))
    server_request = server.events_received()[0]
    assert isinstance(server_request, Request)
    server.send_response(server.accept(server_request))
    assert server.response is not None
    client.receive_response(fields(*response_fields(server.response)))
    assert client.state is OPEN and client.subprotocol == "chat"
    client.send_text("ping " * 100)
    server.receive_data(b"".join(client.data_to_send()))
    assert server.events_received() == ["ping " * 100]
    server.send_close(1001)
    client.receive_data(b"".join(server.data_to_send()))
    assert client.close_rcvd is not None and client.close_rcvd.code == 1001
