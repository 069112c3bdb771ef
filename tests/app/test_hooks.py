"""The ready-made interceptors: origins matched exactly, secrets compared in constant time."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

import rapidws
from rapidws import App, InvalidStatus, Response
from rapidws.app.hooks import allow_origins, basic_auth, bearer_auth
from rapidws.asyncio.server import ServerConnection
from rapidws.core import Headers, Request

from ..asyncio.utils import wait


class Conn:
    """What an interceptor uses of a connection: its attributes."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}


def request(target: str = "/", *headers: tuple[str, str]) -> Request:
    return Request("GET", target, Headers([("Host", "x"), *headers]))


def run(hook: Any, req: Request, conn: Conn | None = None) -> Response | None:
    async def call() -> Response | None:
        result = hook(conn or Conn(), req)
        return await result if asyncio.iscoroutine(result) else result  # type: ignore[no-any-return]

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.Example.com", True),  # hosts compare case-insensitively
        ("https://app.example.com:443", True),  # the default port, written out
        ("https://a.b.example.com", True),  # the wildcard takes several labels
        ("https://example.com", False),  # ... and at least one
        ("http://app.example.com", False),  # another scheme
        ("https://app.example.com:8443", False),  # another port
        ("https://app.example.com.evil.net", False),
        ("https://evilexample.com", False),
        ("https://evil.net/.example.com", False),  # not an origin
        ("https://user@app.example.com", False),
        ("null", False),  # an opaque origin (a sandboxed frame, a file)
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
    ],
)
def test_allow_origins_matches_scheme_host_and_port_exactly(origin: str, allowed: bool) -> None:
    hook = allow_origins(["https://*.example.com", "http://localhost:3000"])
    result = run(hook, request("/", ("Origin", origin)))
    assert (result is None) is allowed
    if not allowed:
        assert result is not None and result.status == 403


def test_allow_origins_without_origin_and_with_any() -> None:
    assert run(allow_origins(["https://a.com"]), request()).status == 403  # type: ignore[union-attr]
    assert run(allow_origins(["https://a.com"], allow_missing=True), request()) is None
    assert run(allow_origins(["*"]), request("/", ("Origin", "https://x.org"))) is None
    two = request("/", ("Origin", "https://a.com"), ("Origin", "https://a.com"))
    assert run(allow_origins(["https://a.com"]), two).status == 403  # type: ignore[union-attr]


@pytest.mark.parametrize("pattern", ["example.com", "https://*", "ftp://x.com", "https://a.com/p"])
def test_allow_origins_refuses_what_is_not_an_origin_pattern(pattern: str) -> None:
    with pytest.raises(ValueError, match="not an origin pattern"):
        allow_origins([pattern])


def test_bearer_auth_with_fixed_tokens_and_a_query_parameter() -> None:
    hook = bearer_auth(["t0k3n", "other"], query_param="token")
    conn = Conn()
    assert run(hook, request("/", ("Authorization", "Bearer t0k3n")), conn) is None
    assert conn.attributes == {"user": True}
    assert run(hook, request("/?token=other")) is None
    for bad in [request(), request("/", ("Authorization", "Bearer nope")), request("/?token=")]:
        refusal = run(hook, bad)
        assert refusal is not None and refusal.status == 401
        assert refusal.headers["WWW-Authenticate"] == "Bearer"
        assert b"t0k3n" not in refusal.body


def test_bearer_auth_with_an_async_check_stores_its_user() -> None:
    async def check(token: str) -> dict[str, str] | None:
        return {"name": "ada"} if token == "ada-token" else None

    hook = bearer_auth(check, attribute="account")
    conn = Conn()
    assert run(hook, request("/", ("Authorization", "bearer ada-token")), conn) is None
    assert conn.attributes == {"account": {"name": "ada"}}
    assert run(hook, request("/", ("Authorization", "Bearer x"))).status == 401  # type: ignore[union-attr]


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def test_basic_auth() -> None:
    hook = basic_auth({"ada": "lovelace", "bob": "pässword"}, realm="chat")
    conn = Conn()
    assert run(hook, request("/", basic("ada", "lovelace")), conn) is None
    assert conn.attributes == {"user": "ada"}
    assert run(hook, request("/", basic("bob", "pässword"))) is None
    for bad in [
        request(),
        request("/", basic("ada", "wrong")),
        request("/", basic("eve", "lovelace")),
        request("/", ("Authorization", "Basic !!notbase64")),
        request("/", ("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())),
    ]:
        refusal = run(hook, bad)
        assert refusal is not None and refusal.status == 401
        assert refusal.headers["WWW-Authenticate"] == 'Basic realm="chat", charset="UTF-8"'


def test_basic_auth_with_a_check() -> None:
    hook = basic_auth(lambda user, password: user == password and user.upper())
    conn = Conn()
    assert run(hook, request("/", basic("x", "x")), conn) is None
    assert conn.attributes == {"user": "X"}


async def test_the_interceptors_over_real_sockets() -> None:
    app = App(interceptors=[allow_origins(["https://*.example.com"])])

    @app.websocket("/ws", interceptors=[bearer_auth(["s3cret"], query_param="token")])
    async def handler(ws: ServerConnection) -> None:
        await ws.send(repr(ws.attributes))

    async with app.serve("127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        origin = "https://chat.example.com"
        async with rapidws.connect(url + "?token=s3cret", origin=origin) as ws:
            assert await wait(ws.recv()) == "{'user': True}"
        for target, sent_origin, status in [
            ("?token=s3cret", "https://example.org", 403),
            ("?token=nope", origin, 401),
            ("", None, 403),
        ]:
            with pytest.raises(InvalidStatus) as exc_info:
                await rapidws.connect(url + target, origin=sent_origin)
            assert exc_info.value.response.status == status
