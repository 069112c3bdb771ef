"""The asyncio server and client, on :class:`asyncio.Protocol`."""

from .client import ClientConnection, connect
from .connection import AsyncReader, Connection, Data, MessageStream, MessageWriter, SyncReader
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
    "AsyncReader",
    "Backoff",
    "Callbacks",
    "ClientConnection",
    "Connection",
    "Data",
    "MessageStream",
    "MessageWriter",
    "ProcessRequest",
    "ProcessResponse",
    "ReconnectHook",
    "Reconnecting",
    "Server",
    "ServerConnection",
    "SyncReader",
    "as_policy",
    "closing_code",
    "connect",
    "retry_after",
    "retryable",
    "serve",
]
