"""A server's counts (rapidws.asyncio.stats) after real traffic, and its log lines.

Each test runs on asyncio's loop and on uvloop, with the speedups twin in use
(run the file again with ``RAPIDWS_SPEEDUPS=python`` for the pure one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

import rapidws
from rapidws.asyncio.stats import RTT_BUCKETS, Traffic
from rapidws.core.http11 import Response

from .utils import until, uri, wait

TEXT = "héllo"  # 5 characters, 6 bytes of UTF-8
BINARY = b"\x00\x01\x02"


class Echo(rapidws.Callbacks):
    """Echo every message from the callback, with send_nowait()."""

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        connection.send_nowait(message)


async def echo(ws: rapidws.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class Records(logging.Handler):
    """The records of the rapidws.server logger, while installed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == event]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("rapidws.server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def expected(rounds: int) -> dict[str, int]:
    # What `rounds` text and binary echoes count, one way.
    return {
        "text": rounds,
        "text_bytes": rounds * len(TEXT.encode()),
        "binary": rounds,
        "binary_bytes": rounds * len(BINARY),
    }


def one_way(traffic: Traffic, way: str) -> dict[str, int]:
    return {
        "text": getattr(traffic, f"text_{way}"),
        "text_bytes": getattr(traffic, f"text_{way}_bytes"),
        "binary": getattr(traffic, f"binary_{way}"),
        "binary_bytes": getattr(traffic, f"binary_{way}_bytes"),
    }


@pytest.mark.parametrize("handler", [Echo(), echo], ids=["callbacks", "coroutine"])
@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_messages_and_bytes_each_way(
    handler: rapidws.Callbacks, compression: str | None, records: Records
) -> None:
    rounds = 5
    async with rapidws.serve(handler, "127.0.0.1", 0, compression=compression) as server:
        async with rapidws.connect(uri(server, "/room"), compression=compression) as ws:
            for _ in range(rounds):
                await ws.send(TEXT)
                assert await wait(ws.recv()) == TEXT
                await ws.send(BINARY)
                assert await wait(ws.recv()) == BINARY
            (connection,) = server.connections
            # Open: counted on the connection, and in the snapshot.
            assert one_way(connection.traffic, "in") == expected(rounds)
            assert one_way(connection.traffic, "out") == expected(rounds)
            snapshot = server.stats.snapshot(server.connections)
            assert snapshot.traffic == connection.traffic
            assert (snapshot.opened, snapshot.open) == (1, 1)
        client = ws.traffic
        assert one_way(client, "out") == expected(rounds)
        assert one_way(client, "in") == expected(rounds)
        await until(lambda: server.stats.snapshot(server.connections).open == 0)
        # Closed: folded into the totals once.
        snapshot = server.stats.snapshot(server.connections)
        assert snapshot.closed == {(1000, "client"): 1}
        assert snapshot.handshakes == {101: 1}
        server_side = snapshot.traffic
        assert one_way(server_side, "in") == expected(rounds)
        # Every byte one side wrote, the other read: handshake, frames, close.
        assert (server_side.wire_in, server_side.wire_out) == (client.wire_out, client.wire_in)
        payload = rounds * (len(TEXT.encode()) + len(BINARY))
        if compression is None:
            assert snapshot.deflate == (0, 0, 0, 0)
        else:
            assert snapshot.deflate == (payload, payload, server_side.wire_in, server_side.wire_out)
    (line,) = records.events("connection_closed")
    assert line.connection_id == connection.id  # type: ignore[attr-defined]
    assert line.path == "/room"  # type: ignore[attr-defined]
    assert line.messages_in == line.messages_out == 2 * rounds  # type: ignore[attr-defined]
    assert line.close_code == 1000  # type: ignore[attr-defined]
    assert line.closed_by == "client"  # type: ignore[attr-defined]
    assert line.extensions == ([] if compression is None else ["permessage-deflate"])  # type: ignore[attr-defined]
    assert line.remote_address.startswith("127.0.0.1:")  # type: ignore[attr-defined]


async def test_compressed_bytes_against_raw() -> None:
    message = "compressible " * 1000
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send(message)
        assert await wait(ws.recv()) == message
        payload_in, payload_out, wire_in, wire_out = server.stats.snapshot(
            server.connections
        ).deflate
    assert payload_in == payload_out == len(message)
    # Deflated to a small fraction; the handshake is on the wire too.
    assert wire_in < len(message) // 4
    assert wire_out < len(message) // 4


async def test_fragmented_and_streamed_messages() -> None:
    received: list[object] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        # A fragmented message, received as a stream, then sent fragmented.
        stream = await ws.recv_stream()
        received.append(b"".join([chunk async for chunk in stream]))  # type: ignore[misc]
        await ws.send([b"ab", b"cd", b"ef"])
        await ws.wait_closed()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send([b"12", b"34"])
        assert await wait(ws.recv()) == b"abcdef"
        (connection,) = server.connections
        assert received == [b"1234"]
        traffic = connection.traffic
        assert (traffic.binary_in, traffic.binary_in_bytes) == (1, 4)
        assert (traffic.binary_out, traffic.binary_out_bytes) == (1, 6)
        assert (ws.traffic.binary_out, ws.traffic.binary_out_bytes) == (1, 4)


async def test_handshake_refusals_are_counted_and_logged(records: Records) -> None:
    def refuse(ws: rapidws.ServerConnection, request: rapidws.Request) -> Response | None:
        if request.path == "/private":
            return Response(403, "Forbidden: no token\n")
        return None

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=refuse) as server:
        with pytest.raises(rapidws.InvalidStatus):
            await rapidws.connect(uri(server, "/private"))
        async with rapidws.connect(uri(server, "/public")):
            pass
        snapshot = server.stats.snapshot(server.connections)
    assert snapshot.handshakes == {403: 1, 101: 1}
    assert snapshot.opened == 1
    (line,) = records.events("handshake_refused")
    assert (line.status, line.reason, line.path) == (403, "Forbidden: no token", "/private")  # type: ignore[attr-defined]


async def test_who_closed() -> None:
    async def close_first(ws: rapidws.ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/bye":
            await ws.close(4000, "bye")
        else:
            await ws.wait_closed()

    async with rapidws.serve(close_first, "127.0.0.1", 0) as server:
        async with rapidws.connect(uri(server, "/bye")) as ws:
            await wait(ws.wait_closed())
        ws = await rapidws.connect(uri(server, "/drop"))
        await until(lambda: len(server.connections) == 1 and _open(server))
        assert ws.transport is not None
        ws.transport.abort()  # no closing handshake
        await until(lambda: server.stats.snapshot(server.connections).open == 0)
        snapshot = server.stats.snapshot(server.connections)
    assert snapshot.closed == {(4000, "server"): 1, (1006, "none"): 1}


def _open(server: rapidws.Server) -> bool:
    return server.stats.snapshot(server.connections).open == 1


async def test_ping_round_trip_times() -> None:
    async def ping_twice(ws: rapidws.ServerConnection) -> None:
        await ws.ping()
        await ws.ping()
        await ws.send("pinged")
        await ws.wait_closed()

    async with (
        rapidws.serve(ping_twice, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert await wait(ws.recv()) == "pinged"
        snapshot = server.stats.snapshot(server.connections)
    assert sum(snapshot.rtt_buckets) == 2
    assert len(snapshot.rtt_buckets) == len(RTT_BUCKETS) + 1
    assert 0 < snapshot.rtt_sum < 2 * RTT_BUCKETS[-1]


async def test_receive_queue_and_write_buffer_are_sampled() -> None:
    release = asyncio.Event()

    async def slow(ws: rapidws.ServerConnection) -> None:
        await release.wait()  # the messages wait in the queue meanwhile
        async for _ in ws:
            pass

    async with (
        rapidws.serve(slow, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        for n in range(3):
            await ws.send(str(n))
        await until(lambda: server.stats.snapshot(server.connections).receive_queue == 3)
        snapshot = server.stats.snapshot(server.connections)
        assert snapshot.receive_queue_max == 3
        # Nothing to write: the buffer is empty.
        assert (snapshot.write_buffer, snapshot.write_buffer_max) == (0, 0)
        release.set()
        await until(lambda: server.stats.snapshot(server.connections).receive_queue == 0)


async def test_errors_carry_the_connection_id(records: Records) -> None:
    async def fail(ws: rapidws.ServerConnection) -> None:
        raise RuntimeError("boom")

    async with (
        rapidws.serve(fail, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await wait(ws.wait_closed())
        assert ws.close_code == 1011
    (error,) = [r for r in records.records if r.levelno == logging.ERROR]
    (closed,) = records.events("connection_closed")
    assert error.connection_id == closed.connection_id  # type: ignore[attr-defined]
    assert error.exc_info is not None


async def test_routed_connections_count_by_route_and_in_the_totals() -> None:
    # A routed connection's counts are folded into its route's part only;
    # the totals sum the parts and the unrouted counts.
    app = rapidws.App()
    app.add_websocket("/ws/{user}", Echo())
    async with app.serve("127.0.0.1", 0, compression=None) as server:
        for user in ("ada", "bob", "cy"):
            async with rapidws.connect(uri(server, f"/ws/{user}"), compression=None) as ws:
                await ws.send(user)
                assert await wait(ws.recv()) == user
        with pytest.raises(rapidws.InvalidStatus):
            await rapidws.connect(uri(server, "/nowhere"))
        async with rapidws.connect(uri(server, "/ws/di"), compression=None) as ws:
            await ws.send("di")
            assert await wait(ws.recv()) == "di"
            await until(lambda: server.stats.snapshot(()).open == 1)
            snapshot = server.stats.snapshot(server.connections)
    route = snapshot.routes["/ws/{user}"]
    assert (route.opened, route.open, route.handshakes) == (4, 1, {101: 4})
    assert snapshot.routes["unmatched"].handshakes == {404: 1}
    assert route.traffic == snapshot.traffic
    assert route.traffic.text_in == route.traffic.text_out == 4
