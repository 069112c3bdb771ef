"""rapidws: a fast, correct WebSocket library for Python.

The names most programs need are here: :func:`serve` and :func:`connect`
(asyncio), :class:`App` and :class:`Endpoint` (the framework), :class:`Response`
for handshake hooks, and the exceptions. The
sans-I/O engine is :mod:`rapidws.core`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .core import Close, CloseCode, Headers, PreparedMessage, Request, Response, State
from .core.extensions import ClientPerMessageDeflate, ServerPerMessageDeflate
from .exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidProxy,
    InvalidRedirect,
    InvalidRequest,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyRefused,
    SecurityError,
    WebSocketError,
)
from .version import __version__

if TYPE_CHECKING:
    from . import sync
    from .app import (
        App,
        Endpoint,
        RateLimit,
        RouteSettings,
        Upgrade,
        allow_origins,
        basic_auth,
        bearer_auth,
    )
    from .asyncio import (
        Backoff,
        Callbacks,
        ClientConnection,
        Connection,
        Server,
        ServerConnection,
        connect,
        serve,
    )
    from .pubsub import Hub
    from .sync import WebSocketApp

__all__ = [
    "App",
    "Backoff",
    "Callbacks",
    "ClientConnection",
    "ClientPerMessageDeflate",
    "Close",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Endpoint",
    "Headers",
    "Hub",
    "InvalidHandshake",
    "InvalidProxy",
    "InvalidRedirect",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "PayloadTooBig",
    "PreparedMessage",
    "ProtocolError",
    "ProxyRefused",
    "RateLimit",
    "Request",
    "Response",
    "RouteSettings",
    "SecurityError",
    "Server",
    "ServerConnection",
    "ServerPerMessageDeflate",
    "State",
    "Upgrade",
    "WebSocketApp",
    "WebSocketError",
    "__version__",
    "allow_origins",
    "basic_auth",
    "bearer_auth",
    "connect",
    "serve",
    "sync",
]

# The asyncio and app layers load on first use, so that the sans-I/O core
# imports without asyncio, sockets or ssl (``import rapidws.core`` runs this
# module). Each name maps to the package it comes from.
_LAZY = {
    **dict.fromkeys(
        ["Callbacks", "ClientConnection", "Connection", "Server", "ServerConnection"], "asyncio"
    ),
    **dict.fromkeys(["connect", "serve"], "asyncio"),
    "bearer_auth": "app",
    "Backoff": "asyncio",
    "WebSocketApp": "sync",
    "RateLimit": "app",
    "Hub": "pubsub",
    **dict.fromkeys(
        ["App", "Endpoint", "RouteSettings", "Upgrade", "allow_origins", "basic_auth"], "app"
    ),
}


def __getattr__(name: str) -> Any:
    if name == "sync":  # the blocking client: rapidws.sync.connect(url)
        return importlib.import_module(f"{__name__}.sync")
    package = _LAZY.get(name)
    if package is not None:
        # Deliberately lazy: see _LAZY.
        module = importlib.import_module(f"{__name__}.{package}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rapidws' has no attribute {name!r}")
