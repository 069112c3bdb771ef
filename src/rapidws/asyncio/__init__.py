"""The asyncio server and client, on :class:`asyncio.Protocol`."""

from .client import ClientConnection, connect
from .connection import Connection, Data
from .reconnect import (
    Backoff,
    ReconnectHook,
    Reconnecting,
    as_policy,
    closing_code,
    retry_after,
    retryable,
)
from .server import (
    Callbacks,
    ProcessRequest,
    ProcessResponse,
    Server,
    ServerConnection,
    serve,
)

__all__ = [
    "Backoff",
    "Callbacks",
    "ClientConnection",
    "Connection",
    "Data",
    "ProcessRequest",
    "ProcessResponse",
    "ReconnectHook",
    "Reconnecting",
    "Server",
    "ServerConnection",
    "as_policy",
    "closing_code",
    "connect",
    "retry_after",
    "retryable",
    "serve",
]
