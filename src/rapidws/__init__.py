"""rapidws: a fast, correct WebSocket library for Python.

The names most programs need are here: :func:`serve` and :func:`connect`
(asyncio), :class:`Response` for handshake hooks, and the exceptions. The
sans-I/O engine is :mod:`rapidws.core`.
"""

from .asyncio import ClientConnection, Connection, Server, ServerConnection, connect, serve
from .core import Close, CloseCode, Headers, Request, Response, State
from .exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    SecurityError,
    WebSocketError,
)
from .version import __version__

__all__ = [
    "ClientConnection",
    "Close",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Headers",
    "InvalidHandshake",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "Response",
    "SecurityError",
    "Server",
    "ServerConnection",
    "State",
    "WebSocketError",
    "__version__",
    "connect",
    "serve",
]
