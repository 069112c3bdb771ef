"""Headless Chromium over HTTP/2: a page and its WebSockets on one connection (RFC 8441).

Chromium trusts the test certificate by its public key
(``--ignore-certificate-errors-spki-list``), negotiates ``h2`` by ALPN and
loads the page; since the server's SETTINGS advertise
``ENABLE_CONNECT_PROTOCOL`` (RFC 8441 section 3), it opens the page's
WebSockets as extended CONNECT streams of that same connection, with no new
TCP or TLS handshake. The server side proves it: the page's request and each
WebSocket carry the same :class:`~rapidws.asyncio.http2.Http2Connection`
and TCP peer, on streams of their own. Chromium 156 needs no flag for this
(its ``WebSocketOverHttp2`` feature is on by default).

Selenium's calls block: they run in a thread, the server on the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import rapidws
from rapidws.app import connection_of
from rapidws.asyncio.http2 import Http2Connection, StreamTransport
from rapidws.cli.demo import chat_app

from ..browser import chromium
from ..cli.test_demo import lines, say
from ..conftest import TIMEOUT_FACTOR

# Generous: Chromium's start and page loads on a busy machine.
TIMEOUT = 10 * TIMEOUT_FACTOR

# Echoes every message; keeps what comes back, and any close, for the test.
ECHO_PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>echo over HTTP/2</title>
<script>
"use strict";
let ws, echoes, closed;
function open() {
  echoes = []; closed = null;
  ws = new WebSocket("wss://" + location.host + "/echo/ws");
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => echoes.push(event.data);
  ws.onclose = (event) => { closed = event.code; };
}
// Random bytes do not compress: the message crosses the stream's windows whole.
function noise(size) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}
function same(buffer, bytes) {
  const got = new Uint8Array(buffer);
  return got.length === bytes.length && got.every((byte, i) => byte === bytes[i]);
}
open();
</script>
"""


@dataclass
class Stream:
    """Where a request came from: its HTTP/2 connection, stream and TCP peer."""

    connection: Http2Connection
    stream_id: int
    peer: Any
    alpn: str
    request: rapidws.Request


def stream_of(ws: rapidws.ServerConnection) -> Stream:
    transport = ws.transport
    assert isinstance(transport, StreamTransport), transport  # not HTTP/1.1
    assert ws.request is not None
    return Stream(
        transport._connection,  # the HTTP/2 connection whose stream it is
        transport.stream_id,
        transport.get_extra_info("peername"),
        transport.get_extra_info("ssl_object").selected_alpn_protocol(),
        ws.request,
    )


def demo_app(pages: list[Stream], sockets: list[Stream]) -> rapidws.App:
    """The demo chat, an echo page and its WebSocket; where each request came from."""
    app = chat_app()

    @app.get("/echo")
    def echo_page(request: rapidws.Request) -> rapidws.Response:
        pages.append(stream_of(connection_of(request)))
        return rapidws.Response(200, ECHO_PAGE, {"Content-Type": "text/html; charset=utf-8"})

    @app.websocket("/echo/ws")
    async def echo(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    @app.interceptor
    def record(ws: rapidws.ServerConnection, request: rapidws.Request) -> None:
        sockets.append(stream_of(ws))  # every WebSocket route: the echo and the chat

    return app


def spki_hash(cert: trustme.LeafCert) -> str:
    """The base64 SHA-256 of the certificate's public key, as Chromium's flag takes it."""
    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    key = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(key).digest()).decode()


@asynccontextmanager
async def browser_trusting(cert: trustme.LeafCert) -> AsyncIterator[Any]:
    flag = f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"
    browser = await asyncio.to_thread(chromium, flag)
    try:
        yield browser
    finally:
        await asyncio.to_thread(browser.quit)


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking selenium call off the loop that serves the page."""
    return await asyncio.to_thread(function, *args)


async def until(browser: Any, script: str, what: str) -> Any:
    """Poll ``script``'s value in the page until it is truthy; fail after TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not (value := await call(browser.execute_script, script)):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


NEXT_HOP = "return performance.getEntriesByType('navigation')[0].nextHopProtocol"
HEARD = "return document.querySelector('#messages').textContent.includes('%s')"


async def test_page_and_its_websocket_share_one_http2_connection(
    server_context: Any, server_cert: trustme.LeafCert
) -> None:
    pages: list[Stream] = []
    sockets: list[Stream] = []
    app = demo_app(pages, sockets)
    serving = app.serve("127.0.0.1", 0, ssl=server_context, http2=True)
    async with serving as server, browser_trusting(server_cert) as browser:
        await call(browser.get, f"https://127.0.0.1:{server.port}/echo")
        assert await call(browser.execute_script, NEXT_HOP) == "h2"
        await until(browser, "return ws.readyState === WebSocket.OPEN", "the WebSocket")
        await call(browser.execute_script, "ws.send('hello'); ws.send(window.big = noise(300000))")
        await until(browser, "return echoes.length === 2", "the echoes")
        assert await call(browser.execute_script, "return echoes[0]") == "hello"
        assert await call(browser.execute_script, "return same(echoes[1], big)")

        # The server's view: the page, then the WebSocket on another stream
        # of the same HTTP/2 connection, from the same TCP peer.
        (page,), (socket,) = pages, sockets
        assert page.request.version == socket.request.version == (2, 0)
        assert page.alpn == socket.alpn == "h2"
        assert socket.connection is page.connection
        assert socket.peer == page.peer
        assert socket.stream_id > page.stream_id >= 1
        # What Chromium asked for: an extended CONNECT (made into the HTTP/1.1
        # handshake it replaces), without a key, offering permessage-deflate;
        # and what the page was told it got.
        headers = socket.request.headers
        assert headers["Upgrade"] == "websocket" and "Sec-WebSocket-Key" not in headers
        assert headers["Sec-WebSocket-Version"] == "13"
        assert headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert headers["Origin"] == f"https://127.0.0.1:{server.port}"
        extensions = await call(browser.execute_script, "return ws.extensions")
        assert extensions.startswith("permessage-deflate")

        # Closing the WebSocket ends its stream, not the connection: the
        # next one is a new stream of it.
        await call(browser.execute_script, "ws.close(1000)")
        assert await until(browser, "return closed", "the close") == 1000
        await call(browser.execute_script, "open()")
        await until(browser, "return ws.readyState === WebSocket.OPEN", "a second WebSocket")
        await call(browser.execute_script, "ws.send('again')")
        await until(browser, "return echoes[0] === 'again'", "the second echo")
        again = sockets[1]
        assert again.connection is page.connection
        assert again.stream_id > socket.stream_id
        assert server.http2_connections >= {page.connection}


async def test_chat_between_two_tabs_over_one_http2_connection(
    server_context: Any, server_cert: trustme.LeafCert
) -> None:
    sockets: list[Stream] = []
    app = demo_app([], sockets)
    serving = app.serve("127.0.0.1", 0, ssl=server_context, http2=True)
    async with serving as server, browser_trusting(server_cert) as browser:
        page = f"https://127.0.0.1:{server.port}/?room=h2&name="
        await call(browser.get, page + "ann")
        ann = browser.current_window_handle
        await until(browser, "return document.body.dataset.worker", "ann's welcome")
        await call(browser.switch_to.new_window, "tab")
        bob = browser.current_window_handle
        await call(browser.get, page + "bob")
        await until(browser, "return document.body.dataset.worker", "bob's welcome")
        assert await call(browser.execute_script, NEXT_HOP) == "h2"

        await call(browser.switch_to.window, ann)
        assert await call(browser.execute_script, NEXT_HOP) == "h2"
        await call(say, browser, "hello from ann")
        await call(browser.switch_to.window, bob)
        await until(browser, HEARD % "hello from ann", "ann's message in bob's tab")
        await call(say, browser, "hello from bob")
        await call(browser.switch_to.window, ann)
        await until(browser, HEARD % "hello from bob", "bob's message in ann's tab")
        assert [line for line in await call(lines, browser) if "hello" in line] == [
            "annhello from ann",
            "bobhello from bob",
        ]

        # Both tabs' WebSockets are streams of one HTTP/2 connection.
        first, second = sockets
        assert first.connection is second.connection
        assert first.peer == second.peer
        assert first.alpn == second.alpn == "h2"
        assert 1 < first.stream_id < second.stream_id
        assert [s.request.path for s in sockets] == ["/ws/h2", "/ws/h2"]
