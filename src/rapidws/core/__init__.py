"""The sans-I/O WebSocket engine: bytes and method calls in, events and bytes out.

Nothing in this package touches a socket, an event loop, a thread or a clock,
so every I/O layer (asyncio, threads, anything else) shares the same rules.
"""

from .client import ClientProtocol
from .extensions.base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .frames import Close, CloseCode, Opcode
from .handshake import accept_key
from .headers import Headers
from .http11 import Request, Response
from .prepared import PreparedMessage
from .protocol import Event, Ping, Pong, Protocol, State
from .server import ServerProtocol
from .uri import WebSocketURI, parse_uri

__all__ = [
    "ClientExtensionFactory",
    "ClientProtocol",
    "Close",
    "CloseCode",
    "Event",
    "Extension",
    "Headers",
    "Opcode",
    "Ping",
    "Pong",
    "PreparedMessage",
    "Protocol",
    "Request",
    "Response",
    "ServerExtensionFactory",
    "ServerProtocol",
    "State",
    "WebSocketURI",
    "accept_key",
    "parse_uri",
]
