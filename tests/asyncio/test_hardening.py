"""Hostile or careless peers and callers: every case stays bounded in memory and time."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import pytest

import rapidws

from .utils import OP_PING, OP_TEXT, RawPeer, Recorder, echo, frame, handshake_request, wait
from .utils import uri as make_uri

HANDSHAKE = handshake_request("/")


async def test_ping_flood_from_a_peer_that_never_reads_is_bounded() -> None:
    # Pongs pile up in the write buffer: past its high-water mark the server
    # stops reading, so the flood backs up into the attacker's socket.
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, write_limit=16384) as server:
        peer = await RawPeer.connect(port=server.port)
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.send(HANDSHAKE)
        sws = await recorder.get()
        server_sock = sws.transport.get_extra_info("socket")
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ping = frame(OP_PING, b"x" * 125)
        for _ in range(1000):  # up to 1000 x 100 pings of 131 bytes: 13 MB
            peer.send(ping * 100)
            await asyncio.sleep(0.002)
            if not sws.transport.is_reading():
                break
        assert not sws.transport.is_reading()
        assert sws.transport.get_write_buffer_size() < 1 << 20
        peer.abort()


async def test_messages_after_our_close_frame_are_dropped() -> None:
    # The handler is done; the peer keeps sending before it answers the close.
    closed: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()

    async def closer(ws: rapidws.ServerConnection) -> None:
        await ws.close(1000, "bye")
        await closed.put(ws)

    async with rapidws.serve(closer, "127.0.0.1", 0, max_queue=2) as server:
        peer = await RawPeer.open_websocket(server.port)
        close = await peer.read_close()
        assert close.close_code == 1000
        for i in range(50):
            peer.send_frame(OP_TEXT, f"late {i}" * 1000)
        peer.send_close(1000)
        assert await peer.at_eof_soon()
        await peer.close()
        sws = await wait(closed.get())
        assert sws.close_code == 1000
        assert not sws._messages  # nothing was queued after our close frame


async def test_concurrent_sends_never_interleave_fragments() -> None:
    received: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def collect(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            await received.put(message)

    async def slow(tag: str) -> AsyncIterator[str]:
        for i in range(3):
            yield f"{tag}{i}"
            await asyncio.sleep(0.01)

    async with (
        rapidws.serve(collect, "127.0.0.1", 0) as server,
        rapidws.connect(make_uri(server)) as ws,
    ):
        await asyncio.gather(ws.send(slow("A")), ws.send(slow("C")), ws.send("D"))
        messages = {await wait(received.get()) for _ in range(3)}
    assert messages == {"A0A1A2", "C0C1C2", "D"}


async def test_failing_select_subprotocol_gives_500() -> None:
    def select(request: rapidws.Request, offered: object) -> str:
        raise RuntimeError("bug in select_subprotocol")

    async with rapidws.serve(echo, "127.0.0.1", 0, select_subprotocol=select) as server:
        try:
            await rapidws.connect(make_uri(server))
        except rapidws.InvalidStatus as exc:
            assert exc.response.status == 500
        else:
            raise AssertionError("the handshake should fail")


async def test_pending_hook_is_cancelled_when_the_client_leaves() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_hook(connection: object, request: object) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=slow_hook) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait(started.wait())
        peer.abort()
        await wait(cancelled.wait())


async def test_close_in_a_hook_drops_the_connection_at_once() -> None:
    async def hook(connection: rapidws.ServerConnection, request: object) -> None:
        await connection.close()

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=hook) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await peer.at_eof_soon(timeout=2)


@pytest.mark.virtual_clock
async def test_tls_handshake_is_bounded_by_open_timeout(server_context: ssl.SSLContext) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context, open_timeout=0.3) as server:
        loop = asyncio.get_running_loop()
        start = loop.time()
        peer = await RawPeer.connect(port=server.port)  # never starts TLS
        assert await peer.at_eof_soon(timeout=5)
        assert loop.time() - start == pytest.approx(0.3, abs=0.002)


async def test_data_sent_before_the_hooks_answer_is_bounded() -> None:
    release = asyncio.Event()
    connections: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()

    async def hook(connection: rapidws.ServerConnection, request: object) -> None:
        await connections.put(connection)
        await release.wait()

    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=hook) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(HANDSHAKE)
        sws = await wait(connections.get())
        peer.send(frame(OP_TEXT, b"early") * 30000)  # 330 KB before the 101
        for _ in range(500):
            if not sws.transport.is_reading():
                break
            await asyncio.sleep(0.01)
        assert not sws.transport.is_reading()
        release.set()
        response = await peer.read_response()
        assert response.status == 101
        assert (await peer.read_frame()).payload == b"early"  # echoed, reading resumed
        peer.abort()
