"""Abuse limits: connections per address (429) and messages per second (1008), off by default."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rapidws
from rapidws import App, ConnectionClosedError, Endpoint, InvalidStatus, RateLimit
from rapidws.app.limits import ConnectionCounter
from rapidws.asyncio.server import ServerConnection

from ..asyncio.utils import wait


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class EchoEndpoint(Endpoint):
    async def on_message(self, ws: ServerConnection, message: Any) -> None:
        await ws.send(message)


class EchoCallbacks(rapidws.Callbacks):
    def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
        connection.send_nowait(message)


async def test_connections_per_address_are_limited_and_released_on_close() -> None:
    app = App(max_connections_per_ip=2)
    app.add_websocket("/", echo)
    async with app.serve("127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        first, second = await rapidws.connect(url), await rapidws.connect(url)
        with pytest.raises(InvalidStatus) as exc_info:
            await rapidws.connect(url)
        assert exc_info.value.response.status == 429
        assert exc_info.value.response.headers["Retry-After"] == "1"
        await second.send("still served")  # the open ones are not touched
        assert await wait(second.recv()) == "still served"
        await first.close()
        for connection in list(server.connections):
            if connection.close_code is not None:
                await wait(connection.wait_closed())
        await asyncio.sleep(0)  # the release runs after wait_closed()
        async with rapidws.connect(url) as third:  # a place was freed
            await third.send("in")
            assert await wait(third.recv()) == "in"
        await second.close()


@pytest.mark.virtual_clock
@pytest.mark.parametrize(
    "handler", [echo, EchoEndpoint, EchoCallbacks()], ids=["coroutine", "endpoint", "callbacks"]
)
async def test_a_connection_over_the_message_rate_is_closed_with_1008(handler: Any) -> None:
    app = App(message_rate=RateLimit(10, burst=5))
    app.add_websocket("/", handler)
    async with app.serve("127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        async with rapidws.connect(url) as calm, rapidws.connect(url) as flood:
            # Within the rate: 5 at once (the burst), then one every 0.2 s.
            for i in range(5):
                await calm.send(str(i))
                assert await wait(calm.recv()) == str(i)
            for i in range(5):
                await asyncio.sleep(0.2)
                await calm.send(f"later {i}")
                assert await wait(calm.recv()) == f"later {i}"
            # Over it: 10 at once.
            for i in range(10):
                await flood.send(str(i))
            received = []
            with pytest.raises(ConnectionClosedError) as exc_info:
                while True:
                    received.append(await wait(flood.recv()))
            assert exc_info.value.code == 1008
            assert exc_info.value.reason == "message rate exceeded"
            assert received == [str(i) for i in range(5)]  # the burst was served
            await calm.send("unaffected")
            assert await wait(calm.recv()) == "unaffected"


def test_limits_are_checked_when_made() -> None:
    with pytest.raises(ValueError):
        RateLimit(0)
    with pytest.raises(ValueError):
        RateLimit(1, burst=0)
    with pytest.raises(ValueError):
        ConnectionCounter(0)
