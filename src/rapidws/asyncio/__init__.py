"""The asyncio server and client, on :class:`asyncio.Protocol`."""

from .client import ClientConnection, connect
from .connection import Connection, Data
from .server import (
    Callbacks,
    ProcessRequest,
    ProcessResponse,
    Server,
    ServerConnection,
    serve,
)

__all__ = [
    "Callbacks",
    "ClientConnection",
    "Connection",
    "Data",
    "ProcessRequest",
    "ProcessResponse",
    "Server",
    "ServerConnection",
    "connect",
    "serve",
]
