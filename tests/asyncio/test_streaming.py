"""Messages as streams over real sockets: recv_stream(), send_stream(), send_file(), callbacks."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rapidws
from rapidws import ConnectionClosedError
from rapidws.asyncio.connection import _STREAM_HIGH, MessageStream
from rapidws.core.stream import STREAM_CHUNK_SIZE
from rapidws.exceptions import ConcurrencyError

from .utils import OP_BINARY, OP_CONT, OP_TEXT, RawPeer, Recorder, frame_header, until, uri, wait

MiB = 1 << 20
PAYLOAD = bytes(range(251)) * (MiB // 251 + 1)  # 251: no period that lines up with the mask


def payload(size: int) -> bytes:
    return (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]


class Streams:
    """A handler that receives every message as a stream and records its chunks."""

    def __init__(self, *, max_stream_size: int | None = None) -> None:
        self.max_stream_size = max_stream_size
        self.messages: asyncio.Queue[tuple[bool, list[str | bytes]]] = asyncio.Queue()
        self.errors: asyncio.Queue[BaseException] = asyncio.Queue()

    async def __call__(self, ws: rapidws.ServerConnection) -> None:
        ws.max_stream_size = self.max_stream_size
        try:
            while True:
                stream = await ws.recv_stream()
                chunks = [chunk async for chunk in stream]
                await self.messages.put((stream.text, chunks))
        except rapidws.ConnectionClosed as exc:
            await self.errors.put(exc)

    async def get(self) -> tuple[bool, list[str | bytes]]:
        return await wait(self.messages.get())  # type: ignore[no-any-return]


async def stream_echo(ws: rapidws.ServerConnection) -> None:
    """Echo each message chunk by chunk, as it arrives."""
    while True:
        stream = await ws.recv_stream()
        async with ws.send_stream(text=stream.text) as out:
            async for chunk in stream:
                await out.send(chunk)


# Receiving.


async def test_large_binary_message_arrives_in_bounded_chunks() -> None:
    handler = Streams()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        message = payload(3 * MiB + 5)
        await ws.send(message)
        text, chunks = await handler.get()
        assert not text
        assert b"".join(chunks) == message  # type: ignore[arg-type]
        assert all(0 < len(chunk) <= STREAM_CHUNK_SIZE for chunk in chunks)
        assert len(chunks) >= len(message) // STREAM_CHUNK_SIZE


async def test_large_frame_is_read_in_place_then_messages_as_usual() -> None:
    # Past its first read, a large frame's payload is read into the engine's
    # read buffer (recv_into), not through data_received(): the same chunks,
    # without a bytes object per read. The next message comes the usual way.
    readers: asyncio.Queue[tuple[bytes, set[str]]] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        while True:
            stream = await ws.recv_stream()
            chunks: list[bytes] = []
            names = set()
            async for chunk in stream:
                chunks.append(chunk)  # type: ignore[arg-type]
                names.add(type(ws.transport.get_protocol()).__name__)  # type: ignore[union-attr]
            await readers.put((b"".join(chunks), names))

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        message = payload(4 * MiB + 3)
        await ws.send(message)
        data, names = await wait(readers.get())
        assert data == message
        assert "_PayloadReader" in names
        await ws.send(b"next")
        assert await wait(readers.get()) == (b"next", {"ServerConnection"})


async def test_text_message_arrives_as_str_chunks_cut_between_code_points() -> None:
    handler = Streams()
    text = "aé€😀" * 100_000
    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send([text[:7], text[7:500_001], text[500_001:]])
        is_text, chunks = await handler.get()
        assert is_text
        assert all(type(chunk) is str and chunk for chunk in chunks)
        assert "".join(chunks) == text  # type: ignore[arg-type]


async def test_small_message_is_a_stream_of_one_chunk() -> None:
    handler = Streams()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send("hi")
        await ws.send(b"")
        assert await handler.get() == (True, ["hi"])
        assert await handler.get() == (False, [])


async def test_compressed_message_streams() -> None:
    handler = Streams()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        message = b"compressible " * 200_000
        await ws.send(message)
        _, chunks = await handler.get()
        assert b"".join(chunks) == message  # type: ignore[arg-type]
        assert all(len(chunk) <= STREAM_CHUNK_SIZE for chunk in chunks)


async def test_recv_joins_a_streamed_message_within_max_size() -> None:
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        first = await ws.recv_stream()
        await received.put([chunk async for chunk in first])
        await received.put(await ws.recv())  # a large one, streamed, joined
        try:
            await ws.recv()  # above max_size once joined
        except ConnectionClosedError as exc:
            await received.put(exc.sent.code if exc.sent else None)

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_size=MiB, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send("first")
        assert await wait(received.get()) == ["first"]
        await ws.send(payload(MiB))
        assert await wait(received.get()) == payload(MiB)
        await ws.send(payload(MiB + 1))
        assert await wait(received.get()) == 1009
        await wait(ws.wait_closed())
        assert ws.close_code == 1009


async def test_max_stream_size_fails_with_1009() -> None:
    handler = Streams(max_stream_size=2 * MiB)
    async with (
        rapidws.serve(handler, "127.0.0.1", 0, max_size=1000, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send(payload(2 * MiB))  # above max_size, within max_stream_size
        assert len(b"".join((await handler.get())[1])) == 2 * MiB  # type: ignore[arg-type]
        await ws.send(payload(2 * MiB + 1))
        await wait(ws.wait_closed())
        assert ws.close_code == 1009


class HeldReader:
    """A handler that takes a stream, holds off reading it until released, then sizes it."""

    def __init__(self) -> None:
        self.streams: asyncio.Queue[MessageStream] = asyncio.Queue()
        self.release = asyncio.Event()
        self.sizes: asyncio.Queue[int] = asyncio.Queue()

    async def __call__(self, ws: rapidws.ServerConnection) -> None:
        stream = await ws.recv_stream()
        await self.streams.put(stream)
        await self.release.wait()
        await self.sizes.put(sum([len(chunk) async for chunk in stream]))
        await self.sizes.put(len(await ws.recv()))

    async def held(
        self, server: rapidws.Server, paused: Callable[[rapidws.ServerConnection], bool]
    ) -> MessageStream:
        """Return the stream once its connection has been ``paused`` for a while."""
        stream = await wait(self.streams.get())
        [sws] = server.connections
        await until(lambda: paused(sws))
        await asyncio.sleep(0.1)  # nothing more comes meanwhile
        return stream


async def test_reading_pauses_while_the_application_holds_chunks() -> None:
    handler = HeldReader()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        sender = asyncio.create_task(ws.send(payload(16 * MiB)))
        stream = await handler.held(server, lambda sws: sws._reading_paused)
        # One read's worth at most beyond the mark: 256 KiB in 64 KiB chunks.
        assert len(stream._chunks) <= _STREAM_HIGH + 4
        assert not sender.done()  # the client's send waits for the socket
        handler.release.set()
        assert await wait(handler.sizes.get()) == 16 * MiB
        await wait(sender)
        await ws.send("after")
        assert await wait(handler.sizes.get()) == len("after")


async def test_stream_abandoned_mid_message_is_skipped() -> None:
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        stream = await ws.recv_stream()
        await received.put(len(await anext(stream)))
        await received.put(await ws.recv())  # the rest of the stream is skipped
        stream = await ws.recv_stream()
        await received.put(len(await anext(stream)))
        await stream.aclose()
        await received.put([chunk async for chunk in stream])
        await received.put(await ws.recv())
        await ws.send("still open")

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send(payload(4 * MiB))
        await ws.send("next")
        assert 0 < await wait(received.get()) <= STREAM_CHUNK_SIZE
        assert await wait(received.get()) == "next"
        await ws.send(payload(4 * MiB))
        await ws.send("after")
        assert 0 < await wait(received.get()) <= STREAM_CHUNK_SIZE
        assert await wait(received.get()) == []
        assert await wait(received.get()) == "after"
        assert await wait(ws.recv()) == "still open"


async def test_two_readers_of_one_stream() -> None:
    taken: asyncio.Queue[BaseException] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        stream = await ws.recv_stream()
        await anext(stream)
        reader = asyncio.create_task(anext(stream))  # waits for the next chunk
        await asyncio.sleep(0)
        try:
            await anext(stream)
        except ConcurrencyError as exc:
            await taken.put(exc)
        reader.cancel()
        await ws.wait_closed()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
        ws.send_stream() as out,
    ):
        await out.send(b"start")
        exc = await wait(taken.get())
        assert str(exc) == "another coroutine is already reading this stream"


# Bad input.


async def test_huge_frame_trickled_arrives_as_it_comes_then_closes() -> None:
    handler = Streams()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def reader(ws: rapidws.ServerConnection) -> None:
        stream = await ws.recv_stream()
        try:
            async for chunk in stream:
                await chunks.put(chunk)  # type: ignore[arg-type]
        except ConnectionClosedError as exc:
            await handler.errors.put(exc)

    async with rapidws.serve(reader, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        mask = b"\x00\x00\x00\x00"
        peer.send(frame_header(OP_BINARY, 1 << 30, mask=mask))
        for piece in (b"a", b"bc", b"def"):
            peer.send(piece)
            assert await wait(chunks.get()) == piece  # each read, at once
        peer.abort()
        exc = await wait(handler.errors.get())
        assert exc.rcvd is None


async def test_text_broken_mid_code_point_at_the_end_fails_with_1007() -> None:
    handler = Streams()
    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        encoded = "é😀".encode()
        peer.send_frame(OP_TEXT, encoded[:4], fin=False, mask=b"abcd")
        peer.send_frame(OP_CONT, encoded[4:-1], mask=b"abcd")
        close = await peer.read_close()
        assert close.close_code == 1007
        assert close.close_reason == "invalid UTF-8 in text message: it ends mid-code-point"
        await peer.close()


async def test_compressed_stream_inflating_without_bound_fails_with_1009() -> None:
    handler = Streams(max_stream_size=4 * MiB)
    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(
            server.port, headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = encoder.compress(bytes(64 * MiB)) + encoder.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 128 * 1024
        peer.send_frame(OP_BINARY, bomb[:-4], rsv=0x40, mask=b"abcd")
        close = await peer.read_close()
        assert close.close_code == 1009
        assert close.close_reason == f"streamed message exceeds the limit of {4 * MiB} bytes"
        await peer.close()
        exc = await wait(handler.errors.get())
        assert isinstance(exc, ConnectionClosedError)


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_slow_reader_holds_few_chunks_of_a_message_in_many_frames(
    compression: str | None,
) -> None:
    # 8 MiB in 128 frames of 64 KiB: compressed, each is a few hundred bytes
    # and one read brings them all. Parsing stops while chunks wait for the
    # reader, so what the connection holds ahead of it stays a few chunks,
    # however the reads fall.
    message = (b"compressible, " * (8 * MiB // 14 + 1))[: 8 * MiB]
    fragments = [
        message[i : i + STREAM_CHUNK_SIZE] for i in range(0, len(message), STREAM_CHUNK_SIZE)
    ]
    results: asyncio.Queue[tuple[int, bytes, str | bytes]] = asyncio.Queue()

    async def slow_reader(ws: rapidws.ServerConnection) -> None:
        stream = await ws.recv_stream()
        # Held off until the connection stopped reading: it ran ahead as far
        # as it may.
        await until(lambda: ws._reading_paused)
        ahead = 0  # the most bytes held for the reader, the chunk it takes included
        digest = hashlib.sha256()
        async for chunk in stream:
            ahead = max(ahead, len(chunk) + sum(map(len, stream._chunks)))
            digest.update(chunk)  # type: ignore[arg-type]
            for _ in range(3):
                await asyncio.sleep(0)  # slow: the connection may read meanwhile
        await results.put((ahead, digest.digest(), await ws.recv()))

    async with (
        rapidws.serve(slow_reader, "127.0.0.1", 0, compression=compression) as server,
        rapidws.connect(uri(server), compression=compression) as ws,
    ):
        await wait(ws.send(fragments))
        await ws.send("after")
        ahead, digest, after = await wait(results.get(), timeout=30)
    assert ahead < MiB  # before the fix (issue 18): all 8 MiB, inflated at once
    assert digest == hashlib.sha256(message).digest()
    assert after == "after"


# Sending.


async def test_streaming_echo_relays_chunks_as_they_arrive() -> None:
    async with (
        rapidws.serve(stream_echo, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), max_size=None, compression=None) as ws,
    ):
        for message in [payload(MiB), "é" * 300_000, b"", "x"]:
            await ws.send(message)
            assert await wait(ws.recv()) == message


async def test_send_stream_writes_each_fragment_in_its_turn() -> None:
    async with rapidws.serve(stream_echo, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        peer.send_frame(OP_TEXT, "ab", fin=False, mask=b"abcd")
        first = await peer.read_frame()
        assert (first.fin, first.opcode, first.payload) == (False, OP_TEXT, b"ab")
        peer.send_frame(OP_CONT, "cd", mask=b"abcd")
        assert (await peer.read_frame()).payload == b"cd"
        last = await peer.read_frame()
        assert (last.fin, last.opcode, last.payload) == (True, OP_CONT, b"")
        await peer.close()


class CountingTransport:
    """Stands in for a connection's transport, counting the calls that write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, lines: list[bytes]) -> None:
        self.writes.append(b"".join(lines))
        self.transport.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def test_send_stream_fragments_of_one_turn_leave_in_one_write() -> None:
    # A streamed echo hands out a read's chunks together: the peer wakes once
    # for them all, not once each. A close given meanwhile follows them.
    counted: list[CountingTransport] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        assert ws.transport is not None
        counting = CountingTransport(ws.transport)
        ws.transport = counting  # type: ignore[assignment]
        counted.append(counting)
        out = ws.send_stream()
        await out.__aenter__()
        for piece in (b"one", b"two", b"three"):
            await out.send(piece)
        assert counting.writes == []  # not yet: the turn of the loop goes on
        await asyncio.sleep(0)
        assert len(counting.writes) == 1
        await out.send(b"four")
        ws.protocol.send_close(1000, "bye")  # as close() does, in the same turn
        ws._write_pending()
        await out.__aexit__(None, None, None)

    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        frames = [await peer.read_frame() for _ in range(4)]
        assert [(f.fin, f.opcode, f.payload) for f in frames] == [
            (False, OP_BINARY, b"one"),
            (False, OP_CONT, b"two"),
            (False, OP_CONT, b"three"),
            (False, OP_CONT, b"four"),
        ]
        assert (await peer.read_close()).close_code == 1000
        await peer.close()
    assert len(counted[0].writes) == 2  # the first three; the fourth with the close


async def test_send_stream_writes_once_a_read_worth_is_waiting() -> None:
    # The fragments of one turn wait up to 256 KiB: a producer that never
    # yields still writes as it goes, and its peer reads as it goes.
    async with (
        rapidws.serve(stream_echo, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), max_size=None, compression=None) as ws,
    ):
        sws = next(iter(server.connections))
        assert sws.transport is not None
        counting = CountingTransport(sws.transport)
        sws.transport = counting  # type: ignore[assignment]
        message = payload(4 * MiB)
        await ws.send(message)
        assert await wait(ws.recv()) == message
        assert len(counting.writes) >= 4 * MiB // (256 * 1024)
        assert max(map(len, counting.writes)) <= 256 * 1024 + STREAM_CHUNK_SIZE + 64


async def test_send_stream_failing_midway_closes_with_1011() -> None:
    class ProducerError(Exception):
        pass

    async def handler(ws: rapidws.ServerConnection) -> None:
        with pytest.raises(ProducerError):
            async with ws.send_stream() as out:
                await out.send(b"half")
                raise ProducerError
        with pytest.raises(rapidws.ConnectionClosed):
            await ws.send("too late")

    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        assert (await peer.read_frame()).payload == b"half"
        close = await peer.read_close()
        assert close.close_code == 1011
        assert close.close_reason == "error while sending a fragmented message"
        await peer.close()


async def test_send_stream_failing_before_a_fragment_sends_nothing() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        with pytest.raises(TypeError, match="all the fragments of a message must be of one type"):
            async with ws.send_stream(text=True) as out:
                await out.send(b"bytes")
        async with ws.send_stream(text=True):
            pass  # an empty text message
        await ws.send("ok")

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert await wait(ws.recv()) == ""
        assert await wait(ws.recv()) == "ok"


async def test_send_stream_binary_takes_any_bytes_like_and_refuses_str() -> None:
    # A binary stream knows its fragments' type from the start: bytes need no
    # check, other bytes-like types still pass one, str fails it.
    async def handler(ws: rapidws.ServerConnection) -> None:
        with pytest.raises(TypeError, match="all the fragments of a message must be of one type"):
            async with ws.send_stream() as out:
                await out.send("text")
        async with ws.send_stream() as out:
            for fragment in (b"a", bytearray(b"b"), memoryview(b"c"), b"d"):
                await out.send(fragment)

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert await wait(ws.recv()) == b"abcd"


async def test_send_stream_waits_for_the_write_buffer() -> None:
    # A peer that does not read: send() blocks at the high-water mark.
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(server.port)
        peer.writer.transport.pause_reading()
        sws = await recorder.get()
        sent = 0

        async def produce() -> None:
            nonlocal sent
            async with sws.send_stream(compress=False) as out:
                while sent < 64 * MiB:
                    await out.send(payload(MiB))
                    sent += MiB

        producer = asyncio.create_task(produce())
        await until(lambda: sws._writing_paused)
        await asyncio.sleep(0.1)
        assert not producer.done()
        assert sent < 64 * MiB
        producer.cancel()
        peer.abort()


async def test_send_file_sends_a_file_chunk_by_chunk(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(payload(3 * MiB + 1))
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "text.txt").write_text("é" * 100_000, encoding="utf-8")
    handler = Streams()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        with path.open("rb") as file:
            await ws.send_file(file, chunk_size=MiB)
        _, chunks = await handler.get()
        assert b"".join(chunks) == path.read_bytes()  # type: ignore[arg-type]
        with (tmp_path / "empty.bin").open("rb") as file:
            await ws.send_file(file)
        assert await handler.get() == (False, [])
        with (tmp_path / "text.txt").open(encoding="utf-8") as text_file:
            await ws.send_file(text_file)
        is_text, chunks = await handler.get()
        assert is_text
        assert "".join(chunks) == "é" * 100_000  # type: ignore[arg-type]


async def test_send_file_reads_an_async_source() -> None:
    class AsyncSource:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, size: int) -> bytes:
            await asyncio.sleep(0)
            piece, self.data = self.data[:size], self.data[size:]
            return piece

    handler = Streams()
    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await ws.send_file(AsyncSource(payload(MiB)))
        _, chunks = await handler.get()
        assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(payload(MiB)).digest()  # type: ignore[arg-type]


# Callbacks.


class StreamEcho(rapidws.Callbacks):
    """Echo each message as it arrives: whole ones whole, streamed ones chunk by chunk."""

    stream = True

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        self.events.append(("whole", type(message)))
        connection.send_nowait(message)

    def on_message_start(self, connection: rapidws.ServerConnection, text: bool) -> None:
        # Callbacks cannot await: the engine's fragments, written after the read.
        self.events.append(("start", text))
        if text:
            connection.protocol.send_text("", fin=False)
        else:
            connection.protocol.send_binary(b"", fin=False)

    def on_message_chunk(self, connection: rapidws.ServerConnection, chunk: str | bytes) -> None:
        connection.protocol.send_continuation(chunk, fin=False)

    def on_message_end(self, connection: rapidws.ServerConnection) -> None:
        self.events.append(("end",))
        connection.protocol.send_continuation(b"", fin=True)


async def test_callbacks_receive_streamed_messages() -> None:
    callbacks = StreamEcho()
    async with (
        rapidws.serve(callbacks, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), max_size=None, compression=None) as ws,
    ):
        for message in [payload(2 * MiB), "small", "é" * MiB]:
            await ws.send(message)
            assert await wait(ws.recv()) == message
    assert callbacks.events == [
        ("start", False),
        ("end",),
        ("whole", str),
        ("start", True),
        ("end",),
    ]


async def test_message_hook_counts_streams_and_whole_messages() -> None:
    seen: list[object] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        ws._message_hook = seen.append
        small = await ws.recv_stream()
        large = await ws.recv_stream()
        await ws.send(repr([[c async for c in small], len(b"".join([c async for c in large]))]))  # type: ignore[misc]

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send("hi")
        await ws.send(payload(MiB))
        assert await wait(ws.recv()) == repr([["hi"], MiB])
    assert seen == ["hi", b""]


class LimitedStreams(StreamEcho):
    max_stream_size = MiB


async def test_callbacks_max_stream_size() -> None:
    async with (
        rapidws.serve(LimitedStreams(), "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as ws,
    ):
        await ws.send(payload(MiB + 1))
        await wait(ws.wait_closed())
        assert ws.close_code == 1009


async def test_compressed_stream_without_limit_inflates_as_the_reader_goes() -> None:
    # 64 MiB of zeros in ~64 KiB: while the reader holds off, only a few
    # chunks are inflated; all of it arrives once it reads.
    handler = HeldReader()
    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        peer = await RawPeer.open_websocket(
            server.port, headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = encoder.compress(bytes(64 * MiB)) + encoder.flush(zlib.Z_SYNC_FLUSH)
        peer.send_frame(OP_BINARY, bomb[:-4], rsv=0x40, mask=b"abcd")
        peer.send_frame(OP_TEXT, "after", mask=b"abcd")
        stream = await handler.held(server, lambda sws: sws.protocol.inflating)
        assert len(stream._chunks) == _STREAM_HIGH  # a thousandfold: yet only these
        handler.release.set()
        assert await wait(handler.sizes.get()) == 64 * MiB
        assert await wait(handler.sizes.get()) == len("after")
        await peer.close()
