"""The sync connection's streams against real servers: recv_stream(), send_stream(), send_file()."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rapidws
import rapidws.sync
from rapidws import ConcurrencyError, ConnectionClosed, ConnectionClosedError
from rapidws.core.stream import STREAM_CHUNK_SIZE

from .test_threads import Collector, in_thread, times_out_then_fails
from .utils import TIMEOUT, ServerThread, echo, until

# Each test runs with the loop thread on asyncio's loop and on uvloop's.
pytestmark = pytest.mark.usefixtures("sync_loop")

MiB = 1 << 20
PAYLOAD = bytes(range(251)) * (3 * MiB // 251 + 1)  # 251: no period that lines up with a mask


def sender(*messages: Any) -> Callable[[Any], Any]:
    """A handler: once the client streams, it sends ``messages`` (lists as fragments), echoes."""

    async def handler(ws: Any) -> None:
        await ws.send("ready")
        await ws.recv()
        for message in messages:
            await ws.send(message)
        await echo(ws)

    return handler


def start_streaming(ws: rapidws.sync.ClientConnection) -> None:
    """Put ``ws`` in streaming mode, then let the server go on.

    A message that starts before the first recv_stream() arrives whole:
    the server waits for this.
    """
    assert list(ws.recv_stream(timeout=TIMEOUT)) == ["ready"]
    ws.send("go")


def received(collector: Collector, count: int) -> list[Any]:
    """The messages ``collector`` has, once there are ``count``."""
    until(lambda: len(collector.messages) >= count)
    return collector.messages


# Receiving.


def test_recv_stream_yields_a_large_message_in_bounded_chunks() -> None:
    message = PAYLOAD[: 3 * MiB + 5]
    text = "aé€😀" * 100_000
    with (
        ServerThread(sender(message, [text[:7], text[7:]]), compression=None) as server,
        rapidws.sync.connect(server.uri, compression=None, max_size=None) as ws,
    ):
        start_streaming(ws)
        stream = ws.recv_stream(timeout=TIMEOUT)
        assert not stream.text
        chunks = list(stream)
        assert b"".join(chunks) == message  # type: ignore[arg-type]
        assert all(0 < len(chunk) <= STREAM_CHUNK_SIZE for chunk in chunks)
        assert len(chunks) >= len(message) // STREAM_CHUNK_SIZE
        stream = ws.recv_stream(timeout=TIMEOUT)
        assert stream.text
        chunks = list(stream)
        assert all(type(chunk) is str and chunk for chunk in chunks)
        assert "".join(chunks) == text  # type: ignore[arg-type]


def test_recv_stream_of_a_small_message_is_one_chunk() -> None:
    with ServerThread(sender("hi", b"")) as server, rapidws.sync.connect(server.uri) as ws:
        start_streaming(ws)
        stream = ws.recv_stream(timeout=TIMEOUT)
        assert (stream.text, list(stream)) == (True, ["hi"])
        assert list(ws.recv_stream(timeout=TIMEOUT)) == []


def test_compressed_stream_arrives_whole() -> None:
    message = b"compressible " * 400_000
    with (
        ServerThread(sender(message)) as server,
        rapidws.sync.connect(server.uri, max_size=None) as ws,
    ):
        start_streaming(ws)
        chunks = list(ws.recv_stream(timeout=TIMEOUT))
        assert b"".join(chunks) == message  # type: ignore[arg-type]
        assert all(len(chunk) <= STREAM_CHUNK_SIZE for chunk in chunks)


def test_recv_joins_streamed_messages_within_max_size() -> None:
    # Once the connection streams, recv() joins a message again.
    with (
        ServerThread(
            sender("first", PAYLOAD[:MiB], PAYLOAD[: 2 * MiB]), compression=None
        ) as server,
        rapidws.sync.connect(server.uri, compression=None, max_size=MiB) as ws,
    ):
        start_streaming(ws)
        assert list(ws.recv_stream(timeout=TIMEOUT)) == ["first"]
        assert ws.recv(timeout=TIMEOUT) == PAYLOAD[:MiB]
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=TIMEOUT)
        ws.close()  # waits for the end of the closing handshake
        assert ws.close_code == 1009


def test_reader_stopping_early_skips_the_rest() -> None:
    with (
        ServerThread(sender(PAYLOAD, "after", PAYLOAD, "end"), compression=None) as server,
        rapidws.sync.connect(server.uri, compression=None, max_size=None) as ws,
    ):
        start_streaming(ws)
        # Left after one chunk: the next recv() skips the rest.
        stream = ws.recv_stream(timeout=TIMEOUT)
        first = next(stream)
        assert first and PAYLOAD.startswith(first)  # type: ignore[arg-type]
        assert ws.recv(timeout=TIMEOUT) == "after"
        assert list(stream) == []
        # Closed after one chunk: the same, at once.
        stream = ws.recv_stream(timeout=TIMEOUT)
        next(stream)
        stream.close()
        assert list(stream) == []
        assert ws.recv(timeout=TIMEOUT) == "end"
        assert ws.state is rapidws.State.OPEN


def test_max_stream_size_fails_with_1009() -> None:
    with (
        ServerThread(
            sender(PAYLOAD[: 2 * MiB], PAYLOAD[: 2 * MiB + 1]), compression=None
        ) as server,
        rapidws.sync.connect(server.uri, compression=None) as ws,
    ):
        ws.max_stream_size = 2 * MiB  # beyond max_size (1 MiB), for streams only
        ws.stream_chunk_size = 1000
        with pytest.raises(ValueError, match="stream_chunk_size must be >= 1"):
            ws.stream_chunk_size = 0
        assert (ws.max_stream_size, ws.stream_chunk_size) == (2 * MiB, 1000)
        start_streaming(ws)
        chunks = list(ws.recv_stream(timeout=TIMEOUT))
        assert all(len(chunk) <= 1000 for chunk in chunks)
        assert b"".join(chunks) == PAYLOAD[: 2 * MiB]  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosedError):
            ws.recv_stream(timeout=TIMEOUT)  # refused on its header
        ws.close()
        assert ws.close_code == 1009


async def paced(ws: Any) -> None:
    """A handler that streams one message once the client streams, its second fragment when told."""
    await ws.send("ready")
    await ws.recv()
    async with ws.send_stream() as out:
        await out.send(b"first")
        await ws.recv()  # the client says when
        await out.send(b"second")
    await echo(ws)


@contextlib.contextmanager
def paced_stream() -> Iterator[tuple[rapidws.sync.ClientConnection, rapidws.sync.MessageStream]]:
    """A connection to :func:`paced` and its stream, the first chunk read, the second held."""
    with (
        ServerThread(paced, compression=None) as server,
        rapidws.sync.connect(server.uri, compression=None) as ws,
    ):
        start_streaming(ws)
        stream = ws.recv_stream(timeout=TIMEOUT)
        assert stream.timeout == TIMEOUT
        assert next(stream) == b"first"
        yield ws, stream


def test_recv_stream_timeouts_lose_nothing() -> None:
    with paced_stream() as (ws, stream):
        stream.timeout = 0.1
        with pytest.raises(TimeoutError):
            next(stream)  # the server waits for "go"
        stream.timeout = TIMEOUT
        ws.send("go")
        assert list(stream) == [b"second"]
        with pytest.raises(TimeoutError):
            ws.recv_stream(timeout=0.1)  # nothing is sent
        ws.send("late")
        assert list(ws.recv_stream(timeout=TIMEOUT)) == ["late"]


def test_two_readers_of_one_stream() -> None:
    with paced_stream() as (ws, stream):
        thread, outcome = in_thread(lambda: next(stream))
        try:
            until(lambda: stream._stream._waiter is not None)  # the other thread waits
            with pytest.raises(ConcurrencyError):
                next(stream)
        finally:
            ws.send("go")
            thread.join(TIMEOUT)
        assert outcome == [b"second"]


def test_recv_stream_from_two_threads_is_refused() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        thread, outcome = in_thread(lambda: ws.recv(timeout=TIMEOUT))
        try:
            until(ws._recv_lock.locked)  # the other thread waits
            with pytest.raises(ConcurrencyError):
                ws.recv_stream()
        finally:
            ws.send("wake")
            thread.join(TIMEOUT)
        assert outcome == ["wake"]


def test_stream_after_close_raises_connection_closed() -> None:
    with ServerThread(sender([b"a", b"b"], "end")) as server:
        ws = rapidws.sync.connect(server.uri)
        start_streaming(ws)
        stream = ws.recv_stream(timeout=TIMEOUT)
        ws.close()
        with pytest.raises(ConnectionClosed):
            next(stream)
        with pytest.raises(ConnectionClosed):
            ws.recv_stream()


# Sending.


def test_send_stream_sends_a_large_message_as_it_is_given() -> None:
    collector = Collector()
    with ServerThread(collector, max_size=None) as server:
        with rapidws.sync.connect(server.uri) as ws:
            with ws.send_stream() as stream:
                for start in range(0, len(PAYLOAD), 100_000):
                    stream.send(bytearray(PAYLOAD[start : start + 100_000]))
            with ws.send_stream(text=True) as stream:
                stream.send("streamed ")
                stream.send("text")
            with ws.send_stream():
                pass  # an empty message
        assert received(collector, 3) == [PAYLOAD, "streamed text", b""]


def test_send_from_another_thread_waits_for_the_stream_end() -> None:
    collector = Collector()
    with ServerThread(collector) as server, rapidws.sync.connect(server.uri) as ws:
        with ws.send_stream(text=True) as stream:
            stream.send("first, ")
            thread, outcome = in_thread(lambda: ws.send("other", timeout=TIMEOUT))
            stream.send("second")
        thread.join(TIMEOUT)
        assert outcome == [None]
        assert received(collector, 2) == ["first, second", "other"]


def test_send_stream_failing_midway_closes_with_1011() -> None:
    collector = Collector()
    with ServerThread(collector) as server:
        ws = rapidws.sync.connect(server.uri)
        with pytest.raises(ValueError, match="the source broke"), ws.send_stream() as stream:
            stream.send(b"first")
            raise ValueError("the source broke")
        assert collector.done.wait(TIMEOUT)
        ws.close()
    assert collector.messages == []
    assert ws.close_code == 1011


def test_send_stream_failing_before_a_fragment_sends_nothing() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        with pytest.raises(ValueError, match="nothing yet"), ws.send_stream():
            raise ValueError("nothing yet")
        ws.send("still open")
        assert ws.recv(timeout=TIMEOUT) == "still open"


def test_send_stream_of_the_wrong_type_raises_type_error() -> None:
    with ServerThread(echo) as server:
        ws = rapidws.sync.connect(server.uri)
        with pytest.raises(TypeError), ws.send_stream(text=True) as stream:
            stream.send("text")
            stream.send(b"bytes")  # checked on the loop: this call or the next raises
            stream.send("more")
        ws.close()
        assert ws.close_code == 1011  # half a message was out


def test_send_stream_outside_its_block_is_refused() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        stream = ws.send_stream()
        with pytest.raises(rapidws.InvalidState):
            stream.send(b"early")


def test_send_stream_timeout_fails_the_connection() -> None:
    def send_half(ws: rapidws.sync.ClientConnection) -> None:
        with ws.send_stream(timeout=0.2) as stream:
            for _ in range(200):  # far more than the socket buffers hold
                stream.send(PAYLOAD[:MiB])

    times_out_then_fails(send_half)


def test_send_file_sends_paths_and_files(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(PAYLOAD)
    text = tmp_path / "text.txt"
    text.write_text("é" * 100_000, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    collector = Collector()
    with ServerThread(collector, max_size=None) as server:
        with rapidws.sync.connect(server.uri) as ws:
            ws.send_file(data)
            ws.send_file(str(data), chunk_size=1000, compress=False)
            with text.open(encoding="utf-8") as file:
                ws.send_file(file, timeout=TIMEOUT)
            with empty.open() as file:
                ws.send_file(file)
            with empty.open("rb") as file:
                ws.send_file(file)
        messages = received(collector, 5)
    assert [hashlib.sha256(m).digest() for m in messages[:2]] == [  # type: ignore[arg-type]
        hashlib.sha256(PAYLOAD).digest()
    ] * 2
    assert messages[2:] == ["é" * 100_000, "", b""]


class BrokenFile:
    """A file whose second read fails."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, size: int, /) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise OSError("the disk broke")
        return b"x" * size


def test_send_file_read_error_closes_with_1011() -> None:
    collector = Collector()
    with ServerThread(collector) as server:
        ws = rapidws.sync.connect(server.uri)
        with pytest.raises(OSError, match="the disk broke"):
            ws.send_file(BrokenFile())
        assert collector.done.wait(TIMEOUT)
        ws.close()
    assert collector.messages == []
    assert ws.close_code == 1011


def test_streams_both_ways_through_an_echo() -> None:
    # A stream up, the echo's stream down: each chunk relayed as it comes.
    async def stream_echo(ws: Any) -> None:
        while True:
            stream = await ws.recv_stream()
            async with ws.send_stream(text=stream.text) as out:
                async for chunk in stream:
                    await out.send(chunk)

    digest = hashlib.sha256()
    with (
        ServerThread(stream_echo, max_size=None) as server,
        rapidws.sync.connect(server.uri, max_size=None) as ws,
    ):
        size = 16 * MiB
        block = PAYLOAD[:MiB]

        def upload() -> None:
            with ws.send_stream() as out:
                for _ in range(size // len(block)):
                    out.send(block)

        thread, outcome = in_thread(upload)
        stream = ws.recv_stream(timeout=TIMEOUT)
        for chunk in stream:
            digest.update(chunk)  # type: ignore[arg-type]
        thread.join(TIMEOUT)
        assert outcome == [None]
    assert digest.digest() == hashlib.sha256(block * (size // len(block))).digest()
