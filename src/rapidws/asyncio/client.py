"""The asyncio WebSocket client: ``connect(uri)``."""

from __future__ import annotations

import asyncio
import dataclasses
import http.cookiejar
import logging
import os
import socket
import ssl as ssl_module
import urllib.request
from collections.abc import Generator, Sequence
from http.client import HTTPResponse
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import urljoin

from ..core.client import USER_AGENT, ClientProtocol
from ..core.extensions.base import ClientExtensionFactory
from ..core.extensions.permessage_deflate import ClientPerMessageDeflate, with_compression
from ..core.headers import Headers, HeadersLike
from ..core.http11 import Request, Response
from ..core.limits import (
    CLOSE_TIMEOUT,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    MAX_MESSAGE_SIZE,
    MAX_QUEUE,
    MAX_REDIRECTS,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    WRITE_LIMIT,
)
from ..core.proxy import Proxy, parse_proxy, proxy_from_environment
from ..core.uri import WebSocketURI, parse_uri
from ..exceptions import (
    InvalidHandshake,
    InvalidRedirect,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
)
from .connection import Connection
from .proxy import connect_via_proxy
from .reconnect import Backoff, ReconnectHook, Reconnecting, as_policy

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

    A client certificate, a private CA and an SNI name other than the URI's
    host, through an authenticating proxy::

        context = ssl.create_default_context(cafile="ca.pem")
        context.load_cert_chain("client.pem", "client.key")
        async with connect(
            "wss://10.0.0.5/feed",
            ssl=context,
            server_hostname="feed.example.com",
            proxy="http://user:secret@proxy.example.com:3128",
        ) as ws:
            ...

    Args:
        uri: the ``ws://`` or ``wss://`` URI.
        origin: the ``Origin`` header, for servers that check it.
        subprotocols: the subprotocols to offer, in order of preference.
        compression: ``"deflate"`` (the default) offers permessage-deflate as
            browsers do; a :class:`ClientPerMessageDeflate` sets the offer and
            the settings; ``None`` turns compression off.
        extensions: more client extension factories.
        auto_pong: ``False`` leaves pings unanswered, against RFC 6455 section
            5.5.2: a knob for testing servers' keepalive, never for production.
        additional_headers: more request headers (``Authorization``, cookies).
        user_agent: the ``User-Agent`` header; ``None`` omits it.
        cookies: an :class:`http.cookiejar.CookieJar`: its cookies for the
            URI go in the ``Cookie`` header (``wss://`` counts as ``https://``
            for secure cookies), and the ``Set-Cookie`` headers of every
            handshake response, refusals and redirects included, go in it.
        max_redirects: the most redirects to follow (301, 302, 303, 307 and
            308 with a ``Location``, relative or absolute, ``http(s)://``
            read as ``ws(s)://``); ``0`` follows none. A ``wss://`` to
            ``ws://`` redirect is never followed. Credentials of the URI
            follow only to the same host and port. Not with ``sock`` or ``path``.
        ssl: for ``wss://``, an :class:`ssl.SSLContext` (client certificates, a
            private CA); by default the system's trust store with certificate
            and host name checks.
        server_hostname: the name to send with SNI and check the certificate
            against, when it differs from the URI's host.
        sock: a connected socket to use instead of opening one.
        path: a Unix socket path to connect to instead of the URI's host.
        proxy: a proxy URL: ``http://``, ``https://`` (TLS to the proxy, then
            to the server inside it), ``socks5://``, ``socks5h://`` (the proxy
            resolves the host name), ``socks4://`` or ``socks4a://``, with
            ``user:password@`` for Basic or SOCKS5 authentication. By default
            (``True``) the proxy that ``https_proxy`` (for ``wss://``),
            ``http_proxy`` (for ``ws://``), ``all_proxy`` and ``no_proxy``
            set, as curl, requests and httpx read them; ``None`` for none.
        proxy_ssl: for an ``https://`` proxy, the :class:`ssl.SSLContext` for
            TLS to the proxy; by default the system's trust store.
        http2: open the WebSocket as a stream of an HTTP/2 connection (RFC
            8441; needs ``rapidws[http2]``), shared with the other WebSockets
            of the event loop to the same origin and TLS settings: for
            ``wss://``, by TLS ALPN (an ``ssl`` context given gets the ALPN
            protocols ``h2`` and ``http/1.1``); for ``ws://``, in cleartext
            with prior knowledge. It falls back to HTTP/1.1 when the server
            does not take WebSockets over HTTP/2 (on the same TLS connection
            when ALPN chose ``http/1.1``), and goes straight to HTTP/1.1 for
            that origin for the next 5 minutes. Redirects are followed
            as over HTTP/1.1. Not through a proxy, nor with ``sock`` or
            ``path``. See :mod:`rapidws.asyncio.http2_client`.
        open_timeout: seconds for the TCP, TLS and WebSocket handshakes,
            through the proxy and redirects included.
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
        reconnect: for ``async for ws in connect(uri, reconnect=True)``: a
            :class:`~rapidws.asyncio.reconnect.Backoff` policy, or ``True``
            for the default one. Each iteration yields a new connection when
            the previous one ended for a reason worth retrying (see
            :func:`~rapidws.asyncio.reconnect.retryable`), and the iteration
            ends after a normal closure. Without it, ``async for`` yields one
            connection. ``await`` and ``async with`` open once either way.
        on_reconnect: called as ``on_reconnect(attempt, delay, cause)``
            before each wait for a reconnection; may be a coroutine function.
        create_connection: the class of the connection, a subclass of
            :class:`ClientConnection`.

    Raises:
        InvalidURI: for a URI that is not ``ws://`` or ``wss://``.
        InvalidStatus: when the server refuses with a status other than 101
            (``exc.response`` has the status, headers and body).
        InvalidRedirect: for a redirect not followed (a downgrade to
            ``ws://``, too many).
        ProxyRefused: when the proxy refuses the tunnel (``exc.status`` and
            ``exc.reason`` say why: 407, a SOCKS reply code).
        InvalidProxy: for an invalid proxy URL, or a proxy that answers
            something invalid or closes the connection.
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
        auto_pong: bool = True,
        # HTTP
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = USER_AGENT,
        cookies: http.cookiejar.CookieJar | None = None,
        max_redirects: int = MAX_REDIRECTS,
        # TLS and sockets
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        sock: socket.socket | None = None,
        path: str | None = None,
        proxy: str | Literal[True] | None = True,
        proxy_ssl: ssl_module.SSLContext | None = None,
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
        # Reconnection, when iterated
        reconnect: bool | Backoff = False,
        on_reconnect: ReconnectHook | None = None,
        create_connection: type[ClientConnection] = ClientConnection,
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
            auto_pong=auto_pong,
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
        self.cookies = cookies
        self.max_redirects = max_redirects
        # A direct connection when given a socket or a path; else a proxy
        # checked now, so that a wrong URL fails before any connection.
        direct = sock is not None or path is not None
        if direct and isinstance(proxy, str):
            raise InvalidHandshake("a proxy cannot be used with sock or path")
        if http2 and (direct or isinstance(proxy, str)):
            raise InvalidHandshake("http2=True cannot be used with a proxy, sock or path")
        #: Whether the WebSocket is a stream of a shared HTTP/2 connection.
        self.http2 = http2
        self.proxy: Proxy | Literal[True] | None = (
            parse_proxy(proxy) if isinstance(proxy, str) else None if direct else proxy
        )
        self._proxy_ssl = proxy_ssl
        # Where each opening starts: a redirect changes self.uri, not this.
        self._requested_uri = self.uri
        self.open_timeout = open_timeout
        #: The reconnection policy of ``async for``; ``None`` for one connection.
        self.reconnect = as_policy(reconnect)
        self.on_reconnect = on_reconnect
        self._create_connection = create_connection
        self._connection: ClientConnection | None = None

    def _factory(self, engine: type[ClientProtocol] = ClientProtocol) -> ClientConnection:
        options = self._protocol_options
        if self.cookies is not None:
            headers = _with_cookies(self.cookies, self.uri, options["additional_headers"])
            options = {**options, "additional_headers": headers}
        protocol = engine(self.uri, **options)
        return self._create_connection(protocol, **self._connection_options)

    async def _open(self) -> ClientConnection:
        self.uri = self._requested_uri
        redirects = 0
        while True:
            try:
                return await self._open_uri()
            except InvalidStatus as exc:
                direct = self._sock is not None or self._path is not None
                if exc.response.status not in _REDIRECTS or direct:
                    raise
                self.uri = self._redirect(exc.response, redirects)
                redirects += 1

    def _redirect(self, response: Response, redirects: int) -> WebSocketURI:
        # Where a redirect leads, or InvalidRedirect when it is not followed.
        location = response.headers.get("Location")
        if location is None:
            raise InvalidRedirect(f"HTTP {response.status} redirect without Location", response)
        if redirects >= self.max_redirects:
            raise InvalidRedirect(
                f"too many redirects (max_redirects={self.max_redirects}); "
                f"the last one was to {location!r}",
                response,
            )
        old = self.uri
        target = urljoin(
            f"{'wss' if old.secure else 'ws'}://{old.host_header}{old.resource}", location
        )
        scheme, separator, rest = target.partition("://")
        target = _WEBSOCKET_SCHEMES.get(scheme.lower(), scheme) + separator + rest
        try:
            new = parse_uri(target)
        except InvalidURI as exc:
            raise InvalidRedirect(f"invalid redirect: {exc}", response) from None
        if old.secure and not new.secure:
            raise InvalidRedirect(f"redirect from wss:// to {target} refused", response)
        if new.user_info is None and (new.host, new.port) == (old.host, old.port):
            new = dataclasses.replace(new, user_info=old.user_info)
        return new

    async def _open_uri(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        proxy = self._proxy_for(self.uri)
        opened = None if not self.http2 else await self._open_http2(proxy)
        context: ssl_module.SSLContext | None = None
        hostname: str | None = None
        if self.uri.secure and opened is None:
            # Verify the certificate and host name against the system's trust
            # store unless the caller gave a context.
            context = self._ssl or ssl_module.create_default_context()
            hostname = self._server_hostname or self.uri.host
        transport: Any
        unix = self._sock is not None and self._sock.family == socket.AF_UNIX
        if opened is not None:
            transport, connection = opened
        elif proxy is not None:
            transport, connection = await connect_via_proxy(
                proxy,
                self._factory,
                self.uri.host,
                self.uri.port,
                ssl=context,
                server_hostname=hostname,
                proxy_ssl=self._proxy_ssl,
                user_agent=self._protocol_options["user_agent"],
            )
        elif self._path is not None or unix:
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
        except InvalidStatus as exc:
            transport.abort()
            self._store_cookies(exc.response)
            raise
        except BaseException:
            transport.abort()
            raise
        if connection.response is not None:
            self._store_cookies(connection.response)
        return connection

    async def _open_http2(self, proxy: Proxy | None) -> tuple[Any, ClientConnection] | None:
        # A stream of a pooled HTTP/2 connection, or the TLS connection on
        # which ALPN chose HTTP/1.1; None to open one for HTTP/1.1.
        if proxy is not None:
            raise InvalidHandshake(
                "http2=True cannot be used with a proxy (from the environment: "
                f"{proxy.scheme}://{proxy.host}:{proxy.port}); pass proxy=None"
            )
        # Imported here: h2 is an optional dependency.
        from .http2_client import open_stream  # noqa: PLC0415

        return await open_stream(
            self.uri,
            self._factory,
            ssl=self._ssl,  # the key of the pool: None for the default context
            server_hostname=self._server_hostname,
            max_header_bytes=self._protocol_options["max_header_bytes"],
            timeout=self.open_timeout,
        )

    def _proxy_for(self, uri: WebSocketURI) -> Proxy | None:
        if self.proxy is not True:
            return self.proxy
        url = proxy_from_environment(uri, os.environ)
        return None if url is None else parse_proxy(url)

    def _store_cookies(self, response: Response) -> None:
        if self.cookies is not None:
            # The jar reads only response.info().get_all(): no HTTPResponse needed.
            cookie_response = cast(HTTPResponse, _CookieResponse(response.headers))
            self.cookies.extract_cookies(cookie_response, _cookie_request(self.uri))

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

    def __aiter__(self) -> Reconnecting[ClientConnection]:
        """Yield connections, reconnecting as the ``reconnect`` policy says."""
        return Reconnecting(self._open_with_timeout, self.reconnect, self.on_reconnect)

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


# RFC 9110 section 15.4: the redirects that name their target in Location
# (300 and 304 do not; 305 and 306 are deprecated).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# A server that redirects to http(s):// means the same host's ws(s)://.
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


def _cookie_request(uri: WebSocketURI) -> urllib.request.Request:
    # http.cookiejar speaks HTTP: wss:// is https:// to it, so that Secure
    # cookies go over TLS only.
    scheme = "https" if uri.secure else "http"
    return urllib.request.Request(f"{scheme}://{uri.host_header}{uri.resource}")


def _with_cookies(
    jar: http.cookiejar.CookieJar, uri: WebSocketURI, headers: HeadersLike | None
) -> Headers:
    # The request headers, plus the jar's cookies for uri in one Cookie
    # header (RFC 6265 section 5.4: a client sends at most one).
    request = _cookie_request(uri)
    jar.add_cookie_header(request)
    result = Headers(headers)
    cookie = request.get_header("Cookie")
    if cookie:
        if "Cookie" in result:
            cookie = f"{result['Cookie']}; {cookie}"
            del result["Cookie"]
        result["Cookie"] = cookie
    return result


class _CookieResponse:
    """A handshake response as :meth:`http.cookiejar.CookieJar.extract_cookies` reads it."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def info(self) -> _CookieResponse:
        return self

    def get_all(self, name: str, default: list[str]) -> list[str]:
        return self._headers.get_all(name) or default
