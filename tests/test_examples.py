"""The programs in examples/ run as documented: each server in a subprocess, over real sockets.

Each server example is started with ``--port 0``; the port comes from the
``listening on ws://127.0.0.1:PORT`` line it prints on stderr. Clients are
rapidws's own, http.client, or the libhv-style example client.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws

from .conftest import TIMEOUT_FACTOR

EXAMPLES = Path(__file__).parents[1] / "examples"
TIMEOUT = 10 * TIMEOUT_FACTOR
TOKEN = "s3cret"  # spring_chat.py's default --token


@contextlib.contextmanager
def example_server(name: str, *options: str) -> Iterator[str]:
    """Run ``examples/NAME.py --port 0 *options``; yield its URL, ``ws://127.0.0.1:PORT``."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--port", "0", *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A thread drains stderr (so that the server never blocks on a full pipe)
    # and hands its lines over, so that the first one is awaited with a timeout.
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{name}.py printed nothing in {TIMEOUT} s")
        match = re.fullmatch(r"listening on (wss?://127\.0\.0\.1:\d+)\n", line)
        assert match is not None, line + "".join(lines.queue)
        yield match[1]
    finally:
        process.kill()
        process.wait(TIMEOUT)
        reader.join(TIMEOUT)


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


async def recv(ws: rapidws.ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def refusal(url: str, **options: Any) -> rapidws.Response:
    """Return the response of a handshake that the server must refuse."""
    with pytest.raises(rapidws.InvalidStatus) as exc_info:
        await rapidws.connect(url, open_timeout=TIMEOUT, **options)
    return exc_info.value.response


# spring_chat.py


async def test_spring_chat_broadcasts_with_join_and_leave_notices() -> None:
    with example_server("spring_chat") as url:
        async with rapidws.connect(f"{url}/ws/ada?token={TOKEN}") as ada:
            assert await recv(ada) == "ada joined"
            # A header instead of ?token=, a percent-encoded name, the page's own origin.
            async with rapidws.connect(
                f"{url}/ws/J%C3%BCrgen",
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                origin=f"http://localhost:{port_of(url)}",
            ) as jurgen:
                assert [await recv(jurgen), await recv(ada)] == ["Jürgen joined"] * 2
                await ada.send("hello")
                assert [await recv(ada), await recv(jurgen)] == ["ada: hello"] * 2
                await jurgen.send("hallo ☕")
                assert [await recv(ada), await recv(jurgen)] == ["Jürgen: hallo ☕"] * 2
                # on_error answers the sender and keeps its connection open.
                await jurgen.send(b"\x00")
                assert await recv(jurgen) == "error: text messages only"
                await jurgen.send("still here")
                assert [await recv(ada), await recv(jurgen)] == ["Jürgen: still here"] * 2
            assert await recv(ada) == "Jürgen left"


async def test_spring_chat_refuses_missing_tokens_and_foreign_origins() -> None:
    with example_server("spring_chat") as url:
        response = await refusal(f"{url}/ws/ada")
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await refusal(f"{url}/ws/ada?token=wrong")).status == 401
        response = await refusal(f"{url}/ws/ada?token={TOKEN}", origin="http://evil.example")
        assert response.status == 403
        # No port wildcard: another port of localhost is another origin.
        response = await refusal(f"{url}/ws/ada?token={TOKEN}", origin="http://localhost:1")
        assert response.status == 403
        # The page's own origin is allowed.
        own_origin = f"http://127.0.0.1:{port_of(url)}"
        async with rapidws.connect(f"{url}/ws/ada?token={TOKEN}", origin=own_origin) as ws:
            assert await recv(ws) == "ada joined"


def test_spring_chat_serves_healthz_and_its_page_over_http() -> None:
    with example_server("spring_chat") as url:
        client = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=TIMEOUT)
        try:
            client.request("GET", "/healthz")
            response = client.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type") == "application/json"
            assert json.loads(response.read()) == {"status": "UP", "users": 0}
            client.close()
            client.request("GET", "/")
            response = client.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type") == "text/html; charset=utf-8"
            page = response.read().decode()
            assert "new WebSocket(`ws://${location.host}/ws/" in page
            client.close()
            client.request("GET", "/ws/ada")  # a plain request to the WebSocket route
            assert client.getresponse().status == 426
        finally:
            client.close()


# node_ws_style.py


@pytest.mark.parametrize("style", [[], ["--coroutine"]], ids=["callbacks", "coroutine"])
async def test_node_ws_style_broadcasts_to_every_open_client(style: list[str]) -> None:
    with example_server("node_ws_style", *style) as url:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(rapidws.connect(url)) for _ in range(3)]
            await clients[0].send("from 0")
            assert [await recv(client) for client in clients] == ["from 0"] * 3
            await clients[2].send(b"\x01\x02")  # binary stays binary
            assert [await recv(client) for client in clients] == [b"\x01\x02"] * 3
            await clients[2].close()
            await clients[1].send("from 1")
            assert [await recv(client) for client in clients[:2]] == ["from 1"] * 2


# acl_echo.py


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert) -> dict[str, str]:
    """The test CA's certificate and a server certificate with its key, as PEM files."""
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(files["key"])
    return {name: str(path) for name, path in files.items()}


async def test_acl_echo_over_ws() -> None:
    with example_server("acl_echo") as url:
        assert url.startswith("ws://")
        async with rapidws.connect(url) as ws:
            messages: list[str | bytes] = ["hello", b"\x00\xff", "x" * 100_000]
            for message in messages:
                await ws.send(message)
                assert await recv(ws) == message


async def test_acl_echo_over_wss(tls_files: dict[str, str], client_context: Any) -> None:
    tls = ["--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"]]
    with example_server("acl_echo", *tls) as url:
        assert url.startswith("wss://")
        async with rapidws.connect(url, ssl=client_context) as ws:
            await ws.send("over TLS")
            assert await recv(ws) == "over TLS"


# libhv_client.py


def run_client(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES / "libhv_client.py"), url, *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=3 * TIMEOUT)


def test_libhv_client_against_the_acl_echo_server_over_wss(tls_files: dict[str, str]) -> None:
    tls = ["--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"]]
    with example_server("acl_echo", *tls) as url:
        for trust in (["--ca", tls_files["ca"]], ["--insecure"]):
            result = run_client(url, "hello", "wss", *trust)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [f"connected to {url}", "< hello", "< wss"]
        # Without the CA, the certificate is checked against the system's: refused.
        result = run_client(url, "hello", "--reconnect-delay", "0")
        assert result.returncode == 1
        assert result.stdout.splitlines() == ["reconnecting"]
        assert result.stderr.count("cannot connect: ") == 2
        assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


async def test_libhv_client_reconnects_once_and_resends_what_was_unanswered() -> None:
    connections = 0

    async def restart_once(ws: rapidws.ServerConnection) -> None:
        # The first connection is cut after one message (a server restart);
        # the second echoes.
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.recv()
            await ws.close(1012, "restart")
            return
        async for message in ws:
            await ws.send(message)

    async with rapidws.serve(restart_once, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, str(EXAMPLES / "libhv_client.py"), url, "one", "two"],
            *["--reconnect-delay", "0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), 3 * TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0] == lines[3] == f"connected to {url}"
    assert re.fullmatch(r"closed \(.*1012.*\); 2 message\(s\) unanswered", lines[1])
    assert lines[2:3] + lines[4:] == ["reconnecting", "< one", "< two"]
    assert connections == 2


# starlette_extensions.py: uvicorn installs on Python 3.11 and later only
# (tests/asgi/conftest.py), so below there is no test rather than a skipped one.

if sys.version_info >= (3, 11):

    async def test_starlette_extensions_ping_and_send_uncompressed() -> None:
        import gzip

        with example_server("starlette_extensions") as url:
            async with rapidws.connect(f"{url}/ws") as ws:
                await ws.send("hello")
                assert await recv(ws) == "hello"
                await ws.send("ping")
                assert re.fullmatch(r"rtt: \d+\.\d{3} ms", str(await recv(ws)))
                await ws.send("zip")
                blob = await recv(ws)
                assert isinstance(blob, bytes)
                assert gzip.decompress(blob) == b"rapidws " * 1000

    async def test_starlette_extensions_echo_large_messages_chunk_by_chunk() -> None:
        # 17 MiB, past uvicorn's default ws_max_size (16 MiB): the endpoint
        # takes it in chunks and echoes each as a fragment, never holding it.
        text = "streamed é€ " * (17 << 16)
        with example_server("starlette_extensions") as url:
            async with rapidws.connect(f"{url}/ws") as ws:
                # recv_stream() streams from the next message on: this one
                # came whole, as small messages are echoed.
                await ws.send("hello")
                stream = await asyncio.wait_for(ws.recv_stream(), TIMEOUT)
                assert [chunk async for chunk in stream] == ["hello"]
                await ws.send(text)
                stream = await asyncio.wait_for(ws.recv_stream(), TIMEOUT)
                chunks = [chunk async for chunk in stream]
                assert len(chunks) > 1
                assert all(isinstance(chunk, str) for chunk in chunks)
                assert "".join(map(str, chunks)) == text


# relay.py


async def test_relay_streams_messages_both_ways_without_holding_them() -> None:
    # Upstream counts the chunks it receives; the relay runs with the default
    # max_size (1 MiB): a message four times larger passes because it is
    # never reassembled there.
    chunks: list[int] = []

    async def upstream(ws: rapidws.ServerConnection) -> None:
        ws.max_stream_size = None
        while True:
            stream = await ws.recv_stream()
            async with ws.send_stream(text=stream.text) as out:
                async for chunk in stream:
                    chunks.append(len(chunk))
                    await out.send(chunk)

    async with rapidws.serve(upstream, "127.0.0.1", 0) as server:
        with example_server("relay", "--upstream", f"ws://127.0.0.1:{server.port}") as url:
            async with rapidws.connect(url, max_size=None) as ws:
                big = bytes(range(256)) * (4 << 12)
                for message in ["hello", big, "é" * 300_000]:
                    await ws.send(message)
                    assert await recv(ws) == message
                assert len(chunks) > 16  # the large one came through in pieces
                await ws.close(4000, "done")
                assert ws.close_code == 4000
