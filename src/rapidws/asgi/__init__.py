"""ASGI: FastAPI and Starlette WebSocket endpoints on the rapidws engine, under uvicorn.

``uvicorn main:app --ws rapidws.asgi:UvicornProtocol`` serves the app's
WebSocket endpoints with :class:`UvicornProtocol`; its HTTP side stays uvicorn's.
"""

from .protocol import ClientDisconnected, UvicornProtocol

__all__ = ["ClientDisconnected", "UvicornProtocol"]
