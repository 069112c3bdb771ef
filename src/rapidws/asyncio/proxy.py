"""Tunnels through proxies: the I/O around the handshakes of :mod:`rapidws.core.proxy`.

:func:`connect_via_proxy` does what ``loop.create_connection()`` does for a
direct connection: it returns a transport to the server and the protocol made
by the factory, connected to it. In between, it connects to the proxy (over
TLS for an ``https://`` proxy), runs the proxy's handshake, and starts TLS to
the server inside the tunnel for ``wss://``: TLS in TLS through an HTTPS
proxy, which ``loop.start_tls()`` supports on asyncio from Python 3.11 and on
uvloop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any, TypeVar

from ..core.proxy import Proxy, ProxyHandshake
from ..exceptions import InvalidProxy

__all__ = ["connect_via_proxy"]

T = TypeVar("T", bound=asyncio.BaseProtocol)


async def connect_via_proxy(
    proxy: Proxy,
    factory: Callable[[], T],
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_ssl: ssl_module.SSLContext | None = None,
    user_agent: str | None = None,
) -> tuple[asyncio.Transport, T]:
    """Open a connection to ``host`` and ``port`` through ``proxy``.

    Args:
        proxy: the proxy.
        factory: makes the protocol to connect, as for ``loop.create_connection()``.
        host: the server's host name or address.
        port: the server's port.
        ssl: a context for TLS to the server, or ``None`` for plain TCP.
        server_hostname: the name for SNI and the server's certificate.
        proxy_ssl: for an ``https://`` proxy, the context for TLS to the proxy;
            by default the system's trust store with certificate and host
            name checks.
        user_agent: the ``User-Agent`` of an HTTP ``CONNECT``.

    Raises:
        ProxyRefused: the proxy refused the tunnel.
        InvalidProxy: the proxy answered something invalid or closed the connection.
        OSError: when a TCP or TLS connection fails.
    """
    loop = asyncio.get_running_loop()
    if not proxy.remote_dns:
        host = await _resolve(loop, host, port, socket.AF_INET if proxy.scheme == "socks4" else 0)
    handshake = proxy.handshake(host, port, user_agent=user_agent)
    context = None
    if proxy.tls:
        context = proxy_ssl or ssl_module.create_default_context()
    transport, tunnel = await loop.create_connection(
        lambda: _Tunnel(handshake, loop), proxy.host, proxy.port, ssl=context
    )
    try:
        await tunnel.opened
        protocol = factory()
        if ssl is not None:
            # start_tls() puts TLS between the two and resumes reading.
            try:
                tls = await loop.start_tls(
                    transport, protocol, ssl, server_hostname=server_hostname
                )
            except TypeError:  # "transport ... is not supported by start_tls()"
                if not proxy.tls:
                    raise
                raise InvalidProxy(
                    "wss:// through an https:// proxy needs Python 3.11 or uvloop"
                ) from None
            assert tls is not None  # typeshed's Optional: asyncio and uvloop return one
            transport = tls
            protocol.connection_made(transport)
        else:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            transport.resume_reading()
    except BaseException:
        transport.abort()
        raise
    return transport, protocol


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, family: int) -> str:
    # For a socks5:// or socks4:// proxy, which takes an address.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        return str(infos[0][4][0])
    return host


class _Tunnel(asyncio.Protocol):
    """Runs a proxy handshake; :attr:`opened` is done when the tunnel is open."""

    def __init__(self, handshake: ProxyHandshake, loop: asyncio.AbstractEventLoop) -> None:
        self.handshake = handshake
        self.opened: asyncio.Future[None] = loop.create_future()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.handshake.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            self.handshake.receive_data(data)
        except InvalidProxy as exc:
            self._fail(exc)
            return
        if data := self.handshake.data_to_send():
            self.transport.write(data)
        if self.handshake.done and not self.opened.done():
            # Nothing more until the protocol that reads the tunnel is in place.
            self.transport.pause_reading()
            self.opened.set_result(None)

    def eof_received(self) -> None:
        try:
            self.handshake.receive_eof()
        except InvalidProxy as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset says the same as an EOF, with its reason as the cause.
        name = self.handshake.name
        error = InvalidProxy(f"{name} proxy closed the connection before opening the tunnel")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, exc: InvalidProxy) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.transport.abort()
