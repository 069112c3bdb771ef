"""Interoperability with python-websockets (its asyncio API), over real sockets.

Most tests run in both directions, a websockets client against a rapidws server
and a rapidws client against a websockets server, through the :class:`Library`
adapters that give both libraries one shape; conftest runs each on asyncio and
uvloop. The websockets side has compression off except in the tests about
compression, so that most tests see plain frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import pytest
import websockets.asyncio.client
import websockets.asyncio.server
import websockets.exceptions
import websockets.extensions.permessage_deflate

import rapidws

from ..asyncio.utils import Recorder, echo, wait

# Adapters: one shape for both libraries.


@dataclasses.dataclass(frozen=True)
class Library:
    """What the tests use of one library, under names common to both."""

    name: str
    serve: Callable[..., Any]  # (handler, **options) -> async context manager of a server
    connect: Callable[..., Any]  # (uri, **options) -> async context manager of a connection
    refuse: Callable[[int, str], Callable[[Any, Any], Any]]  # a process_request hook
    ping: Callable[[Any], Awaitable[float]]  # send a ping, wait for its pong; the RTT
    status: Callable[[Any], int]  # the status code of a handshake response
    target: Callable[[Any], str]  # the path and query of a handshake request
    InvalidStatus: type[Exception]
    ConnectionClosed: type[Exception]
    ConnectionClosedOK: type[Exception]
    ConnectionClosedError: type[Exception]

    def __str__(self) -> str:
        return self.name


async def _websockets_ping(ws: Any) -> float:
    return float(await (await ws.ping()))


# websockets 15+ goes through a proxy named by the environment unless told not to.
NO_PROXY = (
    {"proxy": None}
    if "proxy" in inspect.signature(websockets.asyncio.client.connect).parameters
    else {}
)

RAPIDWS = Library(
    name="rapidws",
    serve=lambda handler, **options: rapidws.serve(handler, "127.0.0.1", 0, **options),
    connect=rapidws.connect,
    refuse=lambda status, body: lambda connection, request: rapidws.Response(status, body),
    ping=lambda ws: ws.ping(),
    status=lambda response: response.status,
    target=lambda request: request.target,
    InvalidStatus=rapidws.InvalidStatus,
    ConnectionClosed=rapidws.ConnectionClosed,
    ConnectionClosedOK=rapidws.ConnectionClosedOK,
    ConnectionClosedError=rapidws.ConnectionClosedError,
)

WEBSOCKETS = Library(
    name="websockets",
    serve=lambda handler, **options: websockets.asyncio.server.serve(
        handler, "127.0.0.1", 0, **{"compression": None, **options}
    ),
    connect=lambda uri, **options: websockets.asyncio.client.connect(
        uri, **{"compression": None, **NO_PROXY, **options}
    ),
    refuse=lambda status, body: lambda connection, request: connection.respond(status, body),
    ping=_websockets_ping,
    status=lambda response: response.status_code,
    target=lambda request: request.path,
    InvalidStatus=websockets.exceptions.InvalidStatus,
    ConnectionClosed=websockets.exceptions.ConnectionClosed,
    ConnectionClosedOK=websockets.exceptions.ConnectionClosedOK,
    ConnectionClosedError=websockets.exceptions.ConnectionClosedError,
)


class End(NamedTuple):
    """One end of a connection: the library that runs it, and the connection."""

    lib: Library
    ws: Any


@dataclasses.dataclass(frozen=True)
class Direction:
    """A client of one library talking to a server of the other."""

    client: Library
    server: Library

    def __str__(self) -> str:
        return f"{self.client}-client-{self.server}-server"

    def serve(self, handler: Callable[[Any], Awaitable[None]], **options: Any) -> Any:
        return self.server.serve(handler, **options)

    def connect(
        self, server: Any, path: str = "/", *, host: str = "127.0.0.1", **options: Any
    ) -> Any:
        """Connect to ``server``, with ``wss://`` when ``options`` has ``ssl``."""
        port = server.sockets[0].getsockname()[1]
        scheme = "wss" if "ssl" in options else "ws"
        return self.client.connect(f"{scheme}://{host}:{port}{path}", **options)

    @contextlib.asynccontextmanager
    async def connected(
        self,
        *,
        client: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
    ) -> AsyncIterator[tuple[End, End]]:
        """Open one connection with these options; yield its client and server ends."""
        recorder = Recorder()
        async with (
            self.serve(recorder, **(server or {})) as running,
            self.connect(running, host=host, **(client or {})) as ws,
        ):
            yield End(self.client, ws), End(self.server, await recorder.get())


DIRECTIONS = [Direction(WEBSOCKETS, RAPIDWS), Direction(RAPIDWS, WEBSOCKETS)]


@pytest.fixture(params=DIRECTIONS, ids=str)
def direction(request: pytest.FixtureRequest) -> Direction:
    return request.param


def ordered(first: str, client: End, server: End) -> tuple[End, End]:
    """``(client, server)`` when ``first`` is ``"client"``, else ``(server, client)``."""
    return (client, server) if first == "client" else (server, client)


def run_by(lib: Library, client: End, server: End) -> tuple[End, End]:
    """The end that ``lib`` runs, then the other one."""
    return (client, server) if client.lib is lib else (server, client)


ENDS = pytest.mark.parametrize("first", ["client", "server"])


async def assert_round_trip(a: End, b: End, message: Any) -> None:
    """Send ``message`` from ``a`` to ``b`` and back; it arrives whole, with its type."""
    received = await wait(_exchange(a, b, message))
    assert type(received) is type(message)
    assert received == message
    returned = await wait(_exchange(b, a, received))
    assert type(returned) is type(message)
    assert returned == message


async def _exchange(sender: End, receiver: End, message: Any) -> Any:
    # Send and receive at once: a large message fills both write buffers.
    _, received = await asyncio.gather(sender.ws.send(message), receiver.ws.recv())
    return received


async def recv_closed(end: End) -> Any:
    """Wait until ``end`` is closed; return what its ``recv()`` raises then."""
    with pytest.raises(end.lib.ConnectionClosed) as caught:
        await wait(end.ws.recv())
    await wait(end.ws.wait_closed())
    return caught.value


async def assert_closed(end: End, code: int, reason: str | None = None) -> None:
    """``end`` is closed with ``code``, and ``recv()`` raises the exception it calls for."""
    closed = await recv_closed(end)
    ok = code in (1000, 1001, 1005)
    assert isinstance(closed, end.lib.ConnectionClosedOK if ok else end.lib.ConnectionClosedError)
    assert end.ws.close_code == code
    if reason is not None:
        assert end.ws.close_reason == reason


# Messages.

MIB = 2**20
LARGE_LIMIT = 8 * MIB


def text(size: int) -> str:
    return ("abcdefghijklmnopqrstuvwxyz012345" * (size // 32 + 1))[:size]


def binary(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("hello", id="text"),
        pytest.param(b"\x00\x01\xfe\xff", id="binary"),
        pytest.param("", id="empty-text"),
        pytest.param(b"", id="empty-binary"),
        pytest.param("ĉu vi parolas 🦄?", id="non-ascii-text"),
        pytest.param(text(MIB), id="1MiB-text"),
        pytest.param(binary(MIB), id="1MiB-binary"),
        pytest.param(text(4 * MIB), id="4MiB-text"),
        pytest.param(binary(4 * MIB), id="4MiB-binary"),
    ],
)
async def test_round_trip(direction: Direction, message: str | bytes) -> None:
    limits = {"max_size": LARGE_LIMIT}
    async with direction.connected(client=limits, server=limits) as (client, server):
        await assert_round_trip(client, server, message)


async def test_echo_handler(direction: Direction) -> None:
    async with (
        direction.serve(echo) as server,
        direction.connect(server) as ws,
    ):
        for message in ["text", b"binary"] * 3:
            await wait(ws.send(message))
            assert await wait(ws.recv()) == message


@ENDS
@pytest.mark.parametrize(
    "message",
    [
        pytest.param(binary(MIB + 1), id="one-frame"),
        pytest.param([binary(300_000)] * 4, id="fragmented"),
    ],
)
async def test_message_over_max_size_closes_with_1009(
    direction: Direction, first: str, message: bytes | list[bytes]
) -> None:
    # Both libraries default to a 1 MiB limit.
    async with direction.connected() as (client, server):
        sender, receiver = ordered(first, client, server)
        with contextlib.suppress(sender.lib.ConnectionClosedError):
            await wait(sender.ws.send(message))
        # The receiver fails the connection with 1009; websockets does not wait
        # for the echo of its close frame then (its close_code is 1006).
        assert (await recv_closed(receiver)).sent.code == 1009
        await assert_closed(sender, 1009)


async def _async_fragments(fragments: Iterable[Any], delay: float = 0) -> AsyncIterator[Any]:
    for fragment in fragments:
        await asyncio.sleep(delay)
        yield fragment


@ENDS
@pytest.mark.parametrize("source", [list, _async_fragments], ids=["list", "async-generator"])
@pytest.mark.parametrize(
    "fragments",
    [
        pytest.param(["frag", "", "mented ", "café ☕"], id="text"),
        pytest.param([b"\x00\x01", b"", binary(100_000), b"\xff"], id="binary"),
    ],
)
async def test_fragmented_message(
    direction: Direction,
    first: str,
    source: Callable[[list[Any]], Any],
    fragments: list[Any],
) -> None:
    async with direction.connected() as (client, server):
        sender, receiver = ordered(first, client, server)
        await wait(sender.ws.send(source(fragments)))
        assert await wait(receiver.ws.recv()) == fragments[0][:0].join(fragments)
        # The connection goes on after the fragmented message.
        await assert_round_trip(sender, receiver, "after")


@ENDS
async def test_flow_control(direction: Direction, first: str) -> None:
    # Far more than max_queue messages and the write buffers hold: both ends
    # pause and resume, and every message arrives, in order.
    messages = [binary(10_000) + index.to_bytes(4, "big") for index in range(1000)]
    async with direction.connected() as (client, server):
        sender, receiver = ordered(first, client, server)

        async def send_all() -> None:
            for message in messages:
                await sender.ws.send(message)

        async def receive_all() -> list[Any]:
            await asyncio.sleep(0.1)  # let the buffers fill up first
            return [await receiver.ws.recv() for _ in messages]

        _, received = await wait(asyncio.gather(send_all(), receive_all()))
        assert received == messages


@ENDS
@pytest.mark.virtual_clock
async def test_keepalive_pings_between_fragments(direction: Direction, first: str) -> None:
    # The sender answers pings while it is in the middle of a fragmented
    # message: the message takes 0.5 s to send, longer than ping_timeout.
    keepalive = {"ping_interval": 0.01, "ping_timeout": 0.3}
    fragments = [f"{index}," for index in range(25)]
    other = "server" if first == "client" else "client"
    async with direction.connected(**{other: keepalive}) as (client, server):
        sender, receiver = ordered(first, client, server)
        _, received = await wait(
            asyncio.gather(
                sender.ws.send(_async_fragments(fragments, 0.02)),
                receiver.ws.recv(),
            )
        )
        assert received == "".join(fragments)
        await assert_round_trip(sender, receiver, "alive")


@pytest.mark.parametrize("kind", [str, bytes])
async def test_rapidws_fragments_arrive_frame_by_frame(kind: type) -> None:
    fragments: list[Any] = ["frag", "mented", " message"]
    if kind is bytes:
        fragments = [fragment.encode() for fragment in fragments]
    direction = Direction(RAPIDWS, WEBSOCKETS)
    async with direction.connected() as (client, server):
        await wait(client.ws.send(fragments))
        received = [fragment async for fragment in server.ws.recv_streaming()]
        assert received == fragments


# Handshake.


@pytest.mark.parametrize(
    ("supported", "offered", "chosen"),
    [
        pytest.param(["chat", "superchat"], ["superchat", "chat"], "chat", id="server-preference"),
        pytest.param(["superchat", "chat"], ["chat", "superchat"], "superchat", id="reversed"),
        pytest.param(["chat"], ["v2.chat", "chat"], "chat", id="one-shared"),
        pytest.param(None, ["chat"], None, id="server-without-subprotocols"),
    ],
)
async def test_subprotocol(
    direction: Direction, supported: list[str] | None, offered: list[str], chosen: str | None
) -> None:
    async with direction.connected(
        client={"subprotocols": offered}, server={"subprotocols": supported}
    ) as (client, server):
        assert client.ws.subprotocol == chosen
        assert server.ws.subprotocol == chosen
        await assert_round_trip(client, server, "negotiated")


async def test_additional_headers_path_and_query(direction: Direction) -> None:
    seen: list[Any] = []

    async def check(connection: Any, request: Any) -> None:
        seen.append(request)

    recorder = Recorder()
    headers = {"Authorization": "Bearer s3cret", "X-Trace-Id": "abc-123"}
    async with (
        direction.serve(recorder, process_request=check) as server,
        direction.connect(server, "/chat?room=1", additional_headers=headers) as ws,
    ):
        sws = await recorder.get()
        (request,) = seen
        assert direction.server.target(request) == "/chat?room=1"
        for ws_request in (request, sws.request):
            assert ws_request.headers["Authorization"] == "Bearer s3cret"
            assert ws_request.headers["x-trace-id"] == "abc-123"
        await assert_round_trip(End(direction.client, ws), End(direction.server, sws), "in")


# Each refusal: (server options for a library, client options, status, body or None).
REFUSALS = [
    pytest.param(
        lambda lib: {"process_request": lib.refuse(401, "unauthorized\n")},
        {},
        401,
        b"unauthorized\n",
        id="process_request",
    ),
    pytest.param(
        lambda lib: {"origins": ["https://app.example.com"]},
        {"origin": "https://evil.example.com"},
        403,
        None,
        id="origin",
    ),
    pytest.param(
        lambda lib: {"subprotocols": ["chat"]},
        {"subprotocols": ["superchat"]},
        400,
        None,
        id="no-shared-subprotocol",
    ),
]


@pytest.mark.parametrize(("server_options", "client_options", "status", "body"), REFUSALS)
async def test_handshake_refused(
    direction: Direction,
    server_options: Callable[[Library], dict[str, Any]],
    client_options: dict[str, Any],
    status: int,
    body: bytes | None,
) -> None:
    recorder = Recorder()
    async with direction.serve(recorder, **server_options(direction.server)) as server:
        with pytest.raises(direction.client.InvalidStatus) as caught:
            await wait(direction.connect(server, **client_options))
        response = caught.value.response
        assert direction.client.status(response) == status
        if body is not None:
            assert response.body == body
        assert recorder.connections.empty()


async def test_allowed_origin(direction: Direction) -> None:
    async with direction.connected(
        client={"origin": "https://app.example.com"},
        server={"origins": ["https://app.example.com"]},
    ) as (client, server):
        assert server.ws.request.headers["Origin"] == "https://app.example.com"
        await assert_round_trip(client, server, "welcome")


async def test_compression_is_negotiated_by_default(direction: Direction) -> None:
    # Both ends keep their default compression="deflate".
    deflate = {"compression": "deflate"}
    client_options = deflate if direction.client is WEBSOCKETS else {}
    server_options = deflate if direction.server is WEBSOCKETS else {}
    async with direction.connected(client=client_options, server=server_options) as (
        client,
        server,
    ):
        assert "permessage-deflate" in server.ws.request.headers["Sec-WebSocket-Extensions"]
        assert client.ws.response.headers["Sec-WebSocket-Extensions"].startswith(
            "permessage-deflate"
        )
        for message in [text(100_000), binary(100_000), "", "\u00e9\u2615" * 5000, text(10)]:
            await assert_round_trip(client, server, message)


# (no context takeover for the server, and for the client, server window, client window)
DEFLATE_SETTINGS = [
    (False, False, None, None),
    (True, False, None, None),
    (False, True, None, None),
    (True, True, 10, 9),
    (False, False, 15, 15),
    (False, False, 9, 12),
]


@pytest.mark.parametrize(
    ("server_nct", "client_nct", "server_bits", "client_bits"), DEFLATE_SETTINGS
)
async def test_compression_settings_interoperate(
    direction: Direction,
    server_nct: bool,
    client_nct: bool,
    server_bits: int | None,
    client_bits: int | None,
) -> None:
    # The client asks for these settings; websockets' server is told to use
    # them too, rapidws' server honours the offer.
    if direction.client is WEBSOCKETS:
        offer = websockets.extensions.permessage_deflate.ClientPerMessageDeflateFactory(
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits or True,
        )
        client_options: dict[str, Any] = {"extensions": [offer]}
        server_options: dict[str, Any] = {}
    else:
        client_options = {
            "compression": rapidws.ClientPerMessageDeflate(
                server_no_context_takeover=server_nct,
                client_no_context_takeover=client_nct,
                server_max_window_bits=server_bits,
                client_max_window_bits=client_bits or True,
            )
        }
        answer = websockets.extensions.permessage_deflate.ServerPerMessageDeflateFactory(
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
        server_options = {"extensions": [answer]}
    async with direction.connected(client=client_options, server=server_options) as (
        client,
        server,
    ):
        answer_header = client.ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer_header.startswith("permessage-deflate")
        assert ("server_no_context_takeover" in answer_header) == server_nct
        for _ in range(3):  # context takeover (or not) across messages
            for message in [text(70_000), binary(20_000), "short message, compressed or not"]:
                await assert_round_trip(client, server, message)


async def test_compression_is_off_when_one_end_turns_it_off(direction: Direction) -> None:
    off = {"compression": None}
    async with direction.connected(client=off, server=off) as (client, server):
        assert "Sec-WebSocket-Extensions" not in client.ws.response.headers
        await assert_round_trip(client, server, text(100_000))


# Closing.


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("client", 1000, ""),
        ("client", 4000, "client done"),
        ("server", 1001, "going away"),
        ("server", 4001, "server done ☕"),
    ],
)
async def test_close(direction: Direction, first: str, code: int, reason: str) -> None:
    async with direction.connected() as (client, server):
        closer, peer = ordered(first, client, server)
        last_words = ["last", b"words"]
        for message in last_words:
            await wait(closer.ws.send(message))
        # The messages sent before the close frame arrive; rapidws holds the
        # close frame back until its application has read them.
        closing = asyncio.ensure_future(closer.ws.close(code, reason))
        assert [await wait(peer.ws.recv()) for _ in last_words] == last_words
        await wait(closing)
        # The peer sees the code and reason, and echoes them back.
        await assert_closed(peer, code, reason)
        await assert_closed(closer, code, reason)


@ENDS
@pytest.mark.virtual_clock
async def test_close_during_fragmented_message(direction: Direction, first: str) -> None:
    async with direction.connected() as (client, server):
        closer, sender = ordered(first, client, server)
        sending = asyncio.ensure_future(sender.ws.send(_async_fragments(["x"] * 50, 0.02)))
        await asyncio.sleep(0.1)  # a few fragments are out
        await wait(closer.ws.close(4000, "stop"))
        with pytest.raises(sender.lib.ConnectionClosedError):
            await wait(sending)
        await assert_closed(sender, 4000, "stop")
        assert closer.ws.close_code == 4000


async def test_rapidws_closes_without_status_code(direction: Direction) -> None:
    # Only rapidws can: websockets refuses close(1005).
    async with direction.connected() as (client, server):
        closer, peer = run_by(RAPIDWS, client, server)
        await wait(closer.ws.close(1005))
        await assert_closed(peer, 1005, "")
        await assert_closed(closer, 1005, "")


async def test_server_shutdown_closes_with_1001(direction: Direction) -> None:
    recorder = Recorder()
    async with direction.serve(recorder) as server:
        connections = [await wait(direction.connect(server)) for _ in range(3)]
        for _ in connections:
            await recorder.get()
        server.close()
        await wait(server.wait_closed())
    for ws in connections:
        await assert_closed(End(direction.client, ws), 1001)


async def test_handler_exception_closes_with_1011(direction: Direction) -> None:
    async def fail(ws: Any) -> None:
        await ws.recv()
        raise RuntimeError("handler bug")

    async with direction.serve(fail) as server, direction.connect(server) as ws:
        await wait(ws.send("trigger"))
        await assert_closed(End(direction.client, ws), 1011)


# Pings.


@ENDS
async def test_ping(direction: Direction, first: str) -> None:
    async with direction.connected() as (client, server):
        pinger, ponger = ordered(first, client, server)
        rtt = await wait(pinger.lib.ping(pinger.ws))
        # Not > 0: uvloop's clock ticks in milliseconds, a loopback RTT is less.
        assert 0 <= rtt < 5
        assert pinger.ws.latency == rtt
        await assert_round_trip(pinger, ponger, "still open")


@ENDS
@pytest.mark.virtual_clock
async def test_keepalive(direction: Direction, first: str) -> None:
    keepalive = {"ping_interval": 0.01, "ping_timeout": 0.5}
    async with direction.connected(**{first: keepalive}) as (client, server):
        pinger, ponger = ordered(first, client, server)
        # Past ping_timeout, 60 pings later: a ping left unanswered would have
        # closed the connection. (The latency is 0 on the virtual clock, which
        # does not move while bytes travel.)
        await asyncio.sleep(0.6)
        await assert_round_trip(pinger, ponger, "alive")


# Load.


async def test_many_concurrent_clients(direction: Direction) -> None:
    async def chat(server: Any, index: int) -> None:
        async with direction.connect(server) as ws:
            for number in range(20):
                message = f"{index}:{number}" if number % 2 else f"{index}:{number}".encode()
                await ws.send(message)
                assert await ws.recv() == message

    async with direction.serve(echo) as server:
        await wait(asyncio.gather(*(chat(server, index) for index in range(50))), 20)


# TLS.


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_wss(
    direction: Direction,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    host: str,
) -> None:
    # server_context and client_context come from conftest (a trustme CA).
    async with direction.connected(
        client={"ssl": client_context, "max_size": LARGE_LIMIT},
        server={"ssl": server_context, "max_size": LARGE_LIMIT},
        host=host,
    ) as (client, server):
        for end in (client, server):
            assert end.ws.transport.get_extra_info("ssl_object") is not None
        for message in ["secret", binary(2 * MIB)]:
            await assert_round_trip(client, server, message)
        await wait(client.ws.close(4000, "tls done"))
        await assert_closed(server, 4000, "tls done")
