"""Proxies: their URLs, the choice the environment makes, and the tunnel handshakes.

A client reaches a server through a proxy by opening a tunnel: a TCP stream
from the proxy to the server, over which the WebSocket handshake (and TLS,
for ``wss://``) then runs as if the connection were direct. Each kind of proxy
opens the tunnel with its own handshake, here a small state machine fed bytes:

- ``http://`` and ``https://`` proxies: an HTTP ``CONNECT`` request (RFC 9110
  section 9.3.6), with ``Proxy-Authorization: Basic`` (RFC 7617) for the URL's
  user name and password; ``https://`` runs it over TLS to the proxy.
- ``socks5://`` and ``socks5h://``: SOCKS version 5 (RFC 1928), with
  user name and password authentication (RFC 1929); ``socks5h`` sends the
  server's host name for the proxy to resolve, ``socks5`` an address.
- ``socks4://`` and ``socks4a://``: SOCKS version 4, and its 4A extension
  that sends the host name (openssh.com/txt/socks4a.protocol).

The I/O flow, for any handshake::

    handshake = proxy.handshake(host, port)
    send(handshake.data_to_send())
    while not handshake.done:
        handshake.receive_data(read())    # raises InvalidProxy or ProxyRefused
        send(handshake.data_to_send())
    # the tunnel is open: start TLS or the WebSocket handshake over it

:func:`proxy_from_environment` picks the proxy for a URI from the variables
that curl, requests and httpx read: ``https_proxy`` for ``wss://``,
``http_proxy`` for ``ws://``, ``all_proxy`` for both, and ``no_proxy``.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import re
import struct
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from ..exceptions import InvalidHandshake, InvalidProxy, ProxyRefused
from .headers import Headers
from .http11 import HeadReader, Request
from .uri import WebSocketURI

__all__ = [
    "HTTPConnect",
    "Proxy",
    "ProxyHandshake",
    "Socks4",
    "Socks5",
    "parse_proxy",
    "proxy_from_environment",
]

# The default port of each scheme: 1080 is SOCKS' registered port.
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "socks5": 1080,
    "socks5h": 1080,
    "socks4": 1080,
    "socks4a": 1080,
}


@dataclasses.dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL.

    Attributes:
        scheme: ``http``, ``https``, ``socks5``, ``socks5h``, ``socks4`` or ``socks4a``.
        host: the proxy's host name or address, without brackets for IPv6.
        port: the proxy's port; by default 80 for ``http``, 443 for
            ``https`` and 1080 for SOCKS.
        user_info: the user name and password of the URL, if any.
    """

    scheme: str
    host: str
    port: int
    user_info: tuple[str, str] | None = None

    @property
    def remote_dns(self) -> bool:
        """Whether the proxy resolves the server's host name (else the client does)."""
        return self.scheme not in ("socks5", "socks4")

    @property
    def tls(self) -> bool:
        """Whether the connection to the proxy itself uses TLS."""
        return self.scheme == "https"

    def __str__(self) -> str:
        # For messages: without the password.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def handshake(self, host: str, port: int, *, user_agent: str | None = None) -> ProxyHandshake:
        """Return the handshake that opens a tunnel to ``host`` and ``port``.

        For ``socks5`` and ``socks4`` proxies, ``host`` must be an address,
        resolved by the caller; ``user_agent`` goes in an HTTP ``CONNECT``.
        """
        if self.scheme in ("http", "https"):
            return HTTPConnect(host, port, user_info=self.user_info, user_agent=user_agent)
        if self.scheme.startswith("socks5"):
            return Socks5(host, port, user_info=self.user_info)
        return Socks4(host, port, user_id=self.user_info[0] if self.user_info else "")


def parse_proxy(url: str) -> Proxy:
    """Parse a proxy URL such as ``http://user:pass@proxy:3128`` or ``socks5h://proxy``.

    A URL without a scheme (``proxy:3128``) is an HTTP proxy, as in curl,
    requests and httpx.

    Raises:
        InvalidProxy: for an unknown scheme, a missing host, an invalid port,
            or a path (a proxy URL names a host only).
    """
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidProxy(f"{url!r} is not a valid proxy URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        schemes = ", ".join(DEFAULT_PORTS)
        raise InvalidProxy(f"{url!r} is not a proxy URL: the scheme must be one of {schemes}")
    if not parts.hostname:
        raise InvalidProxy(f"{url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxy(f"{url!r} has a path, which proxy URLs may not have")
    user_info = None
    if parts.username is not None:
        user_info = (unquote(parts.username), unquote(parts.password or ""))
    return Proxy(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], user_info)


def proxy_from_environment(uri: WebSocketURI, environ: Mapping[str, str]) -> str | None:
    """Return the proxy URL that the environment sets for ``uri``, or ``None``.

    ``https_proxy`` for ``wss://``, ``http_proxy`` for ``ws://``, else
    ``all_proxy``; the lowercase name first, then the uppercase one. ``no_proxy``
    lists hosts to reach directly, separated by commas: ``*`` for all,
    ``example.com`` for it and its subdomains (also written ``.example.com``
    or ``*.example.com``), addresses and networks (``10.0.0.0/8``), each
    with an optional ``:port``.
    """
    url = _getenv(environ, "https_proxy" if uri.secure else "http_proxy")
    url = url or _getenv(environ, "all_proxy")
    if not url or _bypasses_proxy(uri.host, uri.port, _getenv(environ, "no_proxy") or ""):
        return None
    return url


def _getenv(environ: Mapping[str, str], name: str) -> str | None:
    # As urllib.request.getproxies_environment(): in a CGI script, the
    # uppercase HTTP_PROXY may come from the client's "Proxy:" header
    # (CVE-2016-1000110, "httpoxy"), so only the lowercase name counts there.
    upper = name.upper()
    if upper == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
        return environ.get(name) or None
    return environ.get(name) or environ.get(upper) or None


# An entry of no_proxy with a port: "host:port" or "[v6]:port".
_HOST_PORT_RE = re.compile(r"(\[[^\]]*\]|[^:]*):(\d+)")


def _bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    host = host.lower().rstrip(".")
    entries = (entry.strip() for entry in no_proxy.lower().split(","))
    return any(_matches(entry, host, port) for entry in entries if entry)


def _matches(entry: str, host: str, port: int) -> bool:
    # Whether one entry of no_proxy matches the host and port.
    if entry == "*":
        return True
    match = _HOST_PORT_RE.fullmatch(entry)
    if match is not None:
        if int(match[2]) != port:
            return False
        entry = match[1]
    entry = entry.strip("[]")
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        domain = entry.lstrip("*").lstrip(".").rstrip(".")
        return bool(domain) and (host == domain or host.endswith("." + domain))
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:  # a host name: an address entry is no match
        return False


class ProxyHandshake:
    """The handshake that opens a tunnel through a proxy, fed bytes.

    Send :meth:`data_to_send` to the proxy, feed its answer to
    :meth:`receive_data` until :attr:`done`; :meth:`receive_eof` when the
    proxy closes the connection.

    Raises from :meth:`receive_data` and :meth:`receive_eof`:
        ProxyRefused: the proxy refused the tunnel (407, a SOCKS failure code).
        InvalidProxy: the proxy answered something else, or closed the connection.
    """

    #: The name of the protocol, for messages.
    name = "proxy"

    def __init__(self) -> None:
        self._out = bytearray()
        self._buf = bytearray()
        #: Whether the tunnel is open.
        self.done = False

    def data_to_send(self) -> bytes:
        """Return the bytes to send to the proxy, and forget them."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the proxy."""
        if self.done:
            # Before the client's first byte, a WebSocket or TLS server says
            # nothing; only a broken proxy sends more after its answer.
            raise InvalidProxy(f"{self.name} proxy sent data after opening the tunnel")
        self._buf += data
        self._parse()
        if self.done and self._buf:
            raise InvalidProxy(f"{self.name} proxy sent data after opening the tunnel")

    def receive_eof(self) -> None:
        """Handle the end of the proxy's stream."""
        if not self.done:
            raise InvalidProxy(f"{self.name} proxy closed the connection before opening the tunnel")

    def _parse(self) -> None:
        raise NotImplementedError

    def _take(self, size: int) -> bytes | None:
        # The next ``size`` bytes of the answer, or None until they arrived.
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data


class HTTPConnect(ProxyHandshake):
    """An HTTP ``CONNECT`` request and the proxy's answer (RFC 9110 section 9.3.6).

    Args:
        host: the server's host name or address.
        port: the server's port.
        user_info: the user name and password for ``Proxy-Authorization: Basic``.
        user_agent: the ``User-Agent`` header, if any.

    The answer's head is read within the handshake's default limits
    (:mod:`rapidws.core.limits`); its body, if any, is not read.
    """

    name = "HTTP"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        user_info: tuple[str, str] | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__()
        # The authority form (RFC 9112 section 3.2.3), brackets around IPv6.
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = Headers([("Host", authority)])
        if user_info is not None:
            credentials = base64.b64encode(":".join(user_info).encode()).decode()
            headers["Proxy-Authorization"] = "Basic " + credentials
        if user_agent is not None:
            headers["User-Agent"] = user_agent
        #: The request sent to the proxy.
        self.request = Request("CONNECT", authority, headers)
        self._out += self.request.serialize()
        self._reader = HeadReader()

    def _parse(self) -> None:
        data = bytes(self._buf)
        self._buf.clear()
        try:
            head = self._reader.feed(data)
        except InvalidHandshake as exc:
            raise InvalidProxy(f"invalid answer from the HTTP proxy: {exc}") from None
        if head is None:
            return
        status_line, _, rest = head
        match = _STATUS_LINE_RE.fullmatch(status_line)
        if match is None:
            raise InvalidProxy(f"invalid status line from the HTTP proxy: {status_line[:100]!r}")
        status, reason = int(match[1]), (match[2] or b"").decode("latin-1")
        # "Any 2xx (Successful) response indicates that the sender (and all
        # inbound proxies) will switch to tunnel mode" (RFC 9110 section 9.3.6).
        if not 200 <= status < 300:
            raise ProxyRefused(
                f"HTTP proxy refused the tunnel: {status} {reason}".rstrip(), status, reason
            )
        self._buf += rest
        self.done = True


# HTTP/1.0 too: tinyproxy answers CONNECT with "HTTP/1.0 200 Connection established".
_STATUS_LINE_RE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?")


# RFC 1928 section 6: the meaning of each reply code.
SOCKS5_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}

# RFC 1928 section 3 methods.
_NO_AUTH, _USER_PASS, _NO_METHOD = 0x00, 0x02, 0xFF


class Socks5(ProxyHandshake):
    """A SOCKS5 ``CONNECT`` (RFC 1928), with user name and password (RFC 1929).

    Args:
        host: the server's address, or its host name for the proxy to resolve.
        port: the server's port.
        user_info: the user name and password, if the proxy asks for them.
    """

    name = "SOCKS5"

    def __init__(self, host: str, port: int, *, user_info: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.user_info = user_info
        self._request = b"\x05\x01\x00" + _socks5_address(host) + struct.pack("!H", port)
        # Offer user name and password only when there are some: a proxy
        # that allows anonymous use may still prefer the method.
        methods = bytes([_NO_AUTH, _USER_PASS] if user_info else [_NO_AUTH])
        self._out += bytes([5, len(methods)]) + methods
        self._state = "method"

    def _parse(self) -> None:
        if self._state == "method":
            answer = self._take(2)
            if answer is None:
                return
            if answer[0] != 5:
                raise InvalidProxy(f"not a SOCKS5 proxy: it answered {answer!r}")
            method = answer[1]
            if method == _USER_PASS and self.user_info is not None:
                user, password = (part.encode() for part in self.user_info)
                if len(user) > 255 or len(password) > 255:
                    raise InvalidProxy("SOCKS5 user name and password are 255 bytes at most")
                # RFC 1929 section 2: VER 1, ULEN, UNAME, PLEN, PASSWD.
                self._out += bytes([1, len(user)]) + user + bytes([len(password)]) + password
                self._state = "auth"
            elif method == _NO_AUTH:
                self._out += self._request
                self._state = "reply"
            elif method == _NO_METHOD:
                wanted = "a user name and password" if self.user_info is None else "another method"
                raise ProxyRefused(
                    f"SOCKS5 proxy accepts none of the authentication methods offered; "
                    f"it may want {wanted}",
                    method,
                    "no acceptable methods",
                )
            else:
                raise InvalidProxy(f"SOCKS5 proxy chose method {method:#04x}, not offered")
        if self._state == "auth":
            answer = self._take(2)
            if answer is None:
                return
            # RFC 1929: "A STATUS field of X'00' indicates success."
            if answer[1] != 0:
                raise ProxyRefused(
                    "SOCKS5 proxy refused the user name and password",
                    answer[1],
                    "authentication failed",
                )
            self._out += self._request
            self._state = "reply"
        self._parse_reply()

    def _parse_reply(self) -> None:
        # VER REP RSV ATYP BND.ADDR BND.PORT; a failure is known from REP.
        if len(self._buf) < 2:
            return
        if self._buf[0] != 5:
            raise InvalidProxy(f"not a SOCKS5 reply: {bytes(self._buf[:4])!r}")
        code = self._buf[1]
        if code != 0:
            reason = SOCKS5_REPLIES.get(code, "unknown error")
            raise ProxyRefused(f"SOCKS5 proxy refused the tunnel: {reason}", code, reason)
        if len(self._buf) < 5:
            return
        address_type, first = self._buf[3], self._buf[4]
        sizes = {0x01: 4, 0x03: 1 + first, 0x04: 16}
        if address_type not in sizes:
            raise InvalidProxy(f"SOCKS5 reply with unknown address type {address_type:#04x}")
        if self._take(4 + sizes[address_type] + 2) is not None:
            self.done = True


def _socks5_address(host: str) -> bytes:
    # ATYP and DST.ADDR: an address as such, else a domain name (RFC 1928 section 5).
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = _encode_host(host)
        if len(name) > 255:
            raise InvalidProxy(f"host name too long for SOCKS5: {host[:100]!r}") from None
        return bytes([0x03, len(name)]) + name
    return bytes([0x01 if address.version == 4 else 0x04]) + address.packed


def _encode_host(host: str) -> bytes:
    # A host name as SOCKS sends it: ASCII, international names in IDNA.
    try:
        return host.encode("idna")
    except UnicodeError as exc:
        raise InvalidProxy(f"invalid host name {host[:100]!r}: {exc}") from None


# The meaning of each SOCKS4 reply code (90 is success).
SOCKS4_REPLIES = {
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the proxy cannot reach the client's identd",
    0x5D: "request rejected: the client's identd reports a different user id",
}


class Socks4(ProxyHandshake):
    """A SOCKS4 ``CONNECT``, or SOCKS4A when ``host`` is a host name.

    Args:
        host: the server's IPv4 address, or its host name for a SOCKS4A
            proxy to resolve.
        port: the server's port.
        user_id: the USERID field, often ignored by proxies.
    """

    name = "SOCKS4"

    def __init__(self, host: str, port: int, *, user_id: str = "") -> None:
        super().__init__()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            # SOCKS4A: the address 0.0.0.x (x nonzero) says that the host
            # name follows the user id, null-terminated.
            address, name = ipaddress.IPv4Address("0.0.0.1"), _encode_host(host) + b"\x00"
        else:
            if address.version != 4:
                raise InvalidProxy(f"SOCKS4 cannot reach the IPv6 address {host}")
            name = b""
        user = user_id.encode()
        if b"\x00" in user + name[:-1]:
            raise InvalidProxy("SOCKS4 user id and host name may not contain NUL")
        self._out += b"\x04\x01" + struct.pack("!H", port) + address.packed + user + b"\x00" + name

    def _parse(self) -> None:
        # VN (0) CD DSTPORT DSTIP: 8 bytes.
        if len(self._buf) >= 2 and self._buf[0] == 0 and self._buf[1] != 0x5A:
            code = self._buf[1]
            reason = SOCKS4_REPLIES.get(code, "unknown error")
            raise ProxyRefused(f"SOCKS4 proxy refused the tunnel: {reason}", code, reason)
        if self._buf and self._buf[0] != 0:
            raise InvalidProxy(f"not a SOCKS4 reply: {bytes(self._buf[:8])!r}")
        if self._take(8) is not None:
            self.done = True
