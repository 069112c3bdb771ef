"""The asyncio WebSocket server: ``serve(handler, host, port)``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as ssl_module
import types
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # for mypy only: no dependency at run time

    from .http2 import Http2Connection

from ..core.extensions.base import ServerExtensionFactory
from ..core.extensions.permessage_deflate import ServerPerMessageDeflate, with_compression
from ..core.headers import Headers
from ..core.http11 import Request, Response
from ..core.limits import (
    CLOSE_TIMEOUT,
    MAX_BODY_SIZE,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_HTTP2_STREAMS,
    MAX_LINE,
    MAX_MESSAGE_SIZE,
    MAX_QUEUE,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    WRITE_LIMIT,
)
from ..core.protocol import CONNECTING, OPEN
from ..core.server import SERVER, SelectSubprotocol, ServerProtocol, wants_upgrade
from ..core.stream import MessageChunk, MessageEnd, MessageStart
from ..exceptions import ConnectionClosed
from .connection import Connection, Data, MessageStream, connection_settings
from .deadlines import Deadlines
from .heartbeat import Heartbeat
from .stats import ServerStats

__all__ = [
    "Callbacks",
    "ProcessRequest",
    "ProcessResponse",
    "Server",
    "ServerConnection",
    "serve",
]

logger = logging.getLogger("rapidws.server")

# The path parameters of a connection that no router matched: empty, shared.
_NO_PARAMS: Mapping[str, Any] = types.MappingProxyType({})

# What a client may send before its handshake is answered, while hooks run.
_EARLY_DATA_LIMIT = 65536

#: A hook run before the upgrade: return a :class:`Response` to answer the
#: request with it (and not upgrade), or ``None`` to go on. May be async.
ProcessRequest = Callable[
    ["ServerConnection", Request], "Response | Awaitable[Response | None] | None"
]
#: A hook run on the response before it is sent: return a replacement or ``None``.
ProcessResponse = Callable[
    ["ServerConnection", Request, Response], "Response | Awaitable[Response | None] | None"
]


class Callbacks:
    """The fast path: a server handler as callbacks, with no task per connection.

    Subclass it and pass an instance to :func:`serve`. Each method runs in the
    event loop, synchronously, as events arrive; reply with
    :meth:`~rapidws.asyncio.connection.Connection.send_nowait`, which does not
    await. An exception closes that connection with 1011 and is logged.
    """

    #: Set to ``True`` to receive large messages as streams: a message that
    #: is not one uncompressed frame of at most 64 KiB arriving whole
    #: goes to :meth:`on_message_start`, :meth:`on_message_chunk` (as its
    #: payload arrives, in bounded chunks) and :meth:`on_message_end` instead
    #: of :meth:`on_message`, within :attr:`max_stream_size` (1009 beyond).
    #: Reading pauses while the write buffer is full, so a handler that
    #: relays the chunks gets backpressure from its peer.
    stream = False
    #: The largest streamed message, in bytes; ``None``: no limit.
    max_stream_size: int | None = None

    def on_open(self, connection: ServerConnection) -> None:
        """Handle a connection whose opening handshake is done."""

    def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
        """Handle a message: ``str`` for text, ``bytes`` for binary."""

    def on_message_start(self, connection: ServerConnection, text: bool) -> None:
        """Handle the start of a streamed message (with :attr:`stream`): text or binary."""

    def on_message_chunk(self, connection: ServerConnection, chunk: str | bytes) -> None:
        """Handle a chunk of a streamed message: ``str`` for text, ``bytes`` for binary."""

    def on_message_end(self, connection: ServerConnection) -> None:
        """Handle the end of a streamed message."""

    def on_close(self, connection: ServerConnection, code: int, reason: str) -> None:
        """Handle the end of a connection (``code`` is 1006 without a close frame)."""


#: What serve() runs for each connection: a coroutine function, or callbacks.
Handler = Callable[["ServerConnection"], Awaitable[Any]] | Callbacks


class ServerConnection(Connection[ServerProtocol]):
    """A connection accepted by a :class:`Server`; the argument of the handler.

    It is served by the server's handler, unless a ``process_request`` hook
    (a router) sets :attr:`handler` to another before the upgrade: a
    coroutine function, or :class:`Callbacks`.
    """

    __slots__ = (
        "_attributes",
        "_callbacks",
        "_client_address",
        "_early_data",
        "_handler",
        "_hooks_task",
        "_open_timer",
        "_opened_at",
        "_scheme",
        "handler_task",
        "id",
        "path_params",
        "route",
        "server",
    )

    def __init__(self, server: Server, protocol: ServerProtocol) -> None:
        assert server.loop is not None  # set when the server starts
        self._setup(protocol, server._settings, logger, server.loop)
        self.server = server
        self._handler = server.handler
        self._callbacks = server.callbacks
        # One bound method for every connection of the server, not one each.
        self._on_message = server._on_message
        self.handler_task: asyncio.Task[None] | None = None
        self._hooks_task: asyncio.Task[None] | None = None
        self._early_data = 0  # bytes received while the hooks run
        self._open_timer: Deadlines[ServerConnection] | None = None
        #: The parameters of the route's path (``{"user_name": "ada"}``), set
        #: by a router; empty otherwise.
        self.path_params: Mapping[str, Any] = _NO_PARAMS
        #: The template of the App route that took the upgrade
        #: (``/ws/{user}``), or ``"unmatched"``; ``None`` without an App. The
        #: metrics' ``route`` label (a template: few values, unlike paths).
        self.route: str | None = None
        self._attributes: dict[str, Any] | None = None
        # None: the defaults, computed when read (see client_address, scheme).
        self._client_address: Any = None
        self._scheme: str | None = None
        #: A number unique in the server, in its logs (``connection_id``).
        self.id = next(server.stats.ids)
        self._opened_at = 0.0  # loop.time() at the 101

    @property
    def client_address(self) -> Any:
        """The client's address: :attr:`remote_address` unless a proxy's is known.

        An App with ``trusted_proxies`` sets it, from ``Forwarded`` or
        ``X-Forwarded-For``, to a ``(host, port)`` pair (port 0 when the proxy
        does not say it) when the peer is a trusted proxy; a hook may set it
        too. Setting ``None`` restores the default.
        """
        address = self._client_address
        return self.remote_address if address is None else address

    @client_address.setter
    def client_address(self, address: Any) -> None:
        self._client_address = address

    @property
    def scheme(self) -> str:
        """``"wss"`` when the client's connection is TLS, else ``"ws"``.

        The default is this socket's: ``"wss"`` when the server has TLS. An App
        with ``trusted_proxies`` sets it from ``Forwarded: proto=`` or
        ``X-Forwarded-Proto`` when the peer is a trusted proxy (TLS ended
        there); a hook may set it too. Setting ``None`` restores the default.
        """
        scheme = self._scheme
        if scheme is None:
            transport = self.transport
            tls = transport is not None and transport.get_extra_info("sslcontext") is not None
            return "wss" if tls else "ws"
        return scheme

    @scheme.setter
    def scheme(self, scheme: str | None) -> None:
        self._scheme = scheme

    @property
    def attributes(self) -> dict[str, Any]:
        """The application's data about this connection: the user, the tenant.

        Handshake hooks fill it before the upgrade (Spring's handshake
        attributes); handlers read it. (:attr:`state` is the WebSocket state.)
        """
        if self._attributes is None:
            self._attributes = {}
        return self._attributes

    @property
    def handler(self) -> Handler:
        """What serves this connection once it is open."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        if self.protocol.state is not CONNECTING:
            raise RuntimeError("the handler is chosen before the upgrade, in a hook")
        callbacks = handler if isinstance(handler, Callbacks) else None
        self._serve_with(handler, callbacks, None if callbacks is None else callbacks.on_message)

    def _serve_with(
        self,
        handler: Handler,
        callbacks: Callbacks | None,
        on_message: Callable[[Any, Data], None] | None,
    ) -> None:
        # The handler setter, for a router that looked ``callbacks`` and
        # ``on_message`` up once per route and calls it during the handshake.
        self._handler = handler
        self._callbacks = callbacks
        self._on_message = on_message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the server and bound the handshake time (called by asyncio)."""
        super().connection_made(transport)
        if self.server._closing is not None:
            # Accepted (or done with TLS) after close() began: refuse it.
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.server.connections.add(self)
        # Slowloris: a handshake that does not complete in time is dropped.
        if self.server.open_timeout is not None:
            self._open_timer = self.server._deadlines_for(
                ServerConnection._open_timed_out, self.server.open_timeout
            )
            self._open_timer.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister from the server and tell the callbacks (called by asyncio)."""
        super().connection_lost(exc)
        if self._open_timer is not None:
            self._open_timer.discard(self)
        if self._hooks_task is not None:
            # Nobody is left to answer: stop a slow hook (an auth backend).
            self._hooks_task.cancel()
        if self.handler_task is None:
            self.server.connections.discard(self)
        response = self.protocol.response
        if response is not None and response.status == 101:
            self.server.stats.connection_closed(self, self.loop.time() - self._opened_at)
            if self._callbacks is not None:
                self._callback(self._callbacks.on_close, self, *self._code_and_reason())

    def _open_timed_out(self) -> None:
        if self.protocol.state is CONNECTING and self.transport is not None:
            self.logger.info("opening handshake timed out")
            self.transport.abort()

    def _handshake_event(self, event: Request | Response) -> None:
        assert isinstance(event, Request)
        self.request = event
        server = self.server
        if server.process_request is None and server.process_response is None:
            try:
                response = self.protocol.accept(event)
            except Exception:
                # A user callable (select_subprotocol, an extension) failed.
                self.logger.error(
                    "opening handshake failed", exc_info=True, extra={"connection_id": self.id}
                )
                response = self.protocol.reject(500, "internal server error")
            self._send_response(response)
            return
        try:
            result = None
            if server.process_request is not None:
                result = server.process_request(self, event)
            # A router's Response is the common answer: no call to tell it.
            if (
                type(result) is not Response and _is_awaitable(result)
            ) or server.process_response is not None:
                self._hooks_task = self.loop.create_task(self._run_hooks(event, result))
                return
            # A hook that answered at once (a router, a sync check): no task.
            response = result or self.protocol.accept(event)
        except Exception:
            self.logger.error(
                "handshake hook failed", exc_info=True, extra={"connection_id": self.id}
            )
            response = self.protocol.reject(500, "internal server error")
        self._send_response(response)

    async def _run_hooks(self, request: Request, result: Any) -> None:
        # result: what process_request returned, perhaps to await.
        server = self.server
        try:
            response = await _maybe_await(result)
            if response is None:
                response = self.protocol.accept(request)
                if server.process_response is not None:
                    replacement = await _maybe_await(
                        server.process_response(self, request, response)
                    )
                    response = replacement or response
        except Exception:
            self.logger.error(
                "handshake hook failed", exc_info=True, extra={"connection_id": self.id}
            )
            response = self.protocol.reject(500, "internal server error")
        self._hooks_task = None
        if self.protocol.state is CONNECTING and not self._lost:
            self._send_response(response)

    def _data_received_more(self, data: bytes) -> None:
        # Before the connection is open: bound what a client sends before
        # the hooks answer.
        if self._hooks_task is not None:
            # RFC 6455 4.1: a client waits for the response before sending
            # frames. Keep reading (to see a client leave) up to a bound.
            self._early_data += len(data)
            if self._early_data > _EARLY_DATA_LIMIT:
                self._pause_reading()
        super()._data_received_more(data)

    def _send_response(self, response: Response) -> None:
        self.protocol.send_response(response)
        if response.status == 101 or (self.request is not None and wants_upgrade(self.request)):
            self.server.stats.handshake(self, response)
        if response.status == 101:
            self._opened_at = self.loop.time()
            if self._open_timer is not None:
                self._open_timer.discard(self)
                self._open_timer = None
            self._start_handler()
            self._start_keepalive()
        elif self.protocol.state is CONNECTING:
            # Kept alive for another request (plain HTTP): it gets the open
            # timeout again, as the time to wait for it.
            self._early_data = 0
            if self._open_timer is not None:
                self._open_timer.add(self)
        if self._reading_paused:
            self._resume_reading()
        if not self._handling:
            # From a hook's task: else the events being handled go on with
            # what the response brings (frames that came with the request).
            self._process_events()

    def _start_handler(self) -> None:
        if self._callbacks is not None:
            if self._callbacks.stream:
                self.protocol.streaming = True
                self.protocol.max_stream_size = self._callbacks.max_stream_size
            self._callback(self._callbacks.on_open, self)
        else:
            self.handler_task = self.loop.create_task(self._run_handler())

    def _join_heartbeat(self, interval: float) -> Heartbeat:
        return self.server._heartbeat_for(interval)

    def _latency_measured(self, seconds: float) -> None:
        self.server.stats.latency(seconds)

    def _close_deadlines(self, timeout: float) -> Deadlines[Connection[Any]]:
        return self.server._deadlines_for(Connection._close_timed_out, timeout)

    async def _run_handler(self) -> None:
        handler = self._handler
        assert not isinstance(handler, Callbacks)  # served by _start_handler
        try:
            try:
                await handler(self)
            except ConnectionClosed:
                pass  # the peer went away while the handler was using the connection
            except Exception:
                self.logger.error(
                    "connection handler failed", exc_info=True, extra={"connection_id": self.id}
                )
                if self.protocol.state is OPEN:
                    self.protocol.send_close(1011, "internal error")
                    self._write_pending()
            await self.close()
        finally:
            self.server.connections.discard(self)

    def _message_received(self, message: Data | MessageStream) -> None:
        on_message = self._on_message
        if on_message is None:
            super()._message_received(message)
            return
        # Straight to the callbacks: no queue, no future, no task switch.
        # Never a stream: callbacks take those in _stream_event().
        try:
            on_message(self, message)  # type: ignore[arg-type]
        except Exception as exc:
            self._callback_failed(on_message, exc)

    def _stream_event(self, event: MessageStart | MessageChunk | MessageEnd) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            super()._stream_event(event)
        elif type(event) is MessageChunk:
            self._callback(callbacks.on_message_chunk, self, event.data)
        elif type(event) is MessageStart:
            self._callback(callbacks.on_message_start, self, event.text)
        else:
            self._callback(callbacks.on_message_end, self)

    def _callback(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:
            self._callback_failed(method, exc)

    def _callback_failed(self, method: Callable[..., None], exc: BaseException) -> None:
        self.logger.error(
            "%s failed", method.__name__, exc_info=exc, extra={"connection_id": self.id}
        )
        if self.protocol.state is OPEN:
            self.protocol.send_close(1011, "internal error")
            self._write_pending()


def _is_awaitable(value: object) -> TypeIs[Awaitable[Any]]:
    # What hooks return is nearly always None or a Response: answered without
    # the ABC check of inspect.isawaitable() (a microsecond per handshake).
    return value is not None and type(value) is not Response and inspect.isawaitable(value)


async def _maybe_await(value: Any) -> Any:
    return await value if _is_awaitable(value) else value


class Server:
    """A running WebSocket server.

    Use it as an async context manager, or call :meth:`close` and
    :meth:`wait_closed`. :attr:`connections` holds the open connections.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        process_request: ProcessRequest | None,
        process_response: ProcessResponse | None,
        open_timeout: float | None,
        close_timeout: float | None,
        protocol_options: dict[str, Any],
        connection_options: dict[str, Any],
    ) -> None:
        self.handler = handler
        #: The callbacks, when the handler is a :class:`Callbacks` object.
        self.callbacks = handler if isinstance(handler, Callbacks) else None
        # One bound method for every connection, not one each.
        self._on_message = None if self.callbacks is None else self.callbacks.on_message
        self.process_request = process_request
        self.process_response = process_response
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self._protocol_options = protocol_options
        # Checked and prepared once for every connection.
        self._settings = connection_settings(**connection_options)
        self.connections: set[ServerConnection] = set()
        #: The HTTP/2 connections (``http2=True``); their streams are in
        #: :attr:`connections`.
        self.http2_connections: set[Http2Connection] = set()
        #: What the connections did (handshakes, opens and closes, messages
        #: and bytes): read by :mod:`rapidws.metrics`.
        self.stats = ServerStats()
        self.server: asyncio.Server | None = None
        #: The event loop it serves on, once started.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()
        self._heartbeats: dict[float, Heartbeat] = {}
        # The connections' timeouts, one timer for each kind and length, not
        # one per connection.
        self._deadlines: dict[tuple[Callable[[Any], None], float], Deadlines[Any]] = {}

    def _heartbeat_for(self, interval: float) -> Heartbeat:
        """Return the keepalive timer that the connections share, for ``interval``."""
        beat = self._heartbeats.get(interval)
        if beat is None:
            beat = self._heartbeats[interval] = Heartbeat(interval)
        return beat

    def _deadlines_for(self, expire: Callable[[Any], None], timeout: float) -> Deadlines[Any]:
        """Return the deadlines that the connections share, for ``expire`` after ``timeout``."""
        deadlines = self._deadlines.get((expire, timeout))
        if deadlines is None:
            deadlines = self._deadlines[expire, timeout] = Deadlines(timeout, expire)
        return deadlines

    def _new_connection(self) -> ServerConnection:
        return ServerConnection(self, ServerProtocol(**self._protocol_options))

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return () if self.server is None else tuple(self.server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening TCP socket (handy with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting connections and close every open one with ``code``.

        Returns at once; :meth:`wait_closed` waits until everything is closed.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(code, reason))
            self._close_requested.set()

    async def _close(self, code: int, reason: str) -> None:
        assert self.server is not None
        self.server.close()
        for connection in list(self.connections):
            if connection.protocol.state is OPEN:
                connection.protocol.send_close(code, reason)
                connection._write_pending()
            elif connection.protocol.state is CONNECTING and connection.transport is not None:
                connection.transport.abort()
        for http2_connection in list(self.http2_connections):
            http2_connection.shutdown()  # GOAWAY once its streams have closed
        await self.server.wait_closed()
        # Each connection ends within its close timeout, and handlers then see
        # ConnectionClosed and return; one that does not is cancelled after
        # another close timeout.
        connections = list(self.connections)
        await asyncio.gather(*(c.wait_closed() for c in connections))
        tasks = [c.handler_task for c in connections if c.handler_task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection with it."""
        if self._closing is None:
            self.close()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def serve_forever(self) -> None:
        """Serve until cancelled or closed; when cancelled, close the server first."""
        # Not asyncio.Server.serve_forever(): on cancellation, Python 3.12+
        # waits there for every connection to end before ours get their close
        # frame.
        try:
            await self._close_requested.wait()
            await self.wait_closed()
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class serve:
    """Start a WebSocket server; ``await`` it or use it with ``async with``.

    ``handler(connection)`` runs once per connection; the connection closes with
    1000 when it returns, and with 1011 (and a log record) when it raises. For
    the highest throughput, ``handler`` may instead be a :class:`Callbacks`
    object: no task per connection, messages handed over as they arrive.

    Args:
        handler: the coroutine function that serves a connection, or callbacks.
        host: the address to listen on (``None`` for every interface).
        port: the TCP port; 0 picks a free one (see :attr:`Server.port`).
        sock: a listening socket to use instead of ``host`` and ``port``.
        path: a Unix socket path to listen on instead of ``host`` and ``port``.
        ssl: an :class:`ssl.SSLContext` with the certificate, for ``wss://``.
        reuse_port: let several processes listen on the same port (SO_REUSEPORT).
        backlog: the listen backlog.
        origins: the accepted ``Origin`` values (403 otherwise); ``None`` for any.
        subprotocols: the supported subprotocols, in order of preference.
        select_subprotocol: a callable ``(request, offered) -> str | None``.
        compression: ``"deflate"`` (the default) accepts permessage-deflate
            with memory-lean settings; a :class:`ServerPerMessageDeflate` sets
            them; ``None`` turns compression off.
        extensions: more server extension factories.
        auto_pong: ``False`` leaves pings unanswered, against RFC 6455 section
            5.5.2: a knob for testing clients' keepalive, never for production.
        process_request: a hook ``(connection, request)`` that may answer with a
            :class:`Response` instead of upgrading.
        process_response: a hook ``(connection, request, response)`` that may
            replace the response.
        server_header: the ``Server`` header; ``None`` omits it.
        open_timeout: seconds for a client to complete the handshake.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before closing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        max_size: the largest message in bytes (1009 above it); ``None`` for any.
        max_frame_size: the largest frame in bytes; ``None`` for any.
        max_queue: received messages buffered before reading pauses, or a
            ``(high, low)`` pair; ``None`` for no limit.
        write_limit: the write buffer's high-water mark, or ``(high, low)``.
        max_line: the longest request or header line (414 or 431 above it).
        max_headers: the most header fields (431 above it).
        max_header_bytes: the largest request head (431 above it).
        max_body_size: the largest body of a plain HTTP request, for hooks and
            routes that answer one (413 above it).
        http2: also speak HTTP/2 (needs ``rapidws[http2]``): with ``ssl``, to
            clients that choose ``h2`` by ALPN (the context is set to offer
            ``h2`` and ``http/1.1``); in cleartext, to clients that start
            with the HTTP/2 preface (prior knowledge). WebSockets then open
            as streams (RFC 8441); see :mod:`rapidws.asyncio.http2`.
        http2_max_streams: the streams that a client may have open at once on
            an HTTP/2 connection (``SETTINGS_MAX_CONCURRENT_STREAMS``); one
            more is refused alone (``REFUSED_STREAM``).
    """

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        path: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool | None = None,
        backlog: int = 1024,
        # WebSocket
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        compression: str | ServerPerMessageDeflate | None = "deflate",
        extensions: Sequence[ServerExtensionFactory] = (),
        auto_pong: bool = True,
        # HTTP
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = SERVER,
        http2: bool = False,
        # Timeouts
        open_timeout: float | None = OPEN_TIMEOUT,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float | None = PING_TIMEOUT,
        close_timeout: float | None = CLOSE_TIMEOUT,
        # Limits
        max_size: int | None = MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        max_queue: int | tuple[int, int] | None = MAX_QUEUE,
        write_limit: int | tuple[int, int] = WRITE_LIMIT,
        max_line: int | None = MAX_LINE,
        max_headers: int | None = MAX_HEADERS,
        max_header_bytes: int | None = MAX_HEADER_BYTES,
        max_body_size: int | None = MAX_BODY_SIZE,
        http2_max_streams: int = MAX_HTTP2_STREAMS,
    ) -> None:
        if server_header is not None:
            # Checked now, not in the first handshake, whose refusal would
            # carry it too.
            Headers([("Server", server_header)])
        self._server = Server(
            handler,
            process_request=process_request,
            process_response=process_response,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            protocol_options=dict(
                origins=origins,
                subprotocols=subprotocols,
                select_subprotocol=select_subprotocol,
                extensions=with_compression(compression, extensions, ServerPerMessageDeflate),
                max_message_size=max_size,
                max_frame_size=max_frame_size,
                max_line=max_line,
                max_headers=max_headers,
                max_header_bytes=max_header_bytes,
                max_body_size=max_body_size,
                server_header=server_header,
                auto_pong=auto_pong,
            ),
            connection_options=dict(
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_queue=max_queue,
                write_limit=write_limit,
            ),
        )
        self._listen: dict[str, Any] = dict(
            host=host, port=port, sock=sock, path=path, ssl=ssl,
            reuse_port=reuse_port, backlog=backlog,
        )  # fmt: skip
        self._factory: Callable[[], asyncio.BaseProtocol] = self._server._new_connection
        if http2:
            if http2_max_streams < 1:
                raise ValueError(f"http2_max_streams must be 1 or more, not {http2_max_streams}")
            # Here, not at the top: h2 is an optional dependency, and the
            # http2 module builds on this one.
            try:
                from .http2 import connection_factory  # noqa: PLC0415
            except ModuleNotFoundError as exc:
                if exc.name not in ("h2", "hpack", "hyperframe"):
                    raise
                needs = "http2=True needs the h2 package: pip install 'rapidws[http2]'"
                raise ImportError(needs) from exc
            self._factory = connection_factory(self._server, max_streams=http2_max_streams)
            if ssl is not None:
                ssl.set_alpn_protocols(["h2", "http/1.1"])

    async def _start(self) -> Server:
        loop = self._server.loop = asyncio.get_running_loop()
        options = self._listen
        factory = self._factory
        common: dict[str, Any] = dict(ssl=options["ssl"], backlog=options["backlog"])
        if options["ssl"] is not None:
            # The TLS handshake happens before the connection object exists:
            # bound it too, or a silent client holds a socket for a minute.
            common["ssl_handshake_timeout"] = self._server.open_timeout
        if options["path"] is not None:
            server = await loop.create_unix_server(factory, options["path"], **common)
        elif options["sock"] is not None and options["sock"].family == socket.AF_UNIX:
            server = await loop.create_unix_server(factory, sock=options["sock"], **common)
        else:
            server = await loop.create_server(
                factory,
                options["host"],
                options["port"],
                sock=options["sock"],
                reuse_port=options["reuse_port"],
                **common,
            )
        self._server.server = server
        return self._server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._server.__aexit__(exc_type, exc_value, traceback)
