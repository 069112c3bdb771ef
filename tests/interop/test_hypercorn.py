"""rapidws's HTTP/2 client (RFC 8441) against hypercorn, another project's HTTP/2 server.

hypercorn runs in a subprocess on 127.0.0.1 (h2c with prior knowledge, and TLS
with a test certificate whose ALPN chooses ``h2``), serving
``tests/interop/hypercorn_app.py``; its WebSockets tell which HTTP version
carried them (the ASGI scope's ``http_version``).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws
from rapidws.asyncio.http2 import StreamTransport

from ..asyncio.utils import TIMEOUT_FACTOR, wait

ROOT = Path(__file__).parents[2]


def hypercorn(*options: str) -> Iterator[int]:
    """Run hypercorn with ``options`` on a socket of 127.0.0.1; yield its port.

    The socket listens before hypercorn starts: a first connection waits in
    its backlog until hypercorn serves.
    """
    with socket.socket() as sock, tempfile.TemporaryFile() as stderr:
        sock.bind(("127.0.0.1", 0))
        sock.listen(100)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--bind",
                f"fd://{sock.fileno()}",
                *options,
                "tests.interop.hypercorn_app:app",
            ],
            cwd=ROOT,
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield sock.getsockname()[1]
        finally:
            process.terminate()
            process.wait(timeout=30)
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
            # hypercorn logs its own failures (a connection it dropped) there.
            assert "Traceback" not in errors, errors


@pytest.fixture(scope="module")
def h2c_port() -> Iterator[int]:
    yield from hypercorn()


@pytest.fixture(scope="module")
def tls_port(server_cert: trustme.LeafCert) -> Iterator[int]:
    key = server_cert.private_key_pem.tempfile()
    cert = server_cert.cert_chain_pems[0].tempfile()
    with key as keyfile, cert as certfile:
        yield from hypercorn("--keyfile", keyfile, "--certfile", certfile)


# hypercorn starts in a second or so; the listening socket holds the first
# connection until then.
OPEN_TIMEOUT = 30 * TIMEOUT_FACTOR


async def scope_of(ws: rapidws.ClientConnection) -> dict[str, Any]:
    await ws.send("scope")
    return json.loads(await wait(ws.recv()))  # type: ignore[no-any-return]


async def test_h2c_websockets_share_a_connection_and_echo(h2c_port: int) -> None:
    uri = f"ws://127.0.0.1:{h2c_port}/echo"
    options: dict[str, Any] = {"http2": True, "proxy": None, "open_timeout": OPEN_TIMEOUT}
    async with rapidws.connect(uri, subprotocols=["chat"], **options) as a:
        async with rapidws.connect(uri, **options) as b:
            assert isinstance(a.transport, StreamTransport)
            assert a.transport._connection is b.transport._connection  # type: ignore[union-attr]
            assert a.subprotocol == "chat"
            about_a, about_b = await scope_of(a), await scope_of(b)
            assert about_a["http_version"] == about_b["http_version"] == "2"
            assert about_a["client"] == about_b["client"]  # one TCP connection
            await a.send("text")
            assert await wait(a.recv()) == "text"
            await b.send(b"\x00\xff" * 50_000)
            assert await wait(b.recv()) == b"\x00\xff" * 50_000
        assert b.close_code == 1000
        await a.send("still open")
        assert await wait(a.recv()) == "still open"
    assert a.close_code == 1000
    assert a.protocol.close_rcvd is not None and a.protocol.close_rcvd.code == 1000


async def test_tls_alpn_h2(tls_port: int, client_context: ssl.SSLContext) -> None:
    uri = f"wss://localhost:{tls_port}/echo"
    options: dict[str, Any] = {"http2": True, "proxy": None, "open_timeout": OPEN_TIMEOUT}
    async with rapidws.connect(uri, ssl=client_context, **options) as ws:
        assert ws.transport is not None
        assert ws.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert (await scope_of(ws))["http_version"] == "2"
        message = "hello " * 10_000
        await ws.send(message)
        assert await wait(ws.recv()) == message
    assert ws.close_code == 1000


async def test_server_closes_one_websocket_and_the_other_goes_on(h2c_port: int) -> None:
    uri = f"ws://127.0.0.1:{h2c_port}/echo"
    options: dict[str, Any] = {"http2": True, "proxy": None, "open_timeout": OPEN_TIMEOUT}
    async with rapidws.connect(uri, **options) as other:
        for _ in range(3):  # hypercorn's END_STREAM and our reply cross in any order
            async with rapidws.connect(uri, **options) as ws:
                await ws.send("bye")
                await wait(ws.wait_closed())
                assert (ws.close_code, ws.close_reason) == (4000, "bye")
            await other.send("still open")
            assert await wait(other.recv()) == "still open"
