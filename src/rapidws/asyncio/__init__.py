"""The asyncio server and client, on :class:`asyncio.Protocol`."""

from .client import ClientConnection, connect
from .connection import Connection, Data
from .server import ProcessRequest, ProcessResponse, Server, ServerConnection, serve

__all__ = [
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
