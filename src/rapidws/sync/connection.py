"""A blocking, thread-safe WebSocket connection: an asyncio connection on the loop thread.

Every method hands a coroutine of the asyncio connection to the private loop
thread (:mod:`rapidws.sync.loop`) and waits for its result, so the protocol
rules, flow control, keepalive and the closing handshake are the asyncio
layer's, not a copy. What this layer adds is only what threads need: timeouts
on each blocking call, one receiver at a time, and fragmented messages fed
from the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from ..asyncio.connection import Connection as AsyncConnection
from ..asyncio.connection import Data
from ..core.http11 import Request, Response
from ..core.protocol import State
from ..exceptions import ConcurrencyError, ConnectionClosed
from .loop import loop_thread, submit, wait

__all__ = ["Connection"]

T = TypeVar("T")

# How long a failed fragmented send waits for the loop side to wind down.
_WIND_DOWN_TIMEOUT = 10.0


class _Lease:
    """A connection's hold on the loop thread, shared with its finalizer."""

    __slots__ = ("closed_exc", "lock", "loop", "released", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.loop = loop
        self.thread = thread
        # Held while submitting work and while releasing: nothing is handed
        # to a loop that its last user has stopped (it would never run).
        self.lock = threading.Lock()
        self.released = False
        self.closed_exc: ConnectionClosed | None = None


class Connection:
    """A WebSocket connection for threaded and blocking code.

    Every method may be called from any thread. ``send()`` calls from many
    threads never interleave their frames; one thread at a time may wait in
    ``recv()``. Created by :func:`rapidws.sync.connect`, not directly.
    """

    def __init__(
        self,
        connection: AsyncConnection[Any],
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self._connection = connection
        self._lease = _Lease(loop, thread)
        self._recv_lock = threading.Lock()
        # A connection dropped without close() still ends, and so does the
        # loop thread if it was the last.
        self._finalizer = weakref.finalize(self, _abandon, connection, self._lease)

    # Properties: read from any thread; the asyncio connection only replaces them.

    @property
    def state(self) -> State:
        """The state of the connection: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self._connection.state

    @property
    def request(self) -> Request | None:
        """The opening handshake's request."""
        return self._connection.request

    @property
    def response(self) -> Response | None:
        """The opening handshake's response."""
        return self._connection.response

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, if any."""
        return self._connection.subprotocol

    @property
    def remote_address(self) -> Any:
        """The peer's address (``(host, port)`` for TCP)."""
        return self._connection.remote_address

    @property
    def local_address(self) -> Any:
        """The local address."""
        return self._connection.local_address

    @property
    def latency(self) -> float:
        """The round-trip time of the latest ping, in seconds."""
        return self._connection.latency

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (1006 without a close frame)."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection is closed."""
        return self._connection.close_reason

    # Receiving.

    def recv(self, timeout: float | None = None) -> Data:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait; ``None`` waits until a message comes.
                A message that arrives after the timeout is kept for the next
                call: the connection stays usable.

        Raises:
            TimeoutError: when no message came within ``timeout``.
            ConnectionClosedOK: after a normal closing handshake.
            ConnectionClosedError: after an abnormal closure.
            ConcurrencyError: when another thread is already waiting in ``recv()``.
        """
        return self._receive(self._connection.recv, timeout)

    def __iter__(self) -> Iterator[Data]:
        """Receive messages until the connection closes normally.

        Raises:
            ConnectionClosedError: after an abnormal closure.
        """
        while True:
            try:
                # __anext__ is the asyncio iteration: it ends on a normal closure.
                yield self._receive(self._connection.__anext__, None)
            except StopAsyncIteration:
                return

    def recv_json(
        self, timeout: float | None = None, *, loads: Callable[[Data], Any] = json.loads
    ) -> Any:
        """Receive the next message and decode it with ``loads`` (in this thread).

        Raises:
            ValueError: when the message is not valid JSON (the connection stays open).
            TimeoutError, ConnectionClosed, ConcurrencyError: as :meth:`recv`.
        """
        return loads(self.recv(timeout))

    def _receive(
        self, make: Callable[[], Coroutine[Any, Any, Data]], timeout: float | None
    ) -> Data:
        # Checked here, not only on the loop: two threads must not both wait
        # even for an instant, and the error names threads, not coroutines.
        if not self._recv_lock.acquire(blocking=False):
            raise ConcurrencyError("another thread is already waiting in recv()")
        try:
            return self._run(make, timeout)
        finally:
            self._recv_lock.release()

    # Sending.

    def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data],
        *,
        compress: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary; safe from any thread.

        An iterable of ``str`` (or of bytes-like) is sent as one fragmented
        message, a frame per item, read in this thread as it is sent; other
        threads' messages wait until it is whole. Waits while the write buffer
        is above its high-water mark.

        Args:
            message: the message, or its fragments.
            compress: ``False`` skips negotiated compression for this message.
            timeout: seconds to wait for the write buffer to drain; on timeout
                a whole message stays buffered and goes out when the peer
                reads, while a fragmented one fails the connection (1011).

        Raises:
            TimeoutError: when the write buffer did not drain within ``timeout``.
            ConnectionClosed: when the connection is closing or closed.
            TypeError: for an unsupported message type, or mixed fragment types.
        """
        if isinstance(message, Iterable) and not isinstance(
            message, (str, bytes, bytearray, memoryview, Mapping)
        ):
            self._send_fragments(message, compress, timeout)
        else:
            # Anything else, a mapping included, is the asyncio layer's to judge.
            self._run(partial(self._connection.send, message, compress=compress), timeout)

    def _send_fragments(
        self, fragments: Iterable[Data], compress: bool, timeout: float | None
    ) -> None:
        # The asyncio send() takes the fragments from an async generator fed
        # through a one-slot queue: the items are produced here, in the
        # caller's thread, and flow control reaches the caller as a full queue.
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        deadline = None if timeout is None else time.monotonic() + timeout
        sending = self._submit(lambda: self._connection.send(_fed(queue), compress=compress))
        try:
            for fragment in fragments:
                self._hand_over(queue, fragment, sending, deadline)
            self._hand_over(queue, _END, sending, deadline)
            _wait(sending, deadline)
        except BaseException as exc:
            if not sending.done():
                if isinstance(exc, Exception) and not isinstance(exc, TimeoutError):
                    # The caller's iterable failed: raise it on the loop side
                    # too, where the asyncio layer fails the connection (1011)
                    # if half the message is out.
                    self._hand_over(queue, _Failure(exc), sending, None)
                else:
                    # Our timeout, or Ctrl-C (never raised in a task: it would
                    # stop the loop): cancelled midway, the asyncio layer
                    # fails the connection the same way.
                    sending.cancel()
                concurrent.futures.wait([sending], timeout=_WIND_DOWN_TIMEOUT)
            failure = None
            if sending.done() and not sending.cancelled():
                failure = sending.exception()
            if failure is not None and failure is not exc:
                # The loop side failed first (closed connection, bad fragment type).
                raise failure from None
            raise
        sending.result()

    def _hand_over(
        self,
        queue: asyncio.Queue[object],
        item: object,
        sending: concurrent.futures.Future[None],
        deadline: float | None,
    ) -> None:
        if sending.done():
            sending.result()  # raises what stopped it
            return
        put = self._submit(partial(queue.put, item))
        done, _ = concurrent.futures.wait(
            [put, sending],
            timeout=_remaining(deadline),
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        if put not in done:
            put.cancel()
            if not done:
                raise TimeoutError("the write buffer did not drain in time")
            sending.result()
            raise RuntimeError("fragmented send ended early")  # pragma: no cover

    def send_json(
        self,
        obj: Any,
        *,
        dumps: Callable[[Any], str | bytes] = json.dumps,
        timeout: float | None = None,
    ) -> None:
        """Send ``obj`` encoded with ``dumps`` (in this thread): text, or binary for bytes."""
        self.send(dumps(obj), timeout=timeout)

    # Pings and closing.

    def ping(self, data: str | bytes | None = None, *, timeout: float | None = None) -> float:
        """Send a ping and wait for its pong; return the round-trip time in seconds.

        Raises:
            TimeoutError: when no pong came within ``timeout``.
            ConnectionClosed: when the connection is closing or closed.
            ValueError: when ``data`` is over 125 bytes or matches a pending ping.
        """
        connection = self._connection

        async def ping() -> float:
            # Called on the loop: ping() writes at once.
            return await connection.ping(data)

        return self._run(ping, timeout)

    def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong, a one-way heartbeat."""
        self._run(partial(self._connection.pong, data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with a closing handshake, and wait until it is closed.

        Waits at most ``close_timeout`` for the peer. Wakes a ``recv()``
        blocked in another thread with :class:`ConnectionClosed`. Safe to call
        again or from several threads. Once the last connection of the
        process is closed, the loop thread has ended when this returns.
        """
        lease = self._lease
        if not lease.released:
            connection = self._connection

            async def close() -> ConnectionClosed:
                await connection.close(code, reason)
                # Saved for the calls made after the loop is let go.
                return connection._closed_exc()

            try:
                closed_exc = self._run(close)
            except ConnectionClosed:
                closed_exc = None  # released by another thread meanwhile
            with lease.lock:
                if not lease.released:
                    lease.released = True
                    lease.closed_exc = closed_exc
                    self._finalizer.detach()
                    loop_thread.release()
        loop_thread.join_if_retired(lease.thread)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Running on the loop.

    def _submit(
        self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> concurrent.futures.Future[T]:
        lease = self._lease
        with lease.lock:
            if lease.released:
                assert lease.closed_exc is not None
                raise lease.closed_exc
            return submit(lease.loop, lease.thread, lambda: _within(make(), timeout))

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        future = self._submit(make, timeout)
        try:
            return wait(future)
        except concurrent.futures.CancelledError:
            # Cancelled by the loop's shutdown: close() from another thread.
            exc = self._lease.closed_exc
            if exc is None:  # pragma: no cover - the loop stops only after close()
                raise
            raise exc from None


class _Failure:
    """An exception raised by the caller's fragments, carried to the loop side."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


async def _fed(queue: asyncio.Queue[object]) -> Any:
    # An async generator of the fragments put into ``queue`` by another thread.
    while True:
        item = await queue.get()
        if item is _END:
            return
        if isinstance(item, _Failure):
            raise item.exc
        yield item


async def _within(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Await ``coro``, cancelled after ``timeout`` seconds (builtin TimeoutError then).

    Not asyncio.wait_for(): its inner task can finish just as the timeout
    fires and its result (a received message) be dropped. Here the coroutine
    runs in this very task: recv() sees the cancellation and keeps a message
    that was already handed over for the next call.
    """
    if timeout is None:
        return await coro
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await coro
    except asyncio.CancelledError:
        if not expired:
            raise
        if sys.version_info >= (3, 11):
            task.uncancel()
        raise TimeoutError(f"timed out after {timeout} s") from None
    finally:
        handle.cancel()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _wait(future: concurrent.futures.Future[Any], deadline: float | None) -> None:
    done, _ = concurrent.futures.wait([future], timeout=_remaining(deadline))
    if not done:
        raise TimeoutError("the write buffer did not drain in time")


def _abandon(connection: AsyncConnection[Any], lease: _Lease) -> None:
    # A connection collected without close(): drop it, let the loop go.
    with lease.lock:
        if lease.released:
            return
        lease.released = True
    transport = connection.transport
    if transport is not None:
        # RuntimeError: the loop is already closed, at interpreter exit.
        with contextlib.suppress(RuntimeError):
            lease.loop.call_soon_threadsafe(transport.abort)
    loop_thread.release()
