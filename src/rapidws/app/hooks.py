"""Ready-made handshake interceptors: allowed origins, bearer tokens, HTTP Basic.

Each function here returns an interceptor, a callable ``(ws, request)`` that
refuses the handshake with a :class:`~rapidws.core.http11.Response` or lets
it go on with ``None`` (the shape of ``serve()``'s ``process_request``)::

    app = rapidws.App(interceptors=[rapidws.allow_origins(["https://*.example.com"])])

    @app.websocket("/ws/{user_name}", interceptors=[rapidws.bearer_auth(check_token)])
    async def chat(ws, user_name): ...

Secrets are compared in constant time (:func:`hmac.compare_digest`), and a
refusal says what is missing, never what was expected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ..asyncio.server import ServerConnection, _maybe_await
from ..core.headers import Headers
from ..core.http11 import Request, Response

__all__ = ["Interceptor", "allow_origins", "basic_auth", "bearer_auth"]

#: A handshake hook: return a Response to refuse, ``None`` to go on. May be async.
Interceptor = Callable[[ServerConnection, Request], "Response | Awaitable[Response | None] | None"]

#: A token or credentials check: truthy (the user, or True) to accept. May be async.
Check = Callable[..., Any]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def allow_origins(patterns: Iterable[str], *, allow_missing: bool = False) -> Interceptor:
    """Refuse handshakes whose ``Origin`` matches none of ``patterns`` (403).

    A pattern is an origin, ``scheme://host[:port]``, where the host may start
    with ``*.``: one or more labels in its place (``https://*.example.com``
    allows ``https://a.example.com`` and ``https://a.b.example.com``, not
    ``https://example.com``, nor ``http://a.example.com``, nor another port).
    Scheme, host and port are compared exactly (case-insensitively, with the
    scheme's default port filled in); ``"*"`` allows any origin. Browsers always
    send ``Origin`` (RFC 6455 section 4.1); other clients need not: set
    ``allow_missing`` to let them in. The check protects browsers' users from
    pages of other sites (cross-site WebSocket hijacking), not a server from
    clients, which may send anything.

    Raises:
        ValueError: for a pattern that is not an origin.
    """
    matchers = [_origin_pattern(pattern) for pattern in patterns]

    def check_origin(ws: ServerConnection, request: Request) -> Response | None:
        values = request.headers.get_all("Origin")
        if not values:
            return None if allow_missing else _refuse(403, "an Origin header is required")
        if len(values) == 1:
            origin = _parse_origin(values[0])
            if origin is not None and any(match(origin) for match in matchers):
                return None
        return _refuse(403, "this origin is not allowed")

    return check_origin


def bearer_auth(
    tokens: Iterable[str] | Check,
    *,
    query_param: str | None = None,
    attribute: str = "user",
) -> Interceptor:
    """Refuse handshakes without a valid bearer token (401, RFC 6750).

    Args:
        tokens: the valid tokens, or a check ``(token) -> user`` (sync or
            async) whose truthy result is stored in ``ws.attributes``.
        query_param: also read the token from this query parameter, for
            browsers, whose WebSocket API cannot send an ``Authorization``
            header (the query may end up in access logs: prefer short-lived
            tokens there).
        attribute: the key of ``ws.attributes`` that receives the check's
            result (``True`` for a token from a fixed set).
    """
    check = tokens if callable(tokens) else _one_of(list(tokens))

    async def check_bearer(ws: ServerConnection, request: Request) -> Response | None:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = request.query_params.get(query_param, "") if query_param else ""
        token = token.strip()
        if token:
            user = await _maybe_await(check(token))
            if user:
                ws.attributes[attribute] = user
                return None
        return _refuse(401, "a valid bearer token is required", ("WWW-Authenticate", "Bearer"))

    return check_bearer


def basic_auth(
    credentials: Mapping[str, str] | Check,
    *,
    realm: str = "rapidws",
    attribute: str = "user",
) -> Interceptor:
    """Refuse handshakes without valid HTTP Basic credentials (401, RFC 7617).

    Args:
        credentials: user names and their passwords, or a check
            ``(username, password) -> user`` (sync or async); the user name
            (or the check's truthy result) goes to ``ws.attributes``.
        realm: the realm the 401 names.
        attribute: the key of ``ws.attributes`` for the user.
    """
    if callable(credentials):
        check = credentials
    else:
        passwords = dict(credentials)

        def check(username: str, password: str) -> str | None:
            # Compare even for an unknown user, so that timing does not tell.
            expected = passwords.get(username, "\0")
            ok = hmac.compare_digest(password.encode(), expected.encode())
            return username if ok and username in passwords else None

    challenge = ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')

    async def check_basic(ws: ServerConnection, request: Request) -> Response | None:
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            username, colon, password = decoded.partition(":")
            if colon:
                user = await _maybe_await(check(username, password))
                if user:
                    ws.attributes[attribute] = user
                    return None
        return _refuse(401, "valid credentials are required", challenge)

    return check_basic


def _one_of(tokens: list[str]) -> Check:
    encoded = [token.encode() for token in tokens]

    def check(token: str) -> bool:
        candidate = token.encode()
        # Every token compared, so that timing does not tell which came close.
        return sum(hmac.compare_digest(candidate, valid) for valid in encoded) > 0

    return check


def _refuse(status: int, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, f"{text}\n", Headers([*headers, ("Connection", "close")]))


Origin = tuple[str, str, int]


def _parse_origin(value: str) -> Origin | None:
    """Split a serialized origin (RFC 6454 section 6.2) into scheme, host and port."""
    scheme, sep, rest = value.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest or "@" in rest:
        return None
    host, colon, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if not colon:
        host, port = rest, ""
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        number = int(port)
    else:
        number = _DEFAULT_PORTS[scheme]
    if not host:
        return None
    return scheme, host, number


def _origin_pattern(pattern: str) -> Callable[[Origin], bool]:
    if pattern == "*":
        return lambda origin: True
    wildcard = "://*." in pattern
    parsed = _parse_origin(pattern.replace("://*.", "://wildcard.", 1) if wildcard else pattern)
    if parsed is None or "*" in parsed[1]:
        raise ValueError(f"not an origin pattern: {pattern!r} (use scheme://host[:port])")
    scheme, host, port = parsed
    if not wildcard:
        return lambda origin: origin == (scheme, host, port)
    suffix = host[len("wildcard") :]  # ".example.com"
    return lambda origin: (
        origin[0] == scheme
        and origin[2] == port
        and origin[1].endswith(suffix)
        and len(origin[1]) > len(suffix)
        and not origin[1].startswith(".")
    )
