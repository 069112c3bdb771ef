"""HTTP/2 for the asyncio client: WebSockets as streams of a shared connection (RFC 8441).

With ``connect(uri, http2=True)``, a WebSocket is a stream of an HTTP/2
connection to the URI's origin: ``wss://`` negotiates ``h2`` by TLS ALPN
(offering ``http/1.1`` too), ``ws://`` speaks HTTP/2 in cleartext with prior
knowledge (h2c). It needs the ``h2`` package (``rapidws[http2]``).

The connections are pooled per event loop, by origin and TLS settings: the
WebSockets opened to one origin share one connection, one TCP and TLS
handshake, until its server's limit of concurrent streams (or
:data:`~rapidws.asyncio.http2.MAX_STREAMS`) is reached; the next ones get a
new connection. A connection that the server ended (GOAWAY) takes no more
streams. One without streams for :data:`IDLE_TIMEOUT` seconds closes, and
those left when the loop ends (``asyncio.run()`` cancels the tasks left)
close then.

Before its first extended CONNECT, a client waits for the server's first
SETTINGS (RFC 8441 section 3). The WebSocket opens over HTTP/1.1 instead, on
a connection of its own, when the server does not speak HTTP/2 (ALPN chose
``http/1.1``; in cleartext, its first bytes are not HTTP/2) or does not
advertise ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1``. When ALPN chose
``http/1.1``, that TLS connection carries the HTTP/1.1 handshake: no second
TLS handshake. The pool remembers such an origin for
:data:`FALLBACK_MEMORY` seconds: the WebSockets opened to it meanwhile go
straight to HTTP/1.1, without an HTTP/2 attempt each; then HTTP/2 is tried
again, for a server that has gained it.

Each stream is the transport (a :class:`~rapidws.asyncio.http2.StreamTransport`,
with the server's flow control) of an ordinary
:class:`~rapidws.asyncio.client.ClientConnection`, whose engine is an
:class:`~rapidws.core.http2.Http2ClientProtocol`: closing the WebSocket ends
its stream and leaves the others alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl as ssl_module
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event, RemoteSettingsChanged, ResponseReceived
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes

from ..core.client import ClientProtocol
from ..core.http2 import Http2ClientProtocol, request_fields
from ..core.protocol import OPEN
from ..core.uri import WebSocketURI
from .http2 import MAX_STREAMS, BaseHttp2Connection, StreamTransport

if TYPE_CHECKING:
    from .client import ClientConnection

__all__ = [
    "FALLBACK_MEMORY",
    "IDLE_TIMEOUT",
    "ClientStreamTransport",
    "Http2ClientConnection",
    "open_stream",
]

#: Seconds that a pooled connection without streams stays open for the next one.
IDLE_TIMEOUT = 30.0
#: Seconds that an origin found without WebSockets over HTTP/2 is reached
#: over HTTP/1.1 directly, before HTTP/2 is tried again.
FALLBACK_MEMORY = 300.0


class _Key(NamedTuple):
    """What a pooled connection is shared by: the origin and the settings of the connection."""

    secure: bool
    host: str
    port: int
    ssl: ssl_module.SSLContext | None  # None for the system's trust store
    server_hostname: str | None
    max_header_bytes: int | None


class Http2ClientConnection(BaseHttp2Connection):
    """A client's HTTP/2 connection to one origin: each stream is a WebSocket.

    :attr:`extended_connect` tells, once the server's first SETTINGS came,
    whether the server takes WebSockets (RFC 8441 section 3); ``False`` too
    when the server chose HTTP/1.1 by ALPN (:meth:`take_http11` then hands
    the TLS connection over) or the connection ended first.
    """

    __slots__ = ("_http11", "_idle_timer", "_key", "_pool", "extended_connect")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_header_bytes: int | None) -> None:
        # Responses are checked by response_from_fields(), as requests on a
        # server: a malformed one fails its WebSocket, not the connection.
        config = H2Configuration(client_side=True, validate_inbound_headers=False)
        super().__init__(loop, H2Connection(config))
        self._configure({SettingCodes.ENABLE_PUSH: 0}, max_header_bytes, client=True)
        #: Whether the server takes extended CONNECTs, once known.
        self.extended_connect: asyncio.Future[bool] = loop.create_future()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._pool: _Pool | None = None
        self._key: _Key | None = None
        # The TLS connection on which ALPN chose HTTP/1.1, until taken.
        self._http11: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the preface and SETTINGS, unless ALPN chose HTTP/1.1 (called by asyncio)."""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            # Kept for a WebSocket over HTTP/1.1 (take_http11()); closed if
            # none takes it, which happens only when its opener gave up.
            self._http11 = transport  # type: ignore[assignment]
            self._idle_timer = self.loop.call_later(IDLE_TIMEOUT, transport.close)
            self.extended_connect.set_result(False)
            return
        self.transport = transport  # type: ignore[assignment]
        self._start()
        self._no_streams()  # idle until the first stream

    def connection_lost(self, exc: Exception | None) -> None:
        """End every stream and leave the pool (called by asyncio)."""
        super().connection_lost(exc)
        if not self.extended_connect.done():
            self.extended_connect.set_result(False)  # not an HTTP/2 server, perhaps
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is not None:
            self._pool._remove(self)

    def has_room(self) -> bool:
        """Tell whether a WebSocket may open on this connection now."""
        transport = self.transport
        if transport is None or transport.is_closing() or not self.extended_connect.done():
            return False
        h2 = self._h2
        limit = min(h2.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return self.extended_connect.result() and h2.open_outbound_streams < limit

    def take_http11(self) -> asyncio.Transport | None:
        """Take the open TLS connection on which ALPN chose HTTP/1.1; ``None`` after the first call.

        Whoever takes it sets its protocol.
        """
        transport, self._http11 = self._http11, None
        if transport is None or transport.is_closing():
            return None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        return transport

    def open_stream(self, connection: ClientConnection, scheme: str) -> StreamTransport:
        """Open a stream for ``connection``, and send its handshake as an extended CONNECT.

        Its engine must be an :class:`~rapidws.core.http2.Http2ClientProtocol`;
        ``scheme`` is ``"https"`` or ``"http"``.
        """
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        h2 = self._h2
        stream = ClientStreamTransport(self, h2.get_next_available_stream_id())
        stream._websocket = True
        stream._protocol = connection
        self._streams[stream.stream_id] = stream
        connection.connection_made(stream)  # builds the request
        request = connection.protocol.request
        assert request is not None
        h2.send_headers(stream.stream_id, request_fields(request, scheme=scheme))
        self._flush_later()
        return stream

    def _event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                connection = stream._protocol
                connection.protocol.receive_response(event.headers)
                stream._accepted = connection.protocol.state is OPEN
                connection._process_events()
        elif isinstance(event, RemoteSettingsChanged) and not self.extended_connect.done():
            enabled = self._h2.remote_settings.enable_connect_protocol == 1
            self.extended_connect.set_result(enabled)

    def _no_streams(self) -> None:
        self._idle_timer = self.loop.call_later(IDLE_TIMEOUT, self._idle_timed_out)

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if not self._streams:
            self._close()


class ClientStreamTransport(StreamTransport):
    """A client's stream: it ends with a reset when the server's side is still open.

    A client ends its side after the closing handshake, or a failed
    handshake: nothing more is wanted from the server. A reset (RST_STREAM
    ``NO_ERROR``) ends both sides at once, where END_STREAM would wait for
    the server's (which hypercorn 0.18 never sends), and where END_STREAM
    then a reset, as a server does, makes hypercorn 0.18 fail the whole
    connection (it reads the empty DATA frame of a stream that it dropped).
    """

    __slots__ = ()

    def _end(self) -> None:
        if self._remote_ended:
            super()._end()
            return
        self._ended = True
        with contextlib.suppress(StreamClosedError):  # see _reset_meanwhile()
            self._connection._h2.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
        self._lose()


async def open_stream(
    uri: WebSocketURI,
    factory: Callable[[type[ClientProtocol]], ClientConnection],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    max_header_bytes: int | None,
    timeout: float | None,
) -> tuple[asyncio.Transport, ClientConnection] | None:
    """Open a WebSocket as a stream of a pooled HTTP/2 connection to ``uri``'s origin.

    ``factory(engine)`` makes the WebSocket's connection with that engine
    class. A new HTTP/2 connection opens when no pooled one has room, in at
    most ``timeout`` seconds, with ``ssl`` (whose ALPN protocols become
    ``h2`` and ``http/1.1``) or the system's trust store for ``wss://``.
    Returns the transport and the connection, whose handshake is under way:
    a stream, or the TLS connection on which ALPN chose HTTP/1.1 (with a
    :class:`~rapidws.core.client.ClientProtocol` engine). ``None`` when the
    WebSocket is to open over HTTP/1.1 on a new connection: the server does
    not take WebSockets over HTTP/2, or did not within the last
    :data:`FALLBACK_MEMORY` seconds.

    Raises:
        OSError: when the TCP or TLS connection fails.
        TimeoutError: when the server sends no SETTINGS within ``timeout``.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _Pool()
    key = _Key(uri.secure, uri.host, uri.port, ssl, server_hostname, max_header_bytes)
    while True:
        connection = pool._available(key)
        if connection is None:
            if pool._without_http2(key):
                return None
            connection = await pool._opened(key, timeout)
            transport = connection.take_http11()
            if transport is not None:
                websocket = factory(ClientProtocol)
                transport.set_protocol(websocket)
                websocket.connection_made(transport)  # sends the request
                return transport, websocket
            if not (connection.has_room() or connection.streams):
                return None  # no HTTP/2, or a server that allows no stream
            if not connection.has_room():
                continue  # filled by the others who waited for it
        websocket = factory(Http2ClientProtocol)
        return connection.open_stream(websocket, "https" if uri.secure else "http"), websocket


class _Pool:
    """The HTTP/2 connections of one event loop, by :data:`_Key`."""

    __slots__ = ("_connections", "_emptied", "_keeper", "_opening", "_without_http2_until")

    def __init__(self) -> None:
        self._connections: dict[_Key, list[Http2ClientConnection]] = {}
        # A connection being opened for each key, that the callers share.
        self._opening: dict[_Key, asyncio.Task[Http2ClientConnection]] = {}
        # The keys found without WebSockets over HTTP/2, until when (loop time).
        self._without_http2_until: dict[_Key, float] = {}
        # A task alive while the pool has connections: cancelled when the
        # loop ends, it closes them.
        self._keeper: asyncio.Task[None] | None = None
        self._emptied: asyncio.Future[None] | None = None

    def _available(self, key: _Key) -> Http2ClientConnection | None:
        for connection in self._connections.get(key, ()):
            if connection.has_room():
                return connection
        return None

    def _without_http2(self, key: _Key) -> bool:
        # Whether key was found without WebSockets over HTTP/2 lately.
        until = self._without_http2_until.get(key)
        if until is None:
            return False
        if asyncio.get_running_loop().time() < until:
            return True
        del self._without_http2_until[key]  # time to try again
        return False

    def _remember_without_http2(self, key: _Key) -> None:
        now = asyncio.get_running_loop().time()
        # The expired keys go too: the memory holds the origins of the
        # last FALLBACK_MEMORY seconds, not every origin ever reached.
        memory = self._without_http2_until
        for expired in [k for k, until in memory.items() if until <= now]:
            del memory[expired]
        memory[key] = now + FALLBACK_MEMORY

    async def _opened(self, key: _Key, timeout: float | None) -> Http2ClientConnection:
        # A task of the pool's, shielded: a caller that gives up (its
        # open_timeout) does not fail the others waiting for the connection.
        task = self._opening.get(key)
        if task is None:
            opening = self._open(key, timeout)
            task = self._opening[key] = asyncio.get_running_loop().create_task(opening)
            task.add_done_callback(functools.partial(self._open_done, key))
        return await asyncio.shield(task)

    def _open_done(self, key: _Key, task: asyncio.Task[Http2ClientConnection]) -> None:
        del self._opening[key]
        if not task.cancelled():
            task.exception()  # raised to each caller: not "never retrieved"

    async def _open(self, key: _Key, timeout: float | None) -> Http2ClientConnection:
        loop = asyncio.get_running_loop()
        context: ssl_module.SSLContext | None = None
        hostname: str | None = None
        if key.secure:
            context = key.ssl or ssl_module.create_default_context()
            context.set_alpn_protocols(["h2", "http/1.1"])
            hostname = key.server_hostname or key.host
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: Http2ClientConnection(loop, max_header_bytes=key.max_header_bytes),
                key.host,
                key.port,
                ssl=context,
                server_hostname=hostname,
            ),
            timeout,
        )
        try:
            enabled = await asyncio.wait_for(asyncio.shield(connection.extended_connect), timeout)
        except BaseException:
            connection._close(goaway=False)
            raise
        if not enabled:
            self._remember_without_http2(key)
            # A GOAWAY, if it speaks HTTP/2. The TLS connection on which
            # ALPN chose HTTP/1.1 stays open for take_http11(): it is not
            # the connection's transport.
            connection._close()
        else:
            self._add(key, connection)
        return connection

    def _add(self, key: _Key, connection: Http2ClientConnection) -> None:
        connection._pool, connection._key = self, key
        self._connections.setdefault(key, []).append(connection)
        if self._keeper is None:
            loop = asyncio.get_running_loop()
            self._emptied = loop.create_future()
            self._keeper = loop.create_task(self._keep(self._emptied))

    def _remove(self, connection: Http2ClientConnection) -> None:
        key = connection._key
        assert key is not None
        connections = self._connections[key]
        connections.remove(connection)
        if not connections:
            del self._connections[key]
        if not self._connections and self._emptied is not None:
            if not self._emptied.done():  # else the keeper was cancelled
                self._emptied.set_result(None)
            self._keeper = self._emptied = None

    async def _keep(self, emptied: asyncio.Future[None]) -> None:
        try:
            await emptied
        finally:
            for connections in list(self._connections.values()):
                for connection in list(connections):
                    connection._close()


# The pool of each running loop.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()
