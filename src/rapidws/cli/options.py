"""The flags that ``rapidws connect``, ``serve`` and ``bench`` share, defined once.

The same header, subprotocol, TLS, proxy and compression flags mean the same in
every subcommand. A subcommand adds the groups it needs, then turns the parsed
arguments into keyword arguments::

    parser = commands.add_parser("bench")
    add_client_options(parser)
    ...
    try:
        kwargs = client_options(args)  # for rapidws.connect(args.url, **kwargs)
    except UsageError as exc:
        ...  # print it, exit with status 2

A program that needs the flags in another process (``bench``'s workers) keeps
them as a picklable :class:`ClientFlags` (``ClientFlags.from_args(args)``) and
calls :func:`client_options` there: an SSL context does not pickle.

Long names are the contract. Short ones follow wscat where wscat and websocat
disagree: ``-s`` is a subprotocol, ``-k`` skips the certificate check, ``-H``
adds a header, ``-o`` sets the origin.
"""

from __future__ import annotations

import argparse
import base64
import http.cookiejar
import math
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ..core.headers import Headers

__all__ = [
    "ClientFlags",
    "UsageError",
    "add_client_options",
    "add_server_options",
    "bounded",
    "client_options",
    "count",
    "positive",
    "save_cookies",
    "seconds",
    "server_options",
]


T = TypeVar("T")


class UsageError(Exception):
    """A flag has an invalid value; the message says which (exit status 2)."""


def _add_subprotocol(group: argparse._ArgumentGroup, help: str) -> None:
    group.add_argument(
        "-s", "--subprotocol", action="append", default=[], metavar="NAME", help=help
    )


def _add_compression(parser: argparse.ArgumentParser, default: bool = True) -> None:
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=default,
        help=f"negotiate permessage-deflate (default: {'on' if default else 'off'})",
    )


def _add_no_pong(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-pong",
        action="store_true",
        help="do not answer pings, against RFC 6455 (section 5.5.2): to test the peer's keepalive",
    )


def add_client_options(parser: argparse.ArgumentParser, *, compression: bool = True) -> None:
    """Add the flags of a WebSocket client: request, TLS, network and compression.

    ``compression`` is the default of ``--compression`` (``bench`` measures
    without it unless asked).
    """
    request = parser.add_argument_group("request")
    request.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="add a request header (repeatable)",
    )  # fmt: skip
    _add_subprotocol(request, "offer a subprotocol (repeatable, in order of preference)")
    request.add_argument("-o", "--origin", help="send this Origin header")
    request.add_argument("--auth", metavar="USER:PASS", help="HTTP Basic authentication (RFC 7617)")
    tls = parser.add_argument_group("TLS (wss://)")
    tls.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    tls.add_argument("--ca", metavar="FILE", help="trust the CA certificates in FILE (PEM)")
    tls.add_argument("--cert", metavar="FILE", help="client certificate chain (PEM)")
    tls.add_argument(
        "--key", metavar="FILE", help="private key (PEM) of --cert, if not in its file"
    )
    network = parser.add_argument_group("network")
    proxy = network.add_mutually_exclusive_group()
    proxy.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this proxy (http://, https://, socks5://, socks5h://, "
        "socks4://; user:pass@ for authentication); by default the one that "
        "https_proxy, http_proxy, all_proxy and no_proxy set",
    )
    proxy.add_argument(
        "--no-proxy", action="store_true", help="ignore the proxy environment variables"
    )
    network.add_argument(
        "--http2",
        action="store_true",
        help="open WebSockets as streams of shared HTTP/2 connections (RFC 8441; needs "
        "rapidws[http2]), over HTTP/1.1 when the server does not take them",
    )
    network.add_argument(
        "--max-redirects",
        type=count,
        default=None,
        metavar="N",
        help="follow at most N redirects; 0 for none (default: 10)",
    )
    network.add_argument(
        "--cookie-jar",
        metavar="FILE",
        help="send the cookies of FILE (Netscape format, as curl writes) and save "
        "those the server sets back into it",
    )
    _add_compression(parser, compression)
    _add_no_pong(parser)


@dataclass(frozen=True)
class ClientFlags:
    """The flags of :func:`add_client_options` as parsed: plain values, picklable.

    Each field is the ``dest`` of one flag, with the flag's default.
    """

    header: tuple[str, ...] = ()
    subprotocol: tuple[str, ...] = ()
    origin: str | None = None
    auth: str | None = None
    insecure: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    proxy: str | None = None
    no_proxy: bool = False
    http2: bool = False
    max_redirects: int | None = None
    cookie_jar: str | None = None
    compression: bool = True
    no_pong: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientFlags:
        """Take the client flags out of parsed arguments."""
        values = {field.name: getattr(args, field.name) for field in fields(cls)}
        values["header"] = tuple(values["header"])
        values["subprotocol"] = tuple(values["subprotocol"])
        return cls(**values)


def client_options(
    args: argparse.Namespace | ClientFlags, url: str | None = None
) -> dict[str, Any]:
    """Turn the flags of :func:`add_client_options` into ``connect()`` keyword arguments.

    ``ssl`` is set only for a ``wss://`` URL (``url``, by default
    ``args.url``) or when a TLS flag asks for it.

    Raises:
        UsageError: for an invalid header or ``--auth``, or TLS files that
            cannot be loaded.
    """
    headers = _headers(args.header)
    if args.auth is not None:
        if ":" not in args.auth:
            raise UsageError("--auth takes USER:PASS")
        token = base64.b64encode(args.auth.encode()).decode()
        headers.add("Authorization", f"Basic {token}")
    kwargs: dict[str, Any] = {
        "additional_headers": headers,
        "subprotocols": list(args.subprotocol) or None,
        "origin": args.origin,
        "compression": "deflate" if args.compression else None,
        "proxy": None if args.no_proxy else (args.proxy or True),
        "auto_pong": not args.no_pong,
    }
    if args.http2:
        kwargs["http2"] = True
    if args.max_redirects is not None:
        kwargs["max_redirects"] = args.max_redirects
    if url is None:
        url = str(getattr(args, "url", ""))
    wss = url.lower().startswith("wss:")
    if wss or args.ca or args.cert:
        kwargs["ssl"] = _client_context(args)
    if args.cookie_jar is not None:
        kwargs["cookies"] = _cookie_jar(args.cookie_jar)
    return kwargs


def save_cookies(kwargs: dict[str, Any]) -> None:
    """Write back the cookie jar of ``--cookie-jar``, if any, with the cookies received."""
    jar = kwargs.get("cookies")
    if isinstance(jar, http.cookiejar.FileCookieJar):
        try:
            # Session cookies too: the next run is the same "session", as in curl.
            jar.save(ignore_discard=True)
        except OSError as exc:
            raise UsageError(f"--cookie-jar: cannot save: {exc}") from None


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Add the flags of a WebSocket server: subprotocols, TLS and compression."""
    handshake = parser.add_argument_group("handshake")
    _add_subprotocol(handshake, "accept this subprotocol (repeatable, in order of preference)")
    tls = parser.add_argument_group("TLS (serve wss://)")
    tls.add_argument(
        "--cert", "--tls-cert", dest="cert", metavar="FILE", help="certificate chain (PEM)"
    )
    tls.add_argument("--key", "--tls-key", dest="key", metavar="FILE", help="private key (PEM)")
    tls.add_argument(
        "--ca", metavar="FILE", help="require client certificates signed by the CAs in FILE (PEM)"
    )
    http2 = parser.add_argument_group("HTTP/2 (RFC 8441, needs rapidws[http2])")
    http2.add_argument(
        "--http2",
        action="store_true",
        help="also speak HTTP/2 on the port (h2 by ALPN with --cert, h2c with prior "
        "knowledge without): WebSockets open as streams of one connection",
    )
    http2.add_argument(
        "--http2-max-streams",
        type=positive,
        default=None,
        metavar="N",
        help="the streams a client may have open at once on a connection (default: 100)",
    )
    _add_compression(parser)
    _add_no_pong(parser)


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the flags of :func:`add_server_options` into ``serve()`` keyword arguments.

    Raises:
        UsageError: for ``--cert`` without ``--key`` (or the reverse),
            ``--ca`` without them, or ``--http2-max-streams`` without ``--http2``.
        OSError, ssl.SSLError: when the certificate or key cannot be loaded.
    """
    if bool(args.cert) != bool(args.key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.ca and not args.cert:
        raise UsageError("--ca needs --cert and --key")
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.ca:
            context.load_verify_locations(args.ca)
            context.verify_mode = ssl.CERT_REQUIRED
    if args.http2_max_streams is not None and not args.http2:
        raise UsageError("--http2-max-streams needs --http2")
    options: dict[str, Any] = {
        "ssl": context,
        "subprotocols": args.subprotocol or None,
        "compression": "deflate" if args.compression else None,
        "auto_pong": not args.no_pong,
        "http2": args.http2,
    }
    if args.http2_max_streams is not None:
        options["http2_max_streams"] = args.http2_max_streams
    return options


def bounded(
    convert: Callable[[str], T], valid: Callable[[T], bool], what: str
) -> Callable[[str], T]:
    """Make an ``argparse`` type: ``convert`` the text, check it is ``valid``, or say ``what``."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
        return value

    return parse


#: Finite, non-negative seconds (NaN fails the comparison too).
seconds = bounded(float, lambda value: 0 <= value < math.inf, "a number of seconds")
#: A count, 0 or more.
count = bounded(int, lambda value: value >= 0, "a count")
#: A count, 1 or more.
positive = bounded(int, lambda value: value > 0, "a positive count")


def _headers(specs: Iterable[str]) -> Headers:
    headers = Headers()
    for spec in specs:
        name, colon, value = spec.partition(":")
        try:
            if not colon:
                raise ValueError(spec)
            headers.add(name.strip(), value.strip())
        except ValueError:
            raise UsageError(f"invalid header {spec!r}, use 'Name: value'") from None
    return headers


def _client_context(args: argparse.Namespace | ClientFlags) -> ssl.SSLContext:
    if args.key and not args.cert:
        raise UsageError("--key goes with --cert")
    try:
        context = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS files: {exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _cookie_jar(path: str) -> http.cookiejar.MozillaCookieJar:
    jar = http.cookiejar.MozillaCookieJar(path)
    if os.path.exists(path):
        try:
            jar.load(ignore_discard=True)
        except (OSError, http.cookiejar.LoadError) as exc:
            raise UsageError(f"--cookie-jar: cannot read {path}: {exc}") from None
    return jar
