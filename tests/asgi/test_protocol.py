"""UvicornProtocol under a real uvicorn server: ASGI apps over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette import routing as starlette_routing
from starlette import websockets as starlette_websockets
from uvicorn.server import ServerState

import rapidws
from rapidws.asgi import ClientDisconnected, UvicornProtocol

from ..asyncio.utils import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TIMEOUT,
    RawPeer,
    close_payload,
    frame,
    handshake_request,
    wait,
)
from .utils import Receive, Scope, Send, serve


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI echo endpoint."""
    assert scope["type"] == "websocket"
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send(
                {"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}}
            )
        else:
            return


def starlette_app(endpoint: Callable[[Any], Awaitable[None]]) -> Any:
    """A Starlette app with one WebSocket route at /ws."""
    from starlette.applications import Starlette

    return Starlette(routes=[starlette_routing.WebSocketRoute("/ws", endpoint)])


# Messages.


async def test_echo_text_and_bytes() -> None:
    async with serve(echo_app) as served, rapidws.connect(served.uri()) as ws:
        await ws.send("hello")
        assert await wait(ws.recv()) == "hello"
        await ws.send(b"\x00\xff")
        assert await wait(ws.recv()) == b"\x00\xff"
        big = b"x" * 300_000  # several reads, and the direct-read path
        await ws.send(big)
        assert await wait(ws.recv()) == big


async def test_starlette_endpoint_echoes_and_sees_the_close() -> None:
    closed: list[int] = []

    async def endpoint(websocket: Any) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"echo: {text}")
        except starlette_websockets.WebSocketDisconnect as exc:
            closed.append(exc.code)

    async with serve(starlette_app(endpoint)) as served:
        async with rapidws.connect(served.uri("/ws")) as ws:
            await ws.send("hi")
            assert await wait(ws.recv()) == "echo: hi"
            await ws.close(4001, "bye")
        await wait(_until(lambda: bool(closed)))
    assert closed == [4001]


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_scope(http: str) -> None:
    # The client, server, scheme, headers and state come from uvicorn's HTTP
    # protocol, whichever it is.
    scopes: list[Scope] = []

    async with serve(_scope_app(scopes), root_path="/api", http=http) as served:
        await _connect_for_scope(served.uri("/r%C3%A9sum%C3%A9/a%2Fb?x=1&y=%20"))
    (scope,) = scopes
    _check_scope(scope, served.port)


async def test_scope_without_uvicorn_s_http_protocol() -> None:
    # Started by another server than uvicorn's HTTP protocols: the scope is
    # made from the request and the transport alone.
    scopes: list[Scope] = []
    config = uvicorn.Config(_scope_app(scopes), lifespan="off", log_config=None, root_path="/api")
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UvicornProtocol(config, state, {}), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await _connect_for_scope(f"ws://127.0.0.1:{port}/r%C3%A9sum%C3%A9/a%2Fb?x=1&y=%20")
    (scope,) = scopes
    _check_scope(scope, port)


def _scope_app(scopes: list[Scope]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    return app


async def _connect_for_scope(uri: str) -> None:
    async with rapidws.connect(
        uri, subprotocols=["one", "two"], additional_headers={"X-Token": "Sécret"}
    ) as ws:
        await ws.wait_closed()


def _check_scope(scope: Scope, port: int) -> None:
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/résumé/a/b"
    assert scope["raw_path"] == b"/api/r%C3%A9sum%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y=%20"
    headers = scope["headers"]
    assert all(name == name.lower() and isinstance(value, bytes) for name, value in headers)
    assert (b"x-token", "Sécret".encode("latin-1")) in headers
    assert (b"upgrade", b"websocket") in headers
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["extensions"] == {
        "websocket.http.response": {},
        "rapidws.websocket.compress": {},
        "rapidws.websocket.ping": {},
        "rapidws.websocket.stream": {},
    }
    assert scope["state"] == {}


async def test_accept_with_subprotocol_and_headers() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {"type": "websocket.accept", "subprotocol": "two", "headers": [(b"x-extra", b"1")]}
        )
        await receive()

    async with (
        serve(app) as served,
        rapidws.connect(served.uri(), subprotocols=["one", "two"]) as ws,
    ):
        assert ws.subprotocol == "two"
        assert ws.response is not None
        headers = ws.response.headers
        assert headers["X-Extra"] == "1"
        assert headers["Server"] == "uvicorn"  # uvicorn's default headers
        assert "Date" in headers


async def test_server_and_date_headers_follow_uvicorn_settings() -> None:
    async with (
        serve(
            echo_app, server_header=False, date_header=False, headers=[("X-Site", "a")]
        ) as served,
        rapidws.connect(served.uri()) as ws,
    ):
        assert ws.response is not None
        headers = ws.response.headers
        assert "Server" not in headers
        assert "Date" not in headers
        assert headers["X-Site"] == "a"


async def test_default_headers_are_uvicorn_s_current_ones() -> None:
    # Decoded once per list, and uvicorn makes a new list each second (Date):
    # a connection after the change gets the new one.
    async with serve(echo_app) as served:
        state = served.server.server_state
        async with rapidws.connect(served.uri()) as ws:
            assert ws.response is not None and ws.response.headers["Server"] == "uvicorn"
        mine = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT"), (b"x-new", b"1")]
        for _ in range(5):  # uvicorn's tick may put its own list back in between
            state.default_headers = mine
            async with rapidws.connect(served.uri()) as ws:
                assert ws.response is not None
                headers = ws.response.headers
            if state.default_headers is mine:
                break
        assert headers["Date"] == "Tue, 01 Dec 2026 00:00:00 GMT"
        assert headers["X-New"] == "1"
        assert "Server" not in headers


# Closing.


@pytest.mark.parametrize(("code", "reason"), [(None, None), (1000, ""), (4000, "done")])
async def test_app_closes(code: int | None, reason: str | None) -> None:
    after: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message: dict[str, Any] = {"type": "websocket.close"}
        if code is not None:
            message.update(code=code, reason=reason)
        await send(message)
        after.append(await receive())
        with pytest.raises(RuntimeError, match=r"after sending 'websocket\.close'"):
            await send({"type": "websocket.send", "text": "late"})

    async with serve(app) as served:
        async with rapidws.connect(served.uri()) as ws:
            await ws.wait_closed()
        assert ws.close_code == (code or 1000)
        assert ws.close_reason == (reason or "")
    assert after == [{"type": "websocket.disconnect", "code": code or 1000, "reason": reason or ""}]


async def test_client_closes() -> None:
    events: list[dict[str, Any]] = []
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        events.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "late"})
        except OSError as exc:  # what Starlette catches
            raised.append(exc)

    async with serve(app) as served:
        async with rapidws.connect(served.uri()) as ws:
            await ws.close(4002, "going")
        await wait(_until(lambda: bool(raised)))
    assert events == [{"type": "websocket.disconnect", "code": 4002, "reason": "going"}]
    assert isinstance(raised[0], ClientDisconnected)


async def test_client_drops_the_connection() -> None:
    events: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        events.append(await receive())

    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        peer.abort()
        await wait(_until(lambda: bool(events)))
    assert events == [{"type": "websocket.disconnect", "code": 1006}]


async def test_app_returning_without_close_closes_normally() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with serve(app) as served, rapidws.connect(served.uri()) as ws:
        await ws.wait_closed()
        assert ws.close_code == 1000


# Refusing.


async def test_close_before_accept_is_403() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})
        assert await receive() == {"type": "websocket.disconnect", "code": 1006}

    async with serve(app) as served:
        with pytest.raises(rapidws.InvalidStatus) as raised:
            await wait(rapidws.connect(served.uri()))
    assert raised.value.response.status == 403


async def test_denial_response_with_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"x-why", b"token")]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b'{"detail": "no"}'})

    async with serve(app) as served:
        peer = await RawPeer.connect("127.0.0.1", served.port)
        peer.send(handshake_request("/"))
        response = await peer.read_response()
        assert await peer.at_eof_soon()
        await peer.close()
    assert response.status == 403
    assert response.body == b'{"detail": "no"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-why"] == "token"
    assert response.headers["content-length"] == "16"
    assert response.headers["server"] == "uvicorn"


async def test_denial_response_in_parts() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"two"})

    async with serve(app) as served:
        peer = await RawPeer.connect("127.0.0.1", served.port)
        peer.send(handshake_request("/"))
        data = await peer.read_eof()
        await peer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"one two"  # the end of the body is the end of the connection


async def test_starlette_denial_response() -> None:
    from starlette.responses import PlainTextResponse

    async def endpoint(websocket: Any) -> None:
        await websocket.send_denial_response(PlainTextResponse("go away", status_code=418))

    async with serve(starlette_app(endpoint)) as served:
        with pytest.raises(rapidws.InvalidStatus) as raised:
            await wait(rapidws.connect(served.uri("/ws")))
    assert raised.value.response.status == 418
    assert raised.value.response.body == b"go away"


async def test_invalid_handshake_does_not_reach_the_app() -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    async with serve(app) as served:
        peer = await RawPeer.connect("127.0.0.1", served.port)
        peer.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        response = await peer.read_response()
        await peer.close()
    assert response.status == 400
    assert b"Sec-WebSocket-Key" in response.body
    assert called == []


# Errors.


async def test_app_raising_before_accept_is_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, "uvicorn.error"):
        async with serve(app) as served:
            with pytest.raises(rapidws.InvalidStatus) as raised:
                await wait(rapidws.connect(served.uri()))
    assert raised.value.response.status == 500
    assert any("Exception in ASGI application" in r.getMessage() for r in caplog.records)


async def test_app_returning_before_accept_is_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    async with serve(app) as served:
        with pytest.raises(rapidws.InvalidStatus) as raised:
            await wait(rapidws.connect(served.uri()))
    assert raised.value.response.status == 500


async def test_app_raising_after_accept_is_1011() -> None:
    async def endpoint(websocket: Any) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise ValueError("boom")

    async with serve(starlette_app(endpoint)) as served:
        async with rapidws.connect(served.uri("/ws")) as ws:
            await ws.send("go")
            await ws.wait_closed()
        assert ws.close_code == 1011


async def test_unexpected_message_raises() -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "websocket.send", "text": "too early"})
        except RuntimeError as exc:
            raised.append(exc)
            raise

    async with serve(app) as served:
        with pytest.raises(rapidws.InvalidStatus):
            await wait(rapidws.connect(served.uri()))
    assert "Expected ASGI message 'websocket.accept'" in str(raised[0])


# Settings.


async def test_max_size_is_1009() -> None:
    events: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect":
                return

    async with serve(app, ws_max_size=1000) as served:
        async with rapidws.connect(served.uri()) as ws:
            await ws.send(b"x" * 1000)
            await ws.send(b"x" * 1001)
            await ws.wait_closed()
        assert ws.close_code == 1009
        await wait(_until(lambda: len(events) == 2))
    assert events[0] == {"type": "websocket.receive", "bytes": b"x" * 1000}
    assert events[1]["code"] == 1009


async def test_per_message_deflate_follows_the_setting() -> None:
    for enabled in (True, False):
        async with (
            serve(echo_app, ws_per_message_deflate=enabled) as served,
            rapidws.connect(served.uri()) as ws,
        ):
            assert ws.response is not None
            assert ("Sec-WebSocket-Extensions" in ws.response.headers) is enabled
            await ws.send("a" * 1000)
            assert await wait(ws.recv()) == "a" * 1000


async def test_keepalive_pings_and_their_timeout() -> None:
    async with serve(echo_app, ws_ping_interval=0.05, ws_ping_timeout=0.2) as served:
        peer = await RawPeer.open_websocket(served.port)
        ping = await peer.read_frame()
        assert ping.opcode == OP_PING
        # Never answered: the server closes with 1011 after the timeout.
        close = await peer.read_close()
        assert close.payload == close_payload(1011, "keepalive ping timeout")
        await peer.close()


async def test_keepalive_disabled() -> None:
    async with serve(echo_app, ws_ping_interval=None) as served:
        peer = await RawPeer.open_websocket(served.port)
        with pytest.raises(TimeoutError):
            await peer.read_frame(timeout=0.3)
        peer.send_frame(OP_TEXT, "still here")
        assert (await peer.read_frame()).payload == b"still here"
        await peer.close()


async def test_limit_concurrency_is_503() -> None:
    async with serve(echo_app, limit_concurrency=1) as served:
        with pytest.raises(rapidws.InvalidStatus) as raised:
            await wait(rapidws.connect(served.uri()))
    assert raised.value.response.status == 503


async def test_shutdown_closes_with_1012() -> None:
    events: list[dict[str, Any]] = []
    accepted = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        events.append(await receive())

    async with serve(app) as served:
        ws = await wait(rapidws.connect(served.uri()))
        await wait(accepted.wait())
        served.server.should_exit = True
        await wait(ws.wait_closed())
    assert ws.close_code == 1012
    assert events == [{"type": "websocket.disconnect", "code": 1012}]


async def test_wss_scheme(tmp_path: Any, server_cert: Any, client_context: Any) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await echo_app(scope, receive, send)

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert.cert_chain_pems[0].write_to_path(cert)
    server_cert.private_key_pem.write_to_path(key)
    async with serve(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as served:
        uri = f"wss://127.0.0.1:{served.port}/"
        async with rapidws.connect(uri, ssl=client_context) as ws:
            await ws.send("secure")
            assert await wait(ws.recv()) == "secure"
    assert scopes[0]["scheme"] == "wss"


async def test_frames_with_the_request_wait_for_accept() -> None:
    # A client that sends a frame right behind its request: the frame is
    # parsed once the app accepts, not lost.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0.05)
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})

    async with serve(app) as served:
        peer = await RawPeer.connect("127.0.0.1", served.port)
        peer.send(handshake_request("/"))
        response = await peer.read_response()
        assert response.status == 101
        peer.send_frame(OP_TEXT, "early")
        reply = await peer.read_frame()
        assert reply.payload == b"early"
        peer.send_close()
        assert (await peer.read_close()).opcode == OP_CLOSE
        await peer.close()


# rapidws's extensions.


async def test_compression_can_be_turned_off_per_message() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "a" * 1000, "rapidws.compress": False})
        await send({"type": "websocket.send", "text": "a" * 1000})
        await receive()

    deflate = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    async with serve(app, ws_per_message_deflate=True) as served:
        peer = await RawPeer.open_websocket(served.port, headers=deflate)
        plain, compressed = await peer.read_frame(), await peer.read_frame()
        await peer.close()
    assert (plain.rsv, plain.payload) == (0, b"a" * 1000)
    assert compressed.rsv == 0x40  # RSV1: compressed (RFC 7692 section 6)
    assert len(compressed.payload) < 100


async def test_compression_key_without_compression_is_ignored() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"raw", "rapidws.compress": False})
        await receive()

    async with (
        serve(app, ws_per_message_deflate=False) as served,
        rapidws.connect(served.uri()) as ws,
    ):
        assert await wait(ws.recv()) == b"raw"


async def test_ping_gives_a_pong_event_with_the_round_trip_time() -> None:
    events: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "rapidws.ping": b"probe"})
        events.append(await receive())  # waiting when the pong comes: woken
        await send({"type": "websocket.send", "rapidws.ping": b""})
        events.append(await receive())
        await send({"type": "websocket.close"})

    # The client answers pings itself.
    async with serve(app) as served, rapidws.connect(served.uri()) as ws:
        await ws.wait_closed()
    assert [set(event) for event in events] == [{"type", "rapidws.pong"}] * 2
    assert [event["type"] for event in events] == ["websocket.receive"] * 2
    assert [event["rapidws.pong"]["data"] for event in events] == [b"probe", b""]
    assert all(0 <= event["rapidws.pong"]["rtt"] < TIMEOUT for event in events)


async def test_pong_events_come_in_order_with_messages() -> None:
    events: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "rapidws.ping": b"1"})
        for _ in range(3):
            events.append(await receive())

    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        ping = await peer.read_frame()
        assert (ping.opcode, ping.payload) == (OP_PING, b"1")
        # One read: the first message wakes the app, the pong waits its turn.
        peer.send(frame(OP_TEXT, b"before") + frame(OP_PONG, b"1") + frame(OP_TEXT, b"after"))
        await wait(_until(lambda: len(events) == 3))
        await peer.close()
    assert events[0] == {"type": "websocket.receive", "text": "before"}
    assert events[1]["rapidws.pong"]["data"] == b"1"
    assert events[2] == {"type": "websocket.receive", "text": "after"}


async def test_starlette_app_pings_through_its_websocket() -> None:
    rtts: list[float] = []

    async def endpoint(websocket: Any) -> None:
        await websocket.accept()
        assert "rapidws.websocket.ping" in websocket.scope["extensions"]
        await websocket.send({"type": "websocket.send", "rapidws.ping": b""})
        message = await websocket.receive()
        rtts.append(message["rapidws.pong"]["rtt"])
        await websocket.close()

    async with serve(starlette_app(endpoint)) as served, rapidws.connect(served.uri("/ws")) as ws:
        await ws.wait_closed()
    assert len(rtts) == 1


async def test_ping_unanswered_before_the_close_gives_no_pong_event() -> None:
    events: list[dict[str, Any]] = []
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "rapidws.ping": b""})
        events.append(await receive())
        try:
            await send({"type": "websocket.send", "rapidws.ping": b""})
        except ClientDisconnected as exc:
            raised.append(exc)

    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        assert (await peer.read_frame()).opcode == OP_PING
        peer.send_close(4000)
        assert (await peer.read_close()).opcode == OP_CLOSE
        await peer.close()
        await wait(_until(lambda: bool(raised)))
    assert events == [{"type": "websocket.disconnect", "code": 4000, "reason": ""}]


# The stream extension.

CHUNK = 64 * 1024  # the engine's stream_chunk_size


async def stream_app(scope: Scope, receive: Receive, send: Send, **accept: Any) -> None:
    """Accept with the stream extension (options from ``accept``); record every event."""
    await receive()
    await send({"type": "websocket.accept", "rapidws.stream": True, **accept})
    events: list[dict[str, Any]] = scope["state"]["events"]
    while True:
        message = await receive()
        events.append(message)
        if message["type"] == "websocket.disconnect":
            return


def recording(app: Callable[..., Awaitable[None]], **accept: Any) -> tuple[Any, list[Any]]:
    """``app`` with its events recorded in a list, returned too."""
    events: list[dict[str, Any]] = []

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": {"events": events}}, receive, send, **accept)

    return recorded, events


def joined(events: list[dict[str, Any]], key: str) -> Any:
    """The data of the message that ``events`` carry in chunks, checked to end once."""
    flags = [event["rapidws.more"] for event in events]
    assert flags == [True] * (len(flags) - 1) + [False]
    return ("" if key == "text" else b"").join(event[key] for event in events)


class PeakMemory:
    """The peak of Python allocations (tracemalloc) while the block runs."""

    peak = 0

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def blocks(block: bytes, count: int) -> Iterator[bytes]:
    """``count`` times ``block``: a message sent in fragments, never held whole."""
    for _ in range(count):
        yield block


async def test_small_messages_come_whole_with_more_false() -> None:
    app, events = recording(stream_app)
    async with serve(app) as served, rapidws.connect(served.uri()) as ws:
        await ws.send("hi")
        await ws.send(b"\x00")
        await wait(_until(lambda: len(events) == 2))
    assert events[:2] == [
        {"type": "websocket.receive", "text": "hi", "rapidws.more": False},
        {"type": "websocket.receive", "bytes": b"\x00", "rapidws.more": False},
    ]


async def test_without_the_opt_in_large_messages_come_whole() -> None:
    app, events = recording(stream_app, **{"rapidws.stream": False})
    big = b"x" * (4 * CHUNK)
    async with serve(app) as served, rapidws.connect(served.uri()) as ws:
        await ws.send(blocks(big[:CHUNK], 4))
        await wait(_until(lambda: len(events) == 1))
    assert events[0] == {"type": "websocket.receive", "bytes": big}


async def test_starlette_endpoint_reads_10_mib_in_chunks_with_bounded_memory() -> None:
    sizes: list[int] = []

    async def endpoint(websocket: Any) -> None:
        assert "rapidws.websocket.stream" in websocket.scope["extensions"]
        await websocket.receive()  # websocket.connect
        await websocket.send({"type": "websocket.accept", "rapidws.stream": True})
        digest = hashlib.sha256()
        more = True
        while more:
            message = await websocket.receive()
            sizes.append(len(message["bytes"]))
            digest.update(message["bytes"])
            more = message["rapidws.more"]
            await asyncio.sleep(0.001)  # slower than the client: reading must pause
        await websocket.send_text(digest.hexdigest())

    block, count = bytes(range(256)) * (CHUNK // 256), 160  # 10 MiB
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(block)
    # ws_max_size (1 MiB) does not limit a streamed message.
    async with (
        serve(starlette_app(endpoint), ws_max_size=1 << 20) as served,
        rapidws.connect(served.uri("/ws"), compression=None) as ws,
    ):
        with PeakMemory() as memory:
            await wait(ws.send(blocks(block, count)))
            assert await wait(ws.recv()) == expected.hexdigest()
    assert sum(sizes) == count * CHUNK
    assert max(sizes) <= CHUNK
    assert memory.peak < 3 << 20, memory.peak  # 10 MiB went through


async def test_text_chunks_are_cut_between_code_points() -> None:
    app, events = recording(stream_app)
    text = "aé€😀" * 50_000  # 500 kB, code points of 1 to 4 bytes
    data = text.encode()
    size = 65_537  # frames cut inside code points
    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        for start in range(0, len(data), size):
            opcode = OP_TEXT if start == 0 else OP_CONT
            fin = start + size >= len(data)
            peer.send_frame(opcode, data[start : start + size], fin=fin)
            await peer.writer.drain()
        await wait(_until(lambda: bool(events) and not events[-1]["rapidws.more"]))
        chunks = events.copy()
        await peer.close()
    assert all(isinstance(event["text"], str) for event in chunks)
    assert all(len(event["text"].encode()) <= CHUNK + 3 for event in chunks)
    assert len(chunks) >= len(data) // CHUNK
    assert joined(chunks, "text") == text


async def test_compressed_stream_inflates_as_the_app_reads() -> None:
    # A frame of 10 MiB of zeros deflates to 10 kB, which arrive in one
    # read: the engine inflates a few chunks at a time, as the app takes them.
    sizes: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "rapidws.stream": True})
        more = True
        while more:
            message = await receive()
            sizes.append(len(message["bytes"]))
            assert not any(message["bytes"])
            more = message["rapidws.more"]
            await asyncio.sleep(0.001)
        await send({"type": "websocket.send", "text": "done"})

    count = 160
    compressor = zlib.compressobj(wbits=-15)
    payload = b"".join(compressor.compress(block) for block in blocks(bytes(CHUNK), count))
    # Without the flush's 00 00 ff ff tail (RFC 7692 section 7.2.1).
    payload = (payload + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    deflate = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    async with serve(app, ws_per_message_deflate=True) as served:
        peer = await RawPeer.open_websocket(served.port, headers=deflate)
        with PeakMemory() as memory:
            peer.send_frame(OP_BINARY, payload, rsv=0x40)  # RSV1: compressed
            done = await peer.read_frame()
        await peer.close()
    assert done.payload == b"done"
    assert len(payload) < 20_000
    assert sum(sizes) == count * CHUNK
    assert max(sizes) <= CHUNK
    assert memory.peak < 3 << 20, memory.peak


async def test_max_stream_size_replaces_max_size_and_is_1009_beyond() -> None:
    app, events = recording(stream_app, **{"rapidws.max_stream_size": 2000})
    async with serve(app, ws_max_size=1000) as served:
        async with rapidws.connect(served.uri()) as ws:
            await ws.send([b"a" * 600, b"b" * 600])  # 1200 bytes: past max_size
            await wait(_until(lambda: bool(events) and not events[-1]["rapidws.more"]))
            assert joined(events, "bytes") == b"a" * 600 + b"b" * 600
            await ws.send([b"c" * 1500, b"d" * 600])  # 2100 bytes: past max_stream_size
            await ws.wait_closed()
        assert ws.close_code == 1009
        await wait(_until(lambda: events[-1]["type"] == "websocket.disconnect"))
    assert events[-1]["code"] == 1009


async def test_pong_event_between_two_chunks() -> None:
    events: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "rapidws.stream": True})
        events.append(await receive())
        await send({"type": "websocket.send", "rapidws.ping": b"p"})
        events.append(await receive())  # waiting for a chunk when the pong comes
        events.append(await receive())

    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        peer.send_frame(OP_TEXT, "ab", fin=False)
        ping = await peer.read_frame()
        assert (ping.opcode, ping.payload) == (OP_PING, b"p")
        peer.send_frame(OP_PONG, b"p")
        await wait(_until(lambda: len(events) == 2))
        peer.send_frame(OP_CONT, "cd")
        await wait(_until(lambda: len(events) == 3))
        await peer.close()
    assert events[0] == {"type": "websocket.receive", "text": "ab", "rapidws.more": True}
    assert events[1]["rapidws.pong"]["data"] == b"p"
    assert events[2] == {"type": "websocket.receive", "text": "cd", "rapidws.more": False}


async def test_close_amid_a_stream_is_the_disconnect_event() -> None:
    app, events = recording(stream_app)
    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        peer.send_frame(OP_BINARY, b"half", fin=False)
        await wait(_until(lambda: bool(events)))
        peer.send_close(4000, "gone")
        assert (await peer.read_close()).close_code == 4000
        await peer.close()
        await wait(_until(lambda: len(events) == 2))
    assert events == [
        {"type": "websocket.receive", "bytes": b"half", "rapidws.more": True},
        {"type": "websocket.disconnect", "code": 4000, "reason": "gone"},
    ]


async def test_app_sends_a_message_in_fragments() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "a", "rapidws.more": True})
        await send({"type": "websocket.send", "text": "é", "rapidws.more": True})
        await send({"type": "websocket.send", "text": "c"})
        await send({"type": "websocket.send", "bytes": b"whole", "rapidws.more": False})
        await receive()

    async with serve(app) as served:
        peer = await RawPeer.open_websocket(served.port)
        frames = [await peer.read_frame() for _ in range(4)]
        await peer.close()
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (OP_TEXT, False, b"a"),
        (OP_CONT, False, "é".encode()),
        (OP_CONT, True, b"c"),
        (OP_BINARY, True, b"whole"),
    ]


async def test_fragments_of_two_types_raise_and_a_half_message_ends_with_1011() -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"x", "rapidws.more": True})
        try:
            await send({"type": "websocket.send", "text": "y"})
        except TypeError as exc:
            raised.append(exc)

    async with serve(app) as served, rapidws.connect(served.uri()) as ws:
        await ws.wait_closed()
    assert "one type" in str(raised[0])
    assert (ws.close_code, ws.close_reason) == (1011, "message left unfinished")


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
