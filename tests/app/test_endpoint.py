"""Endpoint classes: errors go to on_error, JSON decoded or refused with 1007, on_close once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import rapidws
from rapidws import App, ConnectionClosedError, Endpoint
from rapidws.asyncio.server import ServerConnection

from ..asyncio.utils import wait


@asynccontextmanager
async def connected(endpoint: type[Endpoint]) -> AsyncIterator[rapidws.ClientConnection]:
    """A client connected to an App that serves ``endpoint``."""
    app = App()
    app.add_websocket("/e", endpoint)
    async with (
        app.serve("127.0.0.1", 0) as server,
        rapidws.connect(f"ws://127.0.0.1:{server.port}/e") as ws,
    ):
        yield ws


async def test_an_exception_without_on_error_closes_with_1011() -> None:
    class Failing(Endpoint):
        def on_message(self, ws: ServerConnection, message: Any) -> None:
            raise ValueError("bad message")

    async with connected(Failing) as ws:
        await ws.send("x")
        with pytest.raises(ConnectionClosedError) as exc_info:
            await wait(ws.recv())
        assert exc_info.value.code == 1011


async def test_on_error_may_keep_the_connection_open() -> None:
    errors: list[Exception] = []

    class Forgiving(Endpoint):
        async def on_message(self, ws: ServerConnection, message: Any) -> None:
            if message == "bad":
                raise KeyError(message)
            await ws.send(f"ok {message}")

        async def on_error(self, ws: ServerConnection, exc: Exception) -> None:
            errors.append(exc)
            await ws.send(f"error {exc!r}")

    async with connected(Forgiving) as ws:
        for message in ("a", "bad", "b"):
            await ws.send(message)
        assert [await wait(ws.recv()) for _ in range(3)] == [
            "ok a",
            "error KeyError('bad')",
            "ok b",
        ]
    assert [type(error) for error in errors] == [KeyError]


async def test_an_error_in_on_open_goes_to_on_error_too() -> None:
    class OpenFails(Endpoint):
        def on_open(self, ws: ServerConnection, **params: Any) -> None:
            raise RuntimeError("no")

        def on_error(self, ws: ServerConnection, exc: Exception) -> Any:
            return ws.close(4001, str(exc))

    async with connected(OpenFails) as ws:
        await wait(ws.wait_closed())
        assert (ws.close_code, ws.close_reason) == (4001, "no")


async def test_json_codec_decodes_and_refuses_invalid_json_with_1007() -> None:
    closes: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    class Json(Endpoint):
        codec = "json"

        async def on_message(self, ws: ServerConnection, message: Any) -> None:
            await ws.send_json({"got": message})

        def on_close(self, ws: ServerConnection, code: int, reason: str) -> None:
            closes.put_nowait((code, reason))

    async with connected(Json) as ws:
        await ws.send_json({"a": [1, 2]})
        assert await wait(ws.recv_json()) == {"got": {"a": [1, 2]}}
        await ws.send(b'"binary json"')
        assert await wait(ws.recv_json()) == {"got": "binary json"}
        await ws.send("{not json")
        await wait(ws.wait_closed())
        assert (ws.close_code, ws.close_reason) == (1007, "invalid JSON")
    assert await wait(closes.get()) == (1007, "invalid JSON")


async def test_a_pluggable_decoder_and_encoder() -> None:
    class Custom(Endpoint):
        codec = "json"
        loads = staticmethod(lambda data: {"decoded": data})
        dumps = staticmethod(lambda obj: repr(obj).encode())

        async def on_message(self, ws: ServerConnection, message: Any) -> None:
            await self.send(ws, message)

    async with connected(Custom) as ws:
        await ws.send("x")
        assert await wait(ws.recv()) == b"{'decoded': 'x'}"  # bytes from dumps: binary


async def test_on_close_once_when_the_peer_vanishes() -> None:
    closes: asyncio.Queue[int] = asyncio.Queue()

    class Watch(Endpoint):
        def on_close(self, ws: ServerConnection, code: int, reason: str) -> None:
            closes.put_nowait(code)

    async with connected(Watch) as ws:
        assert ws.transport is not None
        ws.transport.abort()
        assert await wait(closes.get()) == 1006
        await asyncio.sleep(0)
        assert closes.empty()
