"""The connection API shared by both sides: messages, fragments, pings, closing, flow control."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest

import rapidws
from rapidws import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    State,
)
from rapidws.asyncio.connection import Connection

from .utils import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TIMEOUT,
    RawPeer,
    Recorder,
    echo,
    frame,
    until,
    uri,
    wait,
)

# Messages.


async def test_echo_text_and_binary() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        for message, expected in [
            ("héllo ✓", "héllo ✓"),
            ("", ""),
            (b"\x00\xff\x80", b"\x00\xff\x80"),
            (b"", b""),
            (bytearray(b"array"), b"array"),
            (memoryview(b"view"), b"view"),
        ]:
            await ws.send(message)
            received = await wait(ws.recv())
            assert received == expected
            assert type(received) is type(expected)


async def test_async_for_ends_on_normal_close() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        for message in ["one", b"two", "three"]:
            await ws.send(message)
        # Returning closes the connection with 1000.

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):

        async def collect() -> list[str | bytes]:
            return [message async for message in ws]

        assert await wait(collect()) == ["one", b"two", "three"]
        assert ws.close_code == 1000
        assert ws.state is State.CLOSED


async def test_async_for_raises_on_error_close() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.send("last")
        await ws.close(4000, "custom")

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        received = []

        async def collect() -> None:
            async for message in ws:
                received.append(message)

        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(collect())
        assert received == ["last"]
        assert exc_info.value.code == 4000
        assert exc_info.value.reason == "custom"


async def test_recv_concurrency() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        first = asyncio.create_task(ws.recv())
        await asyncio.sleep(0)  # let it start waiting
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        await ws.send("hello")
        assert await wait(first) == "hello"
        # Sequential receives are fine again.
        await ws.send("again")
        assert await wait(ws.recv()) == "again"


async def test_cancelled_recv_loses_no_message() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        # Cancelled while waiting: the next message goes to the next recv().
        receiving = asyncio.create_task(ws.recv())
        await asyncio.sleep(0)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        await ws.send("first")
        assert await wait(ws.recv()) == "first"
        # Cancelled after a message was handed over, before it resumed (as
        # when a wait_for() timeout and a message come in the same loop
        # iteration): the message is kept for the next recv().
        receiving = asyncio.create_task(ws.recv())
        await asyncio.sleep(0)
        ws.data_received(frame(OP_TEXT, "handed over", mask=None))
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        assert await wait(ws.recv()) == "handed over"
        await ws.send("second")
        assert await wait(ws.recv()) == "second"


async def test_large_messages() -> None:
    size = 3 * 1024 * 1024
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, max_size=4 * size) as server,
        rapidws.connect(uri(server), max_size=4 * size) as ws,
    ):
        binary = bytes(range(256)) * (size // 256)
        await ws.send(binary)
        assert await wait(ws.recv()) == binary
        text = "aé✓🙂" * (size // 10)
        await ws.send(text)
        assert await wait(ws.recv()) == text


async def test_message_over_max_size_closes_with_1009() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send(b"x" * (1024 * 1024))  # at the limit: fine
        assert len(await wait(ws.recv())) == 1024 * 1024
        await ws.send(b"x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert exc_info.value.code == 1009
        assert ws.close_code == 1009


# Fragmented messages.


async def test_send_fragments_from_list_generator_and_async_generator() -> None:
    def generator() -> Iterator[bytes]:
        yield b"ab"
        yield b"cd"
        yield b"ef"

    async def async_generator() -> AsyncIterator[str]:
        for part in ["é", "t", "é"]:
            await asyncio.sleep(0)
            yield part

    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send(["ab", "cd", "ef"])
        assert await wait(ws.recv()) == "abcdef"
        await ws.send(generator())
        assert await wait(ws.recv()) == b"abcdef"
        await ws.send(async_generator())
        assert await wait(ws.recv()) == "été"
        await ws.send([b"single"])
        assert await wait(ws.recv()) == b"single"
        await ws.send([])  # no fragments: nothing is sent
        await ws.send("after")
        assert await wait(ws.recv()) == "after"


async def test_send_fragments_on_the_wire() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        await sws.send(["ab", "cd", "ef"])
        frames = [await raw.read_frame() for _ in range(3)]
        assert [(f.fin, f.opcode, f.payload, f.masked) for f in frames] == [
            (False, OP_TEXT, b"ab", False),
            (False, OP_CONT, b"cd", False),
            (True, OP_CONT, b"ef", False),
        ]
        await sws.send(iter([b"\x01", b"\x02"]))
        frames = [await raw.read_frame() for _ in range(2)]
        assert [(f.fin, f.opcode, f.payload) for f in frames] == [
            (False, OP_BINARY, b"\x01"),
            (True, OP_CONT, b"\x02"),
        ]
        raw.abort()


async def test_send_waits_for_fragmented_message() -> None:
    release = asyncio.Event()

    async def slow_fragments() -> AsyncIterator[str]:
        yield "a"
        await release.wait()
        yield "b"

    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        fragmented = asyncio.create_task(ws.send(slow_fragments()))
        await asyncio.sleep(0)
        single = asyncio.create_task(ws.send("single"))
        await asyncio.sleep(0)
        assert not single.done()  # waits for the end of the fragmented message
        release.set()
        await wait(asyncio.gather(fragmented, single))
        assert await wait(ws.recv()) == "ab"
        assert await wait(ws.recv()) == "single"


async def test_send_mixed_fragments_fails_the_connection() -> None:
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        sws = await recorder.get()
        with pytest.raises(TypeError):
            await ws.send(["a", "b", b"c"])
        # Half a message is on the wire: the connection is failed with 1011.
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(sws.recv())
        assert exc_info.value.code == 1011
        await wait(ws.wait_closed())
        assert ws.close_code == 1011
        with pytest.raises(ConnectionClosedError):
            await ws.send("too late")


async def test_send_mixed_fragments_before_any_is_sent_keeps_the_connection() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        # The second fragment is checked before the first goes out.
        with pytest.raises(TypeError):
            await ws.send(["a", b"b"])
        await ws.send("still open")
        assert await wait(ws.recv()) == "still open"


async def test_send_fragments_iterator_raising_fails_the_connection() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        raise RuntimeError("source failed")

    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        sws = await recorder.get()
        with pytest.raises(RuntimeError, match="source failed"):
            await ws.send(broken())
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(sws.recv())
        assert exc_info.value.code == 1011


async def test_send_unsupported_type() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        for message in [42, None, 1.5, object()]:
            with pytest.raises(TypeError):
                await ws.send(message)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await ws.send([1, 2])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            await ws.send({"type": "hello"})  # type: ignore[arg-type]
        await ws.send("still open")
        assert await wait(ws.recv()) == "still open"


# Pings and pongs.


async def test_ping_returns_rtt_and_updates_latency() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert ws.latency == 0.0
        rtt = await wait(ws.ping())
        assert isinstance(rtt, float)
        assert 0.0 <= rtt < TIMEOUT
        assert ws.latency == rtt
        rtt = await wait(ws.ping("text payload"))
        assert ws.latency == rtt


async def test_ping_custom_payload_on_the_wire() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        waiter = sws.ping(b"hello")
        ping = await raw.read_frame()
        assert (ping.opcode, ping.payload, ping.masked) == (OP_PING, b"hello", False)
        assert not waiter.done()
        raw.send_frame(OP_PONG, b"hello")
        rtt = await wait(waiter)
        assert rtt >= 0.0
        assert sws.latency == rtt
        sws.ping("é")
        ping = await raw.read_frame()
        assert ping.payload == "é".encode()
        raw.abort()


async def test_pong_acknowledges_earlier_pings() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        first, second, third = sws.ping(b"1"), sws.ping(b"2"), sws.ping(b"3")
        for _ in range(3):
            assert (await raw.read_frame()).opcode == OP_PING
        raw.send_frame(OP_PONG, b"unknown")  # ignored
        raw.send_frame(OP_PONG, b"2")
        await wait(asyncio.gather(first, second))
        assert not third.done()
        raw.abort()
        with pytest.raises(ConnectionClosedError):
            await wait(third)


async def test_ping_duplicate_pending_payload() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        waiter = ws.ping(b"same")
        with pytest.raises(ValueError):
            ws.ping(b"same")
        with pytest.raises(ValueError):
            ws.ping("same")
        await wait(waiter)
        await wait(ws.ping(b"same"))  # no longer pending: fine
        with pytest.raises(ValueError):
            ws.ping(b"x" * 126)


async def test_pong_on_the_wire() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        await sws.pong(b"beat")
        await sws.pong("é")
        assert (await raw.read_frame())[:3] == (True, OP_PONG, b"beat")
        assert (await raw.read_frame())[:3] == (True, OP_PONG, "é".encode())
        # A ping from the peer is answered with a pong carrying its payload.
        raw.send_frame(OP_PING, b"are you there")
        assert (await raw.read_frame())[:3] == (True, OP_PONG, b"are you there")
        raw.abort()


async def test_ping_and_send_after_close() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        await wait(ws.close())
        with pytest.raises(ConnectionClosedOK):
            ws.ping()
        with pytest.raises(ConnectionClosedOK):
            await ws.pong()
        with pytest.raises(ConnectionClosedOK):
            await ws.send("late")
        with pytest.raises(ConnectionClosedOK):
            await ws.send(["late"])
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_pending_ping_fails_when_connection_is_lost() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        waiter = sws.ping()
        assert (await raw.read_frame()).opcode == OP_PING
        raw.abort()
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(waiter)
        assert exc_info.value.code == 1006


# Keepalive.


@pytest.mark.virtual_clock
async def test_keepalive_sends_pings() -> None:
    recorder = Recorder()
    async with rapidws.serve(
        recorder, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=TIMEOUT
    ) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(3):
            ping = await raw.read_frame()
            times.append(loop.time())
            assert ping.opcode == OP_PING
            raw.send_frame(OP_PONG, ping.payload)
        # One ping per interval (give or take one of the heartbeat's ticks).
        for earlier, later in itertools.pairwise(times):
            assert later - earlier == pytest.approx(0.05)
        assert sws.state is State.OPEN
        raw.send_close(1000)
        assert (await raw.read_close()).close_code == 1000
        assert await raw.at_eof_soon()
        await raw.close()
        await wait(sws.wait_closed())
        assert sws.close_code == 1000


@pytest.mark.virtual_clock
async def test_keepalive_closes_when_pongs_do_not_come() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.2) as (
        server
    ):
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await raw.read_frame()).opcode == OP_PING  # never answered
        close = await raw.read_close()
        # The ping_timeout after the first ping (which comes one interval and
        # at most a tick after the connection opened).
        assert 0.05 + 0.2 <= loop.time() - start <= 0.05 + 0.2 + 0.05 / 16 + 1e-9
        assert (close.close_code, close.close_reason) == (1011, "keepalive ping timeout")
        # The server closes the TCP connection after failing it.
        assert await raw.at_eof_soon()
        await raw.close()
        await wait(sws.wait_closed())
        assert sws.close_code == 1011


@pytest.mark.virtual_clock
async def test_keepalive_disabled_sends_no_pings() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        await asyncio.sleep(0.3)  # several times the interval below, were it enabled
        await ws.send("done")
        await ws.wait_closed()

    async with rapidws.serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        raw = await RawPeer.open_websocket(server.port)
        received = await raw.read_frame()
        assert (received.opcode, received.payload) == (OP_TEXT, b"done")
        raw.abort()


# Closing.


@pytest.mark.parametrize(
    ("code", "reason", "expected_exc"),
    [
        (1000, "", ConnectionClosedOK),
        (1001, "going away", ConnectionClosedOK),
        (4001, "custom reason ✓", ConnectionClosedError),
        (1008, "policy", ConnectionClosedError),
    ],
)
async def test_client_close_code_and_reason(
    code: int, reason: str, expected_exc: type[ConnectionClosed]
) -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        sws = await recorder.get()
        await wait(ws.close(code, reason))
        assert (ws.close_code, ws.close_reason) == (code, reason)
        assert ws.state is State.CLOSED
        with pytest.raises(expected_exc) as exc_info:
            await wait(sws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (code, reason)
        assert exc_info.value.rcvd_then_sent is True
        await wait(sws.wait_closed())
        assert (sws.close_code, sws.close_reason) == (code, reason)
        with pytest.raises(expected_exc):
            await ws.recv()


@pytest.mark.parametrize(
    ("code", "expected_exc"), [(1000, ConnectionClosedOK), (4002, ConnectionClosedError)]
)
async def test_server_close_code_and_reason(
    code: int, expected_exc: type[ConnectionClosed]
) -> None:
    seen: list[tuple[int | None, str | None]] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.send("before")
        await ws.close(code, "server says bye")
        seen.append((ws.close_code, ws.close_reason))

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert await wait(ws.recv()) == "before"  # messages before the close arrive
        with pytest.raises(expected_exc) as exc_info:
            await wait(ws.recv())
        assert (exc_info.value.code, exc_info.value.reason) == (code, "server says bye")
        await wait(ws.wait_closed())
        assert (ws.close_code, ws.close_reason) == (code, "server says bye")
    assert seen == [(code, "server says bye")]


async def test_close_is_idempotent_and_wait_closed() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        assert ws.state is State.OPEN
        assert ws.close_code is None
        assert ws.close_reason is None
        closing = asyncio.create_task(ws.close())
        waiting = asyncio.create_task(ws.wait_closed())
        await wait(asyncio.gather(closing, waiting))
        await wait(ws.close(4000))  # already closed: nothing more
        await wait(ws.wait_closed())
        assert ws.close_code == 1000


async def test_server_closes_tcp_connection_first() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        closing = asyncio.create_task(sws.close(1000, "bye"))
        close = await raw.read_frame()
        assert (close.close_code, close.close_reason, close.masked) == (1000, "bye", False)
        raw.send_close(1000, "bye")
        # The raw client keeps its side open: the server must close first.
        assert await raw.at_eof_soon()
        await raw.close()
        await wait(closing)
        assert sws.close_code == 1000


async def test_server_answers_client_close_then_closes_tcp() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        raw.send_close(4000, "client bye")
        close = await raw.read_frame()
        assert (close.close_code, close.close_reason) == (4000, "client bye")
        assert await raw.at_eof_soon()
        await raw.close()
        await wait(sws.wait_closed())
        assert sws.close_code == 4000


@pytest.mark.virtual_clock
async def test_close_timeout_when_peer_never_answers() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, close_timeout=0.3) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        loop = asyncio.get_running_loop()
        start = loop.time()
        closing = asyncio.create_task(sws.close())
        assert (await raw.read_frame()).close_code == 1000  # never answered
        assert await raw.at_eof_soon()
        await wait(closing)
        assert loop.time() - start == pytest.approx(0.3, abs=0.002)
        assert sws.close_code == 1006
        with pytest.raises(ConnectionClosedError):
            await sws.recv()
        await raw.close()


async def test_vanished_peer_gives_1006() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        raw = await RawPeer.open_websocket(server.port)
        sws = await recorder.get()
        receiving = asyncio.create_task(sws.recv())
        await asyncio.sleep(0)
        raw.abort()
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(receiving)
        assert exc_info.value.code == 1006
        assert exc_info.value.rcvd is None
        assert sws.close_code == 1006
        assert sws.state is State.CLOSED
        with pytest.raises(ConnectionClosedError):
            await sws.send("nobody there")


async def test_vanished_server_gives_1006_to_client() -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        ws = await rapidws.connect(uri(server))
        sws = await recorder.get()
        assert sws.transport is not None
        sws.transport.abort()
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert exc_info.value.code == 1006
        assert ws.close_code == 1006


# Flow control.


async def test_read_flow_control_pauses_and_resumes_reading() -> None:
    count = 200
    connections: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()
    go = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        await connections.put(ws)
        await go.wait()
        received = [await ws.recv() for _ in range(count)]
        await ws.send(",".join(str(m) for m in received))

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_queue=(8, 2)) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        sws = await wait(connections.get())
        assert sws.transport is not None
        for i in range(count):
            await ws.send(str(i))
        await until(lambda: not sws.transport.is_reading())
        go.set()
        result = await wait(ws.recv())
        assert result == ",".join(str(i) for i in range(count))
        assert sws.transport.is_reading()


async def test_write_flow_control_blocks_send_until_peer_reads() -> None:
    chunk = b"x" * 65536
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, write_limit=16384) as server:
        raw = await RawPeer.open_websocket(server.port)  # does not read for now
        sws = await recorder.get()
        assert sws.transport is not None
        sent = 0
        blocked: asyncio.Task[None] | None = None
        for _ in range(2000):  # far more than any socket buffers
            task = asyncio.create_task(sws.send(chunk))
            await asyncio.sleep(0)  # a send that does not block is done now
            sent += 1
            if not task.done():
                blocked = task
                break
            task.result()
        assert blocked is not None, "send() never blocked"
        assert sws.transport.get_write_buffer_size() > 16384
        # The peer reads: the blocked send resumes and everything arrives.
        for _ in range(sent):
            received = await raw.read_frame()
            assert (received.opcode, received.payload) == (OP_BINARY, chunk)
        await wait(blocked)
        raw.abort()


async def test_flow_control_end_to_end_keeps_order() -> None:
    # The server does not read: it stops reading from the socket, TCP pushes
    # back, and the client's send() blocks, until the server reads again.
    count = 400
    chunk = "y" * 32768
    connections: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()
    go = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        await connections.put(ws)
        await go.wait()
        for i in range(count):
            message = await ws.recv()
            assert message == f"{i:08d}{chunk}", i
        await ws.send("all in order")

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_queue=2) as server,
        rapidws.connect(uri(server), write_limit=8192, compression=None) as ws,
    ):
        sws = await wait(connections.get())
        blocked = None
        for i in range(count):
            task = asyncio.create_task(ws.send(f"{i:08d}{chunk}"))
            await asyncio.sleep(0)
            if not task.done():
                blocked = task
                break
            task.result()
        assert blocked is not None, "send() never blocked"
        assert sws.transport is not None
        assert not sws.transport.is_reading()
        go.set()
        await wait(blocked)
        for j in range(i + 1, count):
            await wait(ws.send(f"{j:08d}{chunk}"))
        assert await wait(ws.recv()) == "all in order"


async def test_close_while_reading_is_paused() -> None:
    # A handler that stops reading and returns: the closing handshake must
    # still complete, without waiting for the close timeout.
    connections: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()
    go = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        await connections.put(ws)
        await go.wait()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_queue=2, close_timeout=3 * TIMEOUT) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        sws = await wait(connections.get())
        for i in range(20):
            await ws.send(str(i))
        await until(lambda: not sws.transport.is_reading())
        go.set()
        with pytest.raises(ConnectionClosedOK):
            await wait(ws.recv())
        assert ws.close_code == 1000
        await wait(sws.wait_closed())
        assert sws.close_code == 1000
        # Messages that arrived before the close can still be read.
        assert await sws.recv() == "0"


def test_recv_and_send_are_coroutine_functions() -> None:
    # Mocks (create_autospec) and introspection rely on it.
    for method in (Connection.recv, Connection.send):
        assert inspect.iscoroutinefunction(method)


# JSON.


async def test_send_json_and_recv_json() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send_json({"a": [1, "é"]})
        assert await wait(ws.recv_json()) == {"a": [1, "é"]}
        # Any encoder and decoder: bytes from dumps go out as a binary message.
        await ws.send_json([1], dumps=lambda obj: repr(obj).encode())
        assert await wait(ws.recv()) == b"[1]"
        await ws.send("{not json")
        with pytest.raises(ValueError):
            await wait(ws.recv_json())
        await ws.send_json(None)  # the connection is still open
        assert await wait(ws.recv_json(loads=lambda data: ("custom", data))) == ("custom", "null")


async def test_drain_waits_after_send_nowait_until_the_peer_reads() -> None:
    chunk = b"x" * 65536
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, write_limit=16384) as server:
        raw = await RawPeer.open_websocket(server.port)  # does not read for now
        sws = await recorder.get()
        await wait(sws.drain())  # nothing buffered: at once
        sent = 0
        while sent < 2000 and not sws._writing_paused:  # far more than any socket buffers
            sws.send_nowait(chunk)
            sent += 1
            await asyncio.sleep(0)
        draining = asyncio.create_task(sws.drain())
        await asyncio.sleep(0.01)
        assert not draining.done()
        for _ in range(sent):
            await raw.read_frame()
        await wait(draining)
        raw.abort()
        await sws.wait_closed()
        with pytest.raises(ConnectionClosed):
            await sws.drain()


async def test_on_close_callbacks_run_once_the_connection_is_closed() -> None:
    recorder = Recorder()
    closed: list[object] = []
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        async with rapidws.connect(uri(server)):
            sws = await recorder.get()
            sws.on_close(closed.append)
            sws.on_close(lambda ws: closed.append("second"))
            await asyncio.sleep(0)
            assert closed == []
        await sws.wait_closed()
        await asyncio.sleep(0)
        assert closed == [sws, "second"]
        sws.on_close(closed.append)  # closed already: soon
        await asyncio.sleep(0)
        assert closed == [sws, "second", sws]


async def test_send_a_prepared_message_to_both_sides() -> None:
    recorder = Recorder()
    message = rapidws.PreparedMessage("to everyone")
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as client,
    ):
        sws = await recorder.get()
        await sws.send(message)
        sws.send_nowait(message)
        assert [await wait(client.recv()) for _ in range(2)] == ["to everyone"] * 2
        await client.send(message)  # a client masks it itself
        await client.send(rapidws.PreparedMessage(b"\x01"))
        assert [await wait(sws.recv()) for _ in range(2)] == ["to everyone", b"\x01"]


async def test_connection_closed_during_recv_is_freed_without_the_cyclic_gc() -> None:
    # recv() raises ConnectionClosed from the waiter's exception; its
    # traceback holds recv()'s frame, which must not hold the waiter: else
    # every connection that ends in recv() waits for the cyclic GC.
    refs: list[weakref.ref[rapidws.ServerConnection]] = []
    handled = asyncio.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        refs.append(weakref.ref(ws))
        async for message in ws:
            await ws.send(message)
        handled.set()

    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        gc.collect()
        gc.disable()
        try:
            async with rapidws.connect(uri(server)) as ws:
                await ws.send("x")
                assert await wait(ws.recv()) == "x"
            await wait(handled.wait())
            await until(lambda: refs[0]() is None)
        finally:
            gc.enable()
