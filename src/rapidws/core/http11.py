"""The HTTP/1.1 messages of the opening handshake, and their incremental parser.

Only what an upgrade needs: a request line or status line, header fields, and
(for a refusal) a small body. Every limit is checked as bytes arrive, so a peer
that sends an endless header line costs at most the limit in memory.
"""

from __future__ import annotations

import http
import re
from urllib.parse import parse_qsl, urlsplit

from ..exceptions import InvalidRequest, SecurityError
from ..speedups import parse_head, parse_request_line, serialize_head
from ..speedups.pure_handshake import parse_version
from .headers import Headers, HeadersLike
from .limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE

__all__ = [
    "BodyReader",
    "HeadReader",
    "Request",
    "Response",
    "keeps_alive",
    "parse_request_line",
    "parse_version",
]


class Request:
    """An HTTP request: the client's opening handshake.

    Attributes:
        method: the request method, ``GET`` for a WebSocket handshake.
        target: the request target as sent, path and query (``/chat?room=1``).
            A hook may rewrite it; :attr:`path` follows.
        headers: the request headers.
        version: the HTTP version, ``(1, 1)``.
        body: the body, read whole (``Content-Length`` or chunked) before the
            request is handed over; ``b""`` for a handshake.

    Hooks may set attributes of their own on it (``request.user = ...``).
    """

    # Slots (a server keeps every connection's request), with a __dict__ for
    # the application's attributes, made on first use. The target is a plain
    # attribute (a router reads it once per request) and the path is computed
    # on first read and kept with the target it came from: a callback that
    # routes on it reads it for every message, and a hook may rewrite the
    # target.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_path",
        "_path_of",
        "body",
        "headers",
        "method",
        "target",
        "version",
    )
    __match_args__ = ("method", "target", "headers", "version")

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        version: tuple[int, int] = (1, 1),
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.target = target
        self._path_of: str | None = None
        self._path = ""
        self.headers = headers
        self.version = version
        #: The request body (a plain HTTP request's; a handshake has none).
        self.body = body

    @property
    def path(self) -> str:
        """The path of the target, without the query (``/chat``).

        It stays percent-encoded, as sent. For an absolute-form target
        (``ws://host/chat``) it is the path part.
        """
        target = self.target
        if target is not self._path_of:
            # Not urlsplit() for the origin form: it reads "//host/x" as an authority.
            self._path = (
                target.partition("?")[0] if target.startswith("/") else urlsplit(target).path or "/"
            )
            self._path_of = target
        return self._path

    def __repr__(self) -> str:
        return (
            f"Request(method={self.method!r}, target={self.target!r}, "
            f"headers={self.headers!r}, version={self.version!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.target, self.headers, self.version) == (
            other.method,
            other.target,
            other.headers,
            other.version,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    @property
    def query(self) -> str:
        """The query of the request target, without ``?`` (``room=1``), or ``""``."""
        return self.target.partition("?")[2]

    @property
    def query_params(self) -> dict[str, str]:
        """The query's parameters, percent-decoded (``{"room": "1"}``).

        A name given twice keeps its last value; ``get_all`` semantics are
        :func:`urllib.parse.parse_qs` on :attr:`query`. Bytes that are not
        UTF-8 become U+FFFD.
        """
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies of the ``Cookie`` header(s), by name (RFC 6265 section 5.4).

        Values are as sent, without the quotes of a quoted value; a pair
        without ``=`` is skipped, and a name given twice keeps its first value
        (the most specific path, in the order browsers send them).
        """
        cookies: dict[str, str] = {}
        for header in self.headers.get_all("Cookie"):
            for pair in header.split(";"):
                name, equals, value = pair.partition("=")
                name = name.strip()
                if equals and name:
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] == '"':
                        value = value[1:-1]
                    cookies.setdefault(name, value)
        return cookies

    def serialize(self) -> bytes:
        """Serialize the request head."""
        line = f"{self.method} {self.target} HTTP/{self.version[0]}.{self.version[1]}"
        return serialize_head(line, self.headers._items, b"")


class Response:
    r"""An HTTP response: the server's answer to the opening handshake.

    ``Response(401, "unauthorized\\n")`` refuses a connection with a plain-text
    body; a ``str`` body is encoded to UTF-8 and gets a ``Content-Type`` unless
    ``headers`` has one. ``Content-Length`` is set when the response is sent.

    Attributes:
        status: the status code.
        body: the body, as bytes.
        headers: the response headers.
        reason: the reason phrase (``Switching Protocols``).
    """

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        body: str | bytes = b"",
        headers: HeadersLike | None = None,
        reason: str | None = None,
    ) -> None:
        self.status = int(status)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        if isinstance(body, str):
            body = body.encode()
            if "Content-Type" not in self.headers:
                self.headers["Content-Type"] = "text/plain; charset=utf-8"
        self.body = body
        self.reason = _REASONS.get(self.status, "") if reason is None else reason

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body!r}, {self.headers!r})"

    def serialize(self, *, head_only: bool = False) -> bytes:
        """Serialize the response, head and body, setting ``Content-Length``.

        ``head_only`` leaves the body out and keeps its length: the answer to
        a ``HEAD`` request (RFC 9110 section 9.3.2).
        """
        headers = self.headers
        if self.status != 101 and "Content-Length" not in headers:
            headers = Headers(headers)
            headers["Content-Length"] = str(len(self.body))
        body = b"" if head_only else self.body
        return serialize_head(f"HTTP/1.1 {self.status} {self.reason}", headers._items, body)


# Built once: looking a phrase up through http.HTTPStatus(status) costs more
# than the rest of building a response.
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}

# What a start line may hold so far: no control characters but tabs, then
# perhaps its CR. Binary garbage (a TLS handshake) fails this at once.
_START_LINE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\r?")


class HeadReader:
    """Read an HTTP head (start line and headers) incrementally, within limits.

    :meth:`feed` returns ``None`` until the blank line that ends the head has
    arrived, then ``(start_line, headers, rest)``: the raw start line, the
    headers, and the bytes that followed the head.

    Raises from :meth:`feed`:
        SecurityError: a limit was exceeded (status 414 for the start line,
            431 for the headers).
        InvalidRequest: the head is malformed (status 400).
    """

    def __init__(
        self,
        *,
        max_line: int | None = MAX_LINE,
        max_headers: int | None = MAX_HEADERS,
        max_header_bytes: int | None = MAX_HEADER_BYTES,
    ) -> None:
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._scanned = 0
        self._newlines = 0  # line ends seen so far, to count header fields early

    def feed(self, data: bytes) -> tuple[bytes, Headers, bytes] | None:
        """Add received bytes; return the parsed head once complete."""
        buf = self._buf
        if buf or type(data) is not bytes:
            buf += data
            # Resume the search where the last one stopped, so that a peer
            # sending one byte at a time costs linear, not quadratic, time.
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        else:
            # Nearly always: the whole head in one read, not copied to a buffer.
            end = data.find(b"\r\n\r\n")
            if end < 0:
                buf += data
        if end < 0:
            self._newlines += buf.count(b"\n", self._scanned)
            self._scanned = len(buf)
            self._check_partial()
            return None
        if buf:
            data = bytes(buf)
            buf.clear()
        start_line, items, index = parse_head(
            data, end, self.max_line, self.max_headers, self.max_header_bytes
        )
        return start_line, Headers._from_fields(items, index), data[end + 4 :]

    def _check_partial(self) -> None:
        buf = self._buf
        # A trailing CR may be the start of the line's CRLF, which no limit
        # counts: without this, a line (or head) of exactly the limit would be
        # refused when its CR and LF arrive in separate reads.
        size = len(buf) - buf.endswith(b"\r")
        if self.max_header_bytes is not None and size > self.max_header_bytes:
            raise SecurityError("HTTP head is too large")
        # Every complete line but the start line is a header field.
        if self.max_headers is not None and self._newlines - 1 > self.max_headers:
            raise SecurityError("too many header fields")
        if self._newlines == 0 and _START_LINE_RE.fullmatch(buf) is None:
            # Binary data, such as a TLS handshake sent to a plain port: say
            # so at once rather than wait for a line end that never comes.
            raise InvalidRequest("not an HTTP/1.1 message")
        if self.max_line is not None:
            line_start = buf.rfind(b"\n") + 1
            if size - line_start > self.max_line:
                if line_start == 0:
                    raise SecurityError("request line is too long", 414)
                raise SecurityError("header line is too long")


def keeps_alive(request: Request, response: Response) -> bool:
    """Tell whether the connection stays open for another request after ``response``.

    Only when both ends want it: an HTTP/1.1 request without ``Connection:
    close`` (RFC 9112 section 9.3), answered by a response that says
    ``Connection: keep-alive``. A handshake refusal closes its connection;
    a server opts in per response.
    """
    if request.version < (1, 1) or response.status < 200 or response.status == 101:
        return False
    requested = ",".join(request.headers.get_all("Connection")).lower()
    answered = ",".join(response.headers.get_all("Connection")).lower()
    return "close" not in _tokens(requested) and "keep-alive" in _tokens(answered)


def _tokens(value: str) -> set[str]:
    return {token.strip() for token in value.split(",")}


# A chunk-size line: hex digits, then chunk extensions (RFC 9112 section 7.1.1),
# which are ignored but must be well-formed enough not to hide a CR or LF.
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
# Bounds on what is not data: a chunk-size line, and the trailer section.
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER = 8192


class BodyReader:
    """Read a request body incrementally, by ``Content-Length`` or chunked, within a limit.

    Make one with :meth:`for_request`, which also validates the framing
    headers; :meth:`feed` returns ``None`` until the body is complete, then
    ``(body, rest)``. Anything that could let two servers read the message
    differently (request smuggling) is refused: both ``Content-Length`` and
    ``Transfer-Encoding``, differing lengths, a chunk-size that is not hex,
    a bare LF.

    Raises from :meth:`for_request` and :meth:`feed`:
        InvalidRequest: malformed framing (400), or a transfer coding other
            than chunked (501).
        SecurityError: a body over the limit (413).
    """

    def __init__(self, length: int | None, max_size: int | None) -> None:
        self._length = length  # None: chunked
        self._max_size = max_size
        self._buf = bytearray()
        self._body = bytearray()
        # Chunked: the bytes left of the current chunk's data, or -1 while a
        # chunk-size line is awaited, or -2 while the trailer section is read.
        self._left = -1
        self._trailer = 0  # bytes of the trailer section so far

    @classmethod
    def for_request(cls, request: Request, max_size: int | None) -> BodyReader | None:
        """Return a reader for the request's body, or ``None`` when it has none."""
        headers = request.headers
        encodings = headers.get_all("Transfer-Encoding")
        lengths = headers.get_all("Content-Length")
        if encodings:
            # RFC 9112 section 6.3: both framings in one request is a
            # smuggling attempt, as is chunked in HTTP/1.0.
            if lengths:
                raise InvalidRequest("both Content-Length and Transfer-Encoding")
            if request.version < (1, 1):
                raise InvalidRequest("Transfer-Encoding in an HTTP/1.0 request")
            codings = [token.strip().lower() for token in ",".join(encodings).split(",")]
            if codings != ["chunked"]:
                raise InvalidRequest("only the chunked transfer coding is supported", 501)
            return cls(None, max_size)
        if not lengths:
            return None
        values = {value.strip() for value in ",".join(lengths).split(",")}
        if len(values) != 1:
            raise InvalidRequest("conflicting Content-Length values")
        (value,) = values
        if not value.isdigit() or not value.isascii() or len(value) > 18:
            raise InvalidRequest("invalid Content-Length")
        length = int(value)
        if max_size is not None and length > max_size:
            raise SecurityError("request body is too large", 413)
        return None if length == 0 else cls(length, max_size)

    def feed(self, data: bytes | bytearray) -> tuple[bytes, bytes] | None:
        """Add received bytes; return ``(body, rest)`` once the body is complete."""
        if self._length is not None:
            missing = self._length - len(self._body)
            self._body += data[:missing]
            if len(self._body) < self._length:
                return None
            return bytes(self._body), bytes(data[missing:])
        self._buf += data
        return self._feed_chunked()

    def _feed_chunked(self) -> tuple[bytes, bytes] | None:
        buf = self._buf
        while True:
            if self._left > 0:  # chunk data, then its CRLF
                if len(buf) < self._left + 2:
                    return None
                if buf[self._left : self._left + 2] != b"\r\n":
                    raise InvalidRequest("chunk data not followed by CRLF")
                self._body += buf[: self._left]
                del buf[: self._left + 2]
                self._left = -1
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                limit = _MAX_TRAILER if self._left == -2 else _MAX_CHUNK_LINE
                if len(buf) > limit or b"\n" in buf:
                    raise InvalidRequest("malformed chunked body")
                return None
            line = bytes(buf[:line_end])
            del buf[: line_end + 2]
            if self._left == -2:  # the trailer section: fields, ignored, up to an empty line
                if not line:
                    return bytes(self._body), bytes(buf)
                self._trailer += len(line) + 2
                if self._trailer > _MAX_TRAILER:
                    raise SecurityError("trailer section is too large")
                if b"\n" in line or b"\r" in line or b":" not in line:
                    raise InvalidRequest("malformed trailer field")
                continue
            match = _CHUNK_SIZE_RE.fullmatch(line)
            if match is None:
                raise InvalidRequest("malformed chunk size")
            size = int(match[1], 16)
            if self._max_size is not None and len(self._body) + size > self._max_size:
                raise SecurityError("request body is too large", 413)
            self._left = size if size else -2
