"""The private event loop thread that runs every sync connection of a process.

A blocking connection is an asyncio connection run on this loop; each blocking
call hands a coroutine to the loop and waits for its result. One loop thread
serves all the connections of a process (not one thread per connection): a
thread costs a stack and a scheduler slot, and the asyncio layer already
multiplexes thousands of connections on one loop. The thread starts with the
first connection and stops, joined, when the last one is closed, so that no
thread is left behind. The loop is uvloop's when it is installed: every
message crosses it, and uvloop's round of the loop costs a fraction of
asyncio's.

Other threads wake the loop through its :class:`Doorbell`, a socket written
*without holding the GIL*: the loop thread, woken, runs at once instead of
waking only to wait for the GIL that the waker still holds (two more context
switches per wake-up; a request-reply makes two).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Doorbell", "LoopThread", "check_thread", "loop_thread", "submit", "wait"]

T = TypeVar("T")


class Doorbell:
    """Runs callbacks on a loop at the request of other threads, in order.

    ``loop.call_soon_threadsafe()`` wakes the loop while holding the GIL
    (uvloop's does); :meth:`ring` writes to a socket, a system call made
    without it. Rings that come before the loop answers share one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the bell of ``loop``, before its thread runs it."""
        self._loop = loop
        self._calls: collections.deque[Callable[[], object]] = collections.deque()
        self._rung = False  # a wake-up is on its way and the loop has not answered
        self._inside, self._outside = socket.socketpair()
        self._inside.setblocking(False)
        self._outside.setblocking(False)
        self._watched = True
        try:
            loop.add_reader(self._inside.fileno(), self._answer)
        except NotImplementedError:
            # Windows' proactor loop watches no socket: its own thread-safe
            # call wakes it instead.
            self._watched = False

    def ring(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on the loop soon; from any thread."""
        self._calls.append(callback)
        if not self._rung:
            # After the append: an answer that started before it cleared the
            # flag first, so either it runs this callback or a new one will.
            self._rung = True
            if not self._watched:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self._loop.call_soon_threadsafe(self._answer)
                return
            # A full socket already wakes the loop; a closed one means the
            # loop has stopped, with nothing left to run.
            with contextlib.suppress(OSError):
                self._outside.send(b"\0")

    def _answer(self) -> None:
        # The wake-ups read first, then the flag cleared: a ring between the
        # two would leave the flag set with no wake-up on its way, and every
        # later ring silent.
        with contextlib.suppress(BlockingIOError):
            self._inside.recv(4096)
        self._rung = False
        calls = self._calls
        while calls:
            callback = calls.popleft()
            try:
                callback()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "rang callback failed", "exception": exc}
                )

    def close(self) -> None:
        """Stop answering: the loop has stopped."""
        if self._watched:
            self._loop.remove_reader(self._inside.fileno())
        self._inside.close()
        self._outside.close()


class LoopThread:
    """A lazily started event loop thread, shared through reference counting.

    :meth:`acquire` starts the thread if needed and counts a user;
    :meth:`release` uncounts one and, for the last, stops the loop. A stopped
    thread is *retired*: the next :meth:`acquire` starts a fresh one.
    """

    def __init__(self) -> None:
        #: Makes the loop of each new thread: uvloop's when installed.
        self.new_loop: Callable[[], asyncio.AbstractEventLoop] = _default_loop_factory()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: The doorbell of the running loop, while there is one.
        self.doorbell: Doorbell | None = None
        self._users = 0

    def acquire(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        """Count one more user; return the loop and its thread, started if needed."""
        with self._lock:
            if self._loop is None or self._thread is None:
                loop = self.new_loop()
                self.doorbell = Doorbell(loop)
                thread = threading.Thread(
                    target=_run, args=(loop, self.doorbell), name="rapidws-sync-loop", daemon=True
                )
                # Callbacks may be queued before run_forever() starts: nothing
                # needs to wait for the thread here.
                thread.start()
                self._loop, self._thread = loop, thread
            self._users += 1
            return self._loop, self._thread

    def release(self) -> None:
        """Count one user less; the last one stops the loop (its thread then ends)."""
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = self._thread = self.doorbell = None

    def join_if_retired(self, thread: threading.Thread, timeout: float = 10.0) -> None:
        """Wait for ``thread`` to end if it was stopped; the current one goes on.

        The last close() waits for its end: no thread is left behind. The
        timeout only guards against a bug: a retired loop has nothing left to
        do but cancel leftovers.
        """
        if thread is not self._thread and thread is not threading.current_thread():
            thread.join(timeout)

    def _forget(self) -> None:
        # In a forked child: the parent's loop thread does not exist here.
        self._lock = threading.Lock()
        self._loop = self._thread = self.doorbell = None
        self._users = 0


def _default_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(loop: asyncio.AbstractEventLoop, doorbell: Doorbell) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        # Stopped by the last release(): every connection is closed. Clean up
        # what remains, including the default executor's resolver threads
        # (getaddrinfo for host names), so that they do not outlive the loop.
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        doorbell.close()
        asyncio.set_event_loop(None)
        loop.close()


def submit(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    make: Callable[[], Coroutine[Any, Any, T]],
) -> concurrent.futures.Future[T]:
    """Schedule the coroutine ``make()`` on ``loop``, whose thread is ``thread``.

    ``make`` is called only once the work is accepted: no coroutine is left
    unawaited when it is refused.

    Raises:
        RuntimeError: when called from the loop thread itself (see :func:`check_thread`).
    """
    check_thread(thread)
    return asyncio.run_coroutine_threadsafe(make(), loop)


def check_thread(thread: threading.Thread) -> None:
    """Refuse a blocking call from ``thread``, the loop thread.

    Raises:
        RuntimeError: when called from ``thread``, where waiting for the loop
            would deadlock (a blocking call from code the loop runs).
    """
    if threading.get_ident() == thread.ident:
        raise RuntimeError(
            "a rapidws.sync connection cannot be used from its own event loop thread: "
            "use the asyncio connection there"
        )


def wait(future: concurrent.futures.Future[T]) -> T:
    """Wait for ``future``'s result; on an interruption (Ctrl-C), cancel its work too."""
    try:
        return future.result()
    except BaseException:
        future.cancel()  # a no-op once it is done
        raise


#: The loop thread shared by every sync connection of this process.
loop_thread = LoopThread()

if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=loop_thread._forget)
