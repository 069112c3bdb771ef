"""The uvicorn + Starlette peer of bench/hub_bench.py's chat case.

    python bench/peers/starlette_chat_server.py --port P [--loop uvloop|asyncio]

A Starlette WebSocket route on every path: every connection joins one room;
each text message received is sent to all of them, the sender included, by a
loop of ``await ws.send_text()``: what a Starlette app without a broadcast
helper does. uvicorn with its default WebSocket protocol
(``ws="auto"``), httptools, the loop chosen (uvloop by default), no access
log, keepalive pings off.
"""

from __future__ import annotations

import contextlib

import starlette
from _runner import run
from _uvicorn import serve
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

members: set[WebSocket] = set()


async def chat(ws: WebSocket) -> None:
    """Join the room; send each message to everyone in it."""
    await ws.accept()
    members.add(ws)
    try:
        while True:
            message = await ws.receive_text()
            for member in list(members):
                # One that closed meanwhile raises (a RuntimeError, in Starlette).
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await member.send_text(message)
    except (WebSocketDisconnect, RuntimeError):
        pass  # closed; RuntimeError when a send to it failed first (suppressed above)
    finally:
        members.discard(ws)


app = Starlette(routes=[WebSocketRoute("/{path:path}", chat)])


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's own handlers stop it)."""
    await serve(app, port, f"starlette={starlette.__version__}")


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
