"""The asyncio client: opening, handshake failures, keepalive and closing against raw servers."""

from __future__ import annotations

import asyncio
import http.cookiejar
import socket
import ssl
import struct

import pytest

import rapidws
from rapidws import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidRedirect,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    Response,
    State,
)

from .utils import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TIMEOUT,
    RawPeer,
    Recorder,
    close_payload,
    echo,
    frame,
    handshake_response,
    raw_server,
    uri,
    wait,
)


def free_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Opening.


async def test_await_connect_and_async_with() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        assert isinstance(ws, rapidws.ClientConnection)
        assert ws.state is State.OPEN
        await ws.send("awaited")
        assert await wait(ws.recv()) == "awaited"
        await wait(ws.close())
        assert ws.state is State.CLOSED

        async with rapidws.connect(uri(server)) as ws:
            await ws.send(b"with")
            assert await wait(ws.recv()) == b"with"
        # Leaving the block closes the connection normally.
        assert ws.state is State.CLOSED
        assert ws.close_code == 1000


async def test_connect_refused() -> None:
    with pytest.raises(OSError):
        await wait(rapidws.connect(f"ws://127.0.0.1:{free_port()}/"))


@pytest.mark.parametrize(
    "bad_uri",
    [
        "http://localhost/",
        "localhost:8000",
        "ws://",
        "ws://localhost:99999/",
        "ws://localhost:port/",
        "ws://localhost/#fragment",
        "",
    ],
)
async def test_invalid_uri(bad_uri: str) -> None:
    with pytest.raises(InvalidURI):
        await rapidws.connect(bad_uri)
    with pytest.raises(InvalidURI):
        async with rapidws.connect(bad_uri):
            pass  # pragma: no cover


async def test_ssl_context_with_ws_uri() -> None:
    import ssl

    with pytest.raises(InvalidHandshake):
        rapidws.connect("ws://localhost/", ssl=ssl.create_default_context())


async def test_request_headers_on_the_wire() -> None:
    requests: asyncio.Queue[object] = asyncio.Queue()

    async def handler(peer: RawPeer) -> None:
        await requests.put(await peer.accept())
        await peer.read_eof()

    async with (
        raw_server(handler) as port,
        rapidws.connect(
            f"ws://127.0.0.1:{port}/path?q=1",
            origin="https://app.example.com",
            subprotocols=["a", "b"],
            additional_headers=[("X-Custom", "1"), ("Cookie", "k=v")],
            user_agent=None,
            close_timeout=0.1,
        ),
    ):
        request = await wait(requests.get())
    assert request.start_line == "GET /path?q=1 HTTP/1.1"  # type: ignore[attr-defined]
    headers = request.headers  # type: ignore[attr-defined]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert headers["origin"] == "https://app.example.com"
    assert headers["sec-websocket-protocol"] == "a, b"
    assert headers["x-custom"] == "1"
    assert headers["cookie"] == "k=v"
    assert "user-agent" not in headers


async def test_frames_arriving_with_the_101_response() -> None:
    async def handler(peer: RawPeer) -> None:
        request = await peer.read_request()
        key = request.headers["sec-websocket-key"]
        peer.send(handshake_response(key) + frame(OP_TEXT, "early", mask=None))
        await peer.read_eof()

    async with (
        raw_server(handler) as port,
        rapidws.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.1) as ws,
    ):
        assert await wait(ws.recv()) == "early"


# Handshake failures.


async def test_wrong_accept_key() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.accept(accept="d3JvbmcgYWNjZXB0IGtleQ==")
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse) as exc_info:
            await rapidws.connect(f"ws://127.0.0.1:{port}/")
        assert not isinstance(exc_info.value, InvalidStatus)
        assert "Sec-WebSocket-Accept" in str(exc_info.value)
        assert exc_info.value.response is not None
        assert exc_info.value.response.status == 101


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade"),
        (b"NOT HTTP\r\n\r\n", "status line"),
        (b"HTTP/1.1 101 OK\r\nbad header line\r\n\r\n", "invalid HTTP response"),
    ],
)
async def test_invalid_response(response: bytes, message: str) -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(response)
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse, match=message):
            await rapidws.connect(f"ws://127.0.0.1:{port}/")


async def test_unoffered_subprotocol() -> None:
    async def handler(peer: RawPeer) -> None:
        request = await peer.read_request()
        head = handshake_response(request.headers["sec-websocket-key"])
        peer.send(head[:-2] + b"Sec-WebSocket-Protocol: other\r\n\r\n")
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse, match="other"):
            await rapidws.connect(f"ws://127.0.0.1:{port}/", subprotocols=["chat"])


async def test_refusal_with_status_and_body() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 10\r\n\r\nno such ws"
        )
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(f"ws://127.0.0.1:{port}/")
    response = exc_info.value.response
    assert (response.status, response.reason, response.body) == (404, "Not Found", b"no such ws")
    assert response.headers["Content-Type"] == "text/plain"


async def test_refusal_with_body_until_eof() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 503 Service Unavailable\r\n\r\ncome back")
        await asyncio.sleep(0)
        peer.writer.close()  # the body ends with the connection
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(f"ws://127.0.0.1:{port}/")
    assert exc_info.value.response.status == 503
    assert exc_info.value.response.body == b"come back"


async def test_connection_closed_during_handshake() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 101 Switching")  # and hang up mid-response

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse, match="closed during the opening handshake"):
            await rapidws.connect(f"ws://127.0.0.1:{port}/")


async def test_connection_reset_during_handshake() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.abort()  # with SO_LINGER 0: a reset

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse) as exc_info:
            await rapidws.connect(f"ws://127.0.0.1:{port}/")
        # The reason is kept.
        assert isinstance(exc_info.value.__cause__, ConnectionResetError)


@pytest.mark.virtual_clock
async def test_open_timeout() -> None:
    client_gone = asyncio.Event()

    async def handler(peer: RawPeer) -> None:
        await peer.read_request()  # and never answer
        await peer.read_eof(timeout=2 * TIMEOUT)
        client_gone.set()

    async with raw_server(handler) as port:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await rapidws.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        assert loop.time() - start == pytest.approx(0.3)
        # The client dropped the connection.
        await wait(client_gone.wait())

        start = loop.time()
        with pytest.raises(TimeoutError):
            async with rapidws.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3):
                pass  # pragma: no cover
        assert loop.time() - start == pytest.approx(0.3)


# Frames and keepalive.


async def test_client_frames_are_masked_and_server_frames_must_not_be() -> None:
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        await received.put(await peer.read_frame())
        peer.send_frame(OP_BINARY, b"masked by the server")  # masked: forbidden
        await received.put(await peer.read_frame())
        peer.send_frame(OP_CLOSE, close_payload(1002), mask=None)
        peer.writer.close()  # the server closes the TCP connection

    async with raw_server(handler) as port:
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/")
        await ws.send("hello")
        data = await wait(received.get())
        assert (data.opcode, data.payload, data.masked) == (OP_TEXT, b"hello", True)  # type: ignore[attr-defined]
        close = await wait(received.get())
        assert close.opcode == OP_CLOSE  # type: ignore[attr-defined]
        assert close.masked  # type: ignore[attr-defined]
        assert close.close_code == 1002  # type: ignore[attr-defined]
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert exc_info.value.code == 1002


@pytest.mark.virtual_clock
async def test_client_keepalive() -> None:
    pings: asyncio.Queue[object] = asyncio.Queue()

    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        for _ in range(3):
            ping = await peer.read_frame()
            await pings.put(ping)
            peer.send_frame(OP_PONG, ping.payload, mask=None)
        await peer.read_eof()

    async with (
        raw_server(handler) as port,
        rapidws.connect(f"ws://127.0.0.1:{port}/", ping_interval=0.05, close_timeout=0.1) as ws,
    ):
        for _ in range(3):
            ping = await wait(pings.get())
            assert ping.opcode == OP_PING  # type: ignore[attr-defined]
            assert ping.masked  # type: ignore[attr-defined]
        assert ws.state is State.OPEN


@pytest.mark.virtual_clock
async def test_client_keepalive_timeout() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        assert (await peer.read_frame()).opcode == OP_PING  # never answered
        close = await peer.read_close()
        assert (close.close_code, close.masked) == (1011, True)
        peer.writer.close()

    async with raw_server(handler) as port:
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=0.2)
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert exc_info.value.code == 1011
        assert ws.close_code == 1011


@pytest.mark.virtual_clock
async def test_client_without_keepalive() -> None:
    first_frame: asyncio.Queue[object] = asyncio.Queue()

    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        await first_frame.put(await peer.read_frame())
        await peer.read_eof()

    async with (
        raw_server(handler) as port,
        rapidws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None, close_timeout=0.1) as ws,
    ):
        await asyncio.sleep(0.3)  # many intervals, were pings enabled
        await ws.send("first")
        received = await wait(first_frame.get())
        assert (received.opcode, received.payload) == (OP_TEXT, b"first")  # type: ignore[attr-defined]


# Closing.


@pytest.mark.virtual_clock
async def test_client_waits_for_the_server_to_close_tcp() -> None:
    events: asyncio.Queue[str] = asyncio.Queue()

    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        close = await peer.read_frame()
        assert close.close_code == 4000
        peer.send_frame(OP_CLOSE, close.payload, mask=None)
        # RFC 6455 7.1.1: the client should wait for the server to close first.
        with pytest.raises(TimeoutError):
            await wait(peer.reader.read(1), 0.3)
        await events.put("server closing")
        peer.writer.close()

    async with raw_server(handler) as port:
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/")
        await wait(ws.close(4000, "done"))
        assert events.get_nowait() == "server closing"
        assert (ws.close_code, ws.close_reason) == (4000, "done")


@pytest.mark.virtual_clock
async def test_client_close_timeout() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        await peer.read_eof(timeout=2 * TIMEOUT)  # never answers the close frame

    async with raw_server(handler) as port:
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wait(ws.close())
        assert loop.time() - start == pytest.approx(0.3, abs=0.002)
        assert ws.close_code == 1006
        with pytest.raises(ConnectionClosedError):
            await ws.recv()


async def test_server_initiated_close_against_raw_server() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.accept()
        peer.send_frame(OP_TEXT, "bye soon", mask=None)
        peer.send_frame(OP_CLOSE, close_payload(1001, "maintenance"), mask=None)
        reply = await peer.read_frame()
        assert (reply.opcode, reply.close_code, reply.masked) == (OP_CLOSE, 1001, True)
        peer.writer.close()

    async with raw_server(handler) as port:
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/")
        assert await wait(ws.recv()) == "bye soon"
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await wait(ws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (1001, "maintenance")
        assert exc_info.value.rcvd_then_sent is True


# Sockets.


async def test_connect_with_existing_socket() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await wait(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)))
        async with rapidws.connect("ws://example.com/over-sock", sock=sock) as ws:
            sws = await recorder.get()
            assert sws.request is not None
            assert sws.request.headers["Host"] == "example.com"
            assert sws.request.path == "/over-sock"
            await ws.send("via sock")
            assert await wait(sws.recv()) == "via sock"


# Redirects.


def redirect(status: int, location: str | None, *headers: str) -> bytes:
    """A redirect response, without a body."""
    lines = [f"HTTP/1.1 {status} Redirect", "Content-Length: 0", *headers]
    if location is not None:
        lines.append(f"Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_follows_redirects(status: int) -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:

        async def handler(peer: RawPeer) -> None:
            request = await peer.read_request()
            target = request.start_line.split()[1]
            assert request.headers["authorization"] == "Basic dTpw"  # the same host: kept
            if target == "/a":
                peer.send(redirect(status, "b?x=1"))  # relative
            else:
                assert target == "/b?x=1"
                # http:// means ws://; another host: no credentials.
                peer.send(redirect(status, f"http://localhost:{server.port}/c"))
            await peer.read_eof()

        async with (
            raw_server(handler) as port,
            rapidws.connect(f"ws://u:p@127.0.0.1:{port}/a") as ws,
        ):
            sws = await recorder.get()
            assert sws.request.target == "/c"
            assert "Authorization" not in sws.request.headers
            await ws.send("redirected")
            assert await wait(sws.recv()) == "redirected"


async def test_redirect_limit() -> None:
    requests = 0

    async def handler(peer: RawPeer) -> None:
        nonlocal requests
        await peer.read_request()
        requests += 1
        peer.send(redirect(302, "/again"))
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidRedirect, match="too many redirects") as exc_info:
            await wait(rapidws.connect(f"ws://127.0.0.1:{port}/", max_redirects=3))
        assert requests == 4
        assert exc_info.value.response.status == 302
        # max_redirects=0: none followed.
        with pytest.raises(InvalidRedirect, match="max_redirects=0"):
            await wait(rapidws.connect(f"ws://127.0.0.1:{port}/", max_redirects=0))
        assert requests == 5


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (redirect(302, None), InvalidRedirect, "without Location"),
        (redirect(307, "ftp://example.com/"), InvalidRedirect, "invalid redirect"),
        (redirect(300, "/elsewhere"), InvalidStatus, "HTTP 300"),  # not a redirect to follow
    ],
)
async def test_redirect_not_followed(
    response: bytes, error: type[InvalidResponse], message: str
) -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(response)
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(error, match=message) as exc_info:
            await wait(rapidws.connect(f"ws://127.0.0.1:{port}/"))
        assert type(exc_info.value) is error


async def test_redirect_from_wss_to_ws_refused(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def hook(connection: object, request: object) -> Response:
        return Response(301, headers=[("Location", "ws://localhost/plain")])

    async with rapidws.serve(
        echo, "127.0.0.1", 0, ssl=server_context, process_request=hook
    ) as server:
        with pytest.raises(InvalidRedirect, match="from wss:// to ws://localhost/plain refused"):
            await wait(rapidws.connect(f"wss://localhost:{server.port}/", ssl=client_context))


# Cookies.


async def test_cookies_from_a_jar() -> None:
    cookies: list[str | None] = []

    async def handler(peer: RawPeer) -> None:
        request = await peer.read_request()
        cookies.append(request.headers.get("cookie"))
        if request.start_line.split()[1] == "/login":
            peer.send(redirect(302, "/", "Set-Cookie: session=abc; Path=/"))
        else:
            head = handshake_response(request.headers["sec-websocket-key"])
            peer.send(head[:-2] + b"Set-Cookie: theme=dark\r\nSet-Cookie: s=1; Secure\r\n\r\n")
            await peer.read_close()
            peer.send_close(mask=None)
            peer.writer.close()  # the server closes TCP first
            return
        await peer.read_eof()

    jar = http.cookiejar.CookieJar()
    async with raw_server(handler) as port:
        async with rapidws.connect(f"ws://127.0.0.1:{port}/login", cookies=jar):
            pass
        # The cookie set by the redirect went with the next request.
        assert cookies == [None, "session=abc"]
        assert {cookie.name for cookie in jar} == {"session", "theme", "s"}
        # Both are sent next time, with the caller's own, but not the Secure
        # one over ws://.
        async with rapidws.connect(
            f"ws://127.0.0.1:{port}/", cookies=jar, additional_headers={"Cookie": "mine=1"}
        ):
            pass
        assert cookies[2] is not None
        assert cookies[2].startswith("mine=1; ")
        assert sorted(cookies[2].split("; ")[1:]) == ["session=abc", "theme=dark"]


# Hostile servers: each failure typed and bounded.


@pytest.mark.virtual_clock
async def test_response_that_never_ends_is_bounded_by_open_timeout() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 101 Switching Protocols\r\n")
        for i in range(1000):  # a header every 10 ms, within every limit
            peer.send(f"X-{i}: y\r\n".encode())
            await asyncio.sleep(0.01)

    async with raw_server(handler) as port:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await rapidws.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.5, max_headers=None)
        assert loop.time() - start == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("extra", "message", "options"),
    [
        (b"X: " + b"y" * 9000 + b"\r\n", "header line is too long", {}),
        ((b"X: " + b"y" * 8000 + b"\r\n") * 5, "HTTP head is too large", {}),
        (
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n",
            "server accepted extension 'permessage-deflate', not offered",
            {"compression": None},
        ),
        (b"Sec-WebSocket-Extensions: x-unknown\r\n", "'x-unknown', not offered", {}),
        (b"Sec-WebSocket-Protocol: chat\r\n", "'chat', which was not offered", {}),
    ],
)
async def test_invalid_101_response(extra: bytes, message: str, options: dict[str, object]) -> None:
    async def handler(peer: RawPeer) -> None:
        request = await peer.read_request()
        head = handshake_response(request.headers["sec-websocket-key"])
        peer.send(head[:-2] + extra + b"\r\n")
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidResponse, match=message):
            await wait(rapidws.connect(f"ws://127.0.0.1:{port}/", **options))  # type: ignore[arg-type]


@pytest.mark.virtual_clock
async def test_auto_pong_off_lets_the_servers_keepalive_time_out() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.2) as server:
        ws = await rapidws.connect(uri(server), auto_pong=False, ping_interval=None)
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (1011, "keepalive ping timeout")
