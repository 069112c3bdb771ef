"""rapidws: a fast, correct WebSocket library for Python.

The names most programs need are here: :func:`serve` and :func:`connect`
(asyncio), :class:`Response` for handshake hooks, and the exceptions. The
sans-I/O engine is :mod:`rapidws.core`.
"""

from typing import TYPE_CHECKING, Any

from .core import Close, CloseCode, Headers, Request, Response, State
from .core.extensions import ClientPerMessageDeflate, ServerPerMessageDeflate
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

if TYPE_CHECKING:
    from .asyncio import (
        Callbacks,
        ClientConnection,
        Connection,
        Server,
        ServerConnection,
        connect,
        serve,
    )

__all__ = [
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
    "ServerPerMessageDeflate",
    "State",
    "WebSocketError",
    "__version__",
    "connect",
    "serve",
]

# The asyncio layer loads on first use, so that the sans-I/O core imports
# without asyncio, sockets or ssl (``import rapidws.core`` runs this module).
_LAZY = {
    "Callbacks",
    "ClientConnection",
    "Connection",
    "Server",
    "ServerConnection",
    "connect",
    "serve",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import asyncio as _asyncio  # noqa: PLC0415 - deliberately lazy

        value = getattr(_asyncio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rapidws' has no attribute {name!r}")
