"""Helpers for the sync client's tests: an asyncio server on a background thread."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import rapidws

# Every wait that should succeed quickly is bounded by this.
TIMEOUT = 5.0 * float(os.environ.get("RAPIDWS_TESTS_TIMEOUT_FACTOR", "1"))

# The name of the sync layer's loop thread.
LOOP_THREAD_NAME = "rapidws-sync-loop"


class ServerThread:
    """``rapidws.serve(handler, "127.0.0.1", 0, **options)`` on its own thread and loop.

    ``with ServerThread(handler) as server:`` serves until the block ends;
    ``server.uri`` is its ``ws://`` URI.
    """

    def __init__(self, handler: Any, *, secure: bool = False, **options: Any) -> None:
        self.handler = handler
        self.options = options
        self.scheme = "wss" if secure else "ws"
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)

    @property
    def uri(self) -> str:
        """The server's URI on 127.0.0.1."""
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        async with rapidws.serve(self.handler, "127.0.0.1", 0, **self.options) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(TIMEOUT), "the server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the server did not stop"


async def echo(ws: Any) -> None:
    """Send every message back."""
    async for message in ws:
        await ws.send(message)


def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` every 5 ms for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def loop_threads() -> list[threading.Thread]:
    """The sync layer's loop threads that are alive."""
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD_NAME]


def closes_first_with(code: int) -> Any:
    """A handler that closes its first connection with ``code``, then echoes."""
    count = 0

    async def handler(ws: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            await ws.close(code, "first")
        else:
            await echo(ws)

    return handler
