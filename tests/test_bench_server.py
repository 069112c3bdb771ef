"""bench/server.py, the server the benchmarks measure, keeps its contract."""

from __future__ import annotations

import asyncio
import contextlib
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
