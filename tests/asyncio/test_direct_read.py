"""Large binary frames read straight into their message (recv_into), over real sockets."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

import rapidws
from rapidws import ConnectionClosedError
from rapidws.asyncio.connection import _PayloadReader
from rapidws.speedups import DIRECT_READ_MIN

from .utils import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, RawPeer, echo, frame, uri, wait

SIZE = 400_000
PAYLOAD = bytes(range(251)) * (SIZE // 251)  # 251: no period that lines up with the mask


@pytest.fixture
def direct_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the reads made straight into a message, on either side."""
    reads: list[int] = []
    taken = _PayloadReader.buffer_updated

    def spy(self: _PayloadReader, nbytes: int) -> None:
        if self._spill is None:
            reads.append(nbytes)
        taken(self, nbytes)

    monkeypatch.setattr(_PayloadReader, "buffer_updated", spy)
    return reads


async def send_in_two_parts(peer: RawPeer, data: bytes, cut: int) -> None:
    """Write ``data[:cut]``, give the other side time to read it, then write the rest."""
    peer.send(data[:cut])
    await peer.writer.drain()
    await asyncio.sleep(0.05)
    peer.send(data[cut:])


async def test_large_binary_messages_are_read_in_place_both_ways(direct_reads: list[int]) -> None:
    sizes = [(1 << 20) + 3, 70_000, 16, 3 << 20, 65_535, SIZE]
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, max_size=4 << 20, compression=None) as server,
        rapidws.connect(uri(server), max_size=4 << 20, compression=None) as ws,
    ):
        for size in sizes:
            message = (PAYLOAD * (size // SIZE + 1))[:size]
            await ws.send(message)
            assert await wait(ws.recv()) == message
        await ws.send("text after them")
        assert await wait(ws.recv()) == "text after them"
    assert direct_reads, "no payload was read in place"
    # The transports are back on the connections: every read went somewhere.
    assert sum(direct_reads) < 2 * sum(sizes)


async def test_frames_after_a_large_one_keep_their_order(direct_reads: list[int]) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, compression=None) as server:
        peer = await RawPeer.open_websocket(server.port)
        wire = frame(OP_BINARY, PAYLOAD)
        following = frame(OP_PING, b"p") + frame(OP_TEXT, "next")
        await send_in_two_parts(peer, wire + following, 100_000)
        # The pong may overtake the echo (a task sends that), not the messages each other.
        frames = [await peer.read_frame() for _ in range(3)]
        assert [(f.opcode, f.payload) for f in frames if f.opcode != OP_PONG] == [
            (OP_BINARY, PAYLOAD),
            (OP_TEXT, b"next"),
        ]
        assert [f.payload for f in frames if f.opcode == OP_PONG] == [b"p"]
        peer.send_close(1000)
        assert (await peer.read_close()).close_code == 1000
        await peer.close()
    # Never what came before the pause (copied once the frame's size was
    # known); all the rest when the server read the first part before the
    # second came, less when a busy machine delivered both together.
    assert 0 < sum(direct_reads) <= len(wire) - 100_000


async def test_peer_vanishing_mid_frame_fails_only_its_connection(
    direct_reads: list[int],
) -> None:
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(ws: rapidws.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosedError as exc:
            closed.set_result(exc.code)

    async with (
        rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server,
        rapidws.connect(uri(server), compression=None) as other,
    ):
        peer = await RawPeer.open_websocket(server.port)
        await send_in_two_parts(peer, frame(OP_BINARY, PAYLOAD)[:300_000], 20_000)
        await asyncio.sleep(0.05)
        peer.abort()
        assert await wait(closed) == 1006
        assert direct_reads
        # The other connection goes on, large messages included.
        await other.send(b"still here")
        assert await wait(other.recv()) == b"still here"
        await other.send(PAYLOAD)
        assert await wait(other.recv()) == PAYLOAD


async def test_closing_while_a_frame_is_read_in_place() -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        assert await ws.recv() == "close now"
        await ws.close(1001, "going away")

    async with rapidws.serve(handler, "127.0.0.1", 0, compression=None) as server:
        peer = await RawPeer.open_websocket(server.port)
        wire = frame(OP_BINARY, PAYLOAD)
        # The text and the start of the large frame come in one read: the
        # frame is being read in place when the handler closes.
        await send_in_two_parts(peer, frame(OP_TEXT, "close now") + wire, 100_000)
        close = await peer.read_close()
        assert (close.close_code, close.close_reason) == (1001, "going away")
        peer.send_close(1001)
        assert await wait(peer.reader.read()) == b""  # the server closes TCP
        await peer.close()


async def test_wss_large_binary_messages(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, direct_reads: list[int]
) -> None:
    async with (
        rapidws.serve(
            echo, "127.0.0.1", 0, ssl=server_context, max_size=4 << 20, compression=None
        ) as server,
        rapidws.connect(
            f"wss://localhost:{server.port}/",
            ssl=client_context,
            max_size=4 << 20,
            compression=None,
        ) as ws,
    ):
        for size in [(1 << 20) + 1, SIZE, 3 << 20, 100]:
            message = (PAYLOAD * (size // SIZE + 1))[:size]
            await ws.send(message)
            assert await wait(ws.recv()) == message
    assert direct_reads


class Recording:
    """A stand-in connection that records what the reader hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.protocol = self

    def payload_buffer(self) -> None:
        return None  # the engine takes nothing in place: the reader spills

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def test_reader_hands_everything_else_to_the_connection() -> None:
    connection: Any = Recording()
    reader = _PayloadReader(connection)
    buffer = reader.get_buffer(-1)
    assert len(buffer) >= DIRECT_READ_MIN
    buffer[:3] = b"abc"
    reader.buffer_updated(3)
    reader.pause_writing()
    reader.resume_writing()
    reader.eof_received()
    error = OSError("reset")
    reader.connection_lost(error)
    assert connection.calls == [
        ("_read_messages", ()),
        ("data_received", (b"abc",)),
        ("pause_writing", ()),
        ("resume_writing", ()),
        ("_read_messages", ()),
        ("eof_received", ()),
        ("connection_lost", (error,)),
    ]
