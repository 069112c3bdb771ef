"""A Starlette app written for any ASGI server: a JSON room on a ``WebSocketEndpoint``.

tests/asgi/test_dropin.py serves it with ``uvicorn endpoint_app:app --ws
rapidws.asgi:UvicornProtocol``; nothing in it knows about rapidws.
"""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket


class Room(WebSocketEndpoint):
    """Every JSON message goes to every member, tagged with its sender's name."""

    encoding = "json"
    members: ClassVar[dict[WebSocket, str]] = {}

    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        name = websocket.query_params.get("name", "anonymous")
        self.members[websocket] = name
        await self.broadcast({"joined": name, "members": sorted(self.members.values())})

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await self.broadcast({"from": self.members[websocket], "data": data})

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        name = self.members.pop(websocket, None)
        if name is not None:
            await self.broadcast({"left": name, "code": close_code})

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every member."""
        for member in list(self.members):
            await member.send_json(message)


app = Starlette(routes=[WebSocketRoute("/room", Room)])
