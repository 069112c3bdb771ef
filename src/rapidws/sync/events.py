"""The browser-style event client: ``WebSocketApp(url, on_open=, on_message=, ...)``.

The programming model of the browser's ``WebSocket`` and of websocket-client's
``WebSocketApp``: callbacks for the connection's events, a ``send()`` that
never blocks (it queues; :attr:`~WebSocketApp.buffered_amount` says how much
is not written yet), ``ready_state``. Three ways to run the same callbacks:

- ``await app.run()`` runs them in the running loop; they may be coroutine
  functions.
- ``app.run_forever()`` blocks, running them in the calling thread, on an
  event loop of the app's own in that thread (or, where a loop already runs
  there, a Jupyter kernel, in a thread of the app's own, joined).
- ``app.start()`` runs ``run_forever()`` in a background thread.

Callbacks run where the connection's events are handled, one at a time, as
in a browser: ``on_message`` is called as a message is read (no future, no
task per message), and a reply sent from it goes out with the read's other
output in one write, with no hand-over between threads: the fastest
request-reply (``run_forever()`` runs uvloop's loop when it is installed).
While a callback blocks (a database call, ``time.sleep``) this connection
waits: its next messages stay in the kernel's buffers and TCP holds the
server back. No other connection waits with it: each ``run_forever()`` has
its loop and thread. A callback that blocks for longer than the server's
keepalive timeout should hand its work to a thread of its own (``send()`` is
safe from any thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..asyncio.client import ClientConnection as AsyncClientConnection
from ..asyncio.client import connect
from ..asyncio.connection import Data, MessageStream
from ..asyncio.reconnect import Backoff, Reconnecting, as_policy
from ..core.protocol import Ping, Pong
from ..exceptions import ConnectionClosed, InvalidState
from .loop import loop_thread

__all__ = ["WebSocketApp"]

logger = logging.getLogger("rapidws.client")


class _AppConnection(AsyncClientConnection):
    """A client connection that hands its messages, pings and pongs to callbacks."""

    __slots__ = ("_controls", "_deliver", "_on_control")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_control: Callable[[Ping | Pong], None] | None = None
        # Those that came with the handshake's response, before listen().
        self._controls: list[Ping | Pong] = []
        # Takes each message as it is read, while set; else recv() does.
        self._deliver: Callable[[Data], None] | None = None

    def listen(self, on_control: Callable[[Ping | Pong], None]) -> None:
        """Report the pings and pongs received, from now and since the opening."""
        self._on_control = on_control
        for event in self._controls:
            on_control(event)
        self._controls.clear()

    def deliver(self, on_message: Callable[[Data], None] | None) -> None:
        """Hand each message to ``on_message`` as it is read; ``None``: to ``recv()``.

        Messages that wait for ``recv()`` go first: call it when none does
        (:meth:`waiting` is false).
        """
        self._deliver = on_message
        # Each message of a read comes straight from ConnectionCore (in C
        # when built), not through _process_events().
        self._on_message = None if on_message is None else type(self)._message_received

    def waiting(self) -> bool:
        """Whether messages wait for ``recv()``."""
        return bool(self._messages)

    def _message_received(self, message: Data | MessageStream) -> None:
        deliver = self._deliver
        if deliver is None:
            super()._message_received(message)
        else:
            # Never a stream: this connection is not put in streaming mode.
            deliver(message)  # type: ignore[arg-type]

    def _process_events(self) -> None:
        # Seen before the asyncio layer takes them: it answers pings (the
        # engine does) and matches pongs, and reports neither.
        on_control = self._on_control or self._controls.append
        for event in self.protocol._events:
            if type(event) is Ping or type(event) is Pong:
                on_control(event)
        super()._process_events()


class WebSocketApp:
    """A WebSocket client driven by callbacks, as in a browser.

    Each callback takes the app first: ``on_open(app)``,
    ``on_message(app, message)`` (``str`` for text, ``bytes`` for binary),
    ``on_close(app, code, reason)`` (1006 without a close frame),
    ``on_error(app, exc)``, ``on_ping(app, payload)``, ``on_pong(app, payload)``,
    ``on_reconnect(app, attempt, delay, cause)``. An exception in a callback
    goes to ``on_error`` (or the ``rapidws.client`` log) and the connection
    goes on. ``on_error`` also gets the error that ends the app: a failed
    opening, or a close not worth retrying. The callbacks run one at a time
    in the thread that runs the app (see the module's documentation).

    Args:
        url: the ``ws://`` or ``wss://`` URI, or a :class:`rapidws.connect`
            with options (``rapidws.connect(url, subprotocols=["chat"])``).
        reconnect: a :class:`~rapidws.asyncio.reconnect.Backoff` policy, or
            ``True`` for the default one: after a closure worth retrying (see
            :func:`~rapidws.asyncio.reconnect.retryable`), the app connects
            again and calls ``on_open`` again; ``None`` keeps ``url``'s.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3

    def __init__(
        self,
        url: str | connect,
        *,
        on_open: Callable[[WebSocketApp], Any] | None = None,
        on_message: Callable[[WebSocketApp, Data], Any] | None = None,
        on_close: Callable[[WebSocketApp, int, str], Any] | None = None,
        on_error: Callable[[WebSocketApp, Exception], Any] | None = None,
        on_ping: Callable[[WebSocketApp, bytes], Any] | None = None,
        on_pong: Callable[[WebSocketApp, bytes], Any] | None = None,
        on_reconnect: Callable[[WebSocketApp, int, float, BaseException], Any] | None = None,
        reconnect: bool | Backoff | None = None,
    ) -> None:
        opening = connect(url) if isinstance(url, str) else url
        self._opening = opening
        self._policy = opening.reconnect if reconnect is None else as_policy(reconnect)
        self.on_open = on_open
        self.on_message = on_message
        self.on_close = on_close
        self.on_error = on_error
        self.on_ping = on_ping
        self.on_pong = on_pong
        self.on_reconnect = on_reconnect
        self._connection: AsyncClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # the ident of the loop's thread
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._stopping = False
        # Bytes handed to the loop by send() and not given to the transport yet.
        self._unsent = 0
        self._lock = threading.Lock()

    # The browser's properties.

    @property
    def url(self) -> str:
        """The URI connected to, without user info."""
        uri = self._opening.uri
        return f"{'wss' if uri.secure else 'ws'}://{uri.host_header}{uri.resource}"

    @property
    def ready_state(self) -> int:
        """CONNECTING (0, also while waiting to reconnect), OPEN (1), CLOSING (2), CLOSED (3)."""
        connection = self._connection
        if connection is None:
            return self.CONNECTING if self._running else self.CLOSED
        return int(connection.state)

    @property
    def buffered_amount(self) -> int:
        """Bytes sent with :meth:`send` and not written to the socket yet."""
        connection = self._connection
        transport = None if connection is None else connection.transport
        written = 0 if transport is None else transport.get_write_buffer_size()
        return self._unsent + written

    @property
    def connection(self) -> AsyncClientConnection | None:
        """The current asyncio connection, while there is one (its ``subprotocol``, ``latency``)."""
        return self._connection

    # Sending and closing: from any thread, or from the loop.

    def send(self, message: Data | bytearray | memoryview) -> None:
        """Queue a message for sending: ``str`` as text, bytes-like as binary.

        Never blocks: the message is written by the connection's loop, in the
        order of the calls, each whole; :attr:`buffered_amount` counts it until
        it is written. Safe from any thread and from the callbacks.

        Raises:
            InvalidState: when the connection is not open (connecting,
                waiting to reconnect, closing or closed).
        """
        connection = self._connection
        if connection is None or self.ready_state != self.OPEN:
            raise InvalidState("the WebSocket connection is not open")
        if self._on_loop():
            connection.send_nowait(message)  # at once: a callback's reply
            return
        size = _size(message)  # TypeError here, in the caller's thread
        with self._lock:
            self._unsent += size
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._write, connection, message, size)

    def _write(
        self, connection: AsyncClientConnection, message: Data | bytearray | memoryview, size: int
    ) -> None:
        with self._lock:
            self._unsent -= size
        with contextlib.suppress(ConnectionClosed):  # closed meanwhile: dropped, as browsers do
            connection.send_nowait(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (a closing handshake) and stop; safe from any thread.

        ``run_forever()`` or ``run()`` returns once ``on_close`` has run. Also
        stops a reconnection that waits or is under way.
        """
        if not self._running:
            return
        self._stopping = True
        loop = self._loop
        if loop is None:
            return  # not started yet: the session sees _stopping
        if self._on_loop():
            self._stop(code, reason)
        else:
            loop.call_soon_threadsafe(self._stop, code, reason)

    def _stop(self, code: int, reason: str) -> None:
        connection = self._connection
        if connection is not None:
            connection.close_nowait(code, reason)
        elif self._task is not None:
            self._task.cancel()  # opening, or waiting to reconnect

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    # Running.

    async def run(self) -> None:
        """Connect and run the callbacks in the running loop until the app stops.

        Callbacks may be plain or coroutine functions. Returns after a close
        by :meth:`close` or by the server (1000), or after an error not worth
        retrying (given to ``on_error``). Cancelled, it closes the connection
        with 1001 (going away).
        """
        self._begin()
        try:
            await self._session()
        finally:
            self._running = self._stopping = False

    def run_forever(self) -> None:
        """Connect and run the callbacks in this thread until the app stops; blocks.

        Returns as :meth:`run` does. Ctrl-C closes the connection with 1001
        (going away) and raises :class:`KeyboardInterrupt`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _run(self.run())
            return
        # An event loop runs in this thread (a notebook): run in another one.
        thread = self.start()
        try:
            thread.join()
        except BaseException:
            self.close(1001, "going away")
            thread.join()
            raise

    def start(self) -> threading.Thread:
        """Run :meth:`run_forever` in a new daemon thread; return the thread.

        :meth:`close` stops it; join the thread to wait for the end.
        """
        self._begin()  # close() works from now on
        thread = threading.Thread(target=self.run_forever, name="rapidws-app", daemon=True)
        thread.start()
        return thread

    def _begin(self) -> None:
        if self._task is not None:
            raise InvalidState("this WebSocketApp is already running")
        if not self._running:  # else start() did it, and close() may have come since
            self._running = True
            self._stopping = False

    async def _session(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.current_task()
        # Our connection class, on a copy of the caller's connect object.
        open = copy.copy(self._opening)
        open._create_connection = _AppConnection

        async def on_reconnect(attempt: int, delay: float, cause: BaseException) -> None:
            await _done(self._call(self.on_reconnect, (self, attempt, delay, cause)))

        connections = Reconnecting(open._open_with_timeout, self._policy, on_reconnect)
        receiver: _Receiver | None = None
        try:
            if self._stopping:
                return
            async for connection in connections:
                assert isinstance(connection, _AppConnection)
                self._connection = connection
                await _done(self._call(self.on_open, (self,)))
                connection.listen(self._control)
                receiver = _Receiver(self, connection)
                await receiver.catch_up()
                await receiver.wait_closed()
                await receiver.catch_up()
                code, reason = connection.close_code, connection.close_reason
                await _done(self._call(self.on_close, (self, code, reason)))
                self._connection = None
                if self._stopping:
                    break
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except Exception as exc:
            await _done(self._call(self.on_error, (self, exc)))
        finally:
            if receiver is not None:
                receiver.cancel()
            current, self._connection = self._connection, None
            if current is not None and current.transport is not None:
                # Cancelled or interrupted while open: say so, and go.
                current.close_nowait(1001, "going away")
                current.transport.abort()
            self._task = self._loop = None
            self._loop_thread = 0

    def _control(self, event: Ping | Pong) -> None:
        callback = self.on_ping if type(event) is Ping else self.on_pong
        result = self._call(callback, (self, bytes(event)))
        if result is not None:
            # Not awaited here, in the middle of the connection's events: a
            # coroutine callback goes on as a task of its own.
            asyncio.ensure_future(result).add_done_callback(_consume)

    def _call(
        self, callback: Callable[..., Any] | None, args: tuple[Any, ...]
    ) -> Awaitable[None] | None:
        if callback is None:
            return None
        try:
            result = callback(*args)
        except Exception as exc:
            self._report(exc, callback)
            return None
        if inspect.isawaitable(result):
            return self._awaited(result, callback)
        return None

    async def _awaited(self, result: Awaitable[Any], callback: Callable[..., Any]) -> None:
        try:
            await result
        except Exception as exc:
            self._report(exc, callback)

    def _report(self, exc: Exception, callback: Callable[..., Any] | None = None) -> None:
        on_error = self.on_error
        if on_error is not None and callback is not on_error:
            try:
                result = on_error(self, exc)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result).add_done_callback(_consume)
                return
            except Exception as error:
                exc = error
        logger.error("WebSocketApp callback failed", exc_info=exc)


class _Receiver:
    """Calls ``on_message`` with each message of one connection, one at a time.

    A plain callback is called as the message is read. One that returns an
    awaitable (a coroutine function) holds the next messages back until it is
    done: they wait in the connection's queue, whose flow control applies,
    and :meth:`catch_up` calls back with them.
    """

    __slots__ = ("_app", "_catching_up", "_connection", "_interrupted")

    def __init__(self, app: WebSocketApp, connection: _AppConnection) -> None:
        self._app = app
        self._connection = connection
        self._catching_up: asyncio.Future[None] | None = None
        # Gets what a callback raised that is not an Exception (Ctrl-C).
        self._interrupted: asyncio.Future[None] = connection.loop.create_future()

    def _message(self, message: Data) -> None:
        app = self._app
        try:
            result = app._call(app.on_message, (app, message))
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: _call lets them by
            # Raised in the session, as from a callback it awaits: not in
            # the transport's callback, whose loop would take it its own way.
            self._connection.deliver(None)
            if not self._interrupted.done():
                self._interrupted.set_exception(exc)
            return
        if result is not None:
            # Until it is done, the next messages wait for recv().
            self._connection.deliver(None)
            self._catching_up = asyncio.ensure_future(self._after(result))

    async def _after(self, result: Awaitable[None]) -> None:
        await result
        await self._receive_waiting()

    async def _receive_waiting(self) -> None:
        connection = self._connection
        app = self._app
        while connection.waiting():
            # A queued message: recv() returns it at once, with the queue's
            # flow control.
            message = await connection.recv()
            await _done(app._call(app.on_message, (app, message)))
        # In the step that found the queue empty: no message can come between.
        connection.deliver(self._message)
        self._catching_up = None

    async def catch_up(self) -> None:
        """Call back with the messages that wait, then with each one as it is read."""
        while self._catching_up is not None:
            await asyncio.shield(self._catching_up)
        await self._receive_waiting()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed; raise what interrupted a callback."""
        closed = asyncio.ensure_future(self._connection.wait_closed())
        try:
            await asyncio.wait((closed, self._interrupted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if self._interrupted.done():
            self._interrupted.result()

    def cancel(self) -> None:
        """Stop calling back: the session ends."""
        self._connection.deliver(None)
        if self._catching_up is not None:
            self._catching_up.cancel()


def _run(main: Coroutine[Any, Any, None]) -> None:
    # asyncio.run(main), on uvloop's loop when it is installed (Python 3.11+).
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_thread.new_loop) as runner:
            runner.run(main)
    else:  # pragma: no cover - Python 3.10
        asyncio.run(main)


def _size(message: Data | bytearray | memoryview) -> int:
    if isinstance(message, str):
        return len(message) if message.isascii() else len(message.encode())
    return memoryview(message).nbytes


async def _done(waiting: Awaitable[None] | None) -> None:
    if waiting is not None:
        await waiting


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("WebSocketApp callback failed", exc_info=future.exception())
