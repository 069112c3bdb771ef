"""The loop thread: shared and retired, its doorbell, its loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import uvloop

from rapidws.sync.loop import LoopThread, check_thread
from tests.conftest import LOOPS

from .utils import TIMEOUT


def started(loop_thread: LoopThread, new_loop: Any) -> tuple[asyncio.AbstractEventLoop, Any]:
    """Start ``loop_thread`` on loops from ``new_loop``; return its loop and thread."""
    loop_thread.new_loop = new_loop
    return loop_thread.acquire()


def stop(loop_thread: LoopThread, thread: threading.Thread) -> None:
    """Let ``loop_thread`` go, and wait for its thread's end."""
    loop_thread.release()
    loop_thread.join_if_retired(thread, TIMEOUT)
    assert not thread.is_alive()


def test_doorbell_runs_each_threads_calls_on_the_loop_in_order(sync_loop: str) -> None:
    loop_thread = LoopThread()
    _, thread = started(loop_thread, LOOPS[sync_loop])
    doorbell = loop_thread.doorbell
    assert doorbell is not None
    threads_count, per_thread = 4, 500
    calls: list[tuple[int, int]] = []
    done = threading.Event()
    where: set[threading.Thread] = set()

    def call(t: int, i: int) -> None:
        where.add(threading.current_thread())
        calls.append((t, i))
        if len(calls) == threads_count * per_thread:
            done.set()

    def ring(t: int) -> None:
        for i in range(per_thread):
            doorbell.ring(functools.partial(call, t, i))

    ringers = [threading.Thread(target=ring, args=(t,)) for t in range(threads_count)]
    for ringer in ringers:
        ringer.start()
    for ringer in ringers:
        ringer.join(TIMEOUT)
    try:
        assert done.wait(TIMEOUT)
        assert where == {thread}
        for t in range(threads_count):
            assert [i for u, i in calls if u == t] == list(range(per_thread))
    finally:
        stop(loop_thread, thread)


def test_a_failing_call_is_reported_and_the_next_ones_run(sync_loop: str) -> None:
    loop_thread = LoopThread()
    loop, thread = started(loop_thread, LOOPS[sync_loop])
    reported: list[Any] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    doorbell = loop_thread.doorbell
    assert doorbell is not None
    done = threading.Event()

    def fail() -> None:
        raise ValueError("boom")

    doorbell.ring(fail)
    doorbell.ring(done.set)
    try:
        assert done.wait(TIMEOUT)
        assert [type(exc) for exc in reported] == [ValueError]
    finally:
        stop(loop_thread, thread)


def test_a_ring_after_the_loop_stopped_is_ignored(sync_loop: str) -> None:
    loop_thread = LoopThread()
    _, thread = started(loop_thread, LOOPS[sync_loop])
    doorbell = loop_thread.doorbell
    assert doorbell is not None
    stop(loop_thread, thread)
    assert loop_thread.doorbell is None
    doorbell.ring(lambda: None)  # the socket is closed: nothing raises


def test_blocking_calls_from_the_loop_thread_are_refused(sync_loop: str) -> None:
    loop_thread = LoopThread()
    loop, thread = started(loop_thread, LOOPS[sync_loop])
    check_thread(thread)  # another thread: allowed
    outcome: list[BaseException] = []
    done = threading.Event()

    def on_loop() -> None:
        try:
            check_thread(thread)
        except RuntimeError as exc:
            outcome.append(exc)
        done.set()

    loop.call_soon_threadsafe(on_loop)
    try:
        assert done.wait(TIMEOUT)
        assert len(outcome) == 1 and "own event loop thread" in str(outcome[0])
    finally:
        stop(loop_thread, thread)


def test_the_loop_is_uvloops_when_installed() -> None:
    assert LoopThread().new_loop is uvloop.new_event_loop


def test_no_ring_is_lost_while_the_loop_answers(sync_loop: str) -> None:
    # Threads that each ring and wait for their call, many times over: rings
    # land at every point of the loop's answers, and each one is heard.
    loop_thread = LoopThread()
    _, thread = started(loop_thread, LOOPS[sync_loop])
    doorbell = loop_thread.doorbell
    assert doorbell is not None
    failures: list[int] = []

    def ring_and_wait(t: int) -> None:
        for _ in range(300):
            called = threading.Event()
            doorbell.ring(called.set)
            if not called.wait(TIMEOUT):
                failures.append(t)
                return

    ringers = [threading.Thread(target=ring_and_wait, args=(t,)) for t in range(4)]
    for ringer in ringers:
        ringer.start()
    for ringer in ringers:
        ringer.join(TIMEOUT * 2)
    try:
        assert failures == []
    finally:
        stop(loop_thread, thread)


class _Unwatching(asyncio.SelectorEventLoop):
    """A loop that watches no socket, as Windows' proactor loop."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


def test_doorbell_of_a_loop_that_watches_no_socket() -> None:
    loop_thread = LoopThread()
    _, thread = started(loop_thread, _Unwatching)
    doorbell = loop_thread.doorbell
    assert doorbell is not None
    called = threading.Event()
    try:
        for _ in range(3):
            called.clear()
            doorbell.ring(called.set)
            assert called.wait(TIMEOUT)
    finally:
        stop(loop_thread, thread)
    doorbell.ring(lambda: None)  # the loop is closed: nothing raises
