"""WebSocket extensions (RFC 6455 section 9): the negotiation interface."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]
