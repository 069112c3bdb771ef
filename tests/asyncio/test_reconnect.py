"""Reconnection: the backoff, what is retried, and ``async for ws in connect(reconnect=...)``.

Waits between attempts run on the virtual clock (tests/clock.py), so delays
are exact and the tests take the time of their real work only. Each cause of
the classification table is produced by a real server where one can produce
it (an HTTP refusal, a close code, a refused port, a hang-up during the
handshake); the rest (DNS, TLS) are checked on the exceptions themselves.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import ssl
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import rapidws
from rapidws import (
    Backoff,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    Request,
    Response,
    ServerConnection,
)
from rapidws.asyncio.reconnect import Reconnecting, closing_code, retry_after, retryable
from rapidws.core import Close

from .utils import RawPeer, echo, handshake_response, raw_server, uri, wait


class Recorder:
    """An ``on_reconnect`` hook that keeps its calls and the loop time of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, BaseException]] = []
        self.times: list[float] = []

    def __call__(self, attempt: int, delay: float, cause: BaseException) -> None:
        self.calls.append((attempt, delay, cause))
        self.times.append(asyncio.get_running_loop().time())


def free_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refusing(
    *responses: Response,
) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` hook that answers with ``responses`` in turn, then accepts."""
    queue = list(responses)

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        return queue.pop(0) if queue else None

    return process_request


def closing_with(*codes: int) -> Callable[[ServerConnection], Awaitable[None]]:
    """A handler that closes the first connections with ``codes`` in turn, then echoes."""
    queue = list(codes)

    async def handler(ws: ServerConnection) -> None:
        if queue:
            await ws.close(queue.pop(0), "bye")
        else:
            await echo(ws)

    return handler


async def echo_once(ws: rapidws.ClientConnection) -> None:
    await ws.send("ping")
    assert await wait(ws.recv()) == "ping"


# The policy.


def test_backoff_bounds_grow_exponentially_up_to_max_delay() -> None:
    policy = Backoff(initial=0.5, factor=3, max_delay=10)
    assert [policy.bound(n) for n in range(5)] == [0.5, 1.5, 4.5, 10, 10]
    assert policy.bound(10_000) == 10  # no OverflowError


def test_backoff_delay_is_full_jitter_from_the_given_random() -> None:
    policy = Backoff(initial=1, factor=2, max_delay=60)
    assert policy.delay(0, random=lambda: 0.0) == 0.0
    assert policy.delay(3, random=lambda: 0.25) == 2.0  # 0.25 * 8
    assert policy.delay(20, random=lambda: 0.5) == 30.0  # 0.5 * 60
    source = random.Random(1)
    delays = [policy.delay(2, random=source.random) for _ in range(1000)]
    assert 0 <= min(delays) < 0.1 and 3.9 < max(delays) < 4


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0},
        {"factor": 0.5},
        {"initial": 2, "max_delay": 1},
        {"max_attempts": -1},
    ],
)
def test_backoff_rejects_bad_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)


def refusal(status: int, retry: str | None = None) -> InvalidStatus:
    headers = [] if retry is None else [("Retry-After", retry)]
    return InvalidStatus(Response(status, b"", headers))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after(refusal(503, "7")) == 7.0
    assert retry_after(refusal(429, " 120 ")) == 120.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after(refusal(503, date), now=1_000_000) == 30.0
    assert retry_after(refusal(503, date), now=2_000_000) == 0.0  # in the past
    assert retry_after(refusal(503, "soon")) is None
    assert retry_after(refusal(503)) is None
    assert retry_after(refusal(500, "7")) is None  # RFC 9110: with 503 (and 429, RFC 6585)
    assert retry_after(ConnectionRefusedError()) is None


def test_retry_after_floors_the_delay() -> None:
    policy = Backoff(initial=1)
    assert policy.delay(0, refusal(503, "7"), random=lambda: 0.5) == 7.0
    assert policy.delay(10, refusal(429, "7"), random=lambda: 0.5) == 30.0  # above the floor


def closed(
    rcvd: int | None, sent: int | None, rcvd_then_sent: bool | None = None
) -> ConnectionClosedError:
    frame = {code: None if code is None else Close(code, "") for code in (rcvd, sent)}
    return ConnectionClosedError(frame[rcvd], frame[sent], rcvd_then_sent)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError("no WebSocket connection within 10 s"), True),
        (ssl.SSLError(1, "record layer failure"), True),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
        (refusal(500), True),
        (refusal(502), True),
        (refusal(503, "1"), True),
        (refusal(429), True),
        (refusal(400), False),
        (refusal(401), False),
        (refusal(403), False),
        (refusal(404), False),
        (InvalidResponse("connection closed during the opening handshake"), True),
        (InvalidResponse("wrong Sec-WebSocket-Accept header 'x'"), False),
        (InvalidURI("not a ws:// URI"), False),
        (ValueError("a bug"), False),
        # Closes started by the server.
        (closed(1001, 1001, True), True),
        (closed(1011, 1011, True), True),
        (closed(1012, 1012, True), True),
        (closed(1013, 1013, True), True),
        (closed(1014, 1014, True), True),
        (closed(None, None), True),  # 1006: no close frame
        (closed(1000, 1000, True), False),
        (closed(1002, 1002, True), False),
        (closed(1003, 1003, True), False),
        (closed(1007, 1007, True), False),
        (closed(1008, 1008, True), False),
        (closed(1009, 1009, True), False),
        (closed(4000, 4000, True), False),
        # Closes started here: the application's own close is not retried, a
        # keepalive timeout is.
        (closed(1000, 1000, False), False),
        (closed(1001, 1001, False), False),
        (closed(None, 1011), True),
        (closed(None, 1009), False),
    ],
)
def test_retryable(exc: BaseException, expected: bool) -> None:
    assert retryable(exc) is expected


def test_closing_code() -> None:
    assert closing_code(closed(1012, 1012, True)) == 1012
    assert closing_code(closed(1000, 1011, False)) == 1011
    assert closing_code(closed(None, 1001)) == 1000
    assert closing_code(closed(None, None)) == 1006


# Iteration over real servers.


async def test_without_reconnect_iteration_yields_one_connection() -> None:
    async with rapidws.serve(closing_with(1012), "127.0.0.1", 0) as server:
        seen = []
        async for ws in rapidws.connect(uri(server)):
            seen.append(ws)
            with pytest.raises(ConnectionClosedError):
                await wait(ws.recv())
        assert len(seen) == 1


async def test_iteration_ends_when_the_body_is_done() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        hook = Recorder()
        count = 0
        async for ws in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
            count += 1
            await echo_once(ws)
        # The body left it open: the next step closed it normally, and stopped.
        assert count == 1 and ws.close_code == 1000 and not hook.calls


async def test_iteration_ends_after_a_normal_close_by_the_server() -> None:
    async with rapidws.serve(closing_with(1000), "127.0.0.1", 0) as server:
        hook = Recorder()
        messages = []
        async for ws in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
            async for message in ws:  # ends on the normal close
                messages.append(message)
        assert messages == [] and ws.close_code == 1000 and not hook.calls


@pytest.mark.virtual_clock
@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 1014])
async def test_reconnects_after_a_retryable_close(code: int) -> None:
    loop = asyncio.get_running_loop()
    async with rapidws.serve(closing_with(code), "127.0.0.1", 0) as server:
        hook = Recorder()
        policy = Backoff(initial=2.0)
        connections = Reconnecting(
            lambda: rapidws.connect(uri(server)), policy, hook, random=lambda: 0.75
        )
        closed_at = 0.0
        count = 0
        async for ws in connections:
            count += 1
            if count == 1:
                with pytest.raises(ConnectionClosedError if code != 1001 else ConnectionClosedOK):
                    await wait(ws.recv())
                closed_at = loop.time()
                continue
            reopened_at = loop.time()
            await echo_once(ws)
            await ws.close()
        assert count == 2
        [(attempt, delay, cause)] = hook.calls
        assert (attempt, delay) == (1, 1.5)  # 0.75 * initial
        assert isinstance(cause, rapidws.ConnectionClosed) and cause.code == code
        assert reopened_at - closed_at == pytest.approx(1.5)


@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009])
async def test_raises_at_once_after_a_close_not_worth_retrying(code: int) -> None:
    async with rapidws.serve(closing_with(code), "127.0.0.1", 0) as server:
        hook = Recorder()
        with pytest.raises(ConnectionClosedError) as info:
            async for ws in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
                try:
                    await wait(ws.recv())
                except ConnectionClosedError:
                    continue  # the iterator decides
        assert info.value.code == code and info.value.reason == "bye"
        assert not hook.calls


@pytest.mark.virtual_clock
async def test_reconnects_after_the_connection_drops() -> None:
    async def drop_first(ws: ServerConnection) -> None:
        if not dropped:
            dropped.append(ws)
            assert ws.transport is not None
            ws.transport.abort()
            return
        await echo(ws)

    dropped: list[ServerConnection] = []
    async with rapidws.serve(drop_first, "127.0.0.1", 0) as server:
        hook = Recorder()
        count = 0
        async for ws in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
            count += 1
            try:
                await echo_once(ws)
            except ConnectionClosedError:
                continue
            await ws.close()
        assert count == 2
        [(_, _, cause)] = hook.calls
        assert isinstance(cause, ConnectionClosedError) and cause.code == 1006


@pytest.mark.virtual_clock
async def test_503_with_retry_after_waits_at_least_that_long() -> None:
    loop = asyncio.get_running_loop()
    busy = Response(503, "busy\n", [("Retry-After", "7")])
    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=refusing(busy)) as server:
        hook = Recorder()
        start = loop.time()
        async for ws in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
            await echo_once(ws)
            break
        await ws.close()
        [(attempt, delay, cause)] = hook.calls
        assert attempt == 1 and delay == 7.0
        assert isinstance(cause, InvalidStatus) and cause.response.status == 503
        assert loop.time() - start == pytest.approx(7.0)


@pytest.mark.virtual_clock
async def test_429_and_500_are_retried_with_growing_delays() -> None:
    statuses = [Response(429, "slow down\n"), Response(500, "oops\n"), Response(502, "")]
    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=refusing(*statuses)) as server:
        hook = Recorder()
        policy = Backoff(initial=1, factor=2)
        connections = Reconnecting(
            lambda: rapidws.connect(uri(server)), policy, hook, random=lambda: 0.5
        )
        async for ws in connections:
            await echo_once(ws)
            await ws.close()
        assert [(a, d) for a, d, _ in hook.calls] == [(1, 0.5), (2, 1.0), (3, 2.0)]
        assert [c.response.status for _, _, c in hook.calls] == [429, 500, 502]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_http_refusal_raises_at_once(status: int) -> None:
    no = Response(status, "no\n")
    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=refusing(no)) as server:
        hook = Recorder()
        with pytest.raises(InvalidStatus) as info:
            async for _ in rapidws.connect(uri(server), reconnect=True, on_reconnect=hook):
                raise AssertionError("connected")
        assert info.value.response.status == status and info.value.response.body == b"no\n"
        assert not hook.calls


@pytest.mark.virtual_clock
async def test_refused_port_gives_up_after_max_attempts() -> None:
    hook = Recorder()
    policy = Backoff(initial=1, factor=2, max_attempts=3)
    url = f"ws://127.0.0.1:{free_port()}/"
    connections = Reconnecting(lambda: rapidws.connect(url), policy, hook, random=lambda: 1.0)
    with pytest.raises(ConnectionRefusedError):
        async for _ in connections:
            raise AssertionError("connected")
    assert [(a, d) for a, d, _ in hook.calls] == [(1, 1.0), (2, 2.0), (3, 4.0)]
    assert all(isinstance(c, ConnectionRefusedError) for _, _, c in hook.calls)
    assert hook.times == [0.0, 1.0, 3.0]  # each after the previous wait, none after the last


@pytest.mark.virtual_clock
async def test_hang_up_during_the_handshake_is_retried() -> None:
    count = 0

    async def hang_up_then_accept(peer: RawPeer) -> None:
        nonlocal count
        count += 1
        request = await peer.reader.readuntil(b"\r\n\r\n")
        if count == 1:
            peer.writer.close()
            return
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        peer.writer.write(handshake_response(key))
        await peer.reader.read()  # until the client leaves

    async with raw_server(hang_up_then_accept) as port:
        hook = Recorder()
        async for ws in rapidws.connect(
            f"ws://127.0.0.1:{port}/", reconnect=True, on_reconnect=hook
        ):
            ws.transport.abort()  # type: ignore[union-attr]  # no closing handshake with this peer
            break
        [(_, _, cause)] = hook.calls
        assert isinstance(cause, InvalidResponse) and retryable(cause)
        assert count == 2


async def test_async_hook_is_awaited() -> None:
    calls: list[int] = []

    async def hook(attempt: int, delay: float, cause: BaseException) -> None:
        await asyncio.sleep(0)
        calls.append(attempt)

    busy = Response(503, "busy\n", [("Retry-After", "0")])
    async with rapidws.serve(echo, "127.0.0.1", 0, process_request=refusing(busy)) as server:
        connections = Reconnecting(
            lambda: rapidws.connect(uri(server)), Backoff(initial=0.01), hook, random=lambda: 0.0
        )
        async for ws in connections:
            await ws.close()
        assert calls == [1]


# The storm: many clients, one server that restarts.

CLIENTS = 200
DOWNTIME = 6.0  # virtual seconds
STORM = Backoff(initial=1.0, factor=2.0, max_delay=8.0, max_attempts=12)


@pytest.mark.virtual_clock
async def test_reconnect_storm_spreads_over_the_backoff_window() -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    opened = asyncio.Event()
    counted = 0
    first_retry: list[float] = []  # when each client first tried again, after the drop
    reconnected: list[float] = []  # when each client was back
    attempts: list[int] = []
    gave_up: list[BaseException] = []
    dropped_at = 0.0
    source = random.Random(2026)

    def hook_for(client: list[int]) -> Callable[[int, float, BaseException], None]:
        def on_reconnect(attempt: int, delay: float, cause: BaseException) -> None:
            if attempt == 1:
                first_retry.append(loop.time() + delay - dropped_at)
            client[0] = attempt

        return on_reconnect

    async def client() -> None:
        nonlocal counted
        last = [0]
        connections = Reconnecting(
            lambda: rapidws.connect(f"ws://127.0.0.1:{port}/", open_timeout=None),
            STORM,
            hook_for(last),
            random=source.random,
        )
        count = 0
        try:
            async for ws in connections:
                count += 1
                if count == 1:
                    counted += 1
                    if counted == CLIENTS:
                        opened.set()
                    try:
                        await ws.recv()
                    except ConnectionClosedError:
                        continue
                reconnected.append(loop.time() - dropped_at)
                attempts.append(last[0])
                await echo_once(ws)
                await ws.close()
        except Exception as exc:
            gave_up.append(exc)

    async with rapidws.serve(echo, "127.0.0.1", port) as server:
        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await wait(opened.wait())
        dropped_at = loop.time()
        server.close(1012, "service restart")
        await server.wait_closed()
    await asyncio.sleep(DOWNTIME)
    async with rapidws.serve(echo, "127.0.0.1", port):
        await asyncio.gather(*clients)

    assert not gave_up, gave_up[:3]
    assert len(reconnected) == CLIENTS
    assert all(t >= DOWNTIME for t in reconnected)
    # The first retries spread over [0, initial) as uniform jitter would:
    # ten equal slices, none empty or holding more than twice its share.
    assert len(first_retry) == CLIENTS
    slices = [0] * 10
    for t in first_retry:
        assert 0 <= t < STORM.initial + 0.01
        slices[min(9, int(t / STORM.initial * 10))] += 1
    assert min(slices) > 0 and max(slices) <= 2 * CLIENTS // 10
    quartiles = statistics.quantiles(first_retry, n=4)
    back = statistics.quantiles(reconnected, n=4)
    print(
        f"\nreconnect storm, {CLIENTS} clients, server down {DOWNTIME} s, {STORM}:"
        f"\n  first retries over [0, {STORM.initial}) s: min {min(first_retry):.3f}"
        f" q1 {quartiles[0]:.3f} median {quartiles[1]:.3f} q3 {quartiles[2]:.3f}"
        f" max {max(first_retry):.3f}; per 0.1 s slice: {slices}"
        f"\n  back after the drop: min {min(reconnected):.2f} q1 {back[0]:.2f}"
        f" median {back[1]:.2f} q3 {back[2]:.2f} max {max(reconnected):.2f} s;"
        f" attempts per client: max {max(attempts)}, mean {statistics.mean(attempts):.2f}"
    )
