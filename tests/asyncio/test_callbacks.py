"""The callback fast path: Callbacks objects as server handlers, and send_nowait()."""

from __future__ import annotations

import asyncio
import logging
import weakref
from types import SimpleNamespace

import pytest

import rapidws
from rapidws import ConnectionClosedError, ConnectionClosedOK

from .utils import OP_TEXT, RawPeer, frame, until, uri, wait


class Echo(rapidws.Callbacks):
    """Echo every message, and record the events."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.closed = asyncio.Event()

    def on_open(self, connection: rapidws.ServerConnection) -> None:
        self.events.append(("open", connection.request.path if connection.request else None))

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        self.events.append(("message", message))
        connection.send_nowait(message)

    def on_close(self, connection: rapidws.ServerConnection, code: int, reason: str) -> None:
        self.events.append(("close", code, reason))
        self.closed.set()


async def test_callbacks_echo_and_see_every_event() -> None:
    echo = Echo()
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        async with rapidws.connect(uri(server, "/chat")) as ws:
            for message in ["text", b"\x00binary", "", "é" * 1000]:
                await ws.send(message)
                assert await wait(ws.recv()) == message
            await ws.send(["frag", "mented"])
            assert await wait(ws.recv()) == "fragmented"
            assert not any(c.handler_task for c in server.connections)  # no task per connection
            await ws.close(4000, "bye")
        await wait(echo.closed.wait())
    assert echo.events == [
        ("open", "/chat"),
        ("message", "text"),
        ("message", b"\x00binary"),
        ("message", ""),
        ("message", "é" * 1000),
        ("message", "fragmented"),
        ("close", 4000, "bye"),
    ]


async def test_callbacks_see_an_abnormal_closure() -> None:
    echo = Echo()
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        assert ws.transport is not None
        ws.transport.abort()
        await wait(echo.closed.wait())
    assert echo.events[-1] == ("close", 1006, "")


async def test_callback_exception_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Picky(Echo):
        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            if message == "boom":
                raise ValueError("boom")
            super().on_message(connection, message)

    async with (
        rapidws.serve(Picky(), "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as victim,
        rapidws.connect(uri(server)) as other,
    ):
        with caplog.at_level(logging.ERROR, logger="rapidws.server"):
            await victim.send("boom")
            with pytest.raises(ConnectionClosedError):
                await wait(victim.recv())
        assert victim.close_code == 1011
        assert any("on_message failed" in r.getMessage() for r in caplog.records)
        await other.send("fine")
        assert await wait(other.recv()) == "fine"


async def test_server_close_reaches_callbacks() -> None:
    echo = Echo()
    server = await rapidws.serve(echo, "127.0.0.1", 0)
    ws = await rapidws.connect(uri(server))
    server.close()
    await wait(server.wait_closed())
    with pytest.raises(ConnectionClosedOK):
        await wait(ws.recv())
    assert echo.events[-1] == ("close", 1001, "server shutting down")


async def test_send_nowait_on_a_closed_connection_raises() -> None:
    async with rapidws.serve(Echo(), "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        await ws.close()
        with pytest.raises(ConnectionClosedOK):
            ws.send_nowait("late")
        with pytest.raises(TypeError):
            ws.send_nowait(["not", "a", "message"])  # type: ignore[arg-type]


async def test_replies_to_one_read_go_out_in_one_write() -> None:
    # Messages that arrive together are answered together: one write, not one
    # per reply, and in order.
    writes: list[bytes] = []
    async with rapidws.serve(Echo(), "127.0.0.1", 0, compression=None) as server:
        peer = await RawPeer.open_websocket(server.port)
        await until(lambda: bool(server.connections))
        (connection,) = server.connections
        transport = connection.transport
        write = transport.write

        def counting_write(data: bytes) -> None:
            writes.append(data)
            write(data)

        connection.transport = SimpleNamespace(write=counting_write)  # type: ignore[assignment]
        peer.send(b"".join(frame(OP_TEXT, f"message {i}") for i in range(5)))
        for i in range(5):
            received = await peer.read_frame()
            assert (received.opcode, received.payload) == (OP_TEXT, f"message {i}".encode())
        connection.transport = transport
        await peer.close()
    assert len(writes) == 1
    assert writes[0] == b"".join(frame(OP_TEXT, f"message {i}", mask=None) for i in range(5))


async def test_connections_can_be_held_weakly_and_carry_attributes() -> None:
    # A broadcast registry: a WeakSet of connections, each with its own data.
    registry: weakref.WeakSet[rapidws.ServerConnection] = weakref.WeakSet()

    class Register(rapidws.Callbacks):
        def on_open(self, connection: rapidws.ServerConnection) -> None:
            connection.user = "alice"  # type: ignore[attr-defined]
            registry.add(connection)

        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(f"{connection.user}: {message}")  # type: ignore[attr-defined]

    async with (
        rapidws.serve(Register(), "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send("hi")
        assert await wait(ws.recv()) == "alice: hi"
        assert len(registry) == 1
