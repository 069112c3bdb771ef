r"""Behind a reverse proxy: the client's address and scheme from trusted proxies' headers.

::

    app = rapidws.App(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])

    @app.websocket("/ws")
    async def handler(ws):
        host, port = ws.client_address      # the browser's, not nginx's
        assert ws.scheme == "wss"           # TLS ended at nginx

    @app.get("/whoami")
    def whoami(request):
        return {"client": connection_of(request).client_address[0]}

When the TCP peer of a request is a trusted proxy, the :class:`~rapidws.App`
reads the ``Forwarded`` header (RFC 7239) if the request has one, else
``X-Forwarded-For`` and ``X-Forwarded-Proto``, and sets
:attr:`~rapidws.asyncio.server.ServerConnection.client_address` and
:attr:`~rapidws.asyncio.server.ServerConnection.scheme` before the
interceptors run. When the peer is not trusted, the headers are not read: a
client talking to the server directly cannot choose its address. Nothing is
trusted by default.

The rules:

- The list of hops is walked from the right, the one the nearest proxy added:
  trusted proxies are skipped and the first hop that is not one is the
  client. Hops further left were written by the client itself and are never
  read, so prepending forged hops changes nothing. When every hop is a trusted
  proxy, the leftmost is the client.
- The client address is a ``(host, port)`` pair: ``host`` an IP address as
  :mod:`ipaddress` writes it (IPv6 without brackets), or what a proxy said
  instead of one, ``"unknown"`` or an obfuscated identifier like ``"_hidden"``
  (RFC 7239 section 6); ``port`` is 0 when the proxy does not give it
  (``X-Forwarded-For`` never does, and nginx's ``$remote_addr`` has no port):
  0 is no TCP source port, so it cannot be mistaken for one.
- The scheme is ``"wss"`` for ``https`` or ``wss``, ``"ws"`` for ``http``
  or ``ws`` (case-insensitive); another value leaves the default.
  ``Forwarded``'s ``proto`` is taken from the client's element;
  ``X-Forwarded-Proto``'s from the entry at the client's position from the
  right in ``X-Forwarded-For`` (the last entry when there is none), or its
  first when it has fewer entries (set by an edge proxy, passed on by the
  proxies behind it).
- If a request has a ``Forwarded`` header, ``X-Forwarded-*`` are not read:
  a proxy that writes ``Forwarded`` may pass a client's ``X-Forwarded-For``
  on untouched. (So a proxy that writes ``X-Forwarded-For`` must drop a
  client's ``Forwarded``: ``proxy_set_header Forwarded "";`` in nginx.)
- A malformed value among the hops read is a misconfigured proxy: the header
  is ignored and the connection keeps its socket's values. Nothing here
  raises into the server.
- Each request is resolved anew: a proxy may reuse one upstream connection
  for several clients' plain HTTP requests.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Iterator
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import TypeVar

from ..asyncio.server import ServerConnection
from ..core.headers import Headers
from ..core.http11 import Request

__all__ = [
    "Node",
    "ProxySpec",
    "TrustedProxies",
    "connection_of",
    "parse_forwarded",
    "parse_node",
    "parse_x_forwarded_for",
]

#: A client address: ``(host, port)``, port 0 when unknown.
Node = tuple[str, int]
#: What ``trusted_proxies`` takes: addresses and networks, as text or objects.
ProxySpec = str | IPv4Address | IPv6Address | IPv4Network | IPv6Network

# RFC 7230 section 3.2.6: token and quoted-string (with quoted-pair).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 7239 section 4: forwarded-pair = token "=" value. Whitespace around
# ";" and "," is tolerated (some proxies write "for=a; proto=https").
_PAIR_RE = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_OWS_RE = re.compile(r"[ \t]*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
# RFC 7239 section 6.3: obfnode and obfport.
_OBFUSCATED_RE = re.compile(r"_[A-Za-z0-9._-]+")
# RFC 7239 section 6: port = 1*5DIGIT.
_PORT_RE = re.compile(r"[0-9]{1,5}")

_SCHEMES = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_UNKNOWN: Node = ("unknown", 0)
_CONNECTION = "_rapidws_connection"

T = TypeVar("T")


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """Parse one ``Forwarded`` field value into its elements, left to right.

    Each element is a dict of its parameters, names lowercased and values
    unquoted: ``for=192.0.2.60;proto=http, for="[2001:db8::1]"`` gives
    ``[{"for": "192.0.2.60", "proto": "http"}, {"for": "[2001:db8::1]"}]``.
    Empty elements are skipped (RFC 7230 section 7).

    Raises:
        ValueError: the value does not follow RFC 7239 section 4, or an
            element has a parameter twice.
    """
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    pos, end = 0, len(value)
    while True:
        match = _PAIR_RE.match(value, pos)
        if match is not None:
            name, raw = match[1].lower(), match[2]
            if name in element:
                # RFC 7239 section 4: "Each parameter MUST NOT occur more than
                # once per forwarded-element."
                raise ValueError(f"{name!r} twice in one element of {value!r}")
            if raw.startswith('"'):
                raw = _QUOTED_PAIR_RE.sub(r"\1", raw[1:-1])
            element[name] = raw
            pos = match.end()
        else:
            pos = _skip(value, pos)
        if pos == end or value[pos] == ",":
            if element:
                elements.append(element)
                element = {}
            if pos == end:
                return elements
        elif value[pos] != ";":
            raise ValueError(f"malformed Forwarded header at position {pos}: {value!r}")
        pos += 1


def _skip(value: str, pos: int) -> int:
    match = _OWS_RE.match(value, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def parse_node(value: str) -> Node:
    """Parse a ``for=`` value (RFC 7239 section 6) into ``(host, port)``.

    ``192.0.2.60`` gives ``("192.0.2.60", 0)``, ``[2001:db8::1]:4711`` gives
    ``("2001:db8::1", 4711)``; ``unknown`` and obfuscated names (``_hidden``)
    are kept as the host, and an obfuscated port (``_p1``) is 0.

    Raises:
        ValueError: ``value`` is not a node: an IPv6 address without brackets,
            an IPv4 address in them, a port above 65535.
    """
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError(f"no ']' in {value!r}")
        host = str(IPv6Address(address))
    else:
        name, colon, port = value.partition(":")
        if name.lower() == "unknown":
            host = "unknown"
        elif _OBFUSCATED_RE.fullmatch(name):
            host = name
        else:
            host = str(IPv4Address(name))
        rest = colon + port
    if not rest:
        return host, 0
    port = rest[1:]
    if rest[0] == ":" and _PORT_RE.fullmatch(port) and int(port) <= 65535:
        return host, int(port)
    if rest[0] == ":" and _OBFUSCATED_RE.fullmatch(port):
        return host, 0
    raise ValueError(f"bad port in {value!r}")


def parse_x_forwarded_for(entry: str) -> Node:
    """Parse one entry of ``X-Forwarded-For`` (no standard; what proxies write).

    An IPv4 or IPv6 address, optionally with a port (``192.0.2.60:4711``,
    ``[2001:db8::1]:4711``), or ``unknown``.

    Raises:
        ValueError: ``entry`` is none of these.
    """
    entry = entry.strip(" \t")
    if entry.startswith("[") or (entry.count(":") == 1 and "." in entry):
        host, port = parse_node(entry)
        if host.startswith("_"):
            raise ValueError(f"not an address: {entry!r}")
        return host, port
    if entry.lower() == "unknown":
        return _UNKNOWN
    return str(ip_address(entry)), 0


class TrustedProxies:
    """The addresses and networks whose forwarding headers are believed.

    Args:
        proxies: IP addresses and networks, as text (``"10.0.0.0/8"``,
            ``"::1"``) or :mod:`ipaddress` objects. ``["0.0.0.0/0", "::/0"]``
            trusts every peer: only for a server that nothing but the proxy
            can reach.

    Raises:
        TypeError: ``proxies`` is a single string, not a list.
        ValueError: an entry is not an address or network, or a network has
            host bits set (``10.0.0.1/8``: write ``10.0.0.0/8``).
    """

    __slots__ = ("_exact", "_networks")

    def __init__(self, proxies: Iterable[ProxySpec]) -> None:
        if isinstance(proxies, str):
            raise TypeError(f"trusted_proxies takes a list of addresses, not {proxies!r}")
        networks: list[IPv4Network | IPv6Network] = []
        for proxy in proxies:
            try:
                networks.append(ip_network(proxy))
            except ValueError as exc:
                raise ValueError(f"trusted proxy {proxy!r}: {exc}") from None
        self._networks = tuple(networks)
        # The single addresses as a peer's socket writes them: one set lookup
        # for the common case, a local proxy.
        self._exact = frozenset(
            str(network.network_address) for network in networks if network.num_addresses == 1
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self._networks]!r})"

    def trusts(self, host: object) -> bool:
        """Tell whether ``host`` (an address as text) is a trusted proxy."""
        if host in self._exact:
            return True
        if not isinstance(host, str):
            return False
        try:
            address = ip_address(host)
        except ValueError:
            return False  # "unknown", an obfuscated name, a Unix socket
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's IPv4 peer
        return any(address in network for network in self._networks)

    def resolve(self, headers: Headers) -> tuple[Node | None, str | None]:
        """Return the client's ``(address, scheme)`` that a trusted peer's headers give.

        ``None`` for what the headers do not say, or when they are malformed
        (see the module's rules). The peer itself is not checked here.
        """
        forwarded = headers.get_all("Forwarded")
        if forwarded:
            try:
                return self._from_forwarded(forwarded)
            except ValueError:
                return None, None
        address: Node | None = None
        position = 0  # the client's, counted from the right
        hops = [hop for value in headers.get_all("X-Forwarded-For") for hop in value.split(",")]
        # RFC 7230 section 7: empty list elements are skipped.
        hops = [hop for hop in hops if hop.strip(" \t")]
        if hops:
            try:
                address, _, position = self._walk(
                    (parse_x_forwarded_for(hop), None) for hop in reversed(hops)
                )
            except ValueError:
                return None, None
        scheme = None
        protos = [
            proto.strip(" \t")
            for value in headers.get_all("X-Forwarded-Proto")
            for proto in value.split(",")
        ]
        protos = [proto for proto in protos if proto]
        if protos:
            # Aligned with X-Forwarded-For from the right; with fewer entries,
            # the first (an edge proxy set it, the ones behind passed it on).
            proto = protos[-1 - position] if position < len(protos) else protos[0]
            scheme = _SCHEMES.get(proto.lower())
        return address, scheme

    def _from_forwarded(self, values: list[str]) -> tuple[Node, str | None]:
        # Each field line is parsed only when the walk reaches it: a line a
        # client sent, left of the hops the proxies added, is never read.
        def hops() -> Iterator[tuple[Node, dict[str, str]]]:
            for value in reversed(values):
                for element in reversed(parse_forwarded(value)):
                    # An element without "for" says nothing of its sender.
                    node = parse_node(element["for"]) if "for" in element else _UNKNOWN
                    yield node, element

        address, element, _ = self._walk(hops())
        proto = element.get("proto")
        return address, None if proto is None else _SCHEMES.get(proto.lower())

    def _walk(self, hops: Iterator[tuple[Node, T]]) -> tuple[Node, T, int]:
        """Return the first hop from the right that is no trusted proxy, and its position.

        When all are trusted, the leftmost. Hops left of it are never parsed.

        Raises:
            ValueError: there are no hops, or one read is malformed.
        """
        position = -1
        for position, (node, extra) in enumerate(hops):
            if not self.trusts(node[0]):
                return node, extra, position
        if position < 0:
            raise ValueError("no hops")
        return node, extra, position

    def apply(self, ws: ServerConnection, request: Request) -> None:
        """Set ``ws.client_address`` and ``ws.scheme`` for ``request``, when the peer is trusted.

        Both are reset to their defaults first when the peer is trusted: a
        proxy's next request on the connection may be another client's.
        """
        peer = ws.remote_address
        if not isinstance(peer, tuple) or not self.trusts(peer[0]):
            return
        address, scheme = self.resolve(request.headers)
        ws.client_address = address
        ws.scheme = scheme


def connection_of(request: Request) -> ServerConnection:
    """Return the connection that a plain HTTP request came on.

    For HTTP route handlers, which get only the request: its
    ``client_address`` and ``scheme`` (resolved from trusted proxies'
    headers), ``remote_address``, ``server``. ::

        @app.get("/whoami")
        def whoami(request):
            return {"client": connection_of(request).client_address[0]}

    Raises:
        LookupError: ``request`` was not handed to an HTTP route by an
            :class:`~rapidws.App` (a WebSocket handshake's request: the
            interceptors and handlers have ``ws`` already), or its connection
            is gone.
    """
    reference: weakref.ref[ServerConnection] | None = getattr(request, _CONNECTION, None)
    connection = None if reference is None else reference()
    if connection is None:
        raise LookupError("this request did not come to an HTTP route of a rapidws App")
    return connection


def bind_connection(request: Request, ws: ServerConnection) -> None:
    """Remember ``ws`` for :func:`connection_of` (the App calls it for HTTP routes).

    A weak reference in the request's ``__dict__``: the connection already
    holds the request, and a strong one back would make a cycle.
    """
    setattr(request, _CONNECTION, weakref.ref(ws))
