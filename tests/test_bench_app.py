"""bench/app_server.py, the App that bench/app_bench.py measures, keeps its contract."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import rapidws

BENCH = Path(__file__).parents[1] / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(script: Path, *options: str, exits: tuple[int, ...] = (0,)) -> Iterator[int]:
    """Start a bench server, wait for its ready line, yield its port, stop it."""
    port = free_port()
    command = [sys.executable, str(script), "--port", str(port), *options]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("ready")
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) in exits


def http(port: int, request: bytes) -> bytes:
    """Send one raw request, return its response (head and Content-Length body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
            head, found, body = data.partition(b"\r\n\r\n")
            if found:
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    return data


def test_app_server_routes_every_websocket_route_and_healthz() -> None:
    routes = 50
    with running(BENCH / "app_server.py", "--routes", str(routes), "--loop", "asyncio") as port:
        # The fillers as app_server.py registers them, then the two measured routes.
        fillers = [f"/ws/s{i}" if i % 5 == 4 else f"/ws/r{i}/room" for i in range(routes - 2)]
        paths = [*fillers, "/ws/echo/lobby", "/ws/endpoint/lobby"]
        assert len(paths) == routes

        async def check() -> None:
            for path in paths:
                async with rapidws.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                    for message in ["text", b"\x00binary"]:
                        await ws.send(message)
                        assert await asyncio.wait_for(ws.recv(), 5) == message, path
            # Both measured routes take a 1 MiB message too (max_size is 64 MiB).
            for path in paths[-2:]:
                async with rapidws.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                    await ws.send(b"x" * (1 << 20))
                    assert await asyncio.wait_for(ws.recv(), 5) == b"x" * (1 << 20)
            # An unregistered path is refused: the App routes, it does not echo anything.
            with pytest.raises(rapidws.InvalidStatus) as refused:
                async with rapidws.connect(f"ws://127.0.0.1:{port}/ws/nowhere/x/y"):
                    pass
            assert refused.value.response.status == 404

        asyncio.run(check())

        answer = http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"\r\n\r\nok\n")
        assert b"keep-alive" in answer.lower()
        # The interceptor: an upgrade without Host is refused before the handshake.
        upgrade = (
            b"GET /ws/echo/lobby HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert http(port, upgrade).startswith(b"HTTP/1.1 400 ")


def test_app_server_builds_200_routes_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    with running(BENCH / "app_server.py", "--routes", "200", "--loop", "uvloop") as port:

        async def check() -> None:
            for path in ["/ws/r197/room", "/ws/echo/lobby", "/ws/endpoint/lobby"]:
                async with rapidws.connect(f"ws://127.0.0.1:{port}{path}") as ws:
                    await ws.send(b"\x01" * 16)
                    assert await asyncio.wait_for(ws.recv(), 5) == b"\x01" * 16

        asyncio.run(check())


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="uvicorn 0.55 (the test extra) needs Python 3.11"
)
def test_starlette_peer_answers_healthz() -> None:
    # uvicorn raises SIGTERM again once it has shut down: the default action ends it.
    script = BENCH / "peers" / "starlette_server.py"
    with running(script, "--loop", "asyncio", exits=(0, -signal.SIGTERM)) as port:
        answer = http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"\r\n\r\nok\n")
