"""Blocking, thread-safe WebSocket clients, on the asyncio layer's connections.

``with rapidws.sync.connect(uri) as ws:`` needs no asyncio in the calling
code; the connection runs on a private event loop thread (see
:mod:`rapidws.sync.loop`). ``for ws in connections(uri, reconnect=True)``
reconnects with backoff; :class:`WebSocketApp` is the browser-style event
client.
"""

from .client import ClientConnection, connect, connections
from .connection import Connection, MessageStream, MessageWriter
from .events import WebSocketApp

__all__ = [
    "ClientConnection",
    "Connection",
    "MessageStream",
    "MessageWriter",
    "WebSocketApp",
    "connect",
    "connections",
]
