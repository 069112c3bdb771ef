"""The HTTP/2 client (RFC 8441): ``connect(uri, http2=True)`` against rapidws's HTTP/2 server.

Real sockets on 127.0.0.1. That WebSockets share a connection is proven on
both sides: one ``Http2Connection`` and one peer address on the server, one
local address and distinct stream ids on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, RequestReceived

import rapidws
from rapidws import Response
from rapidws.asyncio import http2_client
from rapidws.asyncio.http2 import MAX_STREAMS, PREFACE, RESET_BURST, StreamTransport
from rapidws.asyncio.http2_client import IDLE_TIMEOUT, Http2ClientConnection

from .utils import RawPeer, echo, handshake_response, raw_server, until, wait


def serve(handler: Any, **options: Any) -> rapidws.serve:
    return rapidws.serve(handler, "127.0.0.1", 0, http2=True, **options)


def connect(server: Any, path: str = "/", **options: Any) -> rapidws.connect:
    """A WebSocket over HTTP/2 (h2c) to a server on 127.0.0.1."""
    return rapidws.connect(f"ws://127.0.0.1:{server.port}{path}", http2=True, proxy=None, **options)


def stream_id(ws: rapidws.ClientConnection) -> int:
    transport = ws.transport
    assert isinstance(transport, StreamTransport), transport
    return transport.stream_id


def pooled(ws: rapidws.ClientConnection) -> Http2ClientConnection:
    transport = ws.transport
    assert isinstance(transport, StreamTransport), transport
    connection = transport._connection
    assert isinstance(connection, Http2ClientConnection)
    return connection


# Streams of one connection.


async def test_websockets_share_one_connection_and_echo() -> None:
    peers: list[Any] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        peers.append(ws.remote_address)
        await echo(ws)

    async def talk(ws: rapidws.ClientConnection, tag: str) -> None:
        for i in range(20):
            await ws.send(f"{tag}{i}")
            await ws.send(f"{tag}{i}".encode())
        for i in range(20):
            assert await wait(ws.recv()) == f"{tag}{i}"
            assert await wait(ws.recv()) == f"{tag}{i}".encode()

    async with serve(handler) as server, contextlib.AsyncExitStack() as stack:
        sockets = await asyncio.gather(
            *(stack.enter_async_context(connect(server, f"/{n}")) for n in range(5))
        )
        await asyncio.gather(*(talk(ws, f"{n}:") for n, ws in enumerate(sockets)))
        assert all(ws.response is not None and ws.response.status == 200 for ws in sockets)
        assert sorted(stream_id(ws) for ws in sockets) == [1, 3, 5, 7, 9]
        assert len({pooled(ws) for ws in sockets}) == 1
        assert len({ws.local_address for ws in sockets}) == 1
        # The server's side: one connection, one peer.
        assert len(server.http2_connections) == 1
        assert len(set(peers)) == 1
        for ws in sockets:
            await ws.close()
            assert ws.close_code == 1000


async def test_tls_negotiates_h2_by_alpn(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with serve(echo, ssl=server_context) as server:
        uri = f"wss://localhost:{server.port}/"
        options: dict[str, Any] = {"ssl": client_context, "http2": True, "proxy": None}
        async with rapidws.connect(uri, **options) as a, rapidws.connect(uri, **options) as b:
            assert a.transport is not None
            assert a.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            assert pooled(a) is pooled(b)
            await a.send("over h2")
            assert await wait(a.recv()) == "over h2"
            await b.send(b"\x00" * 100_000)
            assert await wait(b.recv()) == b"\x00" * 100_000


async def test_subprotocol_compression_cookies_and_headers_over_http2() -> None:
    seen: list[Any] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        request = ws.request
        assert request is not None
        seen.append((request.version, request.headers.get("cookie"), request.headers.get("x-a")))
        await echo(ws)

    jar = http.cookiejar.CookieJar()
    async with serve(handler, subprotocols=["chat", "superchat"]) as server:
        options = {"subprotocols": ["superchat"], "additional_headers": {"X-A": "1"}}
        async with connect(server, cookies=jar, **options) as ws:
            assert ws.subprotocol == "superchat"
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            message = "compressible " * 1000
            await ws.send(message)
            assert await wait(ws.recv()) == message
            # Compressed on the wire: far fewer bytes than the message.
            assert ws.traffic.wire_out < len(message) // 10
    assert seen == [((2, 0), None, "1")]


async def test_redirect_and_cookies_on_the_same_connection() -> None:
    app = rapidws.App()
    cookies: list[str | None] = []

    @app.interceptor
    def login(ws: rapidws.ServerConnection, request: rapidws.Request) -> Response | None:
        if request.path == "/login":
            headers = [("Location", "/chat"), ("Set-Cookie", "session=abc; Path=/")]
            return Response(302, headers=headers)
        cookies.append(request.headers.get("cookie"))
        return None

    @app.websocket("/login")
    @app.websocket("/chat")
    async def chat(ws: rapidws.ServerConnection) -> None:
        await echo(ws)

    jar = http.cookiejar.CookieJar()
    async with app.serve("127.0.0.1", 0, http2=True) as server:
        async with connect(server, "/login", cookies=jar) as ws:
            assert ws.request is not None and ws.request.target == "/chat"
            await ws.send("hi")
            assert await wait(ws.recv()) == "hi"
        assert cookies == ["session=abc"]
        assert len(server.http2_connections) == 1


# Refusals: a status on the stream, the connection goes on.


async def test_refusals_raise_invalid_status_and_the_connection_goes_on() -> None:
    app = rapidws.App()

    @app.interceptor
    def check(ws: rapidws.ServerConnection, request: rapidws.Request) -> Response | None:
        if request.headers.get("authorization") != "Bearer s3cret":
            return Response(401, "unauthorized\n")
        return None

    @app.websocket("/chat")
    async def chat(ws: rapidws.ServerConnection) -> None:
        await echo(ws)

    async with app.serve("127.0.0.1", 0, http2=True) as server:
        with pytest.raises(rapidws.InvalidStatus) as info:
            await connect(server, "/chat")
        assert info.value.response.status == 401
        assert info.value.response.body == b"unauthorized\n"
        auth = {"Authorization": "Bearer s3cret"}
        with pytest.raises(rapidws.InvalidStatus) as info:
            await connect(server, "/missing", additional_headers=auth)
        assert info.value.response.status == 404
        async with connect(server, "/chat", additional_headers=auth) as ws:
            await ws.send("in")
            assert await wait(ws.recv()) == "in"
            assert stream_id(ws) == 5  # after the two refused streams
        assert len(server.http2_connections) == 1


async def test_invalid_accepting_response_fails_the_handshake() -> None:
    def answer(ws: Any, request: Any, response: Response) -> None:
        if "sec-websocket-protocol" in request.headers:
            response.headers["Sec-WebSocket-Protocol"] = "other"  # not offered

    async with serve(echo, process_response=answer) as server:
        with pytest.raises(rapidws.InvalidHandshake, match="which was not offered"):
            await connect(server, subprotocols=["chat"])
        async with connect(server) as ws:  # the connection goes on
            assert stream_id(ws) == 3


# Closing one stream leaves the others alone.


async def test_server_abort_resets_one_stream_only() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        request = ws.request
        assert request is not None
        if request.path == "/abort":
            await ws.recv()
            assert ws.transport is not None
            ws.transport.abort()  # RST_STREAM
        else:
            await echo(ws)

    async with (
        serve(handler) as server,
        connect(server, "/abort") as doomed,
        connect(server) as other,
    ):
        await doomed.send("go")
        await wait(doomed.wait_closed())
        assert doomed.close_code == 1006
        await other.send("unaffected")
        assert await wait(other.recv()) == "unaffected"


async def test_server_shutdown_closes_each_websocket_with_1001() -> None:
    server = await serve(echo)
    try:
        sockets = [await connect(server) for _ in range(3)]
        connection = pooled(sockets[0])
        server.close()
        for ws in sockets:
            await wait(ws.wait_closed())
            assert ws.close_code == 1001
        # Then the GOAWAY: the pool lets the connection go.
        await until(lambda: connection.transport is None or connection.transport.is_closing())
        assert not connection.has_room()
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_connection_ended_by_the_server_is_replaced() -> None:
    # The server closes an idle HTTP/2 connection (GOAWAY) after open_timeout.
    async with serve(echo, open_timeout=0.2) as server:
        async with connect(server) as first:
            address = first.local_address
        await until(lambda: not server.http2_connections)
        async with connect(server) as second:
            await second.send("new")
            assert await wait(second.recv()) == "new"
            assert second.local_address != address


async def test_full_connection_opens_another() -> None:
    async with serve(echo) as server, contextlib.AsyncExitStack() as stack:
        sockets = await asyncio.gather(
            *(stack.enter_async_context(connect(server)) for _ in range(MAX_STREAMS + 1))
        )
        connections = {pooled(ws) for ws in sockets}
        assert len(connections) == 2
        assert sorted(c.streams for c in connections) == [1, MAX_STREAMS]
        assert len(server.http2_connections) == 2
        await sockets[-1].send("last")
        assert await wait(sockets[-1].recv()) == "last"


async def test_websockets_opened_and_closed_in_quick_succession_keep_the_connection() -> None:
    # A client resets its stream after the closing handshake when the
    # server's END_STREAM is not in yet: the server does not count those
    # resets against its rapid-reset allowance (RESET_BURST).
    async with serve(echo) as server:
        connections = set()
        for _ in range(3 * RESET_BURST // MAX_STREAMS):
            sockets = await asyncio.gather(*(connect(server) for _ in range(MAX_STREAMS)))
            connections |= {pooled(ws) for ws in sockets}
            await asyncio.gather(*(ws.close() for ws in sockets))
            assert all(ws.close_code == 1000 for ws in sockets)
        assert len(connections) == 1


@pytest.mark.virtual_clock
async def test_idle_connection_is_kept_then_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorter than the default, for the test's own time budget (30 s).
    idle_timeout = IDLE_TIMEOUT / 3
    monkeypatch.setattr(http2_client, "IDLE_TIMEOUT", idle_timeout)
    async with serve(echo, open_timeout=None) as server:
        async with connect(server) as ws:
            connection = pooled(ws)
        await asyncio.sleep(idle_timeout - 1)
        async with connect(server) as ws:
            assert pooled(ws) is connection  # reused while idle
        await asyncio.sleep(idle_timeout + 1)
        assert connection.transport is not None and connection.transport.is_closing()
        await until(lambda: not server.http2_connections)
        async with connect(server) as ws:
            assert pooled(ws) is not connection


def test_end_of_the_loop_closes_pooled_connections() -> None:
    with server_thread() as (server, loop):
        idle: list[Http2ClientConnection] = []
        busy: list[rapidws.ClientConnection] = []

        async def main() -> None:
            async with connect(server) as ws:
                idle.append(pooled(ws))
            busy.append(await connect(server))  # left open

        asyncio.run(main())
        assert idle[0].transport is not None and idle[0].transport.is_closing()
        assert busy[0].state is rapidws.State.CLOSED

        async def closed() -> None:
            await until(lambda: not server.http2_connections)

        asyncio.run_coroutine_threadsafe(closed(), loop).result(timeout=10)


@contextlib.contextmanager
def server_thread() -> Iterator[tuple[rapidws.Server, asyncio.AbstractEventLoop]]:
    """A rapidws HTTP/2 server running on a loop of its own, in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(_start(), loop).result(timeout=10)
        try:
            yield server, loop
        finally:
            asyncio.run_coroutine_threadsafe(_stop(server), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _start() -> rapidws.Server:
    return await serve(echo)


async def _stop(server: rapidws.Server) -> None:
    server.close()
    await server.wait_closed()


# Flow control: a stalled stream does not block the others.


async def test_stalled_client_reader_does_not_block_other_streams() -> None:
    sent: list[int] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        request = ws.request
        assert request is not None
        if request.path == "/flood":
            await ws.recv()  # the client is ready
            for i in range(16):
                await ws.send(b"y" * 65536)  # waits while the stream's window is shut
                sent.append(i)
            await ws.send("end")
        else:
            await echo(ws)

    async with serve(handler) as server:
        flood_options: dict[str, Any] = {"max_queue": 1, "compression": None}
        async with connect(server, "/flood", **flood_options) as flood, connect(server) as other:
            await flood.send("go")
            await until(lambda: len(sent) > 0)
            for i in range(10):
                await other.send(f"m{i}")
                assert await wait(other.recv()) == f"m{i}"
            # The client's queue (1 message) and window (256 KiB) are full.
            assert len(sent) < 16
            for _ in range(16):
                assert await wait(flood.recv()) == b"y" * 65536
            assert await wait(flood.recv()) == "end"


async def test_stalled_server_reader_holds_back_send() -> None:
    release = asyncio.Event()
    got: list[int] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        request = ws.request
        assert request is not None
        if request.path == "/stall":
            await release.wait()
            async for message in ws:
                got.append(len(message))
        else:
            await echo(ws)

    async def send_all(ws: rapidws.ClientConnection) -> None:
        for _ in range(12):
            await ws.send(b"x" * 65536)

    async with (
        serve(handler, max_queue=4) as server,
        connect(server) as other,
        connect(server, "/stall", compression=None) as stalled,
    ):
        # More than the server's queue (4) and the stream's window (256
        # KiB) hold: send() waits until the handler reads.
        sender = asyncio.create_task(send_all(stalled))
        for i in range(10):
            await other.send(f"m{i}")
            assert await wait(other.recv()) == f"m{i}"
        assert not sender.done()
        assert stalled.transport is not None
        assert stalled.transport.get_write_buffer_size() <= 2 * 65536 + 16
        release.set()
        await wait(sender)
        await until(lambda: len(got) == 12)


# Fallback to HTTP/1.1.


async def test_fallback_to_http11_without_http2_in_cleartext() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server, connect(server) as ws:
        assert not isinstance(ws.transport, StreamTransport)
        assert ws.response is not None and ws.response.status == 101
        await ws.send("over http/1.1")
        assert await wait(ws.recv()) == "over http/1.1"


async def test_fallback_when_alpn_chooses_http11_reuses_the_tls_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # One TLS handshake per WebSocket, counted on the server (its SNI callback
    # runs once per ClientHello): the first one's TLS connection carries its
    # HTTP/1.1 handshake; the next ones, remembered, offer no h2 at all.
    handshakes: list[str] = []
    server_context.sni_callback = lambda ssl_object, name, context: handshakes.append(name)
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        uri = f"wss://localhost:{server.port}/"
        for n in range(3):
            async with rapidws.connect(uri, ssl=client_context, http2=True, proxy=None) as ws:
                assert not isinstance(ws.transport, StreamTransport)
                assert ws.response is not None and ws.response.status == 101
                await ws.send(f"over http/1.1 {n}")
                assert await wait(ws.recv()) == f"over http/1.1 {n}"
            assert handshakes == ["localhost"] * (n + 1)


def h2_without_websockets(seen: list[str]) -> Any:
    """A raw server's handler: HTTP/2 without ``SETTINGS_ENABLE_CONNECT_PROTOCOL``.

    HTTP/1.1 WebSockets on other connections. Records in ``seen`` what each
    connection spoke (``"h2"``, ``"http/1.1"``) and the client's GOAWAYs.
    """

    async def handler(peer: RawPeer) -> None:
        first = await peer.reader.readexactly(3)
        if PREFACE.startswith(first):
            seen.append("h2")
            h2 = H2Connection(H2Configuration(client_side=False))
            h2.initiate_connection()
            peer.send(h2.data_to_send())
            data = first
            while data:
                for event in h2.receive_data(data):
                    assert not isinstance(event, RequestReceived), event
                    if isinstance(event, ConnectionTerminated):
                        seen.append("goaway")
                peer.send(h2.data_to_send())
                data = await peer.reader.read(65536)
        else:
            seen.append("http/1.1")
            head = first + await peer.reader.readuntil(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            peer.send(handshake_response(key))
            await peer.read_close()
            peer.send_close(1000, mask=None)

    return handler


async def test_fallback_to_http11_without_extended_connect() -> None:
    seen: list[str] = []
    async with raw_server(h2_without_websockets(seen)) as port:
        uri = f"ws://127.0.0.1:{port}/"
        async with rapidws.connect(uri, http2=True, proxy=None, compression=None) as ws:
            assert not isinstance(ws.transport, StreamTransport)
        await until(lambda: "goaway" in seen)
    assert seen in (["h2", "http/1.1", "goaway"], ["h2", "goaway", "http/1.1"])


@pytest.mark.virtual_clock
async def test_fallback_is_remembered_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorter than the default, for the test's own time budget (30 s).
    memory = http2_client.FALLBACK_MEMORY / 30
    monkeypatch.setattr(http2_client, "FALLBACK_MEMORY", memory)
    seen: list[str] = []
    other: list[str] = []

    async def open_and_close(port: int) -> None:
        uri = f"ws://127.0.0.1:{port}/"
        async with rapidws.connect(uri, http2=True, proxy=None, compression=None) as ws:
            assert not isinstance(ws.transport, StreamTransport)

    async with (
        raw_server(h2_without_websockets(seen)) as port,
        raw_server(h2_without_websockets(other)) as other_port,
    ):
        await open_and_close(port)
        assert (seen.count("h2"), seen.count("http/1.1")) == (1, 1)
        # Remembered: straight to HTTP/1.1; for that origin only.
        await asyncio.sleep(memory - 1)
        await open_and_close(port)
        assert (seen.count("h2"), seen.count("http/1.1")) == (1, 2)
        await open_and_close(other_port)
        assert (other.count("h2"), other.count("http/1.1")) == (1, 1)
        # Forgotten: HTTP/2 is tried again.
        await asyncio.sleep(2)
        await open_and_close(port)
        assert (seen.count("h2"), seen.count("http/1.1")) == (2, 3)


# What http2=True refuses.


def test_http2_refuses_a_proxy_sock_or_path() -> None:
    with pytest.raises(rapidws.InvalidHandshake, match="http2=True cannot be used with a proxy"):
        rapidws.connect("ws://x/", http2=True, proxy="http://proxy.example:3128")
    with pytest.raises(rapidws.InvalidHandshake, match="sock or path"):
        rapidws.connect("ws://x/", http2=True, path="/tmp/x.sock")


async def test_http2_refuses_a_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(rapidws.InvalidHandshake, match="pass proxy=None"):
        await rapidws.connect("ws://server.example/", http2=True)
