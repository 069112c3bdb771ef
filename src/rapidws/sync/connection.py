"""A blocking, thread-safe WebSocket connection: an asyncio connection on the loop thread.

The asyncio connection runs on the private loop thread (:mod:`rapidws.sync.loop`),
so the protocol rules, flow control, keepalive and the closing handshake are
the asyncio layer's, not a copy. The two calls of every request-reply do not
wait for the loop: ``send()`` puts the message in an outbox that the loop
empties (one wake-up for many messages), and the loop hands each message it
receives straight to the thread waiting in ``recv()`` (no future, no task).
Both wake-ups are socket writes, made without holding the GIL (see
:class:`~rapidws.sync.loop.Doorbell`).
The rarer calls (``ping()``, ``close()``, fragmented messages, a send that
must wait for the write buffer to drain, streams) hand a coroutine to the loop
and wait for its result. What this layer adds is only what threads need:
timeouts on each blocking call, one receiver at a time, and fragmented
messages, streams and files fed from the caller's thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, cast

from ..asyncio.client import ClientConnection as AsyncClientConnection
from ..asyncio.connection import Data, SyncReader
from ..asyncio.connection import MessageStream as AsyncMessageStream
from ..core.http11 import Request, Response
from ..core.protocol import OPEN, State
from ..core.stream import STREAM_CHUNK_SIZE
from ..exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK, InvalidState
from .loop import Doorbell, check_thread, loop_thread, submit, wait

__all__ = ["Connection", "MessageStream", "MessageWriter"]

T = TypeVar("T")

# How long a failed fragmented send waits for the loop side to wind down.
_WIND_DOWN_TIMEOUT = 10.0


class ThreadedConnection(AsyncClientConnection):
    """An asyncio client connection that trades messages with other threads.

    Runs on the loop thread like any asyncio connection; :meth:`take` and
    :meth:`put` are its two doors for the other threads. Received messages
    wait in the asyncio layer's own queue, so its read-side flow control and
    its parser pauses apply unchanged; the thread in :meth:`take` is woken
    when one arrives. Sent messages wait in an outbox that one loop callback
    empties, however many threads filled it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made on the loop thread, whose doorbell wakes it for the other threads.
        doorbell = loop_thread.doorbell
        assert doorbell is not None
        self._doorbell: Doorbell = doorbell
        # The queue, allocated now: the other threads read it.
        self._messages = collections.deque()
        # Each message of a read comes straight from ConnectionCore (in C
        # when built), not through _process_events().
        self._on_message = type(self)._message_received
        # Guards the queue and the flags below between the loop and the
        # receiving thread: a message queued while the receiver decides to
        # wait always wakes it, and the receiver always sees a flow-control
        # pause decided with the message that caused it.
        self._inbox_lock = threading.Lock()
        # The waker of the receiver while it waits for a message.
        self._waiting: _Waker | None = None
        self._ended = False  # the connection is lost and its last message queued
        self._outbox: collections.deque[tuple[Data | bytearray | memoryview, bool]]
        self._outbox = collections.deque()
        self._flush_due = False  # a _flush() is scheduled and has not started
        # Bytes put in the outbox (by senders) and taken out (by the loop):
        # a sender waits for the loop when the difference grows too large.
        self._put_bytes = 0
        self._sent_bytes = 0

    # The loop's side.

    def _message_received(self, message: Data | AsyncMessageStream) -> None:
        with self._inbox_lock:
            super()._message_received(message)
            waker, self._waiting = self._waiting, None
        if waker is not None:
            waker.wake()  # after the lock, which the receiver takes first

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake the receiver once the last messages are queued (called by asyncio)."""
        super().connection_lost(exc)
        with self._inbox_lock:
            self._ended = True
            waker, self._waiting = self._waiting, None
        if waker is not None:
            waker.wake()

    def _flush(self) -> None:
        # Send what the outbox holds, in the order it was put there.
        self._flush_due = False
        outbox = self._outbox
        while outbox:
            message, compress = outbox.popleft()
            self._sent_bytes += _size(message)
            # Closed meanwhile: dropped, as TCP drops what is in flight. And
            # InvalidState: a fragmented send that was cancelled and never
            # wound down (the connection has failed then).
            with contextlib.suppress(ConnectionClosed, InvalidState):
                self.send_nowait(message, compress=compress)

    # The other threads' side.

    def take(self, timeout: float | None) -> Data:
        """Return the next message, waiting ``timeout`` seconds at most (from one thread).

        Raises:
            TimeoutError: when no message came in time.
            ConnectionClosed: once the connection is closed and every message taken.
        """
        lock = self._inbox_lock
        waker = _waker()
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = True
        while True:
            with lock:
                if self._waiting is waker:
                    # Not woken (timed out, or interrupted): no wake-up will come.
                    self._waiting = None
                elif not woken:
                    # Woken just after the timeout: take the wake-up, which
                    # is on its way (sent after the loop let go of the lock).
                    waker.wait(None)
                    woken = True
                messages = self._messages
                if messages:
                    # Never a stream: a connection in streaming mode is read
                    # through the asyncio layer's recv() (see Connection.recv).
                    message = cast(Data, messages.popleft())
                    # The asyncio layer's recv() decides what the pop lets go
                    # on; asked on the loop only when something is paused.
                    paused = self._reading_paused or self.protocol.parsing_paused
                    break
                if self._ended:
                    raise self._closed_exc()
                if not woken:
                    raise TimeoutError(f"no message within {timeout} s")
                self._waiting = waker
            try:
                woken = waker.wait(None if deadline is None else deadline - time.monotonic())
            except BaseException:
                with lock:
                    if self._waiting is waker:
                        self._waiting = None
                # Else a wake-up is on its way: the next wait of this thread
                # returns early, and its caller looks again.
                raise
        if paused and not self._lost:
            self._doorbell.ring(self._message_taken)
        return message

    def put(self, message: Data | bytearray | memoryview, compress: bool) -> bool:
        """Queue ``message`` for the loop to send; from one thread at a time.

        Returns ``False``, queueing nothing, when the message must wait: the
        connection is not open, or the write buffer or the outbox is full.
        """
        if (
            self.protocol.state is not OPEN
            or self._writing_paused
            or self._put_bytes - self._sent_bytes >= self._write_high
        ):
            return False
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)  # the caller may reuse its buffer
        self._put_bytes += _size(message)
        self._outbox.append((message, compress))
        if not self._flush_due:
            # After the append: a flush that started before it cleared the
            # flag first, so either it sends this message or a new one will.
            self._flush_due = True
            self._doorbell.ring(self._flush)
        return True


def threaded(cls: type[AsyncClientConnection]) -> type[ThreadedConnection]:
    """Return ``cls`` with :class:`ThreadedConnection`'s hand-offs (a ``create_connection``).

    A subclass given as ``create_connection=`` keeps its own behaviour.
    """
    if issubclass(cls, ThreadedConnection):
        return cls
    with _THREADED_LOCK:
        made = _THREADED.get(cls)
        if made is None:
            made = _THREADED[cls] = type(f"Threaded{cls.__name__}", (ThreadedConnection, cls), {})
        return made


# The classes threaded() made, one per create_connection class.
_THREADED: dict[type[AsyncClientConnection], type[ThreadedConnection]] = {
    AsyncClientConnection: ThreadedConnection
}
_THREADED_LOCK = threading.Lock()


class _Waker:
    """What a thread waits on in ``recv()``: a socket pair, one per thread.

    Woken by a write made without holding the GIL, which the woken thread
    then takes at once (see :class:`~rapidws.sync.loop.Doorbell`).
    """

    __slots__ = ("_inside", "_outside", "_timeout")

    def __init__(self) -> None:
        self._inside, self._outside = socket.socketpair()
        self._timeout: float | None = None

    def __del__(self) -> None:
        # With the thread's locals when the thread ends; or later, once a
        # waking thread that still holds this waker is done with it.
        self._inside.close()
        self._outside.close()

    def wait(self, timeout: float | None) -> bool:
        """Wait ``timeout`` seconds at most for a wake-up; return whether it came."""
        if timeout is not None:
            timeout = max(0.0, timeout)
        if timeout != self._timeout:
            self._inside.settimeout(timeout)
            self._timeout = timeout
        try:
            self._inside.recv(1)
        except (TimeoutError, BlockingIOError):  # the latter for a timeout of 0
            return False
        return True

    def wake(self) -> None:
        """Wake the thread in :meth:`wait` (or make its next wait return at once)."""
        self._outside.send(b"\0")


_wakers = threading.local()


def _waker() -> _Waker:
    # This thread's waker, made on first use.
    try:
        waker: _Waker = _wakers.waker
    except AttributeError:
        waker = _wakers.waker = _Waker()
    return waker


def _forget_waker() -> None:
    # In a forked child, whose one thread is the forking one: its waker's
    # sockets are shared with the parent, whose wake-ups it would steal.
    vars(_wakers).pop("waker", None)


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_forget_waker)


def _size(message: Data | bytearray | memoryview) -> int:
    # Counted for flow control only: characters stand in for UTF-8 bytes.
    return len(message) if isinstance(message, (str, bytes)) else memoryview(message).nbytes


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
        connection: ThreadedConnection,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self._connection = connection
        self._lease = _Lease(loop, thread)
        self._recv_lock = threading.Lock()
        # Held by one send() at a time while it queues a message, and for the
        # whole of a fragmented message: no other frame gets between its own.
        self._send_lock = threading.Lock()
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

        A message that arrives as a stream (once :meth:`recv_stream` was
        used) is joined, within the connection's ``max_size``; a stream
        still being read is skipped first, as the asyncio ``recv()`` does.

        Args:
            timeout: seconds to wait; ``None`` waits until a message comes.
                A message that arrives after the timeout is kept for the next
                call: the connection stays usable. A streamed message that is
                not whole within it is skipped.

        Raises:
            TimeoutError: when no message came within ``timeout``.
            ConnectionClosedOK: after a normal closing handshake.
            ConnectionClosedError: after an abnormal closure.
            ConcurrencyError: when another thread is already waiting in ``recv()``.
        """
        # take() serves one thread at a time: a second one is refused at
        # once, with an error that names threads, not left to race.
        if not self._recv_lock.acquire(blocking=False):
            raise ConcurrencyError("another thread is already waiting in recv()")
        try:
            connection = self._connection
            if connection.protocol.streaming:
                # Streams are joined, and one left unread skipped, on the loop.
                return self._run(connection.recv, timeout)
            check_thread(self._lease.thread)
            return connection.take(timeout)
        finally:
            self._recv_lock.release()

    def recv_stream(self, timeout: float | None = None) -> MessageStream:
        """Receive the next message as a stream: ``for chunk in ws.recv_stream()``.

        An upload that is never held whole in memory::

            stream = ws.recv_stream()
            with open(path, "wb" if not stream.text else "w") as file:
                for chunk in stream:
                    file.write(chunk)

        This is the asyncio :meth:`~rapidws.asyncio.connection.Connection.recv_stream`
        run on the loop thread: the chunks come as the payload arrives, each at
        most ``stream_chunk_size`` bytes, ``str`` for a text message (cut
        between code points) and ``bytes`` for a binary one;
        :attr:`MessageStream.text` tells which before the first chunk.
        Reading from the socket pauses while a few chunks wait for this
        thread. The first call puts the connection in streaming mode for
        good; a stream not read to its end is skipped when the next message
        is asked for, or by :meth:`MessageStream.close`.

        Args:
            timeout: seconds to wait for the message to start, then for each
                chunk (a chunk that comes after the timeout is kept for the
                next one; :attr:`MessageStream.timeout` changes it); ``None``
                waits as long as it takes.

        Raises:
            TimeoutError: when the message did not start within ``timeout``.
            ConnectionClosed, ConcurrencyError: as :meth:`recv`.
        """
        if not self._recv_lock.acquire(blocking=False):
            raise ConcurrencyError("another thread is already waiting in recv()")
        try:
            stream = self._run(self._connection.recv_stream, timeout)
        finally:
            self._recv_lock.release()
        return MessageStream(self, stream, timeout)

    @property
    def max_stream_size(self) -> int | None:
        """The largest message :meth:`recv_stream` takes, in bytes; ``None``: no limit.

        As the asyncio connection's: beyond it the connection fails with
        1009; it replaces ``max_size`` once the connection streams.
        """
        return self._connection.max_stream_size

    @max_stream_size.setter
    def max_stream_size(self, value: int | None) -> None:
        self._set("max_stream_size", value)

    @property
    def stream_chunk_size(self) -> int:
        """The largest chunk of a streamed message, in bytes (64 KiB by default)."""
        return self._connection.stream_chunk_size

    @stream_chunk_size.setter
    def stream_chunk_size(self, value: int) -> None:
        self._set("stream_chunk_size", value)

    def __iter__(self) -> Iterator[Data]:
        """Receive messages until the connection closes normally.

        Raises:
            ConnectionClosedError: after an abnormal closure.
        """
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
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

    # Sending.

    def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data],
        *,
        compress: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary; safe from any thread.

        A whole message returns once it is queued for the loop thread, which
        writes it soon after (a bytes-like one is copied: the buffer may be
        reused at once); it waits only while the write buffer is above its
        high-water mark. A message queued as the connection closes is
        dropped, as TCP drops what is in flight. An iterable of ``str`` (or
        of bytes-like) is sent as one fragmented message, a frame per item,
        read in this thread as it is sent; other threads' messages wait until
        it is whole.

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
        if isinstance(message, (str, bytes, bytearray, memoryview)):
            if self._put(message, compress, timeout):
                return
        elif isinstance(message, Iterable) and not isinstance(message, Mapping):
            self._send_fragments(message, compress, timeout)
            return
        # Waiting for the write buffer to drain, after the messages already
        # queued; or anything else, a mapping included, for the asyncio layer
        # to judge.
        self._run(partial(self._connection.send, message, compress=compress), timeout)

    def _put(
        self, message: Data | bytearray | memoryview, compress: bool, timeout: float | None
    ) -> bool:
        # Queue the message without waiting for the loop, when nothing holds it back.
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("a fragmented message was still being sent")
        try:
            lease = self._lease
            with lease.lock:
                if lease.released:
                    assert lease.closed_exc is not None
                    raise lease.closed_exc
                check_thread(lease.thread)
                return self._connection.put(message, compress)
        finally:
            self._send_lock.release()

    def _send_fragments(
        self, fragments: Iterable[Data], compress: bool, timeout: float | None
    ) -> None:
        connection = self._connection
        self._send_fed(lambda items: connection.send(items, compress=compress), fragments, timeout)

    def _send_fed(
        self,
        consume: Callable[[AsyncIterator[Any]], Coroutine[Any, Any, None]],
        items: Iterable[object],
        timeout: float | None,
    ) -> None:
        # Run consume() on the loop with the items produced here, in the
        # caller's thread; no other message gets between its frames.
        deadline = _deadline(timeout)
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("another fragmented message was still being sent")
        try:
            feed = _Feed(self, consume)
            try:
                for item in items:
                    feed.put(item, deadline)
            except BaseException as exc:
                feed.finish(exc, deadline)
                raise
            feed.finish(None, deadline)
        finally:
            self._send_lock.release()

    def send_stream(
        self, *, text: bool = False, compress: bool = True, timeout: float | None = None
    ) -> MessageWriter:
        """Send one message as a stream, each fragment as soon as it is given.

        ::

            with ws.send_stream() as stream:
                for block in source:
                    stream.send(block)

        This is the asyncio :meth:`~rapidws.asyncio.connection.Connection.send_stream`
        run on the loop thread, fed from this one: :meth:`MessageWriter.send`
        hands a fragment over and waits while the write buffer is above its
        high-water mark; leaving the block ends the message (an empty one
        when nothing was sent). An exception in the block, once a fragment is
        out, fails the connection with 1011: the peer cannot make sense of
        half a message. Other threads' sends wait for the message's end (a
        ``send()`` from the same thread inside the block would wait forever).

        Args:
            text: ``True`` for a text message (``str`` fragments), ``False``
                for a binary one (bytes-like fragments).
            compress: ``False`` to skip negotiated compression for this message.
            timeout: seconds that entering the block (another thread's
                message being sent), each :meth:`MessageWriter.send` and the
                end may wait; on timeout the message fails the connection
                (1011) once a fragment is out.
        """
        return MessageWriter(self, text, compress, timeout)

    def send_file(
        self,
        file: str | os.PathLike[str] | SyncReader,
        *,
        chunk_size: int = STREAM_CHUNK_SIZE,
        compress: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Send what ``file`` holds as one message, ``chunk_size`` bytes per frame.

        ``file`` is a path (sent as a binary message) or anything with
        ``read(size)``: a file opened in binary mode (a binary message) or
        text mode (a text message). It is read in this thread, one frame
        ahead of the socket, so a file of any size goes out with little
        memory and a slow disk never holds up the loop; the frames are sent
        by the asyncio :meth:`~rapidws.asyncio.connection.Connection.send_file`.
        An error while reading, once a frame is out, fails the connection
        with 1011.

        Args:
            file: a path, or a file-like object with ``read(size)``.
            chunk_size: the largest frame's payload (bytes or characters).
            compress: ``False`` to skip negotiated compression for this message.
            timeout: seconds to wait for the write buffer to drain, for the
                whole file; on timeout the connection fails (1011).

        Raises:
            TimeoutError: when the write buffer did not drain within ``timeout``.
            ConnectionClosed: when the connection is closing or closed.
        """
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as opened:
                self.send_file(opened, chunk_size=chunk_size, compress=compress, timeout=timeout)
            return
        connection = self._connection

        def consume(blocks: AsyncIterator[Any]) -> Coroutine[Any, Any, None]:
            reader = _FedReader(blocks)
            return connection.send_file(reader, chunk_size=chunk_size, compress=compress)

        self._send_fed(consume, _blocks(file, chunk_size), timeout)

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

    def _set(self, name: str, value: object) -> None:
        # A setting of the engine, changed on the loop, which parses with it.
        connection = self._connection

        async def set_it() -> None:
            setattr(connection, name, value)

        self._run(set_it)

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


class MessageStream:
    """A message received as a stream, from :meth:`Connection.recv_stream`.

    ``for chunk in stream`` yields the payload as it arrives: ``str`` chunks
    for a text message, ``bytes`` for a binary one. Each chunk is taken from
    the asyncio layer's :class:`~rapidws.asyncio.connection.MessageStream` on
    the loop thread, which reads from the socket again as the chunks go.

    Raises (while iterating):
        TimeoutError: when no chunk came within :attr:`timeout` (the stream
            stays usable).
        ConnectionClosed: when the connection closes before the message's end.
        ConcurrencyError: when two threads read the stream at once.
    """

    __slots__ = ("_connection", "_stream", "text", "timeout")

    def __init__(
        self, connection: Connection, stream: AsyncMessageStream, timeout: float | None
    ) -> None:
        self._connection = connection
        self._stream = stream
        #: Seconds to wait for each chunk, ``None`` for no limit: the timeout
        #: given to :meth:`Connection.recv_stream`, which may be changed.
        self.timeout = timeout
        #: Whether the message is text (``str`` chunks) or binary (``bytes``).
        self.text = stream.text

    def __iter__(self) -> Iterator[Data]:
        return self

    def __next__(self) -> Data:
        """Return the next chunk; end at the message's end."""
        stream = self._stream
        chunk = self._connection._run(lambda: _next_chunk(stream), self.timeout)
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Skip the rest of the message: what is left is read and dropped."""
        self._connection._run(self._stream.aclose)


class MessageWriter:
    """A message sent as a stream, from :meth:`Connection.send_stream`."""

    __slots__ = ("_compress", "_connection", "_feed", "_text", "_timeout")

    def __init__(
        self, connection: Connection, text: bool, compress: bool, timeout: float | None
    ) -> None:
        self._connection = connection
        self._text = text
        self._compress = compress
        self._timeout = timeout
        self._feed: _Feed | None = None

    def __enter__(self) -> MessageWriter:
        connection = self._connection
        timeout = self._timeout
        lock = connection._send_lock
        if not lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("another fragmented message was still being sent")
        text, compress = self._text, self._compress

        async def consume(fragments: AsyncIterator[Any]) -> None:
            # The asyncio send_stream(), each fragment given by this thread.
            async with connection._connection.send_stream(text=text, compress=compress) as out:
                async for fragment in fragments:
                    await out.send(fragment)

        try:
            self._feed = _Feed(connection, consume)
        except BaseException:
            lock.release()
            raise
        return self

    def send(self, data: Data | bytearray | memoryview) -> None:
        """Send the next fragment; wait while the write buffer is above its high-water mark.

        Raises:
            TimeoutError: when the write buffer did not drain within the timeout.
            ConnectionClosed: when the connection is closing or closed.
            TypeError: for a fragment of the other type than the message's
                (raised by this call or the next: the fragment is checked on
                the loop thread).
        """
        feed = self._feed
        if feed is None:
            raise InvalidState("send() a fragment inside the with block")
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)  # the caller may reuse its buffer at once
        feed.put(data, _deadline(self._timeout))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        feed, self._feed = self._feed, None
        assert feed is not None
        try:
            feed.finish(exc_value, _deadline(self._timeout))
        finally:
            self._connection._send_lock.release()


class _Feed:
    """Items from the caller's thread for a coroutine on the loop: a fragmented message.

    ``consume(items)`` runs on the loop and takes the items from an async
    iterator fed through a one-slot queue: they are produced in the caller's
    thread, and flow control reaches the caller as a full queue.
    """

    __slots__ = ("_connection", "_queue", "_sending")

    def __init__(
        self,
        connection: Connection,
        consume: Callable[[AsyncIterator[Any]], Coroutine[Any, Any, None]],
    ) -> None:
        self._connection = connection
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._queue = queue
        self._sending = connection._submit(lambda: consume(_fed(queue)))

    def put(self, item: object, deadline: float | None) -> None:
        """Hand ``item`` over, waiting until ``deadline`` for room.

        Raises:
            TimeoutError: when there was no room in time.
            Exception: what stopped the coroutine, if it stopped.
        """
        sending = self._sending
        # Once the coroutine is done, items are not taken: it either raised,
        # or ended by itself (send_file() at the empty read, before the end).
        if sending.done():
            sending.result()
            return
        put = self._connection._submit(partial(self._queue.put, item))
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

    def finish(self, exc: BaseException | None, deadline: float | None) -> None:
        """End the items and wait for the coroutine: after the last, or on the caller's ``exc``.

        Raises:
            Exception: what the coroutine raised first (closed connection,
                bad fragment type), in place of ``exc``.
        """
        sending = self._sending
        if exc is None:
            try:
                self.put(_END, deadline)
                _wait(sending, deadline)
            except BaseException as error:
                self.finish(error, deadline)
                raise
            sending.result()
            return
        if not sending.done():
            if isinstance(exc, Exception) and not isinstance(exc, TimeoutError):
                # The caller's items failed: raise it on the loop side too,
                # where the asyncio layer fails the connection (1011) if half
                # the message is out.
                self.put(_Failure(exc), None)
            else:
                # Our timeout, or Ctrl-C (never raised in a task: it would
                # stop the loop): cancelled midway, the asyncio layer fails
                # the connection the same way.
                sending.cancel()
            concurrent.futures.wait([sending], timeout=_WIND_DOWN_TIMEOUT)
        failure = None
        if sending.done() and not sending.cancelled():
            failure = sending.exception()
        if failure is not None and failure is not exc:
            # The loop side failed first (closed connection, bad fragment type).
            raise failure from None


class _FedReader:
    """A reader for the asyncio ``send_file()``: the blocks read in the caller's thread."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: AsyncIterator[Data]) -> None:
        self._blocks = blocks

    async def read(self, size: int, /) -> Data:
        # The caller's thread read it already, ``size`` long at most.
        return await anext(self._blocks)


async def _next_chunk(stream: AsyncMessageStream) -> Data | None:
    # The next chunk of ``stream``; None at its end.
    return await anext(stream, None)


def _blocks(file: SyncReader, size: int) -> Iterator[Data]:
    # What file.read() returns, the last (empty) read included: its type
    # makes an empty file's message text or binary.
    while True:
        data = file.read(size)
        yield data
        if not data:
            return


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


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


def _abandon(connection: ThreadedConnection, lease: _Lease) -> None:
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
