"""WebSocket extensions (RFC 6455 section 9): the interface, and permessage-deflate."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .permessage_deflate import (
    ClientPerMessageDeflate,
    PerMessageDeflate,
    ServerPerMessageDeflate,
    with_compression,
)

__all__ = [
    "ClientExtensionFactory",
    "ClientPerMessageDeflate",
    "Extension",
    "PerMessageDeflate",
    "ServerExtensionFactory",
    "ServerPerMessageDeflate",
    "with_compression",
]
