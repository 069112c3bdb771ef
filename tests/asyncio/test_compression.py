"""permessage-deflate over real sockets: negotiation, the per-message toggle, bombs."""

from __future__ import annotations

import zlib

import pytest

import rapidws

from .utils import OP_TEXT, RawPeer, echo, frame, handshake_request, uri, wait


async def test_compression_is_on_by_default() -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        )
        for message in ["hello " * 1000, b"\x00\x01" * 5000, "", "short"]:
            await ws.send(message)
            assert await wait(ws.recv()) == message


@pytest.mark.parametrize(("client", "server"), [(None, "deflate"), ("deflate", None)])
async def test_compression_off_on_either_side(client: str | None, server: str | None) -> None:
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, compression=server) as srv,
        rapidws.connect(uri(srv), compression=client) as ws,
    ):
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("hello " * 1000)
        assert await wait(ws.recv()) == "hello " * 1000


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported compression"):
        rapidws.serve(echo, "127.0.0.1", 0, compression="gzip")
    with pytest.raises(ValueError, match="unsupported compression"):
        rapidws.connect("ws://localhost/", compression="gzip")


async def test_send_without_compression_for_one_message() -> None:
    async def sender(ws: rapidws.ServerConnection) -> None:
        await ws.send("x" * 1000, compress=False)
        await ws.send("x" * 1000)
        await ws.wait_closed()

    async with rapidws.serve(sender, "127.0.0.1", 0) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(handshake_request(headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]))
        response = await peer.read_response()
        assert response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        plain, compressed = await peer.read_frame(), await peer.read_frame()
        assert (plain.rsv, plain.payload) == (0, b"x" * 1000)
        assert compressed.rsv == 0x40
        assert zlib.decompressobj(-12).decompress(compressed.payload + b"\x00\x00\xff\xff") == (
            b"x" * 1000
        )
        peer.abort()


async def test_decompression_bomb_is_refused_and_harms_no_one_else() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64))  # 64 MiB of zeros
    bomb += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    async with (
        rapidws.serve(echo, "127.0.0.1", 0, max_size=1 << 20) as server,
        rapidws.connect(uri(server)) as bystander,
    ):
        peer = await RawPeer.connect(port=server.port)
        peer.send(handshake_request(headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]))
        assert (await peer.read_response()).status == 101
        peer.send(frame(OP_TEXT, bomb, rsv=0x40))
        close = await peer.read_close()
        assert close.close_code == 1009
        await bystander.send("still here")
        assert await wait(bystander.recv()) == "still here"
        peer.abort()
