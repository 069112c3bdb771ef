"""The asyncio server: handlers, shutdown, handshake hooks, hostile clients, listening sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

import rapidws
from rapidws import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    Request,
    Response,
    ServerConnection,
)

from .utils import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    TIMEOUT,
    RawPeer,
    Recorder,
    echo,
    frame,
    frame_header,
    handshake_request,
    wait,
)
from .utils import uri as make_uri


def error_records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "rapidws.server"
        and record.levelno == logging.ERROR
        and message in record.getMessage()
    ]


async def check_echo(ws: rapidws.ClientConnection, count: int = 20, tag: str = "") -> None:
    """Send ``count`` messages and check that they come back, in order."""
    for i in range(count):
        await ws.send(f"{tag}{i}")
    for i in range(count):
        assert await wait(ws.recv()) == f"{tag}{i}"


# Handlers.


async def test_handler_exception_closes_with_1011_and_spares_other_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            if message == "boom":
                raise RuntimeError("handler bug")
            await ws.send(message)

    caplog.set_level(logging.ERROR, logger="rapidws.server")
    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        async with rapidws.connect(make_uri(server)) as doomed:
            for i in range(50):
                await healthy.send(f"before {i}")
            await doomed.send("boom")
            for i in range(50):
                await healthy.send(f"after {i}")
            with pytest.raises(ConnectionClosedError) as exc_info:
                await wait(doomed.recv())
            assert (exc_info.value.code, exc_info.value.reason) == (1011, "internal error")
            await wait(doomed.wait_closed())
            assert doomed.close_code == 1011
        expected = [f"before {i}" for i in range(50)] + [f"after {i}" for i in range(50)]
        assert [await wait(healthy.recv()) for _ in expected] == expected
        await check_echo(healthy)
    records = error_records(caplog, "connection handler failed")
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


async def test_handler_return_closes_with_1000(caplog: pytest.LogCaptureFixture) -> None:
    finished = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hi")
        finished.set()

    caplog.set_level(logging.ERROR, logger="rapidws.server")
    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as ws,
    ):
        assert await wait(ws.recv()) == "hi"
        with pytest.raises(ConnectionClosedOK):
            await wait(ws.recv())
        assert ws.close_code == 1000
        assert finished.is_set()
    assert not error_records(caplog, "")


async def test_handler_connection_closed_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()  # the peer vanishes: raises ConnectionClosedError
        finally:
            done.set()

    caplog.set_level(logging.ERROR, logger="rapidws.server")
    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        raw.abort()
        await wait(done.wait())
    assert not error_records(caplog, "")
    assert not server.connections


async def test_server_tracks_connections() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        assert server.connections == set()
        ws = await rapidws.connect(make_uri(server))
        sws = await recorder.get()
        assert server.connections == {sws}
        await wait(ws.close())
        await wait(sws.wait_closed())
        for _ in range(100):  # the handler task ends right after the connection
            if not server.connections:
                break
            await asyncio.sleep(0)
        assert server.connections == set()


# Shutdown.


async def test_server_close_closes_every_connection_with_1001() -> None:
    finished: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            finished.append(1)

    server = await rapidws.serve(handler, "127.0.0.1", 0)
    port = server.port
    clients = [await rapidws.connect(make_uri(server)) for _ in range(3)]
    for ws in clients:
        await check_echo(ws, 3)
    server.close()
    await wait(server.wait_closed())
    assert len(finished) == 3
    assert server.connections == set()
    for ws in clients:
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await wait(ws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (1001, "server shutting down")
        await wait(ws.wait_closed())
        assert ws.close_code == 1001
    with pytest.raises(OSError):
        await rapidws.connect(f"ws://127.0.0.1:{port}/")
    await wait(server.wait_closed())  # again: returns at once


async def test_server_close_with_custom_code() -> None:
    recorder = Recorder()
    server = await rapidws.serve(recorder, "127.0.0.1", 0)
    ws = await rapidws.connect(make_uri(server))
    await recorder.get()
    server.close(1012, "restarting")
    await wait(server.wait_closed())
    with pytest.raises(ConnectionClosedError) as exc_info:
        await wait(ws.recv())
    assert (exc_info.value.code, exc_info.value.reason) == (1012, "restarting")


async def test_server_close_drops_connections_in_handshake() -> None:
    recorder = Recorder()
    server = await rapidws.serve(recorder, "127.0.0.1", 0)
    healthy = await rapidws.connect(make_uri(server))
    raw = await RawPeer.connect("127.0.0.1", server.port)
    raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # an unfinished handshake
    for _ in range(200):  # wait until the server has accepted the raw connection
        if len(server.connections) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(server.connections) == 2
    server.close()
    await wait(server.wait_closed())
    assert await raw.at_eof_soon()
    with pytest.raises(ConnectionClosedOK):
        await wait(healthy.recv())
    await raw.close()


async def test_serve_forever_cancellation() -> None:
    recorder = Recorder()
    server = await rapidws.serve(recorder, "127.0.0.1", 0)
    port = server.port
    serving = asyncio.create_task(server.serve_forever())
    ws = await rapidws.connect(make_uri(server))
    await recorder.get()
    await asyncio.sleep(0)
    assert not serving.done()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait(serving)
    with pytest.raises(ConnectionClosedOK) as exc_info:
        await wait(ws.recv())
    assert exc_info.value.code == 1001
    assert server.connections == set()
    with pytest.raises(OSError):
        await rapidws.connect(f"ws://127.0.0.1:{port}/")


# Request and response attributes.


async def test_request_response_and_addresses() -> None:
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0) as server,
        rapidws.connect(
            make_uri(server, "/chat/room?id=7&x=y"),
            additional_headers={"Authorization": "Bearer token"},
            user_agent="test-agent/1.0",
            origin="https://app.example.com",
        ) as ws,
    ):
        sws = await recorder.get()
        request = sws.request
        assert request is not None
        assert (request.method, request.path, request.query) == (
            "GET",
            "/chat/room",
            "id=7&x=y",
        )
        assert request.target == "/chat/room?id=7&x=y"
        assert request.headers["Host"] == f"127.0.0.1:{server.port}"
        assert request.headers["authorization"] == "Bearer token"
        assert request.headers["User-Agent"] == "test-agent/1.0"
        assert request.headers["Origin"] == "https://app.example.com"
        assert sws.response is not None
        assert sws.response.status == 101
        assert sws.response.headers["Server"].startswith("rapidws/")
        assert sws.subprotocol is None
        # The client sees the same handshake.
        assert ws.request is not None
        assert ws.request.target == "/chat/room?id=7&x=y"
        assert ws.response is not None
        assert ws.response.status == 101
        assert ws.response.headers["Sec-WebSocket-Accept"]
        assert ws.subprotocol is None
        # Addresses match across the connection.
        assert sws.local_address == ("127.0.0.1", server.port)
        assert ws.remote_address == ("127.0.0.1", server.port)
        assert sws.remote_address == ws.local_address
        assert ws.local_address[0] == "127.0.0.1"


async def test_server_header_can_be_omitted() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, server_header=None) as server,
        rapidws.connect(make_uri(server)) as ws,
    ):
        assert ws.response is not None
        assert "Server" not in ws.response.headers


def test_an_invalid_server_header_is_refused_by_serve() -> None:
    # At once: every handshake, and every refusal, would carry it.
    with pytest.raises(ValueError, match="invalid value for header Server"):
        rapidws.serve(echo, "127.0.0.1", 0, server_header="rapidws\r\nX-Injected: 1")


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["chat.v1", "chat.v2"], "chat.v2"),  # the server's preference wins
        (["chat.v1"], "chat.v1"),
        (["chat.v2", "other"], "chat.v2"),
        (None, None),
    ],
)
async def test_subprotocol_negotiation(offered: list[str] | None, expected: str | None) -> None:
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0, subprotocols=["chat.v2", "chat.v1"]) as server,
        rapidws.connect(make_uri(server), subprotocols=offered) as ws,
    ):
        sws = await recorder.get()
        assert ws.subprotocol == expected
        assert sws.subprotocol == expected
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Protocol") == expected


async def test_subprotocol_without_overlap_is_refused() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, subprotocols=["chat.v2"]) as server:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(make_uri(server), subprotocols=["other"])
        assert exc_info.value.response.status == 400


async def test_select_subprotocol() -> None:
    def select(request: Request, offered: list[str]) -> str | None:
        return offered[-1] if request.path == "/last" else None

    async with rapidws.serve(echo, "127.0.0.1", 0, select_subprotocol=select) as server:
        async with rapidws.connect(make_uri(server, "/last"), subprotocols=["a", "b"]) as ws:
            assert ws.subprotocol == "b"
        async with rapidws.connect(make_uri(server, "/none"), subprotocols=["a", "b"]) as ws:
            assert ws.subprotocol is None


# Handshake hooks.


async def test_process_request_refuses_with_response() -> None:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != "Bearer good":
            return Response(401, "unauthorized\n")
        return None

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(make_uri(server))
        response = exc_info.value.response
        assert response.status == 401
        assert response.body == b"unauthorized\n"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        # The hook returning None accepts the connection.
        async with rapidws.connect(
            make_uri(server), additional_headers={"Authorization": "Bearer good"}
        ) as ws:
            await check_echo(ws, 3)


async def test_async_process_request() -> None:
    seen: list[str] = []

    async def process_request(ws: ServerConnection, request: Request) -> Response | None:
        await asyncio.sleep(0)
        seen.append(request.path)
        if request.path == "/health":
            return Response(200, "OK\n")
        if request.path == "/forbidden":
            return Response(403, b"no", {"X-Reason": "test"})
        return None

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
        async with rapidws.connect(make_uri(server, "/ws")) as ws:
            await check_echo(ws, 3)
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(make_uri(server, "/forbidden"))
        assert exc_info.value.response.status == 403
        assert exc_info.value.response.body == b"no"
        assert exc_info.value.response.headers["X-Reason"] == "test"
        # A plain HTTP request (a health check) answered by the hook.
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = await raw.read_response()
        assert (response.status, response.body) == (200, b"OK\n")
        assert await raw.at_eof_soon()
        await raw.close()
    assert seen == ["/ws", "/forbidden", "/health"]


async def test_process_response_alters_headers() -> None:
    def process_response(
        ws: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        response.headers["X-Extra"] = "added"
        del response.headers["Server"]
        return None

    async with (
        rapidws.serve(echo, "127.0.0.1", 0, process_response=process_response) as server,
        rapidws.connect(make_uri(server)) as ws,
    ):
        assert ws.response is not None
        assert ws.response.headers["X-Extra"] == "added"
        assert "Server" not in ws.response.headers
        await check_echo(ws, 3)


async def test_async_process_response_replaces_response() -> None:
    async def process_response(
        ws: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        await asyncio.sleep(0)
        if request.path == "/replace":
            return Response(503, "try later\n")
        return None

    async with rapidws.serve(echo, "127.0.0.1", 0, process_response=process_response) as server:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(make_uri(server, "/replace"))
        assert (exc_info.value.response.status, exc_info.value.response.body) == (
            503,
            b"try later\n",
        )
        async with rapidws.connect(make_uri(server, "/keep")) as ws:
            await check_echo(ws, 3)


@pytest.mark.parametrize("hook", ["process_request", "process_response"])
async def test_hook_raising_gives_500(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise ValueError("hook bug")

    caplog.set_level(logging.ERROR, logger="rapidws.server")
    async with rapidws.serve(echo, "127.0.0.1", 0, **{hook: broken}) as server:
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(make_uri(server))
        assert exc_info.value.response.status == 500
    records = error_records(caplog, "handshake hook failed")
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)


async def test_plain_http_request_gets_426() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = await raw.read_response()
        assert response.status == 426
        assert response.headers["upgrade"] == "websocket"
        assert response.headers["sec-websocket-version"] == "13"
        assert response.headers["connection"] == "close"
        assert response.body.startswith(b"Failed to open a WebSocket connection")
        assert await raw.at_eof_soon()
        await raw.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "header"),
    [
        (handshake_request().replace(b"GET", b"POST"), 405, ("allow", "GET")),
        (
            handshake_request().replace(b"Version: 13", b"Version: 8"),
            426,
            ("sec-websocket-version", "13"),
        ),
        (handshake_request(key="short"), 400, None),
        (handshake_request().replace(b"HTTP/1.1", b"HTTP/1.0"), 400, None),
    ],
)
async def test_invalid_handshake_requests(
    request_bytes: bytes, status: int, header: tuple[str, str] | None
) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(request_bytes)
        response = await raw.read_response()
        assert response.status == status
        if header is not None:
            assert response.headers[header[0]] == header[1]
        assert await raw.at_eof_soon()
        await raw.close()


async def test_origins() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, origins=["https://app.example.com"]) as server:
        async with rapidws.connect(make_uri(server), origin="https://app.example.com") as ws:
            await check_echo(ws, 3)
        for origin in ["https://evil.example.com", None]:
            with pytest.raises(InvalidStatus) as exc_info:
                await rapidws.connect(make_uri(server), origin=origin)
            assert exc_info.value.response.status == 403


# Hostile clients.


async def test_garbage_request_line_gets_400() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(b"\x16\x03\x01 garbage garbage\r\n\r\n")
        response = await raw.read_response()
        assert response.status == 400
        assert response.headers["content-type"].startswith("text/plain")
        assert response.body.decode().startswith("Failed to open a WebSocket connection")
        assert await raw.at_eof_soon()
        await raw.close()
        await check_echo(healthy)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # Over MAX_HEADER_BYTES (32 KiB) in all.
        (
            b"GET / HTTP/1.1\r\n"
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(40))
            + b"\r\n",
            431,
        ),
        # Over MAX_HEADERS (128) fields.
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n", 431),
        # A header line over MAX_LINE (8 KiB).
        (b"GET / HTTP/1.1\r\nX-Long: " + b"l" * 9000 + b"\r\n\r\n", 431),
        # A request line over MAX_LINE.
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
async def test_oversized_request_head(request_bytes: bytes, status: int) -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(request_bytes)
        response = await raw.read_response()
        assert response.status == status
        assert await raw.at_eof_soon()
        await raw.close()
        await check_echo(healthy)


@pytest.mark.virtual_clock
async def test_slowloris_is_dropped_after_open_timeout() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, open_timeout=0.5) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        loop = asyncio.get_running_loop()
        raw = await RawPeer.connect("127.0.0.1", server.port)
        start = loop.time()
        dropped = asyncio.create_task(raw.read_eof(timeout=TIMEOUT))
        raw.send(b"GET / HTTP/1.1\r\n")
        header = b"X-Slow: " + b"s" * 100
        for i in range(len(header)):  # a byte every 100 ms: 10 s at most
            if dropped.done():
                break
            raw.send(header[i : i + 1])
            await asyncio.wait({dropped}, timeout=0.1)
        assert await wait(dropped) == b""  # no response, just dropped
        assert loop.time() - start == pytest.approx(0.5, abs=0.002)
        # The healthy connection, open all along, is not affected.
        await check_echo(healthy)
        raw.abort()


@pytest.mark.virtual_clock
async def test_open_timeout_does_not_affect_open_connections() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, open_timeout=0.2) as server,
        rapidws.connect(make_uri(server)) as ws,
    ):
        await asyncio.sleep(0.4)  # past the open timeout
        await check_echo(ws, 3)


async def test_frames_sent_with_the_handshake_request() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.connect("127.0.0.1", server.port)
        raw.send(handshake_request() + frame(OP_TEXT, "early") + frame(OP_BINARY, b"bird"))
        response = await raw.read_response()
        assert response.status == 101
        sws = await recorder.get()
        assert await wait(sws.recv()) == "early"
        assert await wait(sws.recv()) == b"bird"
        raw.abort()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(OP_TEXT, "unmasked", mask=None), 1002),
        (frame(OP_TEXT, b"\xff\xfe invalid utf-8"), 1007),
        (frame(OP_TEXT, b"\xe2\x82", fin=False) + frame(OP_CONT, b"\x28"), 1007),
        (frame(0x3, b"reserved opcode"), 1002),
        (frame(OP_TEXT, "rsv", rsv=0x40), 1002),
        (frame(OP_PING, b"fragmented control", fin=False), 1002),
        (frame(OP_PING, b"p" * 126), 1002),
        (frame(OP_CONT, b"nothing to continue"), 1002),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
        (frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),  # reason not UTF-8
        (frame(OP_CLOSE, b"\x03\xed"), 1002),  # 1005 may not be sent
    ],
)
async def test_protocol_errors_close_the_connection(data: bytes, code: int) -> None:
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        healthy_sws = await recorder.get()
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        raw.send(data)
        close = await raw.read_close()
        assert close.close_code == code
        assert not close.masked
        assert await raw.at_eof_soon()  # the server closes the TCP connection
        await raw.close()
        await wait(sws.wait_closed())
        assert sws.close_code == code
        # Nothing leaked to the other connection.
        await healthy.send("still fine")
        assert await wait(healthy_sws.recv()) == "still fine"


async def test_messages_before_a_protocol_error_are_handled_first() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        # A valid message and an invalid frame in one write.
        raw.send(frame(OP_TEXT, "valid") + frame(OP_TEXT, "unmasked", mask=None))
        answer = await raw.read_frame()
        assert (answer.opcode, answer.payload) == (OP_TEXT, b"valid")
        assert (await raw.read_close()).close_code == 1002
        assert await raw.at_eof_soon()
        await raw.close()


@pytest.mark.parametrize("length", [1001, 1 << 20, 1 << 40])
async def test_oversized_message_is_refused_from_its_header(length: int) -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, max_size=1000) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        raw.send(frame_header(OP_BINARY, length))  # the header only: no payload follows
        close = await raw.read_close()
        assert close.close_code == 1009
        assert await raw.at_eof_soon()
        await raw.close()
        await wait(sws.wait_closed())
        assert sws.close_code == 1009


async def test_oversized_fragmented_message_is_refused() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, max_size=1000) as server:
        raw = await RawPeer.open_websocket(server.port)
        await recorder.get()
        raw.send(frame(OP_BINARY, b"a" * 600, fin=False))
        raw.send(frame_header(OP_CONT, 600))
        assert (await raw.read_close()).close_code == 1009
        raw.abort()


@pytest.mark.virtual_clock
async def test_hostile_clients_do_not_disturb_a_healthy_connection() -> None:
    received: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            await ws.send(message)

    async def hostile(data: bytes, handshake: bool) -> None:
        raw = await RawPeer.connect("127.0.0.1", server.port)
        if handshake:
            raw.send(handshake_request())
            assert (await raw.read_response()).status == 101
        raw.send(data)
        await raw.read_eof()
        raw.abort()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_size=1000, open_timeout=0.5) as server,
        rapidws.connect(make_uri(server)) as healthy,
    ):
        attacks = asyncio.gather(
            hostile(b"garbage\r\n\r\n", handshake=False),
            hostile(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", handshake=False),
            hostile(b"GET / HTTP/1.1\r\nHost: slow", handshake=False),  # times out
            hostile(frame(OP_TEXT, "x", mask=None), handshake=True),
            hostile(frame_header(OP_BINARY, 5000), handshake=True),
            hostile(frame(OP_TEXT, b"\xc0\xaf"), handshake=True),
        )
        tags = [f"healthy {i}" for i in range(30)]
        for tag in tags:
            await healthy.send(tag)
            assert await wait(healthy.recv()) == tag
        await wait(attacks)
        await check_echo(healthy, 10, "after ")
    assert received[:30] == tags


# Listening sockets.


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, path=path),
        rapidws.connect("ws://localhost/chat", path=path) as ws,
    ):
        sws = await recorder.get()
        assert sws.request is not None
        assert sws.request.path == "/chat"
        assert sws.request.headers["Host"] == "localhost"
        assert sws.local_address == path
        await ws.send("over unix")
        assert await wait(sws.recv()) == "over unix"
        await sws.send(b"back")
        assert await wait(ws.recv()) == b"back"


async def test_unix_socket_from_existing_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    async with rapidws.serve(echo, sock=sock):
        client_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client_sock.setblocking(False)
        await wait(asyncio.get_running_loop().sock_connect(client_sock, path))
        async with rapidws.connect("ws://localhost/", sock=client_sock) as ws:
            await check_echo(ws, 3)


async def test_existing_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with rapidws.serve(echo, sock=sock) as server:
        assert server.port == port
        assert server.sockets[0].getsockname() == ("127.0.0.1", port)
        async with rapidws.connect(f"ws://127.0.0.1:{port}/") as ws:
            await check_echo(ws, 3)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
async def test_reuse_port() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, reuse_port=True) as first:
        port = first.port
        assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        async with rapidws.serve(echo, "127.0.0.1", port, reuse_port=True) as second:
            assert second.port == port
            for _ in range(4):
                async with rapidws.connect(f"ws://127.0.0.1:{port}/") as ws:
                    await check_echo(ws, 2)


async def test_await_serve() -> None:
    server = await rapidws.serve(echo, "127.0.0.1", 0)
    try:
        async with rapidws.connect(make_uri(server)) as ws:
            await check_echo(ws, 3)
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_echo_answers_messages_sent_just_before_close() -> None:
    # A client that sends and closes at once (`printf ... | rapidws connect`)
    # still gets the answers to everything it sent before its close frame.
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        peer.send(frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two") + frame(OP_CLOSE, b"\x03\xe8"))
        replies = [await peer.read_frame() for _ in range(3)]
        assert [(f.opcode, f.payload) for f in replies] == [
            (OP_TEXT, b"one"),
            (OP_TEXT, b"two"),
            (OP_CLOSE, b"\x03\xe8"),
        ]
        assert await peer.at_eof_soon()


async def test_server_close_cancels_handlers_that_ignore_the_connection() -> None:
    started = asyncio.Event()

    async def sleeper(ws: rapidws.ServerConnection) -> None:
        started.set()
        await asyncio.sleep(3600)

    server = await rapidws.serve(sleeper, "127.0.0.1", 0, close_timeout=0.2)
    async with rapidws.connect(make_uri(server)) as ws:
        await wait(started.wait())
        server.close()
        await wait(server.wait_closed())
        assert ws.close_code == 1001
    assert not server.connections


async def test_tls_client_on_plain_port_gets_400_at_once() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, open_timeout=30) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64))
        response = await peer.read_response(timeout=2)
        assert response.status == 400
        assert b"not an HTTP/1.1 message" in response.body


# A hook chooses the handler and fills the attributes.


async def test_a_hook_chooses_the_handler_and_fills_the_attributes() -> None:
    class Upper(rapidws.Callbacks):
        def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(f"{connection.attributes['user']}: {str(message).upper()}")

    async def named(ws: ServerConnection) -> None:
        await ws.send(f"named {ws.attributes['user']}")

    def hook(connection: ServerConnection, request: Request) -> None:
        connection.attributes["user"] = request.query_params.get("user")
        assert connection.path_params == {}  # no router here
        if request.path == "/upper":
            connection.handler = Upper()
        elif request.path == "/named":
            connection.handler = named

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=hook) as server:
        async with rapidws.connect(make_uri(server, "/upper?user=ada")) as ws:
            await ws.send("hi")
            assert await wait(ws.recv()) == "ada: HI"
        async with rapidws.connect(make_uri(server, "/named?user=bob")) as ws:
            assert await wait(ws.recv()) == "named bob"
        async with rapidws.connect(make_uri(server, "/other")) as ws:
            await ws.send("echoed")  # the server's handler
            assert await wait(ws.recv()) == "echoed"
            (connection,) = server.connections
            assert connection.handler is echo
            with pytest.raises(RuntimeError, match="before the upgrade"):
                connection.handler = named


@pytest.mark.virtual_clock
async def test_auto_pong_off_lets_the_clients_keepalive_time_out() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, auto_pong=False) as server:
        ws = await rapidws.connect(make_uri(server), ping_interval=0.05, ping_timeout=0.2)
        await ws.send("still echoed")
        assert await wait(ws.recv()) == "still echoed"
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (1011, "keepalive ping timeout")
