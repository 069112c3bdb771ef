"""Blocking, thread-safe WebSocket clients, on the asyncio layer's connections.

``with rapidws.sync.connect(uri) as ws:`` needs no asyncio in the calling
code; the connection runs on a private event loop thread (see
:mod:`rapidws.sync.loop`).
"""

from .client import ClientConnection, connect
from .connection import Connection

__all__ = ["ClientConnection", "Connection", "connect"]
