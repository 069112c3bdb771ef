"""Tests of rapidws.cli.loadgen: every workload against real servers on this loop.

Runs are short (about a second at most) and bounded by a message count or a
duration; assertions are on counts and order, never on machine speed. The
coordinated-omission correction is checked on the virtual clock, where the
generator's stall and the latencies it causes are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import rapidws
from rapidws.cli import loadgen
from rapidws.cli.loadgen import (
    HIGHEST_US,
    LoadConfig,
    ProcessResult,
    Recorder,
    error_kind,
    generate,
    new_histogram,
)
from rapidws.cli.options import ClientFlags
from rapidws.exceptions import ConnectionClosedError, InvalidHandshake, InvalidStatus

from ..proxy_servers import PASSWORD, USER, microsocks


class Echo(rapidws.Callbacks):
    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        connection.send_nowait(message)


@contextlib.asynccontextmanager
async def serving(handler: Any, **kwargs: Any) -> AsyncIterator[str]:
    async with rapidws.serve(handler, "127.0.0.1", 0, compression=None, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


def histogram(result: ProcessResult, name: str) -> Any:
    decoded = new_histogram()
    decoded.decode_and_add(result.histograms[name].encode())
    return decoded


def test_recorder_folds_counts_exactly() -> None:
    recorder = Recorder()
    for seconds in (0.001, 0.001, 0.002, 0.0, 7200.0):
        recorder.record(seconds)
    interval = recorder.flush()
    assert interval.get_total_count() == 5
    assert recorder.total.get_total_count() == 5
    assert recorder.counts == {}
    # Zero is counted as the lowest value, two hours as the highest.
    assert interval.get_min_value() == 1
    assert interval.get_highest_equivalent_value(interval.get_max_value()) >= HIGHEST_US
    assert interval.get_count_at_value(1000) == 2
    recorder.record(0.5)
    recorder.reset()
    assert recorder.flush().get_total_count() == 0
    assert recorder.total.get_total_count() == 0


def test_recorder_folds_in_steps_into_one_interval() -> None:
    # The watcher folds every 50 ms and flushes every second: the second's
    # histogram holds every value of its folds, and the next starts empty.
    recorder = Recorder()
    recorder.record(0.001)
    recorder.fold()
    assert recorder.counts == {}
    recorder.record(0.001)
    recorder.record(0.003)
    recorder.fold()
    recorder.fold()  # nothing new: no change
    recorder.record(0.002)
    interval = recorder.flush()
    assert interval.get_total_count() == 4
    assert interval.get_count_at_value(1000) == 2
    assert recorder.total.get_total_count() == 4
    recorder.record(0.004)
    recorder.fold()
    assert recorder.flush().get_total_count() == 1
    assert recorder.total.get_total_count() == 5
    # A reset drops what was folded but not flushed, and the total.
    recorder.record(0.005)
    recorder.fold()
    recorder.reset()
    assert recorder.flush().get_total_count() == 0
    assert recorder.total.get_total_count() == 0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (OSError(errno.EADDRNOTAVAIL, "no address"), "EADDRNOTAVAIL"),
        (TimeoutError(), "timeout"),
        (asyncio.TimeoutError(), "timeout"),
        (InvalidStatus(rapidws.Response(503, "busy")), "http 503"),
        (ConnectionClosedError(rapidws.Close(1011, ""), None), "close 1011"),
        (ConnectionClosedError(None, None), "close 1006"),
        (InvalidHandshake("bad accept"), "handshake"),
        (ValueError("x"), "ValueError"),
    ],
)
def test_error_kind(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


def test_error_kind_of_handshake_cut_by_reset() -> None:
    exc = InvalidHandshake("closed")
    exc.__cause__ = ConnectionResetError(errno.ECONNRESET, "reset")
    assert error_kind(exc) == "reset"


async def test_echo_message_count() -> None:
    async with serving(Echo()) as url:
        result = await generate(LoadConfig(url, connections=2, duration=5, messages=200))
    assert result.sent == result.received == 200
    assert result.errors == {}
    assert result.handshakes == result.peak_open == 2
    assert histogram(result, "latency").get_total_count() == 200
    assert histogram(result, "handshake").get_total_count() == 2
    assert "tls" not in result.histograms
    assert result.bytes_sent == result.bytes_received == 200 * 16


async def test_echo_text_messages() -> None:
    async with serving(Echo()) as url:
        result = await generate(LoadConfig(url, duration=5, messages=20, text=True, size=3))
    assert result.received == 20
    assert result.errors == {}


async def test_echo_mismatch() -> None:
    class Wrong(rapidws.Callbacks):
        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            connection.send_nowait(b"not the message")

    async with serving(Wrong()) as url:
        result = await generate(LoadConfig(url, duration=5, messages=10))
    assert result.errors == {"mismatch": 10}


async def test_rate_messages() -> None:
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, workload="rate", connections=2, rate=200, messages=40, duration=5)
        )
    assert result.sent == result.received == 40
    assert result.errors == {}
    for name in ("latency", "uncorrected", "send_lag"):
        assert histogram(result, name).get_total_count() == 40


async def test_rate_poisson_text() -> None:
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(
                url, workload="rate", rate=500, poisson=True, text=True, messages=20, duration=5
            )
        )
    assert result.received == 20
    assert result.errors == {}


@pytest.mark.virtual_clock
async def test_rate_corrects_for_coordinated_omission() -> None:
    # The generator stalls for 450 ms at t = 1.02 s (its clock jumps ahead):
    # the messages due meanwhile (1.1 to 1.5 s) go out late, at once. Measured
    # from their intended times their latencies include the stall; measured
    # from the real send, they do not.
    loop = asyncio.get_running_loop()
    stall = [0.0]
    loop.call_at(1.02, stall.__setitem__, 0, 0.45)

    def clock() -> float:
        return loop.time() + stall[0]

    async with serving(Echo()) as url:
        result = await generate(LoadConfig(url, workload="rate", rate=10, duration=3), clock=clock)
    assert result.errors == {}
    corrected = histogram(result, "latency")
    uncorrected = histogram(result, "uncorrected")
    lag = histogram(result, "send_lag")
    assert corrected.get_total_count() == uncorrected.get_total_count() == result.received
    # The five late messages: 450, 350, 250, 150 and 50 ms late.
    late = [v for v in range(50_000, 460_000, 100_000)]
    for value in late:
        assert corrected.get_count_at_value(value) == 1
        assert lag.get_count_at_value(value) == 1
    assert corrected.get_max_value() == corrected.get_highest_equivalent_value(450_000)
    assert uncorrected.get_max_value() < 1_000  # no time passes on the wire here


@pytest.mark.virtual_clock
async def test_rate_interleaves_connections() -> None:
    # Two connections at 10/s: the second sends half a gap after the first,
    # not at the same instants; no send is late on the virtual clock.
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []

    class Stamp(rapidws.Callbacks):
        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            arrivals.append(loop.time())
            connection.send_nowait(message)

    async with serving(Stamp()) as url:
        result = await generate(
            LoadConfig(url, workload="rate", connections=2, rate=10, messages=20, duration=5),
            clock=loop.time,
        )
    assert result.sent == result.received == 20
    assert result.errors == {}
    gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(arrivals)]
    assert gaps == [0.05] * 19
    assert histogram(result, "send_lag").get_max_value() == 1  # 0 µs, counted as the lowest


async def test_rate_sends_on_a_timerfd_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[float] = []
    arm = loadgen._TimerFd.arm

    def spy(self: loadgen._TimerFd, when: float) -> None:
        armed.append(when)
        arm(self, when)

    monkeypatch.setattr(loadgen._TimerFd, "arm", spy)
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, workload="rate", connections=2, rate=100, duration=0.6)
        )
    # The real clock is CLOCK_MONOTONIC on Linux: the timerfd path; else the loop's timers.
    assert bool(armed) == (sys.platform == "linux")
    assert result.errors == {}
    # At most every connection's sends due in the run, one more at its end.
    assert 2 <= result.sent <= 2 * (100 * result.seconds + 2)
    assert histogram(result, "send_lag").get_total_count() == result.sent


async def test_sender_on_the_real_clock() -> None:
    # One timer for two connections' schedules: each send in order of its
    # intended time, never before it.
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    schedules = {"a": [0.02, 0.04], "b": [0.03]}
    sent: list[tuple[str, float, float]] = []
    intended = {"a": start + 0.01, "b": start + 0.01}
    finished = loop.create_future()

    def send_due(ws: Any, now: float) -> float | None:
        sent.append((ws, intended[ws], now))
        if not schedules[ws]:
            if len(sent) == 5:
                finished.set_result(None)
            return None
        intended[ws] = start + schedules[ws].pop(0)
        return intended[ws]

    sender = loadgen._Sender(loop, time.perf_counter, send_due)
    assert (sender.timerfd is not None) == (sys.platform == "linux")
    for ws, when in intended.items():
        sender.add(ws, when)
    await asyncio.wait_for(finished, 10)
    sender.close()
    assert sender.timerfd is None
    assert [ws for ws, _, _ in sent] == ["a", "b", "a", "b", "a"]
    assert all(now >= due - 1e-6 for _, due, now in sent)


@pytest.mark.virtual_clock
async def test_sender_schedule() -> None:
    # Connections in order of their next send (ties in the order added), each
    # dropped when it has nothing more to send or is closing; a late wake-up
    # (the clock jumps 0.2 s at 0.12) sends everything due at once.
    loop = asyncio.get_running_loop()
    jump = [0.0]
    loop.call_at(0.12, jump.__setitem__, 0, 0.2)
    schedules = {"a": [0.2, 0.6], "b": [0.25], "c": [], "closing": []}
    sent: list[tuple[str, float]] = []

    def send_due(ws: Any, now: float) -> float | None:
        sent.append((ws, round(now, 6)))
        if ws == "closing":
            raise ConnectionClosedError(None, None)
        return schedules[ws].pop(0) if schedules[ws] else None

    sender = loadgen._Sender(loop, lambda: loop.time() + jump[0], send_due)
    assert sender.timerfd is None  # not CLOCK_MONOTONIC: the loop's timers
    sender.add("a", 0.1)
    sender.add("b", 0.1)
    sender.add("closing", 0.15)
    sender.add("c", 0.3)
    await asyncio.sleep(1)
    assert sent == [
        ("a", 0.1),
        ("b", 0.1),
        # At 0.15 on the loop, 0.35 on the clock: four sends due.
        ("closing", 0.35),
        ("a", 0.35),
        ("b", 0.35),
        ("c", 0.35),
        ("a", 0.6),
    ]
    assert sender.heap == []
    sender.close()


async def test_rpc_pipeline() -> None:
    async def answer(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            request = json.loads(message)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": 1}))

    async with serving(answer) as url:
        result = await generate(
            LoadConfig(url, workload="rpc", pipeline=4, connections=2, messages=100, duration=5)
        )
    assert result.sent == result.received == 100
    assert result.errors == {}


async def test_rpc_timeouts_and_unmatched_ids() -> None:
    # Every 5th request is never answered; one reply carries an unknown id.
    async def answer(ws: rapidws.ServerConnection) -> None:
        await ws.send('{"id": "nobody"}')
        async for message in ws:
            request = json.loads(message)
            if request["id"] % 5 != 4:
                await ws.send(json.dumps({"id": request["id"], "result": 1}))

    async with serving(answer) as url:
        result = await generate(
            LoadConfig(url, workload="rpc", pipeline=2, timeout=0.2, duration=0.8)
        )
    assert result.errors["timeout"] >= 1
    assert result.errors["unmatched id"] >= 1
    assert result.received > 0


async def test_push_fan_out() -> None:
    connections: set[rapidws.ServerConnection] = set()

    class Broadcast(rapidws.Callbacks):
        def on_open(self, connection: rapidws.ServerConnection) -> None:
            connections.add(connection)

        def on_close(self, connection: rapidws.ServerConnection, code: int, reason: str) -> None:
            connections.discard(connection)

        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            for other in connections:
                other.send_nowait(message)

    async with serving(Broadcast()) as url:
        result = await generate(
            LoadConfig(url, workload="push", connections=3, rate=50, messages=10, duration=1)
        )
    assert result.sent == 10
    # Each subscriber gets what was published after it joined: all 10, as the
    # publisher starts after the subscribers.
    assert result.received == 30
    assert histogram(result, "latency").get_total_count() == 30
    assert result.errors == {}


async def test_push_unstamped() -> None:
    async def greet(ws: rapidws.ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()

    async with serving(greet) as url:
        result = await generate(
            LoadConfig(url, workload="push", connections=2, publishers=0, duration=0.3)
        )
    assert result.errors == {"unstamped": 2}


async def test_churn() -> None:
    async with serving(Echo()) as url:
        result = await generate(LoadConfig(url, workload="churn", connections=2, duration=0.5))
    assert result.handshakes > 2
    assert result.errors == {}
    assert histogram(result, "handshake").get_total_count() == result.handshakes


async def test_idle_with_ramp_up() -> None:
    async with serving(Echo()) as url:
        result = await generate(
            # 0.1 s of ramp at 50/s: the rest of the 2 s is slack for a busy machine.
            LoadConfig(url, workload="idle", connections=5, ramp_up=50, duration=2.0)
        )
    assert result.peak_open == result.handshakes == 5
    assert result.errors == {}


async def test_scenario(tmp_path: Path) -> None:
    script = tmp_path / "my.py"
    script.write_text(
        "async def scenario(ws):\n"
        "    await ws.send('hi')\n"
        "    assert await ws.recv() == 'hi'\n"
        "async def broken(ws):\n"
        "    raise ValueError('no')\n"
    )
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, workload="scenario", scenario=str(script), messages=10, duration=5)
        )
        broken = await generate(
            LoadConfig(url, workload="scenario", scenario=f"{script}:broken", duration=0.2)
        )
    assert result.received == 10
    assert histogram(result, "latency").get_total_count() == 10
    assert broken.received == 0
    assert broken.errors["scenario: ValueError"] >= 1


async def test_tls_handshake_is_timed_apart(server_context: Any, ca: Any) -> None:
    with ca.cert_pem.tempfile() as ca_file:
        async with rapidws.serve(
            Echo(), "127.0.0.1", 0, ssl=server_context, compression=None
        ) as server:
            port = server.sockets[0].getsockname()[1]
            result = await generate(
                LoadConfig(
                    f"wss://127.0.0.1:{port}/",
                    client=ClientFlags(ca=ca_file),
                    messages=5,
                    duration=5,
                )
            )
    assert result.received == 5
    assert histogram(result, "tls").get_total_count() == 1


async def test_refused_counts_and_stops() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await generate(LoadConfig(f"ws://127.0.0.1:{port}/", connections=2, duration=0.3))
    assert result.handshakes == 0
    assert set(result.errors) == {"refused"}
    assert result.errors["refused"] >= 2


async def test_stalled_server_times_out() -> None:
    # Accepts TCP and never answers the handshake.
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await generate(LoadConfig(f"ws://127.0.0.1:{port}/", timeout=0.2, duration=0.5))
        for writer in held:
            writer.close()
    assert result.errors["timeout"] >= 1
    assert result.handshakes == 0


async def test_stalled_replies_time_out() -> None:
    async def silent(ws: rapidws.ServerConnection) -> None:
        await ws.wait_closed()

    async with serving(silent) as url:
        result = await generate(LoadConfig(url, timeout=0.2, duration=0.7))
    assert result.errors["timeout"] >= 1
    assert result.handshakes >= 2  # a new connection after each timeout


async def test_reset_during_handshake() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await generate(LoadConfig(f"ws://127.0.0.1:{port}/", duration=0.3))
    assert result.handshakes == 0
    assert sum(result.errors.values()) >= 1
    assert set(result.errors) <= {"reset", "handshake"}


async def test_server_closes_with_error_code() -> None:
    class Closer(rapidws.Callbacks):
        def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
            connection.close_nowait(1011, "boom")

    async with serving(Closer()) as url:
        result = await generate(LoadConfig(url, duration=0.3))
    assert result.errors["close 1011"] >= 1


async def test_http_refusal() -> None:
    def refuse(connection: Any, request: Any) -> rapidws.Response:
        return rapidws.Response(503, "busy\n")

    async with serving(Echo(), process_request=refuse) as url:
        result = await generate(LoadConfig(url, duration=0.3))
    assert result.errors["http 503"] >= 1


async def test_client_flags_reach_the_server() -> None:
    requests: list[rapidws.Request] = []

    def record(connection: Any, request: rapidws.Request) -> None:
        requests.append(request)

    flags = ClientFlags(
        header=("X-Run: 7",), subprotocol=("chat",), origin="http://o.example", auth="ann:pw",
        compression=False,
    )  # fmt: skip
    async with serving(Echo(), process_request=record, subprotocols=["chat"]) as url:
        result = await generate(LoadConfig(url, client=flags, messages=5, duration=5))
    assert result.received == 5
    headers = requests[0].headers
    assert headers["X-Run"] == "7"
    assert headers["Sec-WebSocket-Protocol"] == "chat"
    assert headers["Origin"] == "http://o.example"
    assert headers["Authorization"].startswith("Basic ")
    assert "Sec-WebSocket-Extensions" not in headers


@pytest.fixture(scope="module")
def socks5_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with microsocks(tmp_path_factory.mktemp("proxy")) as port:
        yield f"socks5://{USER}:{PASSWORD}@127.0.0.1:{port}"


async def test_through_a_proxy(socks5_proxy: str) -> None:
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, client=ClientFlags(proxy=socks5_proxy), messages=5, duration=5)
        )
    assert result.received == 5
    # The proxy opened the TCP connection: only the whole handshake is timed.
    assert histogram(result, "handshake").get_total_count() == 1
    assert "tcp_connect" not in result.histograms


async def test_environment_proxy_unless_no_proxy(
    socks5_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("all_proxy", socks5_proxy)
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    async with serving(Echo()) as url:
        proxied = await generate(LoadConfig(url, messages=5, duration=5))
        direct = await generate(
            LoadConfig(url, client=ClientFlags(no_proxy=True), messages=5, duration=5)
        )
    assert "tcp_connect" not in proxied.histograms
    assert histogram(direct, "tcp_connect").get_total_count() == 1
    assert proxied.received == direct.received == 5


async def test_source_address() -> None:
    async with serving(Echo()) as url:
        result = await generate(LoadConfig(url, sources=["127.0.0.1"], messages=5, duration=5))
    assert result.received == 5


async def test_warmup_drops_early_measures() -> None:
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, workload="rate", rate=100, warmup=0.3, duration=1.2)
        )
    # About 0.9 s of 100 messages/s measured, not 1.2 s.
    assert result.received <= 100
    assert result.seconds == pytest.approx(0.9, abs=0.2)
    assert len(result.timeline) <= 1


@pytest.mark.virtual_clock
async def test_connections_opened_during_warmup_count() -> None:
    # Both connections open during the warm-up: their handshakes are left
    # out of the measures, but they did open (rapidws bench's "no connection
    # opened" looks at peak_open).
    loop = asyncio.get_running_loop()
    async with serving(Echo()) as url:
        result = await generate(
            LoadConfig(url, workload="rate", connections=2, rate=10, warmup=0.5, duration=1.5),
            clock=loop.time,
        )
    assert result.handshakes == 0
    assert "handshake" not in result.histograms
    assert result.peak_open == 2
    assert result.errors == {}
    # 1 s measured, at 2 x 10/s.
    assert 18 <= result.sent <= 22
