"""The asyncio WebSocket client: ``connect(uri)``."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any

from ..core.client import USER_AGENT, ClientProtocol
from ..core.extensions.base import ClientExtensionFactory
from ..core.extensions.permessage_deflate import ClientPerMessageDeflate, with_compression
from ..core.headers import HeadersLike
from ..core.http11 import Request, Response
from ..core.limits import (
    CLOSE_TIMEOUT,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    MAX_MESSAGE_SIZE,
    MAX_QUEUE,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    WRITE_LIMIT,
)
from ..core.uri import parse_uri
from ..exceptions import InvalidHandshake, InvalidResponse
from .connection import Connection

__all__ = ["ClientConnection", "connect"]

logger = logging.getLogger("rapidws.client")


class ClientConnection(Connection[ClientProtocol]):
    """A connection opened by :func:`connect`."""

    __slots__ = ("_opened",)

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, logger=logger, **kwargs)
        self._opened: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the handshake request (called by asyncio)."""
        super().connection_made(transport)
        self.request = self.protocol.connect()
        self.protocol.send_request(self.request)
        self._write_pending()

    def _handshake_event(self, event: Request | Response) -> None:
        if self.protocol.handshake_exc is None and not self._opened.done():
            self._opened.set_result(None)
            self._start_keepalive()

    def _process_events(self) -> None:
        super()._process_events()
        exc = self.protocol.handshake_exc
        if exc is not None and not self._opened.done():
            self._opened.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail a pending handshake (called by asyncio)."""
        if exc is not None and not self._opened.done() and self.protocol.handshake_exc is None:
            # Before super(), whose EOF would fail the handshake without the
            # reason (a reset, a TLS error).
            error = InvalidResponse("connection closed during the opening handshake")
            error.__cause__ = exc
            self._opened.set_exception(error)
        super().connection_lost(exc)
        if not self._opened.done():
            self._opened.set_exception(
                InvalidResponse("connection closed during the opening handshake")
            )


class connect:
    """Open a WebSocket connection; ``await`` it or use it with ``async with``.

    ``async with connect(uri) as ws:`` closes the connection when the block ends.

    Args:
        uri: the ``ws://`` or ``wss://`` URI.
        origin: the ``Origin`` header, for servers that check it.
        subprotocols: the subprotocols to offer, in order of preference.
        compression: ``"deflate"`` (the default) offers permessage-deflate as
            browsers do; a :class:`ClientPerMessageDeflate` sets the offer and
            the settings; ``None`` turns compression off.
        extensions: more client extension factories.
        additional_headers: more request headers (``Authorization``, cookies).
        user_agent: the ``User-Agent`` header; ``None`` omits it.
        ssl: for ``wss://``, an :class:`ssl.SSLContext` (client certificates, a
            private CA); by default the system's trust store with certificate
            and host name checks.
        server_hostname: the name to send with SNI and check the certificate
            against, when it differs from the URI's host.
        sock: a connected socket to use instead of opening one.
        path: a Unix socket path to connect to instead of the URI's host.
        open_timeout: seconds for the TCP, TLS and WebSocket handshakes.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before closing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        max_size: the largest message in bytes (1009 above it); ``None`` for any.
        max_frame_size: the largest frame in bytes; ``None`` for any.
        max_queue: received messages buffered before reading pauses.
        write_limit: the write buffer's high-water mark, or ``(high, low)``.
        max_line: the longest status or header line of the response.
        max_headers: the most header fields in the response.
        max_header_bytes: the largest response head.

    Raises:
        InvalidURI: for a URI that is not ``ws://`` or ``wss://``.
        InvalidStatus: when the server refuses with a status other than 101
            (``exc.response`` has the status, headers and body).
        InvalidHandshake: for any other handshake failure.
        OSError: when the TCP or TLS connection fails.
        TimeoutError: when the handshakes take longer than ``open_timeout``.
    """

    def __init__(
        self,
        uri: str,
        *,
        # WebSocket
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        compression: str | ClientPerMessageDeflate | None = "deflate",
        extensions: Sequence[ClientExtensionFactory] = (),
        # HTTP
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = USER_AGENT,
        # TLS and sockets
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        sock: socket.socket | None = None,
        path: str | None = None,
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
    ) -> None:
        self.uri = parse_uri(uri)
        if ssl is not None and not self.uri.secure:
            raise InvalidHandshake("an SSL context was given for a ws:// URI; use wss://")
        self._protocol_options: dict[str, Any] = dict(
            origin=origin,
            subprotocols=subprotocols,
            extensions=with_compression(compression, extensions, ClientPerMessageDeflate),
            additional_headers=additional_headers,
            user_agent=user_agent,
            max_message_size=max_size,
            max_frame_size=max_frame_size,
            max_line=max_line,
            max_headers=max_headers,
            max_header_bytes=max_header_bytes,
        )
        self._connection_options: dict[str, Any] = dict(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            write_limit=write_limit,
        )
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._sock = sock
        self._path = path
        self.open_timeout = open_timeout
        self._connection: ClientConnection | None = None

    def _factory(self) -> ClientConnection:
        protocol = ClientProtocol(self.uri, **self._protocol_options)
        return ClientConnection(protocol, **self._connection_options)

    async def _open(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        context: ssl_module.SSLContext | None = None
        hostname: str | None = None
        if self.uri.secure:
            # Verify the certificate and host name against the system's trust
            # store unless the caller gave a context.
            context = self._ssl or ssl_module.create_default_context()
            hostname = self._server_hostname or self.uri.host
        transport: Any
        unix = self._sock is not None and self._sock.family == socket.AF_UNIX
        if self._path is not None or unix:
            transport, connection = await loop.create_unix_connection(
                self._factory, self._path, sock=self._sock, ssl=context, server_hostname=hostname
            )
        elif self._sock is not None:
            transport, connection = await loop.create_connection(
                self._factory, sock=self._sock, ssl=context, server_hostname=hostname
            )
        else:
            transport, connection = await loop.create_connection(
                self._factory, self.uri.host, self.uri.port, ssl=context, server_hostname=hostname
            )
        try:
            await connection._opened
        except BaseException:
            transport.abort()
            raise
        return connection

    async def _open_with_timeout(self) -> ClientConnection:
        if self.open_timeout is None:
            self._connection = await self._open()
        else:
            try:
                self._connection = await asyncio.wait_for(self._open(), self.open_timeout)
            except asyncio.TimeoutError:
                # The builtin TimeoutError, also on Python 3.10.
                raise TimeoutError(
                    f"no WebSocket connection to {self.uri.host_header} "
                    f"within {self.open_timeout} s"
                ) from None
        return self._connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._open_with_timeout().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._open_with_timeout()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        await self._connection.close()
