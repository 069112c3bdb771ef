"""Tests for rapidws.core.http11: handshake messages and the incremental head reader."""

from __future__ import annotations

import http
import weakref

import pytest

from rapidws.core.headers import Headers
from rapidws.core.http11 import (
    BodyReader,
    HeadReader,
    Request,
    Response,
    keeps_alive,
    parse_request_line,
    parse_version,
)
from rapidws.exceptions import InvalidRequest, SecurityError

HEAD = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Pad: \t padded \t\r\n\r\n"


def feed_bytewise(reader: HeadReader, data: bytes) -> tuple[bytes, Headers, bytes] | None:
    """Feed ``data`` one byte at a time; return what the last byte gave."""
    result = None
    for i in range(len(data)):
        assert result is None, "the head ended early"
        result = reader.feed(data[i : i + 1])
    return result


# Messages.


def test_request_serialize_and_target_parts() -> None:
    request = Request("GET", "/chat?room=1", Headers({"Host": "example.com"}))
    assert request.serialize() == b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert request.path == "/chat"
    assert request.query == "room=1"
    assert Request("GET", "/", Headers(), (1, 0)).serialize() == b"GET / HTTP/1.0\r\n\r\n"
    assert Request("GET", "/", Headers()).query == ""


def test_response_with_text_body() -> None:
    response = Response(403, "forbidden\n")
    assert response.body == b"forbidden\n"
    assert response.reason == "Forbidden"
    assert response.serialize() == (
        b"HTTP/1.1 403 Forbidden\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 10\r\n"
        b"\r\nforbidden\n"
    )
    # Serializing does not change the response's own headers.
    assert "Content-Length" not in response.headers


def test_response_keeps_given_headers() -> None:
    headers = Headers({"Content-Type": "text/html", "Content-Length": "2"})
    response = Response(200, "<p>", headers)
    assert response.headers is headers
    assert response.headers["Content-Type"] == "text/html"
    assert response.serialize().endswith(b"Content-Length: 2\r\n\r\n<p>")


def test_response_101_has_no_content_length() -> None:
    response = Response(101, headers=[("Upgrade", "websocket")])
    assert response.serialize() == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def test_response_reason() -> None:
    for status in range(100, 600):
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        assert Response(status).reason == phrase
    assert Response(599).reason == ""
    assert Response(200, reason="Fine").reason == "Fine"
    assert Response(204, b"").serialize().startswith(b"HTTP/1.1 204 No Content\r\n")


def test_response_repr() -> None:
    assert repr(Response(404, b"no", {"X": "1"})) == "Response(404, b'no', Headers([('X', '1')]))"


# Parsing helpers.


@pytest.mark.parametrize(
    ("text", "version"),
    [("HTTP/1.1", (1, 1)), ("HTTP/1.0", (1, 0)), ("HTTP/2.0", (2, 0)), ("HTTP/1", None)],
)
def test_parse_version(text: str, version: tuple[int, int] | None) -> None:
    assert parse_version(text) == version


def test_parse_version_rejects_garbage() -> None:
    for text in ["http/1.1", "HTTP/1.1 ", "HTTP/11.1", ""]:
        assert parse_version(text) is None


def test_parse_request_line() -> None:
    assert parse_request_line(b"GET /a?b HTTP/1.1") == ("GET", "/a?b", (1, 1))
    assert parse_request_line(b"HEAD / HTTP/1.0") == ("HEAD", "/", (1, 0))
    assert parse_request_line(b"GET ws://h:1/a HTTP/1.1") == ("GET", "ws://h:1/a", (1, 1))


@pytest.mark.parametrize("target", [b"*", b"x", b"http:x", b"ftp://h/a"])
def test_parse_request_line_refuses_targets_other_than_origin_or_absolute(target: bytes) -> None:
    with pytest.raises(InvalidRequest, match="invalid request target") as info:
        parse_request_line(b"GET " + target + b" HTTP/1.1")
    assert info.value.status == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/9.9"])
def test_parse_request_line_refuses_other_major_versions(version: bytes) -> None:
    with pytest.raises(InvalidRequest, match="is not supported") as info:
        parse_request_line(b"GET / " + version)
    assert info.value.status == 505


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/chat?room=1", "/chat", "room=1"),
        ("//evil.example/admin", "//evil.example/admin", ""),
        ("/a%2Fb/%E2%82%AC?q", "/a%2Fb/%E2%82%AC", "q"),
        ("ws://host:8000/x?y=1", "/x", "y=1"),
        ("ws://host", "/", ""),
    ],
)
def test_request_path_and_query(target: str, path: str, query: str) -> None:
    request = Request("GET", target, Headers())
    assert (request.path, request.query) == (path, query)


def test_request_takes_attributes_weak_references_and_patterns() -> None:
    # A hook may tag the request; a registry may hold it weakly; a match
    # statement may take it apart by position, as with the dataclass it was.
    request = Request("GET", "/chat?x=1", Headers({"Host": "h"}))
    request.user = "alice"  # type: ignore[attr-defined]
    assert weakref.ref(request)() is request
    match request:
        case Request("GET", target, headers):
            assert (target, headers["Host"]) == ("/chat?x=1", "h")
        case _:
            pytest.fail("no match")
    with pytest.raises(AttributeError):
        request.path = "/other"  # type: ignore[misc]  # it follows the target


def test_request_path_follows_a_rewritten_target() -> None:
    # A process_request hook may route a request elsewhere.
    request = Request("GET", "/old?x=1", Headers())
    assert request.path == "/old"
    request.target = "/new/route"
    assert request.path == "/new/route"
    assert request == Request("GET", "/new/route", Headers())


@pytest.mark.parametrize(
    "line",
    [b"", b"GET", b"GET /", b"GET / HTTP/1.1 x", b"GET  HTTP/1.1", b"G\xe9T / HTTP/1.1"],
)
def test_parse_request_line_malformed(line: bytes) -> None:
    with pytest.raises(InvalidRequest, match="invalid request line") as info:
        parse_request_line(line)
    assert info.value.status == 400


@pytest.mark.parametrize("target", [b"/caf\xc3\xa9", b"/a\x00b", b"/tab\tx"])
def test_parse_request_line_invalid_target(target: bytes) -> None:
    with pytest.raises(InvalidRequest, match="invalid request target"):
        parse_request_line(b"GET " + target + b" HTTP/1.1")


# The head reader.


def test_head_reader_whole() -> None:
    start_line, headers, rest = HeadReader().feed(HEAD + b"\x81\x00")  # type: ignore[misc]
    assert start_line == b"GET /chat?room=1 HTTP/1.1"
    assert headers.items() == [("Host", "example.com"), ("X-Empty", ""), ("X-Pad", "padded")]
    assert rest == b"\x81\x00"


def test_head_reader_byte_by_byte() -> None:
    result = feed_bytewise(HeadReader(), HEAD)
    assert result is not None
    assert result[0] == b"GET /chat?room=1 HTTP/1.1"
    assert result[1]["x-pad"] == "padded"
    assert result[2] == b""


@pytest.mark.parametrize("offset", range(1, len(HEAD)))
def test_head_reader_split(offset: int) -> None:
    reader = HeadReader()
    assert reader.feed(HEAD[:offset]) is None
    assert reader.feed(HEAD[offset:]) == HeadReader().feed(HEAD)


def test_head_reader_without_headers() -> None:
    assert HeadReader().feed(b"HTTP/1.1 200 OK\r\n\r\nbody") == (
        b"HTTP/1.1 200 OK",
        Headers(),
        b"body",
    )


def test_head_reader_keeps_obs_text() -> None:
    _, headers, _ = HeadReader().feed(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n")  # type: ignore[misc]
    assert headers["X-Name"] == "café"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "invalid header line: b'no colon'"),
        (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", "invalid header name: ''"),
        (b"GET / HTTP/1.1\r\nX-A : 1\r\n\r\n", "invalid header name: 'X-A '"),
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n", "invalid header line: b'\\tfolded'"),
        (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "invalid value for header X-A"),
        (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", "invalid value for header X-A"),
        # The name is checked before the value, and line by line.
        (b"GET / HTTP/1.1\r\nX A: a\x00\r\n\r\n", "invalid header name: 'X A'"),
        (b"GET / HTTP/1.1\r\nCaf\xe9: 1\r\n\r\n", "invalid header name: 'Caf\xe9'"),
        (b"GET / HTTP/1.1\r\nX-A: \x00\r\nX B: 1\r\n\r\n", "invalid value for header X-A"),
        (b"GET / HTTP/1.1\r\nX B: 1\r\nX-A: \x00\r\n\r\n", "invalid header name: 'X B'"),
    ],
)
def test_head_reader_malformed(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        HeadReader().feed(data)
    assert str(info.value) == message
    assert info.value.status == 400
    assert not isinstance(info.value, SecurityError)


# Limits: checked as bytes arrive, before the blank line.


@pytest.mark.parametrize(
    ("kwargs", "data", "message", "status"),
    [
        ({"max_line": 10}, b"GET /012345", "request line is too long", 414),
        ({"max_line": 14}, b"GET / HTTP/1.1\r\nX-A: 0123456789", "header line is too long", 431),
        (
            {"max_headers": 2},
            b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n",
            "too many header fields",
            431,
        ),
        ({"max_header_bytes": 20}, b"GET / HTTP/1.1\r\nX-A: ", "HTTP head is too large", 431),
    ],
)
def test_head_reader_limit_exceeded_before_end(
    kwargs: dict[str, int], data: bytes, message: str, status: int
) -> None:
    # Whole and byte by byte, the last byte is the first one over the limit.
    for feed in (HeadReader(**kwargs).feed, lambda d: feed_bytewise(HeadReader(**kwargs), d)):
        assert HeadReader(**kwargs).feed(data[:-1]) is None
        with pytest.raises(SecurityError) as info:
            feed(data)
        assert str(info.value) == message
        assert info.value.status == status


@pytest.mark.parametrize(
    ("kwargs", "data", "message", "status"),
    [
        # A head that arrives at once is checked when complete.
        ({"max_line": 10}, b"GET /01234 HTTP/1.1\r\n\r\n", "request line is too long", 414),
        ({"max_line": 10}, b"GET / H\r\nX-A: 123456\r\n\r\n", "header line is too long", 431),
        ({"max_headers": 1}, b"GET / H\r\na: 1\r\nb: 2\r\n\r\n", "too many header fields", 431),
        (
            {"max_header_bytes": 20},
            b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
            "HTTP head is too large",
            431,
        ),
    ],
)
def test_head_reader_limit_exceeded_in_complete_head(
    kwargs: dict[str, int], data: bytes, message: str, status: int
) -> None:
    with pytest.raises(SecurityError) as info:
        HeadReader(**kwargs).feed(data)
    assert str(info.value) == message
    assert info.value.status == status


def test_head_reader_at_limits() -> None:
    # Exactly at every limit passes, whole or byte by byte (CR and LF apart).
    data = b"GET /0123 HTTP/1.1\r\nX-A: 0123456789abc\r\nX-B: 1\r\n\r\n"
    kwargs = {"max_line": 18, "max_headers": 2, "max_header_bytes": len(data) - 2}
    assert HeadReader(**kwargs).feed(data) is not None
    assert feed_bytewise(HeadReader(**kwargs), data) is not None
    for name, limit in kwargs.items():
        tighter = {**kwargs, name: limit - 1}
        with pytest.raises(SecurityError):
            HeadReader(**tighter).feed(data)
        with pytest.raises(SecurityError):
            feed_bytewise(HeadReader(**tighter), data)


def test_head_reader_without_limits() -> None:
    reader = HeadReader(max_line=None, max_headers=None, max_header_bytes=None)
    data = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + b"X: 1\r\n" * 1000
    assert reader.feed(data) is None
    result = reader.feed(b"\r\n")
    assert result is not None
    assert len(result[1]) == 1000


@pytest.mark.parametrize(
    "data",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/1.1\x00", b"\x00\xff"],
)
def test_head_reader_refuses_binary_start_line_at_once(data: bytes) -> None:
    # A TLS handshake sent to a plain port is refused without waiting for a CRLF.
    with pytest.raises(InvalidRequest, match=r"not an HTTP/1\.1 message") as info:
        HeadReader().feed(data)
    assert info.value.status == 400


# Query parameters and cookies, for hooks and routes.


def test_query_params_are_decoded_and_the_last_value_wins() -> None:
    request = Request("GET", "/ws?room=a%20b&token=x&token=y&empty=&caf%C3%A9=%E2%98%95", Headers())
    assert request.query_params == {"room": "a b", "token": "y", "empty": "", "café": "☕"}
    assert Request("GET", "/ws", Headers()).query_params == {}


def test_cookies_from_every_cookie_header() -> None:
    headers = Headers(
        [
            ("Cookie", 'session=abc; theme="dark"; flag; =nameless; session=other'),
            ("Cookie", "lang=fr"),
        ]
    )
    assert Request("GET", "/", headers).cookies == {
        "session": "abc",  # the first of a repeated name: the most specific path
        "theme": "dark",
        "lang": "fr",
    }
    assert Request("GET", "/", Headers()).cookies == {}


# Request bodies.


def body_request(*headers: tuple[str, str], version: tuple[int, int] = (1, 1)) -> Request:
    return Request("POST", "/", Headers([("Host", "x"), *headers]), version)


def read_body(reader: BodyReader, data: bytes, step: int) -> tuple[bytes, bytes]:
    """Feed ``data`` ``step`` bytes at a time; return the body and the rest."""
    for end in range(step, len(data) + step, step):
        done = reader.feed(data[end - step : end])
        if done is not None:
            body, rest = done
            return body, rest + data[end:]
    raise AssertionError("the body did not end")


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_body_by_content_length(step: int) -> None:
    reader = BodyReader.for_request(body_request(("Content-Length", "5")), 100)
    assert reader is not None
    assert read_body(reader, b"helloGET / HTTP/1.1", step) == (b"hello", b"GET / HTTP/1.1")


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_chunked_body_with_extensions_and_trailers(step: int) -> None:
    reader = BodyReader.for_request(body_request(("Transfer-Encoding", "Chunked")), 100)
    assert reader is not None
    data = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    assert read_body(reader, data, step) == (b"hello world", b"NEXT")


def test_no_body() -> None:
    assert BodyReader.for_request(body_request(), 100) is None
    assert BodyReader.for_request(body_request(("Content-Length", "0")), 100) is None


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ([("Content-Length", "5"), ("Transfer-Encoding", "chunked")], 400, "both"),
        ([("Content-Length", "5"), ("Content-Length", "6")], 400, "conflicting"),
        ([("Content-Length", "5, 6")], 400, "conflicting"),
        ([("Content-Length", "-1")], 400, "invalid Content-Length"),
        ([("Content-Length", "+5")], 400, "invalid Content-Length"),
        ([("Content-Length", "0x5")], 400, "invalid Content-Length"),
        ([("Content-Length", "5 5")], 400, "invalid Content-Length"),
        ([("Transfer-Encoding", "gzip, chunked")], 501, "only the chunked"),
        ([("Transfer-Encoding", "chunked, chunked")], 501, "only the chunked"),
        ([("Content-Length", "101")], 413, "too large"),
    ],
)
def test_body_framing_refused(headers: list[tuple[str, str]], status: int, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as exc_info:
        BodyReader.for_request(body_request(*headers), 100)
    assert exc_info.value.status == status


def test_chunked_in_http_1_0_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"HTTP/1\.0"):
        BodyReader.for_request(body_request(("Transfer-Encoding", "chunked"), version=(1, 0)), 100)


def test_repeated_identical_content_lengths_are_one() -> None:
    reader = BodyReader.for_request(body_request(("Content-Length", "2, 2")), 100)
    assert reader is not None and reader.feed(b"ok") == (b"ok", b"")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"5\nhello\r\n0\r\n\r\n", "malformed chunk"),  # a bare LF
        (b"z\r\n", "malformed chunk size"),
        (b"0x5\r\n", "malformed chunk size"),
        (b" 5\r\n", "malformed chunk size"),
        (b"11111111111111111\r\n", "malformed chunk size"),  # 17 hex digits
        (b"5\r\nhelloXX", "not followed by CRLF"),
        (b"5;ext\x00\r\n", "malformed chunk size"),
        (b"0\r\nno colon\r\n\r\n", "malformed trailer"),
        (b"5" * 5000, "malformed chunked body"),  # a chunk-size line without end
        (b"40\r\n" + b"x" * 64 + b"\r\n41\r\n", "too large"),
    ],
)
def test_chunked_body_refused(data: bytes, error: str) -> None:
    reader = BodyReader.for_request(body_request(("Transfer-Encoding", "chunked")), 100)
    assert reader is not None
    with pytest.raises(InvalidRequest, match=error):
        reader.feed(data)


def test_trailer_section_is_bounded() -> None:
    reader = BodyReader.for_request(body_request(("Transfer-Encoding", "chunked")), 100)
    assert reader is not None
    with pytest.raises(SecurityError, match="trailer"):
        reader.feed(b"0\r\n" + b"X: y\r\n" * 3000)


@pytest.mark.parametrize(
    ("version", "request_connection", "response_connection", "kept"),
    [
        ((1, 1), None, "keep-alive", True),
        ((1, 1), "close", "keep-alive", False),
        ((1, 1), "Keep-Alive, Close", "keep-alive", False),
        ((1, 1), None, None, False),  # the server opts in per response
        ((1, 1), None, "close", False),
        ((1, 0), "keep-alive", "keep-alive", False),
    ],
)
def test_keeps_alive(
    version: tuple[int, int],
    request_connection: str | None,
    response_connection: str | None,
    kept: bool,
) -> None:
    headers = Headers([("Connection", request_connection)] if request_connection else [])
    request = Request("GET", "/", headers, version)
    response = Response(
        200, "ok", [("Connection", response_connection)] if response_connection else []
    )
    assert keeps_alive(request, response) is kept
    assert not keeps_alive(request, Response(101, headers=[("Connection", "keep-alive")]))


def test_head_only_serialization_keeps_the_length() -> None:
    assert Response(200, "hello").serialize(head_only=True).endswith(b"Content-Length: 5\r\n\r\n")
