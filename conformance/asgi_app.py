"""A Starlette echo endpoint for the Autobahn fuzzing client, served by uvicorn on rapidws.

    python conformance/asgi_app.py 9003

The same as conformance/server.py, through the ASGI layer: uvicorn with
``ws=AutobahnProtocol`` (rapidws.asgi's class with the suite's deflate
settings), the endpoint echoing each ``websocket.receive`` message as it came,
text or binary. Limits are raised for 9.x (messages up to 16 MiB in 65,536
fragments), keepalive is off (a ping would land in a case's received frames),
and every message is compressed (threshold 0: see conformance/server.py).
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from rapidws import ServerPerMessageDeflate
from rapidws.asgi import UvicornProtocol

MAX_SIZE = 64 * 1024 * 1024


class AutobahnProtocol(UvicornProtocol):
    """rapidws.asgi's class, compressing every message as the suite needs."""

    compression = ServerPerMessageDeflate(threshold=0)


async def echo(websocket: WebSocket) -> None:
    """Send every message back, text as text and binary as binary."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(routes=[WebSocketRoute("/", echo)])


#: uvicorn's settings for the suite (besides host and port).
OPTIONS = {
    "ws": AutobahnProtocol,
    "ws_max_size": MAX_SIZE,
    "ws_ping_interval": None,
    "ws_per_message_deflate": True,
    "lifespan": "off",
    "log_level": "warning",
}


def main(port: int) -> None:
    """Serve until interrupted."""
    print(f"listening on ws://127.0.0.1:{port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, **OPTIONS)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9003)
