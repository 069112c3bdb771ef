"""The application layer: what servers are written with.

:class:`App` routes WebSocket and plain HTTP requests on one port
(:mod:`rapidws.app.routing`), runs handshake interceptors
(:mod:`rapidws.app.hooks`) and serves each route with a coroutine, an
:class:`Endpoint` class or :class:`~rapidws.asyncio.server.Callbacks`.
"""

from __future__ import annotations

from .application import (
    SERVER_DEFAULT,
    AfterHandshake,
    App,
    HttpHandler,
    RouteSettings,
    Upgrade,
    WebSocketHandler,
)
from .endpoint import Endpoint, run_endpoint
from .hooks import Interceptor, allow_origins, basic_auth, bearer_auth
from .limits import ConnectionCounter, RateLimit, RateLimitedCallbacks, TokenBucket
from .proxies import (
    Node,
    ProxySpec,
    TrustedProxies,
    connection_of,
    parse_forwarded,
    parse_node,
    parse_x_forwarded_for,
)
from .routing import (
    BadPath,
    Convertor,
    Match,
    Matched,
    MethodNotAllowed,
    NotFound,
    NotWebSocket,
    Redirect,
    Route,
    Router,
    UpgradeRequired,
)
from .static import StaticFiles

__all__ = [
    "SERVER_DEFAULT",
    "AfterHandshake",
    "App",
    "BadPath",
    "ConnectionCounter",
    "Convertor",
    "Endpoint",
    "HttpHandler",
    "Interceptor",
    "Match",
    "Matched",
    "MethodNotAllowed",
    "Node",
    "NotFound",
    "NotWebSocket",
    "ProxySpec",
    "RateLimit",
    "RateLimitedCallbacks",
    "Redirect",
    "Route",
    "RouteSettings",
    "Router",
    "StaticFiles",
    "TokenBucket",
    "TrustedProxies",
    "Upgrade",
    "UpgradeRequired",
    "WebSocketHandler",
    "allow_origins",
    "basic_auth",
    "bearer_auth",
    "connection_of",
    "parse_forwarded",
    "parse_node",
    "parse_x_forwarded_for",
    "run_endpoint",
]
