"""The event client, WebSocketApp, against real servers: callbacks, threads, send, reconnection.

``run_forever()`` tests use a server on its own thread (tests/sync/utils.py);
``await app.run()`` tests use a server on the test's loop. Waits in real time
assert order and generous upper bounds only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any

import pytest

import rapidws
import rapidws.sync
from rapidws import (
    Backoff,
    ConnectionClosedError,
    InvalidState,
    InvalidStatus,
    Response,
    ServerConnection,
    WebSocketApp,
)

from .utils import TIMEOUT, ServerThread, closes_first_with, echo, until


class Log:
    """Callbacks that record every event, with the thread each ran in."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def record(self, *event: Any) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_open": lambda app: self.record("open", app.ready_state),
            "on_message": lambda app, m: self.record("message", m),
            "on_close": lambda app, code, reason: self.record("close", code, reason),
            "on_error": lambda app, exc: self.record("error", exc),
            "on_ping": lambda app, payload: self.record("ping", payload),
            "on_pong": lambda app, payload: self.record("pong", payload),
            "on_reconnect": lambda app, attempt, delay, cause: self.record(
                "reconnect", attempt, type(cause)
            ),
        }

    def kinds(self) -> list[Any]:
        return [event[0] for event in self.events]


def test_run_forever_calls_back_in_its_own_thread() -> None:
    log = Log()

    def on_open(app: WebSocketApp) -> None:
        log.record("open", app.ready_state)
        app.send("one")
        app.send(b"two")

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        log.record("message", message)
        if message == b"two":
            app.close(1000, "done")

    with ServerThread(echo) as server:
        app = WebSocketApp(
            server.uri, **{**log.callbacks(), "on_open": on_open, "on_message": on_message}
        )
        assert app.ready_state == WebSocketApp.CLOSED and app.url == server.uri
        app.run_forever()
    assert log.events == [
        ("open", WebSocketApp.OPEN),
        ("message", "one"),
        ("message", b"two"),
        ("close", 1000, "done"),
    ]
    assert log.threads == {threading.get_ident()}
    assert app.ready_state == WebSocketApp.CLOSED and app.connection is None


def test_start_runs_in_a_background_thread_and_close_stops_it() -> None:
    log = Log()
    with ServerThread(echo) as server:
        app = WebSocketApp(server.uri, **log.callbacks())
        thread = app.start()
        until(lambda: app.ready_state == WebSocketApp.OPEN)
        app.send("from main")
        until(lambda: ("message", "from main") in log.events)
        app.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert log.kinds() == ["open", "message", "close"]
    assert log.threads == {thread.ident}


def test_send_from_many_threads_sends_each_message_whole() -> None:
    received: list[bytes] = []
    done = threading.Event()
    threads, per_thread = 8, 50

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        assert isinstance(message, bytes)
        received.append(message)
        if len(received) == threads * per_thread:
            done.set()
            app.close()

    def sender(app: WebSocketApp, n: int) -> None:
        for i in range(per_thread):
            app.send(bytes([n]) * (1000 + i))

    with ServerThread(echo) as server:
        app = WebSocketApp(server.uri, on_message=on_message)
        runner = app.start()
        until(lambda: app.ready_state == WebSocketApp.OPEN)
        senders = [threading.Thread(target=sender, args=(app, n)) for n in range(threads)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(TIMEOUT)
        assert done.wait(TIMEOUT)
        runner.join(TIMEOUT)
    assert len(received) == threads * per_thread
    for message in received:
        assert message == message[:1] * len(message)  # no interleaving
    for n in range(threads):
        # Each thread's messages in its order.
        sizes = [len(m) for m in received if m[0] == n]
        assert sizes == list(range(1000, 1000 + per_thread))


def test_send_of_a_wrong_type_raises_in_the_caller() -> None:
    errors: list[BaseException] = []

    def on_open(app: WebSocketApp) -> None:
        try:
            app.send(42)  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)

    with ServerThread(echo) as server:
        app = WebSocketApp(server.uri, on_open=on_open)
        runner = app.start()
        until(lambda: bool(errors))
        with pytest.raises(TypeError):
            app.send(3.5)  # type: ignore[arg-type]
        app.close()
        runner.join(TIMEOUT)
    assert len(errors) == 1


def test_send_when_not_open_raises() -> None:
    app = WebSocketApp("ws://127.0.0.1:1/")
    with pytest.raises(InvalidState):
        app.send("too early")


def test_buffered_amount_counts_what_is_not_written_yet() -> None:
    release = threading.Event()
    chunk = os.urandom(512 * 1024)  # incompressible
    amounts: list[int] = []

    async def slow_reader(ws: ServerConnection) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, TIMEOUT)
        async for _ in ws:
            pass

    def on_open(app: WebSocketApp) -> None:
        for _ in range(64):
            app.send(chunk)
        amounts.append(app.buffered_amount)

    with ServerThread(slow_reader) as server:
        app = WebSocketApp(server.uri, on_open=on_open)
        runner = app.start()
        until(lambda: bool(amounts))
        # 32 MiB cannot all fit in the kernel's buffers and the server's queue.
        assert amounts[0] > 1 << 20
        until(lambda: app.buffered_amount > 1 << 20)
        release.set()
        until(lambda: app.buffered_amount == 0, TIMEOUT * 2)
        app.close()
        runner.join(TIMEOUT)


def test_pings_and_pongs_from_the_server() -> None:
    async def pinger(ws: ServerConnection) -> None:
        await ws.ping(b"are you there")
        await ws.pong(b"heartbeat")
        await ws.send("bye")
        await ws.wait_closed()

    log = Log()
    with ServerThread(pinger) as server:
        callbacks = log.callbacks()
        app = WebSocketApp(
            server.uri,
            **{
                **callbacks,
                "on_message": lambda app, m: (callbacks["on_message"](app, m), app.close()),
            },
        )
        app.run_forever()
    assert log.kinds() == ["open", "ping", "pong", "message", "close"]
    assert log.events[1:3] == [("ping", b"are you there"), ("pong", b"heartbeat")]


def test_callback_errors_go_to_on_error_and_the_connection_goes_on() -> None:
    log = Log()

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        if message == "boom":
            raise ValueError("boom")
        log.record("message", message)
        app.close()

    with ServerThread(echo) as server:
        app = WebSocketApp(
            server.uri,
            **{
                **log.callbacks(),
                "on_open": lambda app: (app.send("boom"), app.send("fine")),
                "on_message": on_message,
            },
        )
        app.run_forever()
    assert log.kinds() == ["error", "message", "close"]
    assert isinstance(log.events[0][1], ValueError)


def test_without_on_error_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def on_open(app: WebSocketApp) -> None:
        app.close()
        raise RuntimeError("in on_open")

    with ServerThread(echo) as server:
        WebSocketApp(server.uri, on_open=on_open).run_forever()
    assert "WebSocketApp callback failed" in caplog.text and "in on_open" in caplog.text


def test_refused_connection_goes_to_on_error_and_returns() -> None:
    log = Log()

    def process_request(ws: ServerConnection, request: Any) -> Response:
        return Response(403, "no\n")

    with ServerThread(echo, process_request=process_request) as server:
        WebSocketApp(server.uri, **log.callbacks(), reconnect=True).run_forever()
    [(kind, exc)] = log.events
    assert kind == "error" and isinstance(exc, InvalidStatus) and exc.response.status == 403


def test_reconnects_and_opens_again() -> None:
    log = Log()
    opens = 0

    def on_open(app: WebSocketApp) -> None:
        nonlocal opens
        opens += 1
        # Not ready_state: the first connection may be closing already.
        log.record("open")
        if opens == 2:
            app.send("again")

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        log.record("message", message)
        app.close()

    with ServerThread(closes_first_with(1012)) as server:
        app = WebSocketApp(
            server.uri,
            **{**log.callbacks(), "on_open": on_open, "on_message": on_message},
            reconnect=Backoff(initial=0.05),
        )
        app.run_forever()
    assert log.events == [
        ("open",),
        ("close", 1012, "first"),
        ("reconnect", 1, ConnectionClosedError),
        ("open",),
        ("message", "again"),
        ("close", 1000, ""),
    ]


def test_close_not_worth_retrying_ends_with_on_error() -> None:
    log = Log()
    with ServerThread(closes_first_with(1008)) as server:
        WebSocketApp(server.uri, **log.callbacks(), reconnect=True).run_forever()
    assert log.kinds() == ["open", "close", "error"]
    assert log.events[1] == ("close", 1008, "first")
    assert isinstance(log.events[2][1], ConnectionClosedError)


def test_close_stops_a_wait_to_reconnect() -> None:
    log = Log()
    with ServerThread(echo) as server:
        port = server.port
    # The server is gone: connections are refused, the app waits to retry.
    app = WebSocketApp(
        f"ws://127.0.0.1:{port}/", **log.callbacks(), reconnect=Backoff(initial=60, max_delay=60)
    )
    runner = app.start()
    until(lambda: "reconnect" in log.kinds())
    assert app.ready_state == WebSocketApp.CONNECTING
    start = time.monotonic()
    app.close()
    runner.join(TIMEOUT)
    assert not runner.is_alive() and time.monotonic() - start < TIMEOUT
    assert log.kinds() == ["reconnect"]


def test_a_blocking_callback_holds_back_only_its_own_connection() -> None:
    blocked, release = threading.Event(), threading.Event()
    replies: list[str | bytes] = []

    def block(app: WebSocketApp, message: str | bytes) -> None:
        blocked.set()
        release.wait(TIMEOUT)
        app.close()

    def chat(app: WebSocketApp, message: str | bytes) -> None:
        replies.append(message)
        if len(replies) < 20:
            app.send(str(len(replies)))
        else:
            app.close()

    with ServerThread(echo) as server:
        slow = WebSocketApp(server.uri, on_open=lambda app: app.send("x"), on_message=block)
        runner = slow.start()
        assert blocked.wait(TIMEOUT)
        # The other app exchanges its messages while the first one's callback blocks.
        WebSocketApp(server.uri, on_open=lambda app: app.send("0"), on_message=chat).run_forever()
        assert not release.is_set() and slow.ready_state == WebSocketApp.OPEN
        release.set()
        runner.join(TIMEOUT)
    assert replies == [str(i) for i in range(20)]


def test_run_forever_inside_a_running_loop_uses_a_thread() -> None:
    threads: list[int] = []

    def on_open(app: WebSocketApp) -> None:
        threads.append(threading.get_ident())
        app.close()

    async def cell() -> None:
        # As in a notebook: a loop runs in this thread, and run_forever() blocks it.
        WebSocketApp(server.uri, on_open=on_open).run_forever()

    with ServerThread(echo) as server:
        asyncio.run(asyncio.wait_for(cell(), TIMEOUT))
    assert len(threads) == 1 and threads[0] != threading.get_ident()


def test_exported() -> None:
    assert rapidws.WebSocketApp is rapidws.sync.WebSocketApp is WebSocketApp
    assert "WebSocketApp" in rapidws.__all__ and "Backoff" in rapidws.__all__


# await app.run(): the same callbacks in the running loop.


async def test_run_in_the_loop_with_coroutine_callbacks() -> None:
    events: list[Any] = []

    async def on_open(app: WebSocketApp) -> None:
        await asyncio.sleep(0)
        events.append(("open", app.ready_state))
        app.send("async")

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        events.append(("message", message, app.buffered_amount >= 0))
        app.close(1000, "done")

    async def on_close(app: WebSocketApp, code: int, reason: str) -> None:
        events.append(("close", code, reason))

    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        app = WebSocketApp(
            rapidws.connect(f"ws://127.0.0.1:{server.port}/", compression=None),
            on_open=on_open,
            on_message=on_message,
            on_close=on_close,
        )
        await asyncio.wait_for(app.run(), TIMEOUT)
    assert events == [("open", 1), ("message", "async", True), ("close", 1000, "done")]


async def test_run_with_async_ping_callback_and_async_error_handler() -> None:
    events: list[Any] = []

    async def pinger(ws: ServerConnection) -> None:
        await ws.ping(b"p")
        await ws.send("go")
        await ws.wait_closed()

    async def on_ping(app: WebSocketApp, payload: bytes) -> None:
        events.append(("ping", payload))

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        app.close()
        raise ValueError(str(message))

    async def on_error(app: WebSocketApp, exc: Exception) -> None:
        events.append(("error", str(exc)))

    async with rapidws.serve(pinger, "127.0.0.1", 0) as server:
        app = WebSocketApp(
            f"ws://127.0.0.1:{server.port}/",
            on_ping=on_ping,
            on_message=on_message,
            on_error=on_error,
        )
        await asyncio.wait_for(app.run(), TIMEOUT)
        await asyncio.sleep(0)  # the error handler's task
    assert events == [("ping", b"p"), ("error", "go")]


def test_interrupt_in_a_callback_closes_with_going_away() -> None:
    closes: list[int | None] = []

    async def record(ws: ServerConnection) -> None:
        await ws.send("hi")
        await ws.wait_closed()
        closes.append(ws.close_code)

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the callbacks' thread

    with ServerThread(record) as server:
        app = WebSocketApp(server.uri, on_message=on_message)
        with pytest.raises(KeyboardInterrupt):
            app.run_forever()
        assert app.ready_state == WebSocketApp.CLOSED
        until(lambda: bool(closes))
    assert closes == [1001]


def test_close_before_the_session_starts_stops_it() -> None:
    log = Log()
    # A server that never answers the handshake: the app waits until closed.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        app = WebSocketApp(f"ws://127.0.0.1:{silent.getsockname()[1]}/", **log.callbacks())
        app.close()  # not running: nothing to do
        runner = app.start()
        app.close()
        runner.join(TIMEOUT)
    assert not runner.is_alive() and log.events == []


def test_interrupt_in_a_callback_called_as_the_message_is_read() -> None:
    # The message comes after on_open, when on_message is called straight
    # from the read: Ctrl-C still ends run_forever() the same way.
    closes: list[int | None] = []

    async def answer(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send("hi")
        await ws.wait_closed()
        closes.append(ws.close_code)

    def on_message(app: WebSocketApp, message: str | bytes) -> None:
        raise KeyboardInterrupt

    with ServerThread(answer) as server:
        app = WebSocketApp(server.uri, on_open=lambda app: app.send("go"), on_message=on_message)
        with pytest.raises(KeyboardInterrupt):
            app.run_forever()
        assert app.ready_state == WebSocketApp.CLOSED
        until(lambda: bool(closes))
    assert closes == [1001]


async def test_coroutine_callbacks_keep_the_order_of_the_messages() -> None:
    # A callback that awaits holds the next messages back until it is done,
    # whether they came in the same read or later ones.
    count = 50
    received: list[str | bytes] = []

    async def burst(ws: ServerConnection) -> None:
        await ws.recv()
        for i in range(count):
            await ws.send(str(i))
        await ws.wait_closed()

    async def on_message(app: WebSocketApp, message: str | bytes) -> None:
        if int(message) % 7 == 0:
            await asyncio.sleep(0.001)
        received.append(message)
        if len(received) == count:
            app.close()

    with ServerThread(burst) as server:
        app = WebSocketApp(server.uri, on_open=lambda app: app.send("go"), on_message=on_message)
        await asyncio.wait_for(app.run(), TIMEOUT)
    assert received == [str(i) for i in range(count)]
