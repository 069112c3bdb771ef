"""The private event loop thread that runs every sync connection of a process.

A blocking connection is an asyncio connection run on this loop; each blocking
call hands a coroutine to the loop and waits for its result. One loop thread
serves all the connections of a process (not one thread per connection): a
thread costs a stack and a scheduler slot, and the asyncio layer already
multiplexes thousands of connections on one loop. The thread starts with the
first connection and stops, joined, when the last one is closed, so that no
thread is left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "loop_thread", "submit", "wait"]

T = TypeVar("T")


class LoopThread:
    """A lazily started event loop thread, shared through reference counting.

    :meth:`acquire` starts the thread if needed and counts a user;
    :meth:`release` uncounts one and, for the last, stops the loop. A stopped
    thread is *retired*: the next :meth:`acquire` starts a fresh one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def acquire(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        """Count one more user; return the loop and its thread, started if needed."""
        with self._lock:
            if self._loop is None or self._thread is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run, args=(loop,), name="rapidws-sync-loop", daemon=True
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
                self._loop = self._thread = None

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
        self._loop = self._thread = None
        self._users = 0


def _run(loop: asyncio.AbstractEventLoop) -> None:
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
        RuntimeError: when called from the loop thread itself, where waiting
            for the future would deadlock (a blocking call from code the loop runs).
    """
    if threading.current_thread() is thread:
        raise RuntimeError(
            "a rapidws.sync connection cannot be used from its own event loop thread: "
            "use the asyncio connection there"
        )
    return asyncio.run_coroutine_threadsafe(make(), loop)


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
