"""The asyncio server and client, on :class:`asyncio.Protocol`."""

from .client import ClientConnection, connect
from .connection import Connection, Data
from .server import (
    Callbacks,
    CallbackServerConnection,
    ProcessRequest,
    ProcessResponse,
    Server,
    ServerConnection,
    serve,
)

__all__ = [
    "CallbackServerConnection",
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
