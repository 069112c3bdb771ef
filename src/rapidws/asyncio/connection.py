"""A WebSocket connection on an :class:`asyncio.Protocol`, shared by client and server.

The transport calls :meth:`Connection.data_received`; the bytes go to the
sans-I/O engine; its events go to the application; its output goes back to the
transport. This layer adds only what needs a loop: waiting, timers and flow
control. Every protocol rule lives in :mod:`rapidws.core`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
import types
import typing
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, Generic, TypeVar, cast

from ..core.frames import Close
from ..core.http11 import Request, Response
from ..core.limits import CLOSE_TIMEOUT, MAX_QUEUE, PING_INTERVAL, PING_TIMEOUT, WRITE_LIMIT
from ..core.prepared import PreparedMessage
from ..core.protocol import CLOSED, CONNECTING, OPEN, Ping, Pong, Protocol, State
from ..core.stream import STREAM_CHUNK_SIZE, MessageChunk, MessageEnd, MessageStart
from ..exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
)
from ..speedups import DIRECT_READ_MIN, ConnectionCore
from .deadlines import Deadlines
from .heartbeat import Heartbeat
from .stats import Traffic, traffic_of

__all__ = ["AsyncReader", "Connection", "Data", "MessageStream", "MessageWriter", "SyncReader"]

Data = str | bytes
P = TypeVar("P", bound=Protocol)

_OK_CODES = frozenset((1000, 1001, 1005))
# Frames up to this size that are ready together go out in one write.
_COALESCE_LIMIT = 16 * 1024
# Read-side flow control of a streamed message: reading pauses once this many
# chunks wait for the application (two reads of 256 KiB at the default chunk
# size: one read never pauses it), and resumes when it has taken all but one.
_STREAM_HIGH = 8
_STREAM_LOW = 1
# A streamed message's fragments wait for the end of the loop's turn, up to
# this many bytes, to leave in one write (see MessageWriter._write()).
_CORK_LIMIT = 256 * 1024
# Always empty: the queue of a connection with no message waiting, shared.
_NO_QUEUE: collections.deque[Data | MessageStream] = collections.deque(maxlen=0)
# Always empty, read-only: the pings of a connection with none in flight.
_NO_PINGS = cast("dict[bytes, tuple[asyncio.Future[float], float]]", types.MappingProxyType({}))


#: A connection's timeouts and limits, as :func:`connection_settings` prepares
#: them: ping interval and timeout, close timeout, the queue's and the write
#: buffer's high and low water marks.
Settings = tuple[float | None, float | None, float | None, int | None, int, int, int]


def connection_settings(
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    max_queue: int | tuple[int, int] | None,
    write_limit: int | tuple[int, int],
) -> Settings:
    """Prepare the settings of :class:`Connection` from its arguments."""
    queue_high: int | None
    if max_queue is None:
        queue_high, queue_low = None, 0
    elif isinstance(max_queue, int):
        queue_high, queue_low = max_queue, max_queue // 4
    else:
        queue_high, queue_low = max_queue
    if isinstance(write_limit, int):
        write_high, write_low = write_limit, write_limit // 4
    else:
        write_high, write_low = write_limit
    return ping_interval, ping_timeout, close_timeout, queue_high, queue_low, write_high, write_low


class Connection(ConnectionCore, asyncio.Protocol, Generic[P]):
    """A WebSocket connection: send and receive messages, ping, close.

    Created by :func:`~rapidws.asyncio.server.serve` and
    :func:`~rapidws.asyncio.client.connect`, not directly.

    What every message goes through (``data_received``, ``send_nowait``, and
    the fields they use: ``protocol``, ``transport``) is in
    :class:`~rapidws.speedups.ConnectionCore`, in C when the accelerator is built.
    """

    protocol: P
    transport: asyncio.Transport | None

    # Slots: a server holds thousands of these, and a __dict__ costs ~1 KiB.
    # Applications may still set their own attributes (the __dict__ slot,
    # created on first use).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_close_timer",
        "_closed",
        "_drain_waiter",
        "_fragmenting",
        "_heartbeat",
        "_heartbeat_place",
        "_lost",
        "_message_hook",
        "_messages",
        "_pings",
        "_queue_high",
        "_queue_low",
        "_reading_paused",
        "_resume_timer",
        "_stream",
        "_write_high",
        "_write_low",
        "_writev",
        "_writing_paused",
        "close_timeout",
        "latency",
        "logger",
        "loop",
        "ping_interval",
        "ping_timeout",
        "request",
    )

    def __init__(
        self,
        protocol: P,
        *,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float | None = PING_TIMEOUT,
        close_timeout: float | None = CLOSE_TIMEOUT,
        max_queue: int | tuple[int, int] | None = MAX_QUEUE,
        write_limit: int | tuple[int, int] = WRITE_LIMIT,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        settings = connection_settings(
            ping_interval, ping_timeout, close_timeout, max_queue, write_limit
        )
        # Given by a server: get_running_loop() costs a getpid() system call.
        loop = loop or asyncio.get_running_loop()
        self._setup(protocol, settings, logger or logging.getLogger("rapidws"), loop)

    def _setup(
        self,
        protocol: P,
        settings: Settings,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # __init__ with its arguments checked: a server prepares the settings
        # of its connections once.
        self.protocol = protocol
        #: The opening handshake's request (path, query, headers), once known.
        #: An attribute, not a property: callbacks read it for every message.
        self.request: Request | None = protocol.request
        self._use_settings(settings)
        self.logger = logger
        self.loop = loop
        self.transport = None
        # The callbacks' on_message, for a connection that has callbacks.
        self._on_message: Callable[[Any, Data], None] | None = None
        # The messages that no recv() has taken yet; the queue is allocated
        # (~0.7 KiB) when a message first has to wait in it.
        self._messages: collections.deque[Data | MessageStream] = _NO_QUEUE
        self._recv_waiter: asyncio.Future[Data | MessageStream] | None = None
        # The message being received as a stream, until its end or until the
        # application asks for the next message (the rest is then skipped).
        self._stream: MessageStream | None = None
        # Called with each message recv() returns, when set (a rate limit); it
        # may raise ConnectionClosed to refuse the message.
        self._message_hook: Callable[[Data], None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._writev = False  # see connection_made()
        self._drain_waiter: asyncio.Future[None] | None = None
        # Set while a fragmented message is being sent; done when it is sent.
        self._fragmenting: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = _NO_PINGS
        # The deadlines this connection joined when its closing handshake began.
        self._close_timer: Deadlines[Connection[Any]] | None = None
        self._heartbeat: Heartbeat | None = None  # while keepalive pings are on
        self._heartbeat_place = 0
        self._resume_timer: asyncio.TimerHandle | None = None
        # Done when the connection is lost; created by the first wait_closed().
        self._closed: asyncio.Future[None] | None = None
        self._lost = False
        # Set while the events of one read are handled: what is sent meanwhile
        # (replies from callbacks) goes out in one write when they are done.
        self._handling = False
        #: The round-trip time of the latest ping, in seconds.
        self.latency = 0.0

    def _use_settings(self, settings: Settings) -> None:
        # The timeouts and limits, as connection_settings() prepared them: a
        # server's for all its connections, or a route's (before the upgrade).
        self._queue_high: int | None
        (
            self.ping_interval,
            self.ping_timeout,
            self.close_timeout,
            self._queue_high,
            self._queue_low,
            self._write_high,
            self._write_low,
        ) = settings

    # Public API.

    @property
    def state(self) -> State:
        """The state of the connection: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self.protocol.state

    @property
    def response(self) -> Response | None:
        """The opening handshake's response."""
        return self.protocol.response

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, if any."""
        return self.protocol.subprotocol

    @property
    def remote_address(self) -> Any:
        """The peer's address, as the socket reports it (``(host, port)`` for TCP)."""
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        """The local address, as the socket reports it."""
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    @property
    def traffic(self) -> Traffic:
        """What went through this connection so far: messages and bytes each way."""
        return traffic_of(self)

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (1006 without a close frame)."""
        return self._code_and_reason()[0] if self._lost else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection is closed."""
        return self._code_and_reason()[1] if self._lost else None

    async def recv(self, *, _iterating: bool = False, _streamed: bool = False) -> Data:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        A message that arrives as a stream (once :meth:`recv_stream` was
        used) is joined, within the connection's ``max_size``.

        Raises:
            ConnectionClosedOK: after a normal closing handshake.
            ConnectionClosedError: after an abnormal closure.
            ConcurrencyError: when another coroutine is already waiting in ``recv()``.
        """
        # _iterating: called by __anext__, which ends the iteration after a
        # normal closure; one coroutine per message, not __anext__ awaiting
        # recv(). _streamed: called by recv_stream(), which takes a stream
        # as it is.
        try:
            if self._messages:
                message = self._messages.popleft()
                self._message_taken()
                if isinstance(message, MessageStream):
                    return await self._take_stream(message, _streamed)  # type: ignore[return-value]
                if self._message_hook is not None:
                    self._message_hook(message)
                return message
            if self._recv_waiter is not None:
                raise ConcurrencyError("another coroutine is already waiting for the next message")
            if self._lost:
                raise self._closed_exc()
            if self._stream is not None and self._stream._taken:
                # The application asks for the next message: it is done with
                # the stream it was reading.
                self._stream._skip()
            if self.protocol.parsing_paused:
                # The application handled the messages that preceded a protocol
                # error or a close frame: act on what follows them now.
                self._resume_parsing()
            waiter = self.loop.create_future()
            self._recv_waiter = waiter
            try:
                received: Data | MessageStream = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # A message was handed over just before the cancellation: keep
                    # it for the next recv() rather than lose it.
                    self._queue().appendleft(waiter.result())
                raise
            finally:
                self._recv_waiter = None
                # The exception that a closed connection set on the waiter has
                # a traceback holding this frame: without its local, no cycle
                # (exception, traceback, frame, waiter) keeps the connection
                # alive until the cyclic GC runs.
                del waiter
            if isinstance(received, MessageStream):
                return await self._take_stream(received, _streamed)  # type: ignore[return-value]
            if self._message_hook is not None:
                self._message_hook(received)
            return received
        except ConnectionClosedOK:
            if _iterating:
                raise StopAsyncIteration from None
            raise

    def __aiter__(self) -> AsyncIterator[Data]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Data]:
        """Receive the next message; end the iteration after a normal closure."""
        return self.recv(_iterating=True)

    async def recv_stream(self) -> MessageStream:
        """Receive the next message as a stream: ``async for chunk in await ws.recv_stream()``.

        An upload route that never holds the file in memory::

            async def upload(ws):
                ws.max_stream_size = 4 << 30  # 4 GiB, whatever max_size is
                stream = await ws.recv_stream()
                digest = hashlib.sha256()
                with open(path, "wb") as file:
                    async for chunk in stream:
                        digest.update(chunk)
                        file.write(chunk)
                await ws.send(digest.hexdigest())

        The chunks come as the payload arrives, each at most
        :attr:`stream_chunk_size` bytes: ``str`` for a text message (cut
        between code points), ``bytes`` for a binary one;
        :attr:`MessageStream.text` tells which before the first chunk.
        Reading from the socket pauses while a few chunks wait for the
        application, so a message of any size holds little memory; its size
        is limited by :attr:`max_stream_size`, not ``max_size``.

        The first call puts the connection in streaming mode for good: from
        the next message on, any message but a small one that arrives whole
        is received in chunks (:meth:`recv` joins them again). A stream not
        read to its end is skipped (read and dropped) when the next message
        is asked for, or by :meth:`MessageStream.aclose`; the connection stays
        open.

        Raises:
            ConnectionClosed: as :meth:`recv`.
            ConcurrencyError: as :meth:`recv`.
        """
        protocol = self.protocol
        if not protocol.streaming:
            protocol.streaming = True
        message: Data | MessageStream = await self.recv(_streamed=True)
        if isinstance(message, MessageStream):
            return message
        # A message that came whole: a stream of one chunk.
        stream = MessageStream(self, isinstance(message, str))
        stream._taken = stream._done = True
        if message:
            stream._chunks.append(message)
        return stream

    @property
    def max_stream_size(self) -> int | None:
        """The largest message :meth:`recv_stream` takes, in bytes; ``None``: no limit.

        Beyond it the connection fails with 1009. It replaces ``max_size``
        once the connection streams (a 4 GiB upload beside 1 MiB messages).
        """
        return self.protocol.max_stream_size

    @max_stream_size.setter
    def max_stream_size(self, value: int | None) -> None:
        self.protocol.max_stream_size = value

    @property
    def stream_chunk_size(self) -> int:
        """The largest chunk of a streamed message, in bytes (64 KiB by default)."""
        return self.protocol.stream_chunk_size

    @stream_chunk_size.setter
    def stream_chunk_size(self, value: int) -> None:
        self.protocol.stream_chunk_size = value

    async def _take_stream(self, stream: MessageStream, streamed: bool) -> Data | MessageStream:
        # recv() of a message that arrives as a stream: recv_stream() takes it
        # as it is, recv() joins it. The message hook (a rate limit) counts
        # it now, before its size is known.
        stream._taken = True
        if self._message_hook is not None:
            self._message_hook("" if stream.text else b"")
        return stream if streamed else await self._join(stream)

    async def _join(self, stream: MessageStream) -> Data:
        # recv() of a message that arrives as a stream: max_size still holds.
        limit = self.protocol.max_message_size
        chunks: list[Data] = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if limit is not None and size > limit:
                stream._skip()
                if self.protocol.state is OPEN:
                    self.protocol.fail(1009, f"message exceeds the limit of {limit} bytes")
                    self._write_pending()
                raise self._closed_exc()
            chunks.append(chunk)
        if stream.text:
            return "".join(cast("list[str]", chunks))
        return b"".join(cast("list[bytes]", chunks))

    async def send(
        self,
        message: Data
        | bytearray
        | memoryview
        | PreparedMessage
        | Iterable[Data]
        | AsyncIterable[Data],
        *,
        compress: bool = True,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        A :class:`~rapidws.PreparedMessage` is sent with the frame it shares
        with other connections (its own ``compress`` applies).

        An iterable or async iterable of ``str`` (or of bytes-like) is sent as one
        fragmented message, a frame per item. Waits when the write buffer is
        above its high-water mark, until it drains below the low-water mark.
        With ``compress=False``, negotiated compression skips this message
        (already compressed data, or a latency-critical one).

        Raises:
            ConnectionClosed: when the connection is closing or closed.
            TypeError: for an unsupported message type, or mixed fragment types.
        """
        while self._fragmenting is not None:
            # Another task is sending a fragmented message: frames of two
            # messages cannot interleave.
            await asyncio.shield(self._fragmenting)
        if isinstance(message, (str, bytes, bytearray, memoryview, PreparedMessage)):
            self.send_nowait(message, compress=compress)
            if self._writing_paused:
                await self._drain()
        elif isinstance(message, Mapping):
            # Iterating would send the keys: surely a forgotten json.dumps().
            raise TypeError(f"cannot send {type(message).__name__}: send str, bytes or an iterable")
        elif isinstance(message, (Iterable, AsyncIterable)):
            await self._send_fragments(message, compress)  # type: ignore[arg-type]
        else:
            raise TypeError(f"cannot send {type(message).__name__}: send str, bytes or an iterable")

    def _send_nowait_more(
        self, message: Data | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        # send_nowait() (ConnectionCore) when the connection is not open.
        try:
            self.protocol.send_message(message, compress=compress)
        except InvalidState:
            if self.protocol.state is OPEN:
                raise
            raise self._closed_exc() from None
        if not self._handling:
            self._write_pending()

    async def _send_fragments(
        self, fragments: Iterable[Data] | AsyncIterable[Data], compress: bool
    ) -> None:
        async with MessageWriter(self, None, compress) as writer:
            # Each fragment is held back until the next arrives, to know
            # whether it is the last one (FIN).
            pending: Data | None = None
            async for fragment in _aiter(fragments):
                writer._check(fragment)
                if pending is not None:
                    await writer.send(pending)
                pending = fragment
            if pending is not None:
                writer._write(pending, fin=True)

    def send_stream(self, *, text: bool = False, compress: bool = True) -> MessageWriter:
        """Send one message as a stream, each fragment as it is given.

        ::

            async with ws.send_stream() as stream:
                async for block in source:
                    await stream.send(block)

        :meth:`MessageWriter.send` makes a frame at once; the frames given in
        one turn of the event loop (up to 256 KiB) leave together at its end,
        in one write, and ``send()`` waits while the write buffer is above its
        high-water mark. Leaving the block ends the
        message (an empty message when nothing was sent). An exception in the
        block, once a fragment is out, fails the connection with 1011: the
        peer cannot make sense of half a message. Other sends wait for the
        message's end: frames of two messages cannot interleave.

        Args:
            text: ``True`` for a text message (``str`` fragments), ``False``
                for a binary one (bytes-like fragments).
            compress: ``False`` to skip negotiated compression for this message.
        """
        return MessageWriter(self, text, compress)

    async def send_file(
        self,
        file: SyncReader | AsyncReader,
        *,
        chunk_size: int = STREAM_CHUNK_SIZE,
        compress: bool = True,
    ) -> None:
        """Send what ``file`` holds as one message, ``chunk_size`` bytes per frame.

        ``file`` is anything with ``read(size)``: a file opened in binary mode
        (a binary message) or text mode (a text message), or an object whose
        ``read()`` is a coroutine (an async file, a network body). Reading
        waits while the write buffer is full, so a file of any size goes out
        with little memory. A file read blocks the loop for the read: for a
        slow disk, prefer an async reader. For an async iterable of
        fragments, :meth:`send` does the same.

        Raises:
            ConnectionClosed: when the connection is closing or closed.
        """
        async with MessageWriter(self, None, compress) as writer:
            while True:
                data = file.read(chunk_size)
                if not isinstance(data, (str, bytes)):
                    data = await data
                if not data:
                    break
                await writer.send(data)
            if not writer._sent:
                await writer.send(data)  # an empty file: an empty message

    def ping(self, data: str | bytes | bytearray | None = None) -> asyncio.Future[float]:
        """Send a ping; return a future that resolves to the round-trip time in seconds.

        ``rtt = await ws.ping()`` waits for the pong. The ping is sent at once,
        whether the future is awaited or not.

        Raises:
            ConnectionClosed: when the connection is closing or closed.
            ValueError: when ``data`` is over 125 bytes or matches a pending ping.
        """
        if data is None:
            data = os.urandom(4)
            while data in self._pings:
                data = os.urandom(4)
        else:
            data = data.encode() if isinstance(data, str) else bytes(data)
        if data in self._pings:
            raise ValueError("a ping with the same data is already waiting for its pong")
        try:
            self.protocol.send_ping(data)
        except InvalidState:
            raise self._closed_exc() from None
        waiter: asyncio.Future[float] = self.loop.create_future()
        # perf_counter(): uvloop's loop.time() has millisecond resolution.
        if self._pings is _NO_PINGS:
            self._pings = {}
        self._pings[data] = (waiter, time.perf_counter())
        self._write_pending()
        return waiter

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong, a one-way heartbeat."""
        try:
            self.protocol.send_pong(data.encode() if isinstance(data, str) else data)
        except InvalidState:
            raise self._closed_exc() from None
        self._write_pending()

    async def send_json(
        self, obj: Any, *, dumps: Callable[[Any], str | bytes] = json.dumps
    ) -> None:
        """Send ``obj`` encoded as JSON: a text message (binary if ``dumps`` returns bytes).

        ``dumps`` may be any encoder: ``orjson.dumps`` returns bytes, for instance.
        """
        await self.send(dumps(obj))

    async def recv_json(self, *, loads: Callable[[str | bytes], Any] = json.loads) -> Any:
        """Receive the next message and decode it from JSON with ``loads``.

        Raises:
            ValueError: when the message is not valid JSON (the connection stays
                open: close it with 1007 if the protocol says so).
            ConnectionClosed: as :meth:`recv`.
        """
        return loads(await self.recv())

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting: for callbacks, which cannot await.

        Does nothing when the connection is already closing or closed;
        :meth:`wait_closed` waits for the end.
        """
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            if not self._handling:
                self._write_pending()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with a closing handshake, and wait until it is closed.

        Waits at most ``close_timeout`` for the peer, then drops the connection.
        Does nothing more when the connection is already closing. Before the
        opening handshake ends (in a server's ``process_request`` hook), drops
        the TCP connection; to refuse with a status, return a ``Response``.
        """
        if self.protocol.parsing_paused:
            self._resume_parsing()
        if self.protocol.state is CONNECTING and self.transport is not None:
            # Before the handshake's end (a server hook): there is no
            # WebSocket connection to close yet, only TCP to drop.
            self.transport.abort()
        elif self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._write_pending()
        elif self.transport is not None and self.protocol.state is not CLOSED:
            self._write_pending()
        await self.wait_closed()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark.

        Returns at once when it is already; after :meth:`send_nowait` calls,
        this is the backpressure that :meth:`send` applies by itself.

        Raises:
            ConnectionClosed: when the connection is closed.
        """
        if self._writing_paused or self._lost:
            await self._drain()

    def on_close(self, callback: Callable[[Connection[Any]], object]) -> None:
        """Call ``callback(connection)`` once the TCP connection is closed.

        Called on the event loop, right after the connection is lost (or soon,
        when it is closed already); for bookkeeping such as leaving rooms.
        """
        if self._closed is None:
            self._closed = self.loop.create_future()
            if self._lost:
                self._closed.set_result(None)
        self._closed.add_done_callback(lambda _: callback(self))

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        if self.protocol.parsing_paused:
            self._resume_parsing()
        if self._lost:
            return
        if self._closed is None:
            self._closed = self.loop.create_future()
        await asyncio.shield(self._closed)

    # Internals shared with subclasses.

    def _closed_exc(self) -> ConnectionClosed:
        protocol = self.protocol
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        args = (rcvd, sent, protocol.close_rcvd_then_sent)
        if rcvd is not None and sent is not None and {rcvd.code, sent.code} <= _OK_CODES:
            return ConnectionClosedOK(*args)
        return ConnectionClosedError(*args)

    def _code_and_reason(self) -> tuple[int, str]:
        # What _closed_exc() would say, without making the exception.
        protocol = self.protocol
        return ConnectionClosed.code_and_reason(protocol.close_rcvd, protocol.close_sent)

    def _write_pending(self) -> None:
        """Write what the engine produced; arm the close timer when due."""
        transport = self.transport
        if transport is None:
            return
        protocol = self.protocol
        out = protocol.data_to_send()
        if len(out) == 1 and out[0]:
            self._wire_out += len(out[0])
            transport.write(out[0])  # the common case: one frame
        elif not out:
            if protocol.state is OPEN:
                return  # nothing written, nothing changed (EOF comes with b"")
        else:
            self._wire_out += sum(map(len, out))
            if len(out) == 2 and self._writev and out[1]:  # b"" would ask for EOF
                transport.writelines(out)  # most often a frame's header and payload
            else:
                _write_all(transport, out, self._writev)
        if protocol.state is OPEN and not protocol.eof_sent:
            return  # close_expected() is false, without the call
        if self._close_timer is None and not self._lost and protocol.close_expected():
            self._stop_keepalive()
            if self._reading_paused:
                # The peer's close frame (or EOF) must get through: read-side
                # flow control ends with the closing handshake.
                self._resume_reading()
            if self.close_timeout is not None:
                self._close_timer = self._close_deadlines(self.close_timeout)
                self._close_timer.add(self)

    def _close_deadlines(self, timeout: float) -> Deadlines[Connection[Any]]:
        """Return the deadlines to join for the closing handshake: a server's are shared."""
        return Deadlines(timeout, Connection._close_timed_out)

    def _close_timed_out(self) -> None:
        if self.transport is not None:
            self.logger.debug("closing handshake timed out; dropping the connection")
            self.transport.abort()

    def _process_events(self) -> None:
        # Saved and restored: a hook task answers a handshake from outside.
        handling = self._handling
        self._handling = True
        protocol = self.protocol
        try:
            # Until none is left: sending the handshake response parses the
            # frames that came with the request into more events.
            events = protocol.events_received()
            while events:
                for event in events:
                    kind = type(event)
                    if kind is str or kind is bytes:
                        self._count_received(event, True)
                        self._message_received(event)  # type: ignore[arg-type]
                    elif kind is MessageChunk or kind is MessageStart or kind is MessageEnd:
                        if kind is MessageChunk:
                            self._count_received(event.data, False)  # type: ignore[union-attr]
                        elif kind is MessageStart:
                            self._count_received("" if event.text else b"", True)  # type: ignore[union-attr]
                        self._stream_event(event)  # type: ignore[arg-type]
                    elif kind is Pong:
                        self._pong_received(event)  # type: ignore[arg-type]
                    elif kind is Ping or kind is Close:
                        continue
                    else:
                        self._handshake_event(event)  # type: ignore[arg-type]
                events = protocol.events_received()
        finally:
            self._handling = handling
        self._events_done()

    def _events_done(self) -> None:
        # After the events of one read: hold parsing back if the engine paused
        # it, and write what the application and the engine sent meanwhile.
        if self.protocol.parsing_paused and self._resume_timer is None:
            # Nothing more is parsed, so nothing more is read, until the
            # application has taken the messages before the pause (and had a
            # loop step to answer them). One that stops reading delays the
            # rest by half the close timeout at most, so that a peer with the
            # same timeout still gets our close reply.
            self._pause_reading()
            if self.protocol.inflating:
                # A compressed stream's output waits for its reader: parsing
                # goes on once it took the chunks (_stream_drained).
                stream = self._stream
                if stream is None or len(stream._chunks) < _STREAM_HIGH:
                    self.loop.call_soon(self._resume_parsing)
            else:
                if not self._messages:
                    self.loop.call_soon(self._resume_parsing)
                if self.close_timeout is not None:
                    delay = self.close_timeout / 2
                    self._resume_timer = self.loop.call_later(delay, self._resume_parsing)
        self._write_pending()

    def _resume_parsing(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        if self.protocol.parsing_paused and not self._lost:
            self.protocol.resume_parsing()
            if len(self._messages) <= self._queue_low:
                self._resume_reading()
            self._process_events()

    def _handshake_event(self, event: Request | Response) -> None:
        raise NotImplementedError

    def _stream_event(self, event: MessageStart | MessageChunk | MessageEnd) -> None:
        # A piece of a message received as a stream, for the MessageStream
        # handed out at its start; dropped when that stream was skipped.
        stream = self._stream
        if type(event) is MessageChunk:
            if stream is not None:
                stream._chunks.append(event.data)
                if stream._waiter is not None:  # most chunks find none
                    stream._wake()
                if len(stream._chunks) >= _STREAM_HIGH and self.protocol.state is OPEN:
                    # Read-side flow control, as for the message queue.
                    self._pause_reading()
        elif type(event) is MessageStart:
            self._stream = MessageStream(self, event.text)
            self._message_received(self._stream)
        elif stream is not None:
            stream._done = True
            stream._wake()
            self._stream = None

    def _stream_drained(self) -> None:
        # The application took chunks of the stream, or skipped it.
        protocol = self.protocol
        if protocol.parsing_paused and protocol.inflating:  # the attribute first: per chunk
            self._resume_parsing()
        elif self._reading_paused and len(self._messages) <= self._queue_low:
            self._resume_reading()

    def _message_received(self, message: Data | MessageStream) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            self._recv_waiter = None
            waiter.set_result(message)
            return
        self._queue().append(message)
        if (
            self._queue_high is not None
            and len(self._messages) >= self._queue_high
            and self.protocol.state is OPEN
        ):
            # Read-side flow control: let TCP push back on the peer.
            self._pause_reading()

    def _message_taken(self) -> None:
        # After a message left the queue (recv(), or the sync layer's thread):
        # read-side flow control and a paused parser may go on.
        if not self._messages and self.protocol.parsing_paused:
            # The last message before the pause is taken: once the caller
            # has answered it (in this step), go on.
            self.loop.call_soon(self._resume_parsing)
        elif self._reading_paused and len(self._messages) <= self._queue_low:
            self._resume_reading()

    def _queue(self) -> collections.deque[Data | MessageStream]:
        if self._messages is _NO_QUEUE:
            self._messages = collections.deque()
        return self._messages

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.protocol.parsing_paused or not self._reading_paused:
            return
        if self._writing_paused and self.protocol.state is OPEN:
            return  # resume_writing() resumes reading too
        self._reading_paused = False
        if self.transport is not None and not self._lost:
            self.transport.resume_reading()

    def _pong_received(self, data: bytes) -> None:
        if data not in self._pings:
            return
        now = time.perf_counter()
        # A pong acknowledges its ping and every earlier one (RFC 6455 5.5.3).
        for key in list(self._pings):
            waiter, sent_at = self._pings.pop(key)
            if not waiter.done():
                waiter.set_result(now - sent_at)
            if key == data:
                self.latency = now - sent_at
                self._latency_measured(self.latency)
                break

    def _latency_measured(self, seconds: float) -> None:
        """Take a ping's round-trip time (a server counts it)."""

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None and self._heartbeat is None:
            self._heartbeat = self._join_heartbeat(self.ping_interval)
            self._heartbeat_place = self._heartbeat.add(self)

    def _join_heartbeat(self, interval: float) -> Heartbeat:
        """Return the heartbeat to join: a server's connections share one."""
        return Heartbeat(interval)

    def _stop_keepalive(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.discard(self, self._heartbeat_place)
            self._heartbeat = None

    def _keepalive(self) -> None:
        """Send a keepalive ping (called by the heartbeat every ``ping_interval``)."""
        if self.protocol.state is not OPEN:
            return
        if self._writing_paused:
            # A ping would wait behind the buffered data, and its timeout would
            # measure our backlog, not the peer: try again next round.
            return
        waiter = self.ping()
        waiter.add_done_callback(_consume_exception)
        if self.ping_timeout is not None:
            timeout = self.loop.call_later(self.ping_timeout, self._ping_timed_out, waiter)
            waiter.add_done_callback(lambda _: timeout.cancel())

    def _ping_timed_out(self, waiter: asyncio.Future[float]) -> None:
        if waiter.done() or self.protocol.state is not OPEN:
            return
        self.logger.info("no pong within %s s: closing the connection", self.ping_timeout)
        self.protocol.fail(1011, "keepalive ping timeout")
        self._write_pending()

    # asyncio.Protocol callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start using the transport (called by asyncio)."""
        # Not an isinstance() check: uvloop's transports do not subclass
        # asyncio.Transport, though they implement its interface.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(self._write_high, self._write_low)
        # uvloop's writelines() is one writev() that keeps flow control: a
        # frame's header and its payload (a stream's fragment, a large
        # message) leave in one system call, and the payload is not copied.
        # asyncio's joins them (3.11) or skips pause_writing() (3.12+).
        self._writev = type(transport).__module__.startswith("uvloop")

    def _data_received_more(self, data: bytes) -> None:
        # data_received() (ConnectionCore) when the connection is not open.
        self.protocol.receive_data(data)
        self._process_events()

    def _read_payload_directly(self) -> None:
        # The rest of a large frame goes from the socket into the message.
        if self.transport is not None and self.protocol.payload_buffer_size():
            self.transport.set_protocol(_PayloadReader(self))

    def _read_messages(self) -> None:
        # Back from _PayloadReader: messages come through data_received().
        if self.transport is not None:
            self.transport.set_protocol(self)

    def eof_received(self) -> None:
        """Handle the peer's half-close (called by asyncio); the transport then closes."""
        self.protocol.receive_eof()
        self._process_events()

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake everything waiting on this connection (called by asyncio)."""
        self._lost = True
        self.protocol.receive_eof()
        self._process_events()
        self._stop_keepalive()
        if self._close_timer is not None:
            self._close_timer.discard(self)
        if self._resume_timer is not None:
            self._resume_timer.cancel()
        # The exception is made only for someone waiting: most connections
        # end with nobody in recv().
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._closed_exc())
        if self._stream is not None:
            self._stream._wake()  # its reader learns that the connection is closed
        if self._pings:
            closed = self._closed_exc()
            for ping_waiter, _ in self._pings.values():
                if not ping_waiter.done():
                    ping_waiter.set_exception(closed)
            self._pings = _NO_PINGS
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """Stop ``send()`` at the high-water mark (called by asyncio)."""
        self._writing_paused = True
        # And stop reading: a peer that does not read what we write (pongs
        # to its pings, answers to its messages) must not grow our buffers.
        if self.protocol.state is OPEN:
            self._pause_reading()

    def resume_writing(self) -> None:
        """Let ``send()`` go on below the low-water mark (called by asyncio)."""
        self._writing_paused = False
        if len(self._messages) <= self._queue_low:
            self._resume_reading()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drain_waiter = None

    async def _drain(self) -> None:
        if self._lost:
            raise self._closed_exc()
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.loop.create_future()
        await asyncio.shield(waiter)
        if self._lost:
            raise self._closed_exc()


class _PayloadReader(asyncio.BufferedProtocol):
    """The transport's protocol while a large frame's payload is read in place.

    The socket reads into the message itself (the engine's ``payload_buffer()``),
    which is unmasked there: no bytes object per read, no copy. A streamed
    message's payload is read into the engine's read buffer instead, and
    leaves it as chunks. When the frame is complete, the connection is the
    transport's protocol again. Every other callback goes to the connection.
    """

    __slots__ = ("_connection", "_spill")

    def __init__(self, connection: Connection[Any]) -> None:
        self._connection = connection
        self._spill: bytearray | None = None

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        """Return where the next bytes go (called by the transport)."""
        view: memoryview | None = self._connection.protocol.payload_buffer()
        if view is not None:
            self._spill = None
            return view
        # The engine takes no more in place (the application closed, or a TLS
        # transport feeds us past the frame's end): these go the usual way.
        self._spill = bytearray(max(sizehint, DIRECT_READ_MIN))
        return self._spill

    def buffer_updated(self, nbytes: int) -> None:
        """Take ``nbytes`` read into the last buffer (called by the transport)."""
        connection = self._connection
        spill = self._spill
        if spill is not None:
            self._spill = None
            with memoryview(spill) as view:  # the transport may still hold spill
                self.data_received(bytes(view[:nbytes]))
            return
        connection._wire_in += nbytes
        protocol = connection.protocol
        protocol.payload_received(nbytes)
        if not protocol.payload_left:
            connection._read_messages()
            connection._process_events()
        elif protocol.streaming:
            # A streamed message's chunks go to their reader as they are read.
            connection._process_events()

    def data_received(self, data: bytes) -> None:
        """Hand bytes to the connection, from a transport that does not read into buffers."""
        self._connection._read_messages()
        self._connection.data_received(data)

    def eof_received(self) -> None:
        """Hand the EOF to the connection (called by the transport)."""
        self._connection._read_messages()
        self._connection.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Hand the loss to the connection (called by the transport)."""
        self._connection.connection_lost(exc)

    def pause_writing(self) -> None:
        """Hand flow control to the connection (called by the transport)."""
        self._connection.pause_writing()

    def resume_writing(self) -> None:
        """Hand flow control to the connection (called by the transport)."""
        self._connection.resume_writing()


class MessageStream:
    """A message received as a stream, from :meth:`Connection.recv_stream`.

    ``async for chunk in stream`` yields the payload as it arrives: ``str``
    chunks for a text message, ``bytes`` for a binary one. Reading from the
    socket pauses while a few chunks wait here.

    Raises (while iterating):
        ConnectionClosed: when the connection closes before the message's end.
        ConcurrencyError: when two coroutines read the stream at once.
    """

    __slots__ = ("_chunks", "_connection", "_done", "_taken", "_waiter", "text")

    def __init__(self, connection: Connection[Any], text: bool) -> None:
        self._connection = connection
        #: Whether the message is text (``str`` chunks) or binary (``bytes``).
        self.text = text
        self._chunks: collections.deque[Data] = collections.deque()
        self._done = False  # every chunk arrived, or the rest is skipped
        self._taken = False  # handed to the application
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        kind = "text" if self.text else "binary"
        return f"<MessageStream {kind}{' done' if self._done else ''}>"

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Data:
        """Return the next chunk; end at the message's end."""
        chunks = self._chunks
        while not chunks:
            if self._done:
                raise StopAsyncIteration
            connection = self._connection
            if connection._lost:
                raise connection._closed_exc()
            if self._waiter is not None:
                raise ConcurrencyError("another coroutine is already reading this stream")
            self._waiter = connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = chunks.popleft()
        if len(chunks) <= _STREAM_LOW:
            connection = self._connection
            # Most chunks find nothing paused: no call then.
            if connection._reading_paused or connection.protocol.parsing_paused:
                connection._stream_drained()
        return chunk

    async def aclose(self) -> None:
        """Skip the rest of the message: what is left is read and dropped."""
        self._skip()

    def _skip(self) -> None:
        self._chunks.clear()
        if not self._done:
            self._done = True
            connection = self._connection
            if connection._stream is self:
                connection._stream = None
            self._wake()
            connection._stream_drained()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class MessageWriter:
    """A message sent as a stream, from :meth:`Connection.send_stream`."""

    __slots__ = (
        "_compress",
        "_connection",
        "_ended",
        "_flush_handle",
        "_fragmenting",
        "_kind",
        "_sent",
        "_text",
        "_unflushed",
    )

    def __init__(self, connection: Connection[Any], text: bool | None, compress: bool) -> None:
        self._connection = connection
        self._text = text  # None: the first fragment tells
        # The type of the fragments that need no _check(): the last that passed
        # it, or the one the message's type tells at once.
        self._kind: type | None = None if text is None else str if text else bytes
        self._compress = compress
        self._sent = False  # whether a fragment is out
        self._ended = False
        self._fragmenting: asyncio.Future[None] | None = None
        self._unflushed = 0  # bytes of fragments given but not yet written
        # The write due at the end of the loop's turn, if any.
        self._flush_handle: asyncio.Handle | None = None

    async def __aenter__(self) -> MessageWriter:
        connection = self._connection
        while connection._fragmenting is not None:
            # Another task is sending a fragmented message: frames of two
            # messages cannot interleave.
            await asyncio.shield(connection._fragmenting)
        self._fragmenting = connection._fragmenting = connection.loop.create_future()
        return self

    async def send(self, data: Data | bytearray | memoryview) -> None:
        """Send the next fragment; wait while the write buffer is above its high-water mark.

        Raises:
            ConnectionClosed: when the connection is closing or closed.
            TypeError: for a fragment of the other type than the message's.
        """
        if type(data) is not self._kind:  # checked once per message, most often
            self._check(data)
        self._write(data, fin=False)
        connection = self._connection
        if connection._writing_paused:
            await connection._drain()

    def _check(self, data: object) -> None:
        text = isinstance(data, str)
        if not text and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"cannot send a fragment of type {type(data).__name__}")
        if self._text is None:
            self._text = text
        elif text is not self._text:
            raise TypeError("all the fragments of a message must be of one type")
        self._kind = type(data)

    def _write(self, data: Data | bytearray | memoryview, *, fin: bool) -> None:
        connection = self._connection
        protocol = connection.protocol
        first = not self._sent
        try:
            if not first:
                protocol.send_continuation(data, fin)
            elif isinstance(data, str):
                protocol.send_text(data, fin, compress=self._compress)
            else:
                protocol.send_binary(data, fin, compress=self._compress)
        except InvalidState:
            if protocol.state is OPEN:
                raise
            raise connection._closed_exc() from None
        connection._count_sent(data, first)
        self._sent = True
        self._ended = fin
        if fin:
            connection._write_pending()  # with the fragments still waiting, in order
            if self._flush_handle is not None:
                self._flush_handle.cancel()  # nothing left for it to write
            return
        # The fragments given in one turn of the loop leave in one write: the
        # peer wakes once for them all, not once each (a streamed echo hands
        # out a read's chunks together). Any other write, a pong or a close,
        # goes through _write_pending() too, so it takes them along first.
        self._unflushed += len(data)
        if self._unflushed >= _CORK_LIMIT:
            self._unflushed = 0
            connection._write_pending()
        elif self._flush_handle is None:
            self._flush_handle = connection.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._unflushed = 0
        self._connection._write_pending()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        connection = self._connection
        try:
            if exc_type is None:
                if not self._ended and self._text is not None:
                    self._write("" if self._text else b"", fin=True)
            elif self._sent and not self._ended and connection.protocol.state is OPEN:
                # Half a message is on the wire: the peer cannot make sense of
                # anything after it.
                connection.protocol.fail(1011, "error while sending a fragmented message")
                connection._write_pending()
        finally:
            connection._fragmenting = None
            if self._fragmenting is not None:
                self._fragmenting.set_result(None)


class SyncReader(typing.Protocol):
    """A file-like source for :meth:`Connection.send_file`: ``read()`` returns data."""

    def read(self, size: int, /) -> str | bytes:
        """Return at most ``size`` bytes (or characters); empty at the end."""
        ...


class AsyncReader(typing.Protocol):
    """A source for :meth:`Connection.send_file` whose ``read()`` is a coroutine."""

    def read(self, size: int, /) -> Awaitable[str | bytes]:
        """Return at most ``size`` bytes (or characters); empty at the end."""
        ...


def _write_all(transport: asyncio.Transport, out: list[bytes], writev: bool) -> None:
    # Small frames (the replies to one read) are joined into one write: one
    # syscall. Large ones (a stream's fragments) are not copied: one writev()
    # on uvloop, a write each elsewhere. Not asyncio's writelines(): it joins
    # (3.11) or skips pause_writing(), and flow control (3.12+).
    parts: list[bytes] = []
    small: list[bytes] = []
    for data in out:
        if 0 < len(data) <= _COALESCE_LIMIT:
            small.append(data)
            continue
        if small:
            parts.append(b"".join(small))
            small = []
        if data:
            parts.append(data)
            continue
        _write_parts(transport, parts, writev)  # b"", the last: EOF
        parts = []
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
    if small:
        parts.append(b"".join(small))
    _write_parts(transport, parts, writev)


def _write_parts(transport: asyncio.Transport, parts: list[bytes], writev: bool) -> None:
    if writev and len(parts) > 1:
        transport.writelines(parts)
    else:
        for data in parts:
            transport.write(data)


async def _aiter(items: Iterable[Data] | AsyncIterable[Data]) -> AsyncIterator[Data]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
