"""The sync client from many threads: sends never interleave, one receiver, timeouts, close."""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rapidws
import rapidws.sync
from rapidws import ConcurrencyError, ConnectionClosed, ConnectionClosedError
from rapidws.sync.connection import _waker

from .utils import TIMEOUT, ServerThread, closes_first_with, echo, until

# Each test runs with the loop thread on asyncio's loop and on uvloop's.
pytestmark = pytest.mark.usefixtures("sync_loop")


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``target`` on a thread; the list gets its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


class Collector:
    """A server handler that keeps every message of its connections."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.done = threading.Event()

    async def __call__(self, ws: Any) -> None:
        try:
            async for message in ws:
                self.messages.append(message)
        finally:
            self.done.set()


def test_send_from_8_threads_never_interleaves() -> None:
    # Whole, fragmented, generated and large messages (the large ones fill
    # the write buffer: flow control is on the path) sent at once.
    collector = Collector()
    threads_count, per_thread = 8, 12
    big = os.urandom(300_000)

    def messages(t: int) -> Iterator[tuple[Any, Any]]:
        # (what is sent, what the server must receive)
        for i in range(per_thread):
            tag = f"{t}:{i}:"
            kind = i % 4
            if kind == 0:
                yield tag + "text" * 100, tag + "text" * 100
            elif kind == 1:
                yield tag.encode() + big, tag.encode() + big
            elif kind == 2:
                fragments = [tag] + [f"f{k};" * 2000 for k in range(5)]
                yield fragments, "".join(fragments)
            else:
                chunks = [tag.encode()] + [big[k::7] for k in range(7)]
                yield (c for c in chunks), b"".join(chunks)

    expected: collections.Counter[Any] = collections.Counter()
    work = {t: list(messages(t)) for t in range(threads_count)}
    for items in work.values():
        expected.update(received for _, received in items)

    with ServerThread(collector, max_size=None, compression=None) as server:
        with rapidws.sync.connect(server.uri, compression=None) as ws:
            start = threading.Barrier(threads_count)

            def sender(t: int) -> None:
                start.wait(TIMEOUT)
                for sent, _ in work[t]:
                    ws.send(sent)

            started = [in_thread(functools.partial(sender, t)) for t in range(threads_count)]
            for thread, outcome in started:
                thread.join(TIMEOUT * 4)
                assert outcome == [None]
        assert collector.done.wait(TIMEOUT)
    assert collections.Counter(collector.messages) == expected
    # And each thread's messages arrived in the order it sent them.
    for t in range(threads_count):
        tag = f"{t}:".encode()
        mine = [
            m if isinstance(m, bytes) else m.encode()
            for m in collector.messages
            if (m if isinstance(m, bytes) else m.encode()).startswith(tag)
        ]
        assert mine == [r if isinstance(r, bytes) else r.encode() for _, r in work[t]]


def test_close_from_another_thread_wakes_a_blocked_recv() -> None:
    with ServerThread(echo) as server:
        ws = rapidws.sync.connect(server.uri)
        thread, outcome = in_thread(ws.recv)
        until(ws._recv_lock.locked)  # the thread is waiting in recv()
        time.sleep(0.05)
        ws.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        (exc,) = outcome
        assert isinstance(exc, ConnectionClosed)
        assert ws.close_code == 1000


def test_close_from_another_thread_wakes_an_iteration() -> None:
    with ServerThread(echo) as server:
        ws = rapidws.sync.connect(server.uri)
        thread, outcome = in_thread(lambda: list(ws))
        until(ws._recv_lock.locked)
        ws.close()
        thread.join(TIMEOUT)
        assert outcome == [[]]  # a normal closure ends the iteration


def test_recv_from_two_threads_is_refused() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        thread, outcome = in_thread(lambda: ws.recv(timeout=TIMEOUT))
        until(ws._recv_lock.locked)
        with pytest.raises(ConcurrencyError, match="another thread"):
            ws.recv(timeout=TIMEOUT)
        with pytest.raises(ConcurrencyError):
            next(iter(ws))
        # The first receiver was not disturbed.
        ws.send("for the first")
        thread.join(TIMEOUT)
        assert outcome == ["for the first"]


def test_recv_timeout_keeps_the_connection_usable() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.1)
        assert 0.05 < time.monotonic() - started < TIMEOUT
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0)
        ws.send("late")
        assert ws.recv(timeout=TIMEOUT) == "late"


def test_recv_timeouts_lose_no_message() -> None:
    # Messages arrive while short timeouts expire: none may be lost to the race.
    count = 300

    async def trickle(ws: Any) -> None:
        await ws.recv()
        for i in range(count):
            await ws.send(str(i))
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await ws.recv()

    with ServerThread(trickle) as server, rapidws.sync.connect(server.uri) as ws:
        ws.send("go")
        received: list[str] = []
        timeouts = 0
        deadline = time.monotonic() + TIMEOUT * 2
        while len(received) < count and time.monotonic() < deadline:
            try:
                received.append(str(ws.recv(timeout=0.0005)))
            except TimeoutError:
                timeouts += 1
        assert received == [str(i) for i in range(count)]
        ws.send("end")


def test_ping_timeout() -> None:
    # A server whose loop is blocked answers no ping.
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        assert server.loop is not None
        server.loop.call_soon_threadsafe(time.sleep, 0.5)
        with pytest.raises(TimeoutError):
            ws.ping(timeout=0.1)
        assert ws.ping(timeout=TIMEOUT) > 0  # usable afterwards


async def stop_reading(ws: Any, reading: threading.Event) -> None:
    """A handler that blocks its server's loop until ``reading`` is set: nothing is read."""
    reading.wait(TIMEOUT * 2)
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


def test_send_timeout_when_the_server_stops_reading() -> None:
    reading = threading.Event()
    handler = functools.partial(stop_reading, reading=reading)
    with ServerThread(handler, max_size=None, compression=None) as server:
        ws = rapidws.sync.connect(server.uri, compression=None, max_size=None)
        chunk = os.urandom(1 << 20)
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                for _ in range(200):  # far more than the socket buffers hold
                    ws.send(chunk, timeout=0.2)
            assert time.monotonic() - started < TIMEOUT
        finally:
            reading.set()
        ws.close()


def times_out_then_fails(send_half: Callable[[rapidws.sync.ClientConnection], object]) -> None:
    """Check that ``send_half(ws)``, sending a message to a server that stops reading, times out.

    Half a message went out: the connection fails with 1011 then.
    """
    reading = threading.Event()
    handler = functools.partial(stop_reading, reading=reading)
    with ServerThread(handler, max_size=None, compression=None) as server:
        ws = rapidws.sync.connect(server.uri, compression=None, max_size=None)
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                send_half(ws)
            assert time.monotonic() - started < TIMEOUT
        finally:
            reading.set()
        with pytest.raises(ConnectionClosedError):
            for _ in range(10):
                ws.send("after", timeout=TIMEOUT)
                time.sleep(0.05)
        ws.close()
        assert ws.close_code in (1006, 1011)


def test_fragments_timeout_fails_the_connection() -> None:
    chunk = os.urandom(1 << 20)
    times_out_then_fails(lambda ws: ws.send((chunk for _ in range(200)), timeout=0.3))


def test_fragments_generator_error_is_raised_and_fails_the_connection() -> None:
    collector = Collector()

    def fragments() -> Iterator[str]:
        yield "first"
        yield "second"
        raise ValueError("the source broke")

    with ServerThread(collector) as server:
        ws = rapidws.sync.connect(server.uri)
        with pytest.raises(ValueError, match="the source broke"):
            ws.send(fragments())
        ws.close()
        assert collector.done.wait(TIMEOUT)
    assert collector.messages == []
    assert ws.close_code == 1011


def test_fragments_of_mixed_types_raise_type_error() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        with pytest.raises(TypeError):
            ws.send(["text", b"bytes"])
        with pytest.raises(TypeError):
            ws.send({"a": 1})
        with pytest.raises(TypeError):
            ws.send(42)  # type: ignore[arg-type]


def test_threads_each_with_their_own_connection() -> None:
    with ServerThread(echo) as server:

        def client(n: int) -> list[Any]:
            with rapidws.sync.connect(server.uri) as ws:
                replies = []
                for i in range(20):
                    ws.send(f"{n}-{i}")
                    replies.append(ws.recv(timeout=TIMEOUT))
                return replies

        started = [in_thread(functools.partial(client, n)) for n in range(8)]
        for n, (thread, outcome) in enumerate(started):
            thread.join(TIMEOUT * 2)
            assert outcome == [[f"{n}-{i}" for i in range(20)]]


# The hand-offs between the calling threads and the loop thread.


def test_messages_sent_without_waiting_arrive_whole_and_in_order() -> None:
    # Small messages go out through the outbox, without waiting for the loop;
    # large ones, over the write limit, wait for the write buffer: both kinds
    # mixed keep their order.
    collector = Collector()
    messages = [os.urandom(5000) if i % 50 == 0 else f"m{i}" for i in range(2000)]
    with ServerThread(collector, compression=None) as server:
        with rapidws.sync.connect(server.uri, compression=None, write_limit=4096) as ws:
            for message in messages:
                ws.send(message)
        assert collector.done.wait(TIMEOUT)
    assert collector.messages == messages


def test_a_buffer_changed_after_send_goes_out_as_it_was() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        buffer = bytearray(b"before")
        ws.send(buffer)
        ws.send(memoryview(buffer)[:3])
        buffer[:] = b"AFTER!"
        assert ws.recv(timeout=TIMEOUT) == b"before"
        assert ws.recv(timeout=TIMEOUT) == b"bef"


def test_read_side_flow_control_pauses_and_resumes() -> None:
    # Messages that nobody takes stop the reading at max_queue; taking them
    # lets it go on, to the last one.
    count = 200

    async def burst(ws: Any) -> None:
        for i in range(count):
            await ws.send(str(i))
        await ws.recv()

    with (
        ServerThread(burst) as server,
        rapidws.sync.connect(server.uri, max_queue=4) as ws,
    ):
        connection = ws._connection
        until(lambda: connection._reading_paused)
        assert len(connection._messages) < count
        assert [ws.recv(timeout=TIMEOUT) for _ in range(count)] == [str(i) for i in range(count)]
        ws.send("done")


def test_a_stray_wake_up_does_not_end_a_wait() -> None:
    # A wake-up left over (a wait interrupted by Ctrl-C just as a message came)
    # makes the next wait look again, and wait on.
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        _waker().wake()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        assert time.monotonic() - started >= 0.15
        ws.send("next")
        assert ws.recv(timeout=TIMEOUT) == "next"


def test_send_after_close_raises_connection_closed() -> None:
    with ServerThread(echo) as server:
        ws = rapidws.sync.connect(server.uri)
        ws.close()
        with pytest.raises(ConnectionClosed):
            ws.send("late")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)


def test_send_when_the_server_closed_raises_connection_closed() -> None:
    with ServerThread(closes_first_with(1001)) as server:
        ws = rapidws.sync.connect(server.uri)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        with pytest.raises(ConnectionClosed):
            ws.send("late")
        ws.close()
        assert ws.close_code == 1001
