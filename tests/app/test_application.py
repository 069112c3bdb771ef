"""rapidws.App over real sockets: routes, the three handler styles, HTTP beside WebSocket, hooks."""

from __future__ import annotations

import asyncio
import http.client
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import rapidws
from rapidws import App, Endpoint, InvalidStatus, Response, Upgrade
from rapidws.asyncio.server import Server, ServerConnection

from ..asyncio.utils import RawPeer, handshake_request, wait


@asynccontextmanager
async def served(app: App, **options: Any) -> AsyncIterator[Server]:
    async with app.serve("127.0.0.1", 0, **options) as server:
        yield server


def url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def refused(server: Server, path: str, **options: Any) -> Response:
    with pytest.raises(InvalidStatus) as exc_info:
        await rapidws.connect(url(server, path), **options)
    return exc_info.value.response


async def raw_request(server: Server, data: bytes) -> Any:
    peer = await RawPeer.connect(port=server.port)
    peer.send(data)
    response = await peer.read_response()
    await peer.close()
    return response


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A request from a real HTTP client, http.client (run in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# Routes and the three handler styles.


async def test_coroutine_route_gets_its_path_parameters() -> None:
    app = App()

    @app.websocket("/ws/{user_name}")
    async def chat(ws: ServerConnection, user_name: str) -> None:
        assert ws.path_params == {"user_name": user_name}
        async for message in ws:
            await ws.send(f"{user_name}: {message}")

    async with served(app) as server, rapidws.connect(url(server, "/ws/J%C3%BCrgen")) as ws:
        await ws.send("hi")
        assert await wait(ws.recv()) == "Jürgen: hi"


async def test_convertors_give_typed_parameters_and_a_mismatch_is_404() -> None:
    app = App()

    @app.websocket("/rooms/{room:int}/{rest:path}")
    async def room(ws: ServerConnection, room: int, rest: str) -> None:
        await ws.send(repr((room, rest)))

    async with served(app) as server:
        async with rapidws.connect(url(server, "/rooms/42/a/b%2Fc")) as ws:
            assert await wait(ws.recv()) == "(42, 'a/b/c')"
        assert (await refused(server, "/rooms/forty-two/a")).status == 404


async def test_endpoint_class_one_instance_per_connection_and_in_order() -> None:
    closed: asyncio.Queue[tuple[str, int, str, list[object]]] = asyncio.Queue()

    class Chat(Endpoint):
        def __init__(self) -> None:
            self.events: list[object] = []

        async def on_open(self, ws: ServerConnection, user_name: str) -> None:
            self.user_name = user_name
            await ws.send(f"welcome {user_name}")

        def on_message(self, ws: ServerConnection, message: Any) -> Any:  # sync or async
            self.events.append(message)
            return ws.send(f"{self.user_name} #{len(self.events)}: {message}")

        async def on_close(self, ws: ServerConnection, code: int, reason: str) -> None:
            closed.put_nowait((self.user_name, code, reason, self.events))

    app = App()
    app.add_websocket("/ws/{user_name}", Chat)
    async with served(app) as server:
        async with (
            rapidws.connect(url(server, "/ws/ada")) as ada,
            rapidws.connect(url(server, "/ws/bob")) as bob,
        ):
            assert await wait(ada.recv()) == "welcome ada"
            assert await wait(bob.recv()) == "welcome bob"
            for i in range(5):
                await ada.send(str(i))
            await bob.send("x")
            assert [await wait(ada.recv()) for _ in range(5)] == [
                f"ada #{i + 1}: {i}" for i in range(5)
            ]
            assert await wait(bob.recv()) == "bob #1: x"
            await ada.close(4000, "bye")
        ends = sorted([await wait(closed.get()), await wait(closed.get())])
    assert ends == [("ada", 4000, "bye", ["0", "1", "2", "3", "4"]), ("bob", 1000, "", ["x"])]


async def test_callbacks_on_a_route_keep_the_fast_path() -> None:
    events: list[object] = []

    class Echo(rapidws.Callbacks):
        def on_open(self, connection: ServerConnection) -> None:
            events.append(("open", dict(connection.path_params)))

        def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(message)

        def on_close(self, connection: ServerConnection, code: int, reason: str) -> None:
            events.append(("close", code))

    app = App()
    app.add_websocket("/echo/{room}", Echo())
    async with served(app) as server:
        async with rapidws.connect(url(server, "/echo/r1")) as ws:
            await ws.send(b"\x00\x01")
            assert await wait(ws.recv()) == b"\x00\x01"
        for connection in list(server.connections):
            await wait(connection.wait_closed())
    assert events == [("open", {"room": "r1"}), ("close", 1000)]


async def test_three_styles_and_http_on_one_route_table() -> None:
    class Upper(rapidws.Callbacks):
        def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(str(message).upper())

    class Reverse(Endpoint):
        async def on_message(self, ws: ServerConnection, message: Any) -> None:
            await ws.send(message[::-1])

    app = App()

    @app.websocket("/echo")
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    app.add_websocket("/upper", Upper())
    app.add_websocket("/reverse", Reverse)
    app.add_route("/healthz", lambda request: "ok\n")
    async with served(app) as server:
        for path, expected in [("/echo", "abc"), ("/upper", "ABC"), ("/reverse", "cba")]:
            async with rapidws.connect(url(server, path)) as ws:
                await ws.send("abc")
                assert await wait(ws.recv()) == expected
        status, _, body = await asyncio.to_thread(http_get, server.port, "/healthz")
        assert (status, body) == (200, b"ok\n")


def test_a_handler_of_another_kind_is_refused_at_once() -> None:
    app = App()

    def not_a_coroutine(ws: ServerConnection) -> None: ...

    with pytest.raises(TypeError, match="coroutine function, an Endpoint subclass or Callbacks"):
        app.add_websocket("/x", not_a_coroutine)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is a callable"):
        app.add_route("/y", "not callable")  # type: ignore[arg-type]


# What the App answers instead of upgrading.


def plain_get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]).encode()


async def test_unknown_paths_wrong_kinds_and_methods() -> None:
    app = App()

    @app.websocket("/ws")
    async def ws_only(ws: ServerConnection) -> None: ...

    @app.route("/form", methods=["POST", "PUT"])
    def form(request: rapidws.Request) -> str:
        return "posted\n"

    async with served(app) as server:
        # Unknown path: 404 before the upgrade, for both kinds, with a short body.
        response = await refused(server, "/nowhere")
        assert (response.status, response.body) == (404, b"Not Found\n")
        response = await raw_request(server, plain_get("/nowhere"))
        assert (response.status, response.body) == (404, b"Not Found\n")
        assert response.headers["connection"] == "keep-alive"  # a page may ask for more
        assert response.headers["server"].startswith("rapidws/")
        # A WebSocket route asked for a plain GET: 426, naming the protocol.
        response = await raw_request(server, plain_get("/ws"))
        assert response.status == 426
        assert response.headers["upgrade"] == "websocket"
        # An HTTP-only route asked to upgrade: 404, there is no WebSocket there.
        assert (await refused(server, "/form")).status == 404
        # A method the route does not take: 405 with Allow.
        response = await raw_request(server, plain_get("/form"))
        assert response.status == 405
        assert response.headers["allow"] == "POST, PUT"
        # Bad percent-encoding: 400, before any handler.
        assert (await raw_request(server, plain_get("/ws/%zz"))).status == 400
        assert (await refused(server, "/a%00b")).status == 400


async def test_trailing_slash_redirects_plain_requests_and_never_websocket_ones() -> None:
    app = App()
    app.add_route("/docs/", lambda request: "docs\n")

    @app.websocket("/ws")
    async def ws_route(ws: ServerConnection) -> None:
        await ws.send("in")

    async with served(app) as server:
        response = await raw_request(server, plain_get("/docs?page=2"))
        assert (response.status, response.headers["location"]) == (308, "/docs/?page=2")
        assert (await refused(server, "/ws/")).status == 404  # strict for WebSocket
        async with rapidws.connect(url(server, "/ws")) as ws:
            assert await wait(ws.recv()) == "in"

    strict = App(redirect_slashes=False)
    strict.add_route("/docs/", lambda request: "docs\n")
    async with served(strict) as server:
        assert (await raw_request(server, plain_get("/docs"))).status == 404


async def test_absolute_form_targets_are_routed_by_their_path() -> None:
    app = App()
    app.add_route("/healthz", lambda request: f"{request.query}\n")
    async with served(app) as server:
        response = await raw_request(server, plain_get("http://example.com/healthz?a=1"))
        assert (response.status, response.body) == (200, b"a=1\n")


# Plain HTTP beside WebSocket routes.


async def test_http_results_become_responses() -> None:
    app = App()
    app.add_route("/text", lambda request: "text\n")
    app.add_route("/bytes", lambda request: b"\x00\xff")
    app.add_route("/json", lambda request: {"ok": True, "items": [1, 2]})

    @app.get("/custom/{code:int}")
    async def custom(request: rapidws.Request, code: int) -> Response:
        return Response(code, "custom\n", [("X-Custom", "1")])

    async with served(app) as server:
        port = server.port
        status, headers, body = await asyncio.to_thread(http_get, port, "/text")
        assert (status, headers["Content-Type"], body) == (
            200,
            "text/plain; charset=utf-8",
            b"text\n",
        )
        status, headers, body = await asyncio.to_thread(http_get, port, "/bytes")
        assert (headers["Content-Type"], body) == ("application/octet-stream", b"\x00\xff")
        status, headers, body = await asyncio.to_thread(http_get, port, "/json")
        assert (headers["Content-Type"], body) == ("application/json", b'{"ok":true,"items":[1,2]}')
        status, headers, body = await asyncio.to_thread(http_get, port, "/custom/418")
        assert (status, headers["X-Custom"], body) == (418, "1", b"custom\n")
        # HEAD: the GET's headers, Content-Length included, and no body.
        status, headers, body = await asyncio.to_thread(http_get, port, "/text", "HEAD")
        assert (status, headers["Content-Length"], body) == (200, "5", b"")


async def test_a_failing_http_handler_is_a_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.get("/boom")
    def boom(request: rapidws.Request) -> str:
        raise RuntimeError("secret detail")

    app.add_route("/wrong", lambda request: 42)
    async with served(app) as server:
        with caplog.at_level(logging.ERROR, "rapidws.server"):
            for path in ("/boom", "/wrong"):
                status, _, body = await asyncio.to_thread(http_get, server.port, path)
                assert (status, body) == (500, b"Internal Server Error\n")
    assert b"secret" not in body
    assert [record.exc_info[0] for record in caplog.records if record.exc_info] == [
        RuntimeError,
        TypeError,
    ]


# Interceptors and after_handshake.


async def test_interceptors_run_in_order_and_may_refuse_with_anything() -> None:
    calls: list[str] = []

    def app_wide(ws: ServerConnection, request: rapidws.Request) -> None:
        calls.append("app")
        ws.attributes["tenant"] = request.query_params.get("tenant")

    async def route_hook(ws: ServerConnection, request: rapidws.Request) -> Response | None:
        calls.append("route")
        if request.cookies.get("session") != "s3cret":
            return Response(403, "go away\n", [("X-Why", "no session")])
        ws.attributes["user"] = "ada"
        return None

    app = App(interceptors=[app_wide])

    @app.websocket("/ws", interceptors=[route_hook])
    async def handler(ws: ServerConnection) -> None:
        await ws.send(f"{ws.attributes['user']}@{ws.attributes['tenant']}")

    async with served(app) as server:
        response = await refused(server, "/ws")
        assert (response.status, response.body, response.headers["X-Why"]) == (
            403,
            b"go away\n",
            "no session",
        )
        assert calls == ["app", "route"]
        cookie = [("Cookie", "theme=dark; session=s3cret")]
        async with rapidws.connect(url(server, "/ws?tenant=t1"), additional_headers=cookie) as ws:
            assert await wait(ws.recv()) == "ada@t1"


async def test_an_interceptor_chooses_the_subprotocol_and_adds_headers() -> None:
    def choose(ws: ServerConnection, request: rapidws.Request) -> Upgrade:
        pick = request.query_params.get("pick")
        return Upgrade(subprotocol=pick, headers=[("Set-Cookie", "seen=1")])

    app = App()

    @app.after_handshake
    def stamp(ws: ServerConnection, request: rapidws.Request, response: Response) -> None:
        response.headers["X-After"] = "yes"

    @app.websocket("/ws", interceptors=[choose], subprotocols=["v1", "v2"])
    async def handler(ws: ServerConnection) -> None:
        await ws.send(str(ws.subprotocol))

    async with served(app) as server:
        async with rapidws.connect(url(server, "/ws?pick=v2"), subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            assert ws.response is not None
            assert ws.response.headers["Set-Cookie"] == "seen=1"
            assert ws.response.headers["X-After"] == "yes"
            assert await wait(ws.recv()) == "v2"
        # Without the interceptor's choice, the route's order of preference.
        async with rapidws.connect(url(server, "/ws"), subprotocols=["v2", "v1"]) as ws:
            assert ws.subprotocol == "v1"
        response = await refused(server, "/ws?pick=v3", subprotocols=["v1"])
        assert response.status == 500  # the interceptor chose one not offered: a bug, logged


async def test_a_failing_interceptor_is_a_500_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(ws: ServerConnection, request: rapidws.Request) -> None:
        raise RuntimeError("database password is hunter2")

    app = App(interceptors=[broken])

    @app.websocket("/ws")
    async def handler(ws: ServerConnection) -> None: ...

    async with served(app) as server:
        with caplog.at_level(logging.ERROR, "rapidws.server"):
            response = await refused(server, "/ws")
    assert response.status == 500
    assert b"hunter2" not in response.body and b"Traceback" not in response.body
    assert any(record.exc_info and record.exc_info[0] is RuntimeError for record in caplog.records)


# Mounting and lifecycle.


async def test_a_mounted_app_serves_under_its_prefix_after_the_outer_interceptors() -> None:
    calls: list[str] = []
    admin = App(interceptors=[lambda ws, request: calls.append("admin")])

    @admin.websocket("/ws/{name}", name="admin-ws")
    async def admin_ws(ws: ServerConnection, name: str) -> None:
        await ws.send(f"admin {name}")

    admin.add_route("/", lambda request: "admin home\n")
    app = App(interceptors=[lambda ws, request: calls.append("outer")])
    app.mount("/admin", admin)
    async with served(app) as server:
        async with rapidws.connect(url(server, "/admin/ws/x")) as ws:
            assert await wait(ws.recv()) == "admin x"
        assert calls == ["outer", "admin"]
        status, _, body = await asyncio.to_thread(http_get, server.port, "/admin")
        assert (status, body) == (200, b"admin home\n")
        assert (await refused(server, "/ws/x")).status == 404
    assert app.url_path_for("admin-ws", name="a b") == "/admin/ws/a%20b"
    with pytest.raises(RuntimeError):
        admin.add_route("/late", lambda request: "")  # compiled with its parent


async def test_startup_and_shutdown_hooks_wrap_the_server() -> None:
    events: list[str] = []
    app, sub = App(), App()
    app.mount("/sub", sub)
    app.on_startup(lambda: events.append("start"))
    sub.on_startup(lambda: events.append("sub start"))

    @app.on_shutdown
    async def stop() -> None:
        events.append("stop")

    sub.on_shutdown(lambda: events.append("sub stop"))
    async with served(app):
        events.append("serving")
    assert events == ["start", "sub start", "serving", "sub stop", "stop"]


def test_serve_refuses_the_hooks_an_app_replaces() -> None:
    with pytest.raises(TypeError, match="interceptors"):
        App().serve("127.0.0.1", 0, process_request=lambda ws, request: None)


async def test_a_plain_request_with_a_handshake_elsewhere_on_the_port() -> None:
    # The same server answers a health check and upgrades a WebSocket.
    app = App()
    app.add_route("/healthz", lambda request: "ok\n")

    @app.websocket("/ws")
    async def handler(ws: ServerConnection) -> None:
        await ws.send("up")

    async with served(app) as server:
        peer = await RawPeer.open_websocket(server.port, "/ws")
        assert (await peer.read_frame()).payload == b"up"
        peer.abort()
        response = await raw_request(
            server, handshake_request("/healthz").replace(b"Upgrade: websocket\r\n", b"")
        )
        assert response.status == 200


async def test_draining_fails_readiness_and_new_handshakes_but_not_open_connections() -> None:
    app = App()
    app.add_route("/readyz", lambda request: "ready\n", readiness=True)
    app.add_route("/healthz", lambda request: "alive\n")

    @app.websocket("/ws")
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with served(app) as server, rapidws.connect(url(server, "/ws")) as open_ws:
        assert (await asyncio.to_thread(http_get, server.port, "/readyz"))[0] == 200
        app.start_draining()
        assert app.draining
        status, _, body = await asyncio.to_thread(http_get, server.port, "/readyz")
        assert (status, body) == (503, b"Service Unavailable: shutting down\n")
        assert (await asyncio.to_thread(http_get, server.port, "/healthz"))[0] == 200
        response = await refused(server, "/ws")
        assert (response.status, response.headers["Retry-After"]) == (503, "1")
        await open_ws.send("still here")
        assert await wait(open_ws.recv()) == "still here"


# HTTP/1.1 on the same port: keep-alive, pipelining, bodies.


async def test_a_page_its_script_then_the_upgrade_on_one_connection() -> None:
    app = App()
    app.add_route("/", lambda request: Response(200, "<html>", [("Content-Type", "text/html")]))
    app.add_route("/app.js", lambda request: "connect()\n")

    @app.websocket("/ws")
    async def handler(ws: ServerConnection) -> None:
        await ws.send("upgraded")

    async with served(app) as server:
        peer = await RawPeer.connect(port=server.port)
        for path, body in [
            ("/", b"<html>"),
            ("/app.js", b"connect()\n"),
            ("/nope", b"Not Found\n"),
        ]:
            peer.send(plain_get(path))
            response = await peer.read_response()
            assert (response.body, response.headers["connection"]) == (body, "keep-alive")
        peer.send(handshake_request("/ws"))
        assert (await peer.read_response()).status == 101
        assert (await peer.read_frame()).payload == b"upgraded"
        peer.abort()


async def test_pipelined_requests_are_answered_in_order() -> None:
    app = App()

    @app.get("/slow/{n:int}")
    async def slow(request: rapidws.Request, n: int) -> str:
        await asyncio.sleep(0.01 * (3 - n))  # the first takes longest
        return f"{n}\n"

    async with served(app) as server:
        peer = await RawPeer.connect(port=server.port)
        peer.send(
            b"".join(plain_get(f"/slow/{n}") for n in range(3))
            + plain_get("/", "Connection: close")
        )
        bodies = [(await peer.read_response()).body for _ in range(4)]
        assert bodies == [b"0\n", b"1\n", b"2\n", b"Not Found\n"]
        assert await peer.at_eof_soon()  # the last asked to close
        await peer.close()


async def test_request_bodies_with_a_real_client_and_their_limit() -> None:
    app = App()

    @app.post("/echo")
    def echo_body(request: rapidws.Request) -> bytes:
        return request.body

    def post(port: int, body: bytes, chunked: bool) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            if chunked:
                connection.request(
                    "POST", "/echo", body=iter([body[:3], body[3:]]), encode_chunked=True
                )
            else:
                connection.request("POST", "/echo", body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    async with served(app, max_body_size=1000) as server:
        for chunked in (False, True):
            assert await asyncio.to_thread(post, server.port, b"payload", chunked) == (
                200,
                b"payload",
            )
        status, _ = await asyncio.to_thread(post, server.port, b"x" * 1001, False)
        assert status == 413


async def test_curl_reuses_the_connection_and_posts_with_expect_continue(tmp_path: Any) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is required (apt-get install curl)")
    app = App()
    app.add_route("/a", lambda request: "a\n")
    app.add_route("/b", lambda request: f"{len(request.body)}\n", methods=["POST"])
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 5000)  # curl sends Expect: 100-continue above 1 KiB
    async with served(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        process = await asyncio.create_subprocess_exec(
            curl,
            "-sS",
            "-v",
            f"{base}/a",
            "--next",
            "-sS",
            "--data-binary",
            f"@{upload}",
            f"{base}/b",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await wait(process.communicate())
    assert process.returncode == 0, err
    assert out == b"a\n5000\n"
    assert b"Re-using existing connection" in err or b"Reusing existing" in err


@pytest.mark.virtual_clock
async def test_a_slow_body_and_an_idle_kept_alive_connection_are_dropped() -> None:
    app = App()
    app.add_route("/", lambda request: "ok\n", methods=["GET", "POST"])
    async with served(app, open_timeout=2) as server:
        loop = asyncio.get_running_loop()
        # A body that never completes: dropped after the open timeout.
        slow = await RawPeer.connect(port=server.port)
        start = loop.time()
        slow.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
        assert await slow.read_eof() == b""
        assert loop.time() - start == pytest.approx(2, abs=0.01)
        # An idle connection after a response: the same timeout, from the response.
        idle = await RawPeer.connect(port=server.port)
        await asyncio.sleep(1.5)
        idle.send(plain_get("/"))
        assert (await idle.read_response()).status == 200
        answered = loop.time()
        assert await idle.read_eof() == b""
        assert loop.time() - answered == pytest.approx(2, abs=0.01)


# Settings per route.


async def test_a_route_has_its_own_limits_timeouts_and_compression() -> None:
    seen: dict[str, Any] = {}

    async def echo_settings(ws: ServerConnection) -> None:
        seen[ws.request.path if ws.request else ""] = (ws.ping_interval, ws.close_timeout)
        async for message in ws:
            await ws.send(len(message).to_bytes(4, "big"))

    app = App()
    app.add_websocket("/chat", echo_settings)
    upload = rapidws.RouteSettings(
        max_size=4 * 2**20, compression=None, ping_interval=None, close_timeout=3
    )
    app.add_websocket("/upload", echo_settings, settings=upload)
    big = b"\x00" * (2 * 2**20)
    async with served(app, max_size=2**20, ping_interval=7) as server:
        async with rapidws.connect(url(server, "/upload"), max_size=None) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers  # compression off
            await ws.send(big)
            assert await wait(ws.recv()) == len(big).to_bytes(4, "big")
        async with rapidws.connect(url(server, "/chat")) as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            await ws.send(big)
            with pytest.raises(rapidws.ConnectionClosedError) as exc_info:
                await wait(ws.recv())
            assert exc_info.value.code == 1009  # the server's max_size
    assert seen == {"/upload": (None, 3), "/chat": (7, 10.0)}


def test_route_settings_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="compression"):
        rapidws.RouteSettings(compression="zstd")
    with pytest.raises(ValueError, match="max_size"):
        rapidws.RouteSettings(max_size=-1)


async def test_hostile_requests_never_reach_a_handler() -> None:
    reached: list[str] = []
    app = App()

    @app.get("/{rest:path}")
    def anything(request: rapidws.Request, rest: str) -> str:
        reached.append(rest)
        return "reached\n"

    async with served(app, max_line=1024, max_headers=10) as server:
        for data, status in [
            (plain_get("/" + "a" * 2000), 414),  # an overlong path or query
            (plain_get("/?" + "q" * 2000), 414),
            (plain_get("/", *[f"X-{i}: y" for i in range(20)]), 431),  # too many headers
            (plain_get("/", "X-Big: " + "y" * 2000), 431),  # too large a header
            (plain_get("/%zz"), 400),  # bad percent-encoding
            (plain_get("/a%00b"), 400),  # a NUL
            (plain_get("/", "Content-Length: 1", "Transfer-Encoding: chunked"), 400),
        ]:
            assert (await raw_request(server, data)).status == status, data[:40]
        assert reached == []
        # The server is fine afterwards.
        assert (await raw_request(server, plain_get("/ok"))).status == 200
