"""A tiny ASGI app for hypercorn, run by tests/interop/test_hypercorn.py.

Its WebSockets echo messages, accept the first subprotocol offered, and answer
the text ``"scope"`` with what the connection's ASGI scope says (the HTTP
version that carried it, the client's address), as JSON, and close on
``"bye"`` with 4000.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Serve the lifespan and WebSockets; refuse plain HTTP with 404."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        subprotocols = scope.get("subprotocols") or [None]
        await send({"type": "websocket.accept", "subprotocol": subprotocols[0]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text == "scope":
                about = {"http_version": scope["http_version"], "client": scope["client"]}
                await send({"type": "websocket.send", "text": json.dumps(about)})
            elif text == "bye":
                await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            elif text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found\n"})
