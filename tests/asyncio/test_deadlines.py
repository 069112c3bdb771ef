"""Shared timeouts: each member expires once, its timeout after it joined, from one timer.

The timer's own tests run on the virtual clock (tests/clock.py), where expiry
times are exact; the servers' tests over real sockets assert membership, and
a timeout only with bounds a loaded machine keeps.
"""

from __future__ import annotations

import asyncio

import pytest

import rapidws
from rapidws.asyncio.deadlines import Deadlines

TIMEOUT = 0.1


class Expiries:
    """Records which member expired when."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, member: str) -> None:
        self.times[member] = asyncio.get_running_loop().time()


@pytest.mark.virtual_clock
async def test_each_member_expires_its_timeout_after_joining() -> None:
    loop = asyncio.get_running_loop()
    expired = Expiries()
    deadlines: Deadlines[str] = Deadlines(TIMEOUT, expired)
    start = loop.time()
    deadlines.add("a")
    await asyncio.sleep(TIMEOUT / 2)
    joined = loop.time()
    deadlines.add("b")
    assert len(deadlines) == 2
    await asyncio.sleep(TIMEOUT * 2)
    assert list(expired.times) == ["a", "b"]
    assert expired.times["a"] - start == pytest.approx(TIMEOUT)
    assert expired.times["b"] - joined == pytest.approx(TIMEOUT)
    assert len(deadlines) == 0
    assert deadlines._timer is None and deadlines._loop is None  # idle: nothing held


@pytest.mark.virtual_clock
async def test_discarded_members_do_not_expire_and_the_rest_still_do() -> None:
    expired = Expiries()
    deadlines: Deadlines[str] = Deadlines(TIMEOUT, expired)
    for member in "abc":
        deadlines.add(member)
    deadlines.discard("a")  # the first one: the timer fires for nothing, then waits on
    deadlines.discard("c")
    deadlines.discard("c")  # again: harmless
    deadlines.discard("x")  # never joined: harmless
    assert "b" in deadlines and "a" not in deadlines
    await asyncio.sleep(TIMEOUT / 2)
    assert expired.times == {}
    await asyncio.sleep(TIMEOUT)
    assert list(expired.times) == ["b"]
    assert expired.times["b"] == pytest.approx(TIMEOUT)


@pytest.mark.virtual_clock
async def test_adding_again_restarts_the_timeout() -> None:
    expired = Expiries()
    deadlines: Deadlines[str] = Deadlines(TIMEOUT, expired)
    deadlines.add("a")
    deadlines.add("b")
    await asyncio.sleep(TIMEOUT / 2)
    restarted = asyncio.get_running_loop().time()
    deadlines.add("a")  # now the last to expire
    await asyncio.sleep(TIMEOUT * 2)
    assert list(expired.times) == ["b", "a"]
    assert expired.times["b"] == pytest.approx(TIMEOUT)
    assert expired.times["a"] - restarted == pytest.approx(TIMEOUT)


@pytest.mark.virtual_clock
async def test_a_failing_expiry_is_reported_and_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    expired = Expiries()

    def expire(member: str) -> None:
        if member == "bad":
            raise RuntimeError("boom")
        expired(member)

    deadlines: Deadlines[str] = Deadlines(TIMEOUT, expire)
    for member in ("bad", "good"):
        deadlines.add(member)
    try:
        await asyncio.sleep(TIMEOUT * 2)
    finally:
        loop.set_exception_handler(None)
    assert list(expired.times) == ["good"]
    assert [type(context["exception"]) for context in reported] == [RuntimeError]


@pytest.mark.virtual_clock
async def test_a_member_joining_while_others_expire_waits_its_own_timeout() -> None:
    expired = Expiries()
    deadlines: Deadlines[str] = Deadlines(TIMEOUT, expired)

    def expire(member: str) -> None:
        expired(member)
        if member == "a":
            deadlines.add("late")

    deadlines._expire = expire
    deadlines.add("a")
    await asyncio.sleep(TIMEOUT * 1.5)
    assert "late" in deadlines and list(expired.times) == ["a"]
    await asyncio.sleep(TIMEOUT)
    assert list(expired.times) == ["a", "late"]
    assert expired.times["late"] - expired.times["a"] == pytest.approx(TIMEOUT)


@pytest.mark.parametrize("api", ["iterator", "callback"])
async def test_a_server_shares_one_set_of_deadlines_across_connections(api: str) -> None:
    """Handshakes and closing handshakes in progress join the server's deadlines and leave them."""

    async def echo(connection: rapidws.ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    class Echo(rapidws.Callbacks):
        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(message)

    handler = Echo() if api == "callback" else echo
    async with rapidws.serve(handler, "127.0.0.1", 0, open_timeout=5, close_timeout=5) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        clients = [await rapidws.connect(url) for _ in range(3)]
        (opening,) = server._deadlines.values()
        assert opening.timeout == 5 and len(opening) == 0  # every handshake done
        for client in clients:
            await client.send("x")
            assert await client.recv() == "x"
            await client.close()
        for connection in list(server.connections):
            await connection.wait_closed()
        # One shared set for the closing handshakes, left by each connection.
        opening_, closing = server._deadlines.values()
        assert opening_ is opening
        assert closing.timeout == 5 and len(closing) == 0


@pytest.mark.virtual_clock
async def test_an_open_timeout_changed_on_a_running_server_applies_to_new_connections() -> None:
    async def echo(connection: rapidws.ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    for before in (None, 5.0):
        async with rapidws.serve(echo, "127.0.0.1", 0, open_timeout=before) as server:
            server.open_timeout = 0.2
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\n")  # and nothing more: a slow loris
            start = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(), 2) == b""  # dropped
            assert asyncio.get_running_loop().time() - start == pytest.approx(0.2, abs=0.001)
            writer.close()
