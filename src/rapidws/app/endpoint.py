"""Endpoint classes, JSR-356 style: one instance per connection, a method per event.

::

    class Chat(rapidws.Endpoint):
        async def on_open(self, ws, user_name):
            self.name = user_name
        async def on_message(self, ws, message):
            await ws.send(f"{self.name}: {message}")

Each method may be sync or async. Messages are handled in order, one at a
time per connection: the next is read only when ``on_message`` has returned,
so a slow endpoint pushes back on its peer (the connection's ``max_queue``
and TCP) instead of piling up tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from ..asyncio.server import ServerConnection, _maybe_await
from ..exceptions import ConnectionClosed, ConnectionClosedOK

__all__ = ["Endpoint", "run_endpoint"]


class Endpoint:
    """The base of endpoint classes: override the methods for the events you handle.

    Attributes:
        codec: ``"json"`` to have messages decoded from JSON before
            :meth:`on_message` (a message that is not valid JSON closes the
            connection with 1007, invalid payload data, and is not handed
            over); ``None`` (the default) hands over ``str`` and ``bytes``.
        loads: the JSON decoder, for ``codec = "json"``; ``orjson.loads`` or
            ``msgspec.json.decode`` drop in.
        dumps: the JSON encoder :meth:`send` uses with ``codec = "json"``
            (``orjson.dumps``, whose bytes go out as a binary message).
    """

    codec: ClassVar[str | None] = None
    loads: ClassVar[Callable[[str | bytes], Any]] = staticmethod(json.loads)
    dumps: ClassVar[Callable[[Any], str | bytes]] = staticmethod(json.dumps)

    async def send(self, ws: ServerConnection, message: Any) -> None:
        """Send ``message``: encoded with :attr:`dumps` under the JSON codec, else as is."""
        if self.codec == "json":
            await ws.send_json(message, dumps=type(self).dumps)
        else:
            await ws.send(message)

    def on_open(self, ws: ServerConnection, **params: Any) -> Any:
        """Handle the open connection; ``params`` are the route's path parameters."""

    def on_message(self, ws: ServerConnection, message: Any) -> Any:
        """Handle a message: ``str`` or ``bytes``, or the decoded object with a codec."""

    def on_close(self, ws: ServerConnection, code: int, reason: str) -> Any:
        """Handle the end of the connection (``code`` is 1006 without a close frame)."""

    def on_error(self, ws: ServerConnection, exc: Exception) -> Any:
        """Handle an exception raised by :meth:`on_open` or :meth:`on_message`.

        The default raises it again: the connection closes with 1011 and the
        error is logged. Override it to keep the connection open (return), or
        to answer the peer first.
        """
        raise exc


async def run_endpoint(endpoint_class: type[Endpoint], ws: ServerConnection) -> None:
    """Serve ``ws`` with a new instance of ``endpoint_class``, until the connection ends."""
    endpoint = endpoint_class()
    decode = endpoint_class.loads if endpoint_class.codec == "json" else None
    try:
        await _handled(endpoint, ws, endpoint.on_open, ws, **ws.path_params)
        while True:
            try:
                message: Any = await ws.recv()
            except ConnectionClosedOK:
                break
            if decode is not None:
                try:
                    message = decode(message)
                except ValueError:
                    await ws.close(1007, "invalid JSON")
                    break
            await _handled(endpoint, ws, endpoint.on_message, ws, message)
    except ConnectionClosed:
        pass  # the peer went away while an event was being handled
    except Exception:
        # From on_error (or its default): the server logs it. Close with 1011
        # here, so that on_close sees the end.
        await ws.close(1011, "internal error")
        raise
    finally:
        if ws.close_code is None:
            # Returning from here closes the connection (the server does):
            # on_close comes once it is closed.
            await ws.close()
        assert ws.close_code is not None and ws.close_reason is not None
        await _maybe_await(endpoint.on_close(ws, ws.close_code, ws.close_reason))


async def _handled(
    endpoint: Endpoint, ws: ServerConnection, method: Callable[..., Any], *args: Any, **kwargs: Any
) -> None:
    """Run an event method; hand its exception to ``on_error``."""
    try:
        await _maybe_await(method(*args, **kwargs))
    except ConnectionClosed:
        raise
    except Exception as exc:
        await _maybe_await(endpoint.on_error(ws, exc))
