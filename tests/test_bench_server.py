"""bench/server.py, the server the benchmarks measure, keeps its contract."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import rapidws

SCRIPT = Path(__file__).parents[1] / "bench" / "server.py"


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[None]:
    """Run a bench server until its ``ready`` line; stop it, and check it exits cleanly."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("ready")
        yield
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("api", ["callback", "iterator", "stream"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_bench_server_echoes_and_acks(api: str, loop: str) -> None:
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--port", str(port), "--api", api, "--loop", loop]
    with running(command):

        async def check() -> None:
            async with rapidws.connect(f"ws://127.0.0.1:{port}/any/path", max_size=None) as ws:
                for message in ["text", b"\x00binary", b"x" * (2 << 20)]:
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 10) == message
            async with rapidws.connect(f"ws://127.0.0.1:{port}/ack", max_size=None) as ws:
                await ws.send(b"x" * (16 << 20))
                assert await asyncio.wait_for(ws.recv(), 10) == str(16 << 20)

        asyncio.run(check())


def test_bench_stream_server_takes_streams_past_max_size() -> None:
    # run.py's memory case streams 1 GiB messages to it; past 64 MiB suffices here.
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--port", str(port), "--api", "stream"]
    with running(command):

        async def check() -> None:
            async with rapidws.connect(f"ws://127.0.0.1:{port}/ack", compression=None) as ws:
                async with ws.send_stream() as out:
                    for _ in range(80):
                        await out.send(bytes(1 << 20))
                assert await asyncio.wait_for(ws.recv(), 30) == str(80 << 20)

        asyncio.run(check())


PEERS = Path(__file__).parents[1] / "bench" / "peers"


def raw_server(kind: str, tmp_path: Path) -> list[str]:
    """The command of one raw TCP floor: the Python one, or the C one built as run.py does."""
    if kind == "python":
        return [sys.executable, str(PEERS / "raw_tcp_server.py"), "--loop", "asyncio"]
    binary = tmp_path / "raw_c_server"
    source = PEERS / "raw_c_server.c"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(source)], check=True)
    return [str(binary)]


@pytest.mark.parametrize("kind", ["python", "c"])
def test_raw_server_echoes_and_acks_length_prefixed_uploads(kind: str, tmp_path: Path) -> None:
    port = free_port()
    command = [*raw_server(kind, tmp_path), "--port", str(port)]
    with running(command):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as echo:
            echo.sendall(b"\x01echo")
            assert echo.recv(100) == b"\x01echo"
            # More than the socket buffers hold: the echo waits for the reader.
            big = bytes(range(1, 256)) * 40_000
            sender = threading.Thread(target=echo.sendall, args=(big,))
            sender.start()
            back = bytearray()
            while len(back) < len(big):
                back += echo.recv(1 << 20)
            sender.join()
            assert back == big
        with socket.create_connection(("127.0.0.1", port), timeout=10) as upload:
            # Lengths and payloads cut anywhere, an empty message included.
            wire = b"".join(n.to_bytes(8, "big") + b"p" * n for n in (3 << 20, 0, 5))
            for cut in range(0, len(wire), 300_001):
                upload.sendall(wire[cut : cut + 300_001])
            acks = b""
            while acks != str(3 << 20).encode() + b"05":
                acks += upload.recv(100)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_python_ws_floor_echoes_streams_and_acks(loop: str) -> None:
    # The yardstick of issue 18: each read goes back as a fragment of the message.
    port = free_port()
    script = PEERS / "python_ws_floor.py"
    with running([sys.executable, str(script), "--port", str(port), "--loop", loop]):

        async def check() -> None:
            url = f"ws://127.0.0.1:{port}/any"
            async with rapidws.connect(url, max_size=None, compression=None) as ws:
                # Text cut mid-code-point by the reads still arrives whole.
                for message in ["text", "é" * 300_000, b"", b"x" * (3 << 20)]:
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 10) == message
                async with ws.send_stream() as out:
                    for piece in (b"a" * 10, b"", b"b" * 70_000):
                        await out.send(piece)
                assert await asyncio.wait_for(ws.recv(), 10) == b"a" * 10 + b"b" * 70_000
                assert await asyncio.wait_for(ws.ping(b"p"), 10) >= 0
            assert ws.close_code == 1000
            async with rapidws.connect(f"ws://127.0.0.1:{port}/ack", compression=None) as ws:
                for size in (5 << 20, 0, 7):
                    await ws.send(bytes(size))
                    assert await asyncio.wait_for(ws.recv(), 10) == str(size)

        asyncio.run(check())
        # Frame headers cut anywhere across reads: one byte per write.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            response = b""
            while not response.endswith(b"\r\n\r\n"):
                response += sock.recv(1000)
            # The example of RFC 6455 section 1.3.
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response
            frame = b"\x82\xfe\x01\x00" + b"\x01\x02\x03\x04" + bytes(256)
            for byte in frame:
                sock.sendall(bytes([byte]))
            received = b""
            while (echoed := _unmasked_message(received)) is None:
                received += sock.recv(1000)
            assert echoed == bytes((1, 2, 3, 4) * 64)


def _unmasked_message(data: bytes) -> bytes | None:
    """The payload of the first whole message of unmasked frames in ``data``; None before."""
    payload, position = b"", 0
    while len(data) >= position + 2:
        length, start = data[position + 1], position + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        if len(data) < start + length:
            return None
        payload += data[start : start + length]
        if data[position] & 0x80:
            return payload
        position = start + length
    return None


def test_python_rate_floor_reports_like_the_load_client() -> None:
    # bench/cli_bench.py reads its result line as it reads loadclient's.
    port = free_port()
    floor = Path(__file__).parents[1] / "bench" / "python_rate_floor.py"
    with running([sys.executable, str(SCRIPT), "--port", str(port), "--api", "callback"]):
        args = ["-P", str(port), "-c", "5", "-r", "20", "-s", "40", "-w", "0.2", "-d", "0.5"]
        done = subprocess.run(
            [sys.executable, str(floor), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    line = next(line for line in done.stdout.splitlines() if line.startswith("result "))
    result = json.loads(line[len("result ") :])
    # 5 connections x 20/s: 50 messages are due in the 0.5 s window; a reply
    # counted there was sent before its end, so at most the 70 of warm-up and window.
    assert 0 < result["count"] <= 70
    assert result["errors"] == 0
    assert 0 < result["p50_us"] <= result["p90_us"] <= result["p99_us"] <= result["max_us"]
    assert result["late_p99_us"] >= 0
