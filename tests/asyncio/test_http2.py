"""WebSockets over HTTP/2 (RFC 8441): the server, against an h2 client on real sockets.

The client below is written with the ``h2`` package (client side) over an
asyncio stream, in cleartext with prior knowledge (h2c) or over TLS with ALPN;
its WebSockets frame and unframe with rapidws's engine on the client side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

import rapidws
from rapidws import Response
from rapidws.asyncio.http2 import (
    MAX_FRAME,
    MAX_STREAMS,
    RESET_BURST,
    STREAM_WINDOW,
    StreamTransport,
)
from rapidws.core.extensions.permessage_deflate import ClientPerMessageDeflate
from rapidws.core.headers import parse_extensions
from rapidws.core.protocol import Close, Protocol

from .utils import TIMEOUT, echo, until, wait


class H2Client:
    """An HTTP/2 client connection: requests on streams, and WebSockets over them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # No checks of what it sends: it sends malformed requests on purpose.
        config = H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.h2 = H2Connection(config)
        self.h2.initiate_connection()
        # Room for stalled streams' data, as the server makes (a browser too).
        self.h2.increment_flow_control_window(2**24)
        self.holding = False  # see flush()
        self.flush()
        self.events: dict[int, asyncio.Queue[Event]] = collections.defaultdict(asyncio.Queue)
        self.settings = asyncio.Event()  # the server's SETTINGS arrived
        self.window = asyncio.Event()  # set at each WINDOW_UPDATE
        self.terminated: ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.closing = False
        # Streams whose DATA is not acknowledged: their window closes.
        self.stalled: set[int] = set()
        self.unacknowledged: dict[int, int] = collections.Counter()
        self.task = asyncio.get_running_loop().create_task(self.read())

    def flush(self) -> None:
        if self.holding:
            return  # a test writes frames of its own, in pieces, meanwhile
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                if self.closing:
                    continue  # h2 takes nothing after our GOAWAY
                for event in self.h2.receive_data(data):
                    self.dispatch(event)
                self.flush()
        except (ConnectionError, ssl.SSLError):
            pass  # the server is gone
        finally:
            self.closed.set()
            for queue in self.events.values():
                queue.put_nowait(ConnectionTerminated())

    def dispatch(self, event: Event) -> None:
        if isinstance(event, RemoteSettingsChanged):
            self.settings.set()
        elif isinstance(event, WindowUpdated):
            self.window.set()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, DataReceived):
            if event.stream_id in self.stalled:
                self.unacknowledged[event.stream_id] += event.flow_controlled_length
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream_id = getattr(event, "stream_id", None)
        if stream_id:
            self.events[stream_id].put_nowait(event)

    def resume(self, stream_id: int) -> None:
        """Acknowledge a stalled stream's data, and go on acknowledging."""
        self.stalled.discard(stream_id)
        size = self.unacknowledged.pop(stream_id, 0)
        if size:
            self.h2.acknowledge_received_data(size, stream_id)
            self.flush()

    def request(self, headers: Sequence[tuple[str, str]], *, end_stream: bool = False) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        return stream_id

    async def next_event(self, stream_id: int) -> Event:
        return await wait(self.events[stream_id].get())  # type: ignore[no-any-return]

    async def response(self, stream_id: int) -> dict[str, str]:
        event = await self.next_event(stream_id)
        assert isinstance(event, ResponseReceived), event
        return dict(event.headers)  # type: ignore[arg-type]

    async def body(self, stream_id: int) -> bytes:
        """Read DATA until END_STREAM."""
        data = b""
        while True:
            event = await self.next_event(stream_id)
            if isinstance(event, StreamEnded):
                return data
            assert isinstance(event, DataReceived), event
            data += event.data

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send ``data``, waiting for window when needed."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id), 16384)
            if window <= 0:
                self.window.clear()
                await wait(self.window.wait())
                continue
            self.h2.send_data(stream_id, view[:window].tobytes())
            view = view[window:]
            self.flush()
        if end_stream:
            self.h2.end_stream(stream_id)
            self.flush()

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        self.flush()

    async def websocket(
        self, path: str = "/", headers: Sequence[tuple[str, str]] = ()
    ) -> H2WebSocket:
        """Open a WebSocket with an extended CONNECT; fail unless the server accepts it."""
        stream_id = self.request(connect(path, headers))
        response = await self.response(stream_id)
        assert response[":status"] == "200", response
        extensions = []
        if "sec-websocket-extensions" in response:
            ((_, params),) = parse_extensions([response["sec-websocket-extensions"]])
            extensions.append(ClientPerMessageDeflate().accept(params))
        return H2WebSocket(self, stream_id, response, extensions)

    async def close(self) -> None:
        # GOAWAY; the server then closes the connection.
        if not self.writer.is_closing():
            self.closing = True
            self.h2.close_connection()
            self.flush()
        await wait(self.task)
        self.writer.close()


class H2WebSocket:
    """A WebSocket over one stream of an :class:`H2Client`."""

    def __init__(
        self, client: H2Client, stream_id: int, response: dict[str, str], extensions: list[Any]
    ) -> None:
        self.client, self.stream_id, self.response = client, stream_id, response
        self.protocol = Protocol(is_client=True, extensions=extensions)
        self.ended = False  # the server ended the stream

    async def send(self, message: str | bytes) -> None:
        self.protocol.send_message(message)
        await self.client.send_data(self.stream_id, b"".join(self.protocol.data_to_send()))

    async def recv(self) -> str | bytes | Close:
        """Return the next message, or the close frame."""
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, (str, bytes)):
                    return event
            if self.protocol.close_rcvd is not None:
                return self.protocol.close_rcvd
            event = await self.client.next_event(self.stream_id)
            if isinstance(event, DataReceived):
                self.protocol.receive_data(event.data)
            elif isinstance(event, StreamEnded):
                self.ended = True
                self.protocol.receive_eof()
            elif not isinstance(event, WindowUpdated):  # the server read what we sent
                raise AssertionError(f"unexpected {event!r}")

    async def close(self, code: int = 1000) -> Close:
        """Close with a closing handshake; return the server's close frame.

        The server then ends the stream (as it closes TCP first, RFC 6455
        section 7.1.1), and so does the client.
        """
        self.protocol.send_close(code)
        await self.client.send_data(self.stream_id, b"".join(self.protocol.data_to_send()))
        close = await self.recv()
        assert isinstance(close, Close), close
        await self.end()
        return close

    async def end(self) -> None:
        """Wait for the server's END_STREAM, and end the stream too."""
        event = await self.client.next_event(self.stream_id)
        while isinstance(event, DataReceived) and not event.data:
            event = await self.client.next_event(self.stream_id)  # END_STREAM's frame
        assert isinstance(event, StreamEnded), event
        self.ended = True
        await self.client.send_data(self.stream_id, b"", end_stream=True)


def connect(path: str, headers: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The fields of an extended CONNECT for a WebSocket (RFC 8441 section 4)."""
    return [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
        *headers,
    ]


@asynccontextmanager
async def h2_client(
    server: rapidws.Server, context: ssl.SSLContext | None = None
) -> AsyncIterator[H2Client]:
    if context is not None:
        context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        server.port,
        ssl=context,
        server_hostname=None if context is None else "localhost",
    )
    client = H2Client(reader, writer)
    try:
        yield client
    finally:
        await client.close()


def serve(handler: Any, **options: Any) -> rapidws.serve:
    return rapidws.serve(handler, "127.0.0.1", 0, http2=True, **options)


# Streams: many WebSockets on one connection.


async def test_server_advertises_extended_connect() -> None:
    async with serve(echo) as server, h2_client(server) as client:
        await wait(client.settings.wait())
        settings = client.h2.remote_settings
        assert settings.enable_connect_protocol == 1
        assert settings.max_concurrent_streams == MAX_STREAMS
        assert settings.initial_window_size == STREAM_WINDOW


async def test_websockets_echo_concurrently_on_one_connection() -> None:
    peers: list[tuple[Any, int]] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        peers.append((ws.remote_address, ws.transport.get_extra_info("http2_stream_id")))  # type: ignore[union-attr]
        await echo(ws)

    async def talk(ws: H2WebSocket, tag: str) -> None:
        for i in range(20):
            await ws.send(f"{tag}{i}")
            await ws.send(f"{tag}{i}".encode())
        for i in range(20):
            assert await ws.recv() == f"{tag}{i}"
            assert await ws.recv() == f"{tag}{i}".encode()

    async with serve(handler) as server, h2_client(server) as client:
        sockets = [await client.websocket(f"/{n}") for n in range(5)]
        assert all(ws.response.get("sec-websocket-accept") is None for ws in sockets)
        await asyncio.gather(*(talk(ws, f"{n}:") for n, ws in enumerate(sockets)))
        # One TCP connection, a stream each.
        assert len({address for address, _ in peers}) == 1
        assert sorted(stream for _, stream in peers) == [ws.stream_id for ws in sockets]
        for ws in sockets:
            assert (await ws.close()).code == 1000


async def test_tls_alpn_h2_and_http11_on_one_port(
    ca: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with serve(echo, ssl=server_context) as server:
        async with h2_client(server, client_context) as client:
            assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            ws = await client.websocket()
            await ws.send("over h2")
            assert await ws.recv() == "over h2"
        # A client that offers no ALPN speaks HTTP/1.1 on the same port.
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with rapidws.connect(f"wss://localhost:{server.port}/", ssl=context) as http11:
            await http11.send("over http/1.1")
            assert await wait(http11.recv()) == "over http/1.1"


async def test_http11_client_on_cleartext_http2_server() -> None:
    async with serve(echo) as server, rapidws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("hello")
        assert await wait(ws.recv()) == "hello"


# Negotiation, with the code of the HTTP/1.1 handshake.


async def test_subprotocol_and_compression_are_negotiated() -> None:
    received: list[Any] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        received.append((ws.subprotocol, ws.request.version))  # type: ignore[union-attr]
        await echo(ws)

    serving = serve(handler, subprotocols=["chat", "superchat"])
    async with serving as server, h2_client(server) as client:
        offer = [
            ("sec-websocket-protocol", "superchat, chat"),
            ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
        ]
        ws = await client.websocket("/", offer)
        assert ws.response["sec-websocket-protocol"] == "chat"
        assert ws.response["sec-websocket-extensions"].startswith("permessage-deflate")
        message = "compressible " * 1000
        await ws.send(message)
        assert await ws.recv() == message
    assert received == [("chat", (2, 0))]


# Refusals: a status on the stream, the connection goes on.


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        # An extended CONNECT that lost its :protocol.
        ([f for f in connect("/") if f[0] != ":protocol"], "400"),
        ([*connect("/")[:-1], ("sec-websocket-version", "8")], "426"),
        ([f for f in connect("/") if f[0] != "sec-websocket-version"], "426"),
        ([(":method", "CONNECT"), (":protocol", "chat"), *connect("/")[2:]], "400"),
        # A plain GET to a WebSocket server without routes.
        ([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")], "400"),
    ],
)
async def test_bad_request_gets_status(fields: list[tuple[str, str]], status: str) -> None:
    async with serve(echo) as server, h2_client(server) as client:
        stream_id = client.request(fields, end_stream=fields[0][1] != "CONNECT")
        response = await client.response(stream_id)
        assert response[":status"] == status
        if status == "426":
            assert response["sec-websocket-version"] == "13"
        assert "connection" not in response and "upgrade" not in response
        assert b"Failed to open a WebSocket connection" in await client.body(stream_id)
        ws = await client.websocket()  # the connection goes on
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_refused_origin_gets_403() -> None:
    async with serve(echo, origins=["https://good.example"]) as server, h2_client(server) as client:
        stream_id = client.request(connect("/", [("origin", "https://evil.example")]))
        assert (await client.response(stream_id))[":status"] == "403"
        ws = await client.websocket("/", [("origin", "https://good.example")])
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_oversized_header_list_ends_the_connection() -> None:
    async with serve(echo, max_header_bytes=4096) as server, h2_client(server) as client:
        await wait(client.settings.wait())
        assert client.h2.remote_settings.max_header_list_size == 4096
        # The client's h2 checks nothing: an HPACK bomb, as far as we know.
        client.request(connect("/", [("x-big", "a" * 8000)]))
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code != ErrorCodes.NO_ERROR


# Closing one stream leaves the others alone.


async def test_stream_closes_normally_and_by_reset_while_others_go_on() -> None:
    codes: dict[int, int | None] = {}
    done = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        with contextlib.suppress(rapidws.ConnectionClosed):
            await echo(ws)
        await ws.wait_closed()
        codes[ws.transport.get_extra_info("http2_stream_id")] = ws.close_code  # type: ignore[union-attr]
        if len(codes) == 2:
            done.set()

    async with serve(handler) as server, h2_client(server) as client:
        normal, reset, other = [await client.websocket() for _ in range(3)]
        assert (await normal.close()).code == 1000
        assert normal.ended  # after the closing handshake
        client.reset(reset.stream_id)
        await wait(done.wait())
        assert codes == {normal.stream_id: 1000, reset.stream_id: 1006}
        await other.send("unaffected")
        assert await other.recv() == "unaffected"


class GreedyH2Connection(H2Connection):
    """A client's h2 that ignores the server's limit on concurrent streams."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


async def test_stream_past_the_limit_is_refused_while_the_others_go_on() -> None:
    # RFC 9113 section 5.1.2: a stream error (REFUSED_STREAM), not the connection's.
    async with serve(echo) as server, h2_client(server) as client:
        client.h2.__class__ = GreedyH2Connection
        websockets = [await client.websocket() for _ in range(MAX_STREAMS)]
        refused = client.request(connect("/"))
        event = await client.next_event(refused)
        assert isinstance(event, StreamReset)
        assert event.error_code == ErrorCodes.REFUSED_STREAM
        await websockets[0].send("still here")
        assert await websockets[0].recv() == "still here"
        # Once a stream has ended, there is room for one more.
        assert (await websockets[-1].close()).code == 1000
        extra = await client.websocket()
        await extra.send("room again")
        assert await extra.recv() == "room again"
        assert client.terminated is None


async def test_stream_limit_is_an_option() -> None:
    async with serve(echo, http2_max_streams=3) as server, h2_client(server) as client:
        await wait(client.settings.wait())
        assert client.h2.remote_settings.max_concurrent_streams == 3
        client.h2.__class__ = GreedyH2Connection
        for _ in range(3):
            await client.websocket()
        event = await client.next_event(client.request(connect("/")))
        assert isinstance(event, StreamReset)
        assert event.error_code == ErrorCodes.REFUSED_STREAM
    with pytest.raises(ValueError, match="http2_max_streams must be 1 or more"):
        serve(echo, http2_max_streams=0)


async def test_rapid_resets_end_the_connection_with_enhance_your_calm() -> None:
    # CVE-2023-44487: streams opened and reset at once, as fast as a client can.
    opened = 0

    async def handler(ws: rapidws.ServerConnection) -> None:
        nonlocal opened
        opened += 1
        await ws.wait_closed()

    async with serve(handler) as server, h2_client(server) as client:
        sent = 0
        # Far more than the burst: the allowance comes back at RESETS_PER_SECOND
        # only, and this client resets thousands a second.
        while sent < 20 * RESET_BURST:
            if client.terminated is not None or client.closed.is_set():
                break  # the server's GOAWAY
            stream_id = client.request(connect("/"))
            client.reset(stream_id)
            sent += 1
            await asyncio.sleep(0)
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert RESET_BURST < sent < 20 * RESET_BURST
    assert opened <= sent


async def test_refusals_past_the_allowance_in_one_read_end_the_connection_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Requests past the stream limit, all in one write: the refusals use up
    # the allowance mid-read, and what follows in that read is left alone.
    async with serve(echo) as server, h2_client(server) as client:
        client.h2.__class__ = GreedyH2Connection
        for _ in range(MAX_STREAMS + RESET_BURST + 10):
            stream_id = client.h2.get_next_available_stream_id()
            client.h2.send_headers(stream_id, connect("/"))
        client.flush()
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_streams_reset_at_a_steady_pace_are_served() -> None:
    # Below the allowance, resets are a client's right (a page navigating away).
    async with serve(echo) as server, h2_client(server) as client:
        for _ in range(RESET_BURST - 10):
            ws = await client.websocket()
            client.reset(ws.stream_id)
        ws = await client.websocket()
        await ws.send("served")
        assert await ws.recv() == "served"
        assert client.terminated is None


async def test_server_closing_a_websocket_ends_its_stream() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.close(4000, "bye")

    async with serve(handler) as server, h2_client(server) as client:
        ws = await client.websocket()
        close = await ws.recv()
        assert isinstance(close, Close) and close.code == 4000
        # The client's engine answered; the server then ends the stream.
        await client.send_data(ws.stream_id, b"".join(ws.protocol.data_to_send()))
        await ws.end()


async def test_abort_resets_the_stream() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        ws.transport.abort()  # type: ignore[union-attr]

    async with serve(handler) as server, h2_client(server) as client:
        ws = await client.websocket()
        event = await client.next_event(ws.stream_id)
        assert isinstance(event, StreamReset)
        assert event.error_code == ErrorCodes.CANCEL


# Flow control: a stalled stream does not block the others.


async def test_stalled_server_reader_does_not_block_other_streams() -> None:
    release = asyncio.Event()
    got: list[int] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        if ws.request.path == "/stall":  # type: ignore[union-attr]
            await release.wait()
            async for message in ws:
                got.append(len(message))
        else:
            await echo(ws)

    async with serve(handler, max_queue=4) as server, h2_client(server) as client:
        stalled = await client.websocket("/stall")
        other = await client.websocket("/echo")
        block = b"x" * 65536
        # More than the stalled stream's queue (4 messages) and window
        # (256 KiB) hold: sending cannot end before the handler reads.
        sender = asyncio.create_task(_send_all(stalled, [block] * 12))
        for i in range(10):
            await other.send(f"m{i}")
            assert await other.recv() == f"m{i}"
        assert not sender.done()
        assert client.h2.outbound_flow_control_window > STREAM_WINDOW
        release.set()
        await wait(sender)
        await until(lambda: len(got) == 12)


async def _send_all(ws: H2WebSocket, messages: list[bytes]) -> None:
    for message in messages:
        await ws.send(message)


async def test_stalled_client_reader_does_not_block_other_streams() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        if ws.request.path == "/flood":  # type: ignore[union-attr]
            await ws.recv()  # the client is ready
            for _ in range(16):
                await ws.send(b"y" * 65536)  # waits while the stream's window is shut
            await ws.send("end")
        else:
            await echo(ws)

    async with serve(handler) as server, h2_client(server) as client:
        await wait(client.settings.wait())
        flood = await client.websocket("/flood")
        client.stalled.add(flood.stream_id)
        await flood.send("go")
        other = await client.websocket("/echo")
        await until(lambda: client.h2.remote_flow_control_window(flood.stream_id) == 0)
        for i in range(10):
            await other.send(f"m{i}")
            assert await other.recv() == f"m{i}"
        client.resume(flood.stream_id)
        for _ in range(16):
            assert await flood.recv() == b"y" * 65536
        assert await flood.recv() == "end"


async def test_send_waits_for_the_window() -> None:
    # send() pauses while the stream's window is shut: the buffer does not grow.
    buffered: list[int] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        transport = ws.transport
        assert isinstance(transport, StreamTransport)
        await ws.recv()  # the client is ready
        for _ in range(8):
            await ws.send(b"z" * 65536)
            buffered.append(transport.get_write_buffer_size())
        await ws.wait_closed()

    async with serve(handler, write_limit=65536) as server, h2_client(server) as client:
        await wait(client.settings.wait())
        ws = await client.websocket()
        client.stalled.add(ws.stream_id)
        await ws.send("go")
        await until(lambda: client.h2.remote_flow_control_window(ws.stream_id) == 0)
        await asyncio.sleep(0.05)
        assert len(buffered) < 8
        assert max(buffered, default=0) <= 2 * 65536 + 16
        client.resume(ws.stream_id)
        for _ in range(8):
            assert await ws.recv() == b"z" * 65536


# Frames as read: a WebSocket's DATA goes straight to its stream, the rest to h2.


def raw_frame(
    kind: int, stream_id: int, payload: bytes = b"", *, flags: int = 0, length: int | None = None
) -> bytes:
    """A frame as is, past the client's h2 (which checks windows, sizes and order).

    ``length`` is the header's, when it is not the payload's.
    """
    size = len(payload) if length is None else length
    return (size << 48 | kind << 40 | flags << 32 | stream_id).to_bytes(9, "big") + payload


def raw_data(stream_id: int, data: bytes, *, flags: int = 0) -> bytes:
    """A DATA frame as is."""
    return raw_frame(DataFrame.type, stream_id, data, flags=flags)


@pytest.mark.parametrize("piece", [1, 8, 9, 10, 1000])
async def test_frames_in_any_pieces(piece: int) -> None:
    # DATA split anywhere, beside PING, padded DATA and a new stream's
    # HEADERS: each message reaches its WebSocket whole and in order.
    async with serve(echo) as server, h2_client(server) as client:
        first, second = await client.websocket(), await client.websocket()
        h2 = client.h2
        first.protocol.send_message("a" * 300)
        second.protocol.send_message(b"b" * 700)
        h2.send_data(first.stream_id, b"".join(first.protocol.data_to_send()))
        h2.ping(b"12345678")
        h2.send_data(second.stream_id, b"".join(second.protocol.data_to_send()))
        first.protocol.send_message("padded")
        h2.send_data(first.stream_id, b"".join(first.protocol.data_to_send()), pad_length=7)
        third = h2.get_next_available_stream_id()
        h2.send_headers(third, connect("/"))
        data = h2.data_to_send()
        client.holding = True  # nothing between the pieces
        for i in range(0, len(data), piece):
            client.writer.write(data[i : i + piece])
            await asyncio.sleep(0)
        client.holding = False
        client.flush()
        assert await first.recv() == "a" * 300
        assert await second.recv() == b"b" * 700
        assert await first.recv() == "padded"
        assert (await client.response(third))[":status"] == "200"


async def test_large_frame_reaches_its_stream_as_it_arrives() -> None:
    # A 100 KiB DATA frame in pieces: the message in it arrives before the
    # frame has (the engine takes the payload as it comes).
    received: list[bytes] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        received.append(await ws.recv())  # type: ignore[arg-type]
        await ws.send("first")
        received.append(await ws.recv())  # type: ignore[arg-type]

    async with serve(handler) as server, h2_client(server) as client:
        ws = await client.websocket()
        ws.protocol.send_message(b"x" * 1000)
        ws.protocol.send_message(b"y" * 99_000)
        frame = raw_data(ws.stream_id, b"".join(ws.protocol.data_to_send()))
        client.writer.write(frame[:5000])
        assert await ws.recv() == "first"  # the rest of the frame is still to come
        client.writer.write(frame[5000:])
        await until(lambda: len(received) == 2)
        assert received == [b"x" * 1000, b"y" * 99_000]


async def test_data_inside_a_header_block_ends_the_connection() -> None:
    # RFC 9113 section 6.10: only CONTINUATION may follow a HEADERS frame
    # without END_HEADERS, even DATA of an open WebSocket.
    async with serve(echo) as server, h2_client(server) as client:
        ws = await client.websocket()
        block = client.h2.encoder.encode(connect("/"))
        stream_id = client.h2.get_next_available_stream_id()
        headers = raw_frame(HeadersFrame.type, stream_id, block)
        ws.protocol.send_message("inside")
        client.writer.write(headers + raw_data(ws.stream_id, ws.protocol.data_to_send()[0]))
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.PROTOCOL_ERROR


@pytest.mark.parametrize("flood", [False, True])
async def test_header_block_past_twice_the_limit_ends_the_connection(flood: bool) -> None:
    # A CONTINUATION flood (or one large HEADERS): refused once the encoded
    # block passes twice max_header_bytes, not after h2 held 64 frames of it.
    async with serve(echo, max_header_bytes=4096) as server, h2_client(server) as client:
        ws = await client.websocket()
        stream_id = client.h2.get_next_available_stream_id()
        block = client.h2.encoder.encode(connect("/"))
        frames = [raw_frame(HeadersFrame.type, stream_id, block)]
        piece = b"\x00" * 4000  # never decoded: the block is refused first
        for _ in range(100 if flood else 0):
            frames.append(raw_frame(ContinuationFrame.type, stream_id, piece))
        if not flood:  # one HEADERS frame with END_HEADERS, of 9,000 bytes
            large = block + b"\x00" * (9000 - len(block))
            frames = [raw_frame(HeadersFrame.type, stream_id, large, flags=0x4)]  # END_HEADERS
        client.writer.write(b"".join(frames))
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert ws.stream_id == 1


async def test_data_past_the_window_ends_the_connection() -> None:
    # A client that ignores the stream's window (its reader stalls): GOAWAY
    # FLOW_CONTROL_ERROR, as h2 itself would answer.
    release = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        await release.wait()

    async with serve(handler, max_queue=1) as server, h2_client(server) as client:
        ws = await client.websocket()
        for _ in range(4):
            ws.protocol.send_message(b"w" * 90_000)
            client.writer.write(raw_data(ws.stream_id, b"".join(ws.protocol.data_to_send())))
        await wait(client.closed.wait())
        release.set()
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def raw_window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame as is."""
    return raw_frame(WindowUpdateFrame.type, stream_id, increment.to_bytes(4, "big"))


@pytest.mark.parametrize(
    ("increment", "error"),
    [(0, ErrorCodes.PROTOCOL_ERROR), (2**31 - 1, ErrorCodes.FLOW_CONTROL_ERROR)],
)
async def test_bad_window_updates_are_answered_by_h2(increment: int, error: ErrorCodes) -> None:
    # RFC 9113 section 6.9: a zero increment, or a window past 2**31 - 1.
    async with serve(echo) as server, h2_client(server) as client:
        ws = await client.websocket()
        client.writer.write(raw_window_update(ws.stream_id, increment))
        event = await client.next_event(ws.stream_id)
        if isinstance(event, StreamReset):
            assert event.error_code == error
            other = await client.websocket()
            await other.send("still here")
            assert await other.recv() == "still here"
        else:
            await wait(client.closed.wait())
            assert client.terminated is not None
            assert client.terminated.error_code == error


async def test_oversized_frame_ends_the_connection_from_its_header() -> None:
    # A frame above SETTINGS_MAX_FRAME_SIZE is refused at once, not awaited.
    async with serve(echo) as server, h2_client(server) as client:
        ws = await client.websocket()
        client.writer.write(raw_frame(DataFrame.type, ws.stream_id, length=MAX_FRAME + 1))
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.FRAME_SIZE_ERROR


async def test_frame_of_a_stream_aborted_midway_still_counts_for_the_connection() -> None:
    # The rest of a DATA frame whose stream ended meanwhile is acknowledged:
    # the connection's window loses nothing, as h2 does for closed streams.
    async def handler(ws: rapidws.ServerConnection) -> None:
        if ws.request.path == "/abort":  # type: ignore[union-attr]
            await ws.recv()
            ws.transport.abort()  # type: ignore[union-attr]
        else:
            await echo(ws)

    async with serve(handler) as server, h2_client(server) as client:
        ws = await client.websocket("/abort")
        ws.protocol.send_message(b"x" * 100)
        ws.protocol.send_message(b"y" * 100_000)
        frame = raw_data(ws.stream_id, b"".join(ws.protocol.data_to_send()))
        client.writer.write(frame[:1000])
        event = await client.next_event(ws.stream_id)
        assert isinstance(event, StreamReset)
        client.writer.write(frame[1000:])
        other = await client.websocket()  # after the frame's end, in order
        await other.send("still here")
        assert await other.recv() == "still here"
        await other.close()  # its stream hands back what it took
        await until(lambda: window_whole(server))


def window_whole(server: rapidws.Server) -> bool:
    """Whether every byte received was handed back to h2 (taken or dropped)."""
    (connection,) = server.http2_connections
    window = connection._h2._inbound_flow_control_window_manager
    return window.current_window_size + window._bytes_processed == window.max_window_size


@pytest.mark.parametrize("end", ["END_STREAM", "RST_STREAM"])
async def test_data_right_after_a_stream_ends_is_a_stream_error(end: str) -> None:
    # RFC 9113 section 5.1: DATA after END_STREAM or RST_STREAM gets
    # RST_STREAM STREAM_CLOSED, even behind it in the same read (the stream
    # must not take it as an open WebSocket's).
    async with serve(echo) as server, h2_client(server) as client:
        ws = await client.websocket()
        if end == "END_STREAM":
            frame = raw_data(ws.stream_id, b"", flags=0x1)
        else:
            frame = raw_frame(RstStreamFrame.type, ws.stream_id, bytes(4))
        ws.protocol.send_message("after the end")
        client.writer.write(frame + raw_data(ws.stream_id, ws.protocol.data_to_send()[0]))
        event = await client.next_event(ws.stream_id)
        while not isinstance(event, StreamReset):  # the server's END_STREAM first
            event = await client.next_event(ws.stream_id)
        assert event.error_code == ErrorCodes.STREAM_CLOSED
        other = await client.websocket()
        await other.send("still here")
        assert await other.recv() == "still here"
        await other.close()
        await until(lambda: window_whole(server))


async def test_window_update_right_after_settings_adds_to_the_new_window() -> None:
    # RFC 9113 section 6.9.2: SETTINGS_INITIAL_WINDOW_SIZE shifts the open
    # streams' windows; a WINDOW_UPDATE behind it in the same read adds to
    # the shifted window.
    async with serve(echo) as server, h2_client(server) as client:
        ws = await client.websocket()
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100_000})
        client.writer.write(client.h2.data_to_send() + raw_window_update(ws.stream_id, 1000))
        await client.websocket()  # read after them
        (connection,) = server.http2_connections
        assert connection._h2.streams[ws.stream_id].outbound_flow_control_window == 101_000


def random_pieces(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """``data`` cut at random points, with bursts of 1-byte and 9-byte pieces."""
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 9, rng.randrange(1, 50_000)))
        for _ in range(40 if size < 10 else 1):
            yield data[pos : pos + size]
            pos += size


async def test_random_frames_in_random_pieces(caplog: pytest.LogCaptureFixture) -> None:
    # WebSocket DATA of 0 to 70,000 bytes, padded DATA, PING, WINDOW_UPDATE
    # and new streams' HEADERS, made by the client's h2 (within the server's
    # windows), cut anywhere: every echo arrives whole and in order.
    async with serve(echo) as server, h2_client(server) as client:
        sockets = [await client.websocket() for _ in range(3)]
        h2 = client.h2
        for seed in range(3):
            rng = random.Random(seed)
            sent: dict[H2WebSocket, list[bytes]] = {}
            out: dict[H2WebSocket, bytes] = {}
            for ws in sockets:
                sent[ws] = []
                room = h2.local_flow_control_window(ws.stream_id) - 20_000
                while room > 0:
                    message = rng.randbytes(min(rng.randrange(50_000), room))
                    ws.protocol.send_message(message)
                    room -= len(message) + 14
                    sent[ws].append(message)
                out[ws] = b"".join(ws.protocol.data_to_send())
            opened: list[int] = []
            while any(out.values()):
                ws = rng.choice([ws for ws in sockets if out[ws]])
                action = rng.randrange(10)
                if action == 0:
                    h2.ping(rng.randbytes(8))
                elif action == 1:
                    stream_id = rng.choice((None, ws.stream_id))  # the connection's, or a stream's
                    h2.increment_flow_control_window(rng.randrange(1, 1000), stream_id=stream_id)
                elif action == 2:  # a new WebSocket
                    opened.append(h2.get_next_available_stream_id())
                    h2.send_headers(opened[-1], connect("/"))
                else:  # DATA: one in seven padded, one in seven empty
                    pad = rng.randrange(256) if action == 3 else None
                    size = 0 if action == 4 else rng.randrange(1, 70_000)
                    h2.send_data(ws.stream_id, out[ws][:size], pad_length=pad)
                    out[ws] = out[ws][size:]
            client.holding = True  # nothing between the pieces
            for piece in random_pieces(h2.data_to_send(), rng):
                client.writer.write(piece)
                await asyncio.sleep(0)
            client.holding = False
            client.flush()
            for ws in sockets:
                for message in sent[ws]:
                    assert await ws.recv() == message
            for stream_id in opened:
                assert (await client.response(stream_id))[":status"] == "200"
        await sockets[0].send("still here")
        assert await sockets[0].recv() == "still here"
    assert client.terminated is None
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# The App over HTTP/2: WebSocket routes with interceptors, plain HTTP routes.


async def test_app_routes_over_http2() -> None:
    app = rapidws.App()
    seen: list[str] = []

    @app.interceptor
    def check(ws: rapidws.ServerConnection, request: rapidws.Request) -> Response | None:
        seen.append(request.path)
        if request.headers.get("authorization") != "Bearer s3cret":
            return Response(401, "unauthorized\n")
        return None

    @app.websocket("/chat/{room}", subprotocols=["chat"])
    async def chat(ws: rapidws.ServerConnection, room: str) -> None:
        async for message in ws:
            await ws.send(f"{room}: {message}")

    @app.get("/healthz")
    def health(request: rapidws.Request) -> str:
        return "ok\n"

    @app.post("/echo")
    def echo_body(request: rapidws.Request) -> bytes:
        return request.body

    async with app.serve("127.0.0.1", 0, http2=True) as server, h2_client(server) as client:
        get = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost")]
        stream_id = client.request([*get, (":path", "/healthz")], end_stream=True)
        response = await client.response(stream_id)
        assert response[":status"] == "200"
        assert response["content-length"] == "3"
        assert await client.body(stream_id) == b"ok\n"

        post = [(":method", "POST"), *get[1:], (":path", "/echo")]
        stream_id = client.request(post)
        await client.send_data(stream_id, b"a body", end_stream=True)
        assert (await client.response(stream_id))[":status"] == "200"
        assert await client.body(stream_id) == b"a body"

        head = [(":method", "HEAD"), *get[1:], (":path", "/healthz")]
        stream_id = client.request(head, end_stream=True)
        assert (await client.response(stream_id))["content-length"] == "3"
        assert await client.body(stream_id) == b""

        stream_id = client.request(connect("/chat/lobby"))
        assert (await client.response(stream_id))[":status"] == "401"

        auth = [("authorization", "Bearer s3cret"), ("sec-websocket-protocol", "chat")]
        ws = await client.websocket("/chat/lobby", auth)
        assert ws.response["sec-websocket-protocol"] == "chat"
        await ws.send("hi")
        assert await ws.recv() == "lobby: hi"

        stream_id = client.request([*get, (":path", "/missing")], end_stream=True)
        assert (await client.response(stream_id))[":status"] == "404"
    assert seen == ["/chat/lobby", "/chat/lobby"]


async def test_request_body_over_the_limit_gets_413() -> None:
    app = rapidws.App()

    @app.post("/upload")
    def upload(request: rapidws.Request) -> str:
        return "stored\n"

    serving = app.serve("127.0.0.1", 0, http2=True, max_body_size=1000)
    async with serving as server, h2_client(server) as client:
        post = [(":method", "POST"), (":scheme", "http"), (":authority", "x")]
        stream_id = client.request([*post, (":path", "/upload")])
        await client.send_data(stream_id, b"x" * 2000)
        assert (await client.response(stream_id))[":status"] == "413"
        await client.body(stream_id)
        event = await client.next_event(stream_id)
        assert isinstance(event, StreamReset)  # the rest is not wanted
        assert event.error_code == ErrorCodes.NO_ERROR


# Shutdown and timeouts.


async def test_shutdown_closes_websockets_then_sends_goaway() -> None:
    async with h2_client_and_server() as (server, client):
        ws = await client.websocket()
        server.close()
        close = await ws.recv()
        assert isinstance(close, Close) and close.code == 1001
        await client.send_data(ws.stream_id, b"".join(ws.protocol.data_to_send()))
        await ws.end()
        await wait(client.closed.wait())
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.NO_ERROR
        await wait(server.wait_closed())


@asynccontextmanager
async def h2_client_and_server() -> AsyncIterator[tuple[rapidws.Server, H2Client]]:
    server = await serve(echo)
    try:
        async with h2_client(server) as client:
            yield server, client
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_idle_connection_is_closed_after_open_timeout() -> None:
    async with serve(echo, open_timeout=0.1) as server, h2_client(server) as client:
        ws = await client.websocket()
        await asyncio.sleep(0.2)  # a stream open: the connection stays
        await ws.send("still open")
        assert await ws.recv() == "still open"
        await ws.close()
        await wait(client.closed.wait(), TIMEOUT)
        assert client.terminated is not None


async def test_silent_cleartext_client_is_dropped() -> None:
    async with serve(echo, open_timeout=0.1) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PRI * HTTP/2.0\r\n")  # a part of the preface, then nothing
        assert await wait(reader.read()) == b""
        writer.close()


async def test_client_goaway_closes_websockets_that_are_sending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[BaseException] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        try:
            for i in range(10_000):
                await ws.send(f"tick {i}")
                await asyncio.sleep(0.001)
        except rapidws.ConnectionClosed as exc:
            ended.append(exc)

    async with serve(handler) as server:
        async with h2_client(server) as client:
            ws = await client.websocket()
            assert await ws.recv() == "tick 0"
        await until(lambda: len(ended) == 1)
    assert isinstance(ended[0], rapidws.ConnectionClosedError)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_http11_request_starting_like_the_preface() -> None:
    # "P" may start the HTTP/2 preface: a PUT is told apart at its second byte.
    async with serve(echo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"P")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"UT / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await wait(reader.readline())).startswith(b"HTTP/1.1 405")
        writer.close()
