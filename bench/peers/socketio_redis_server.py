"""The python-socketio peer of bench/redis_bench.py: ``AsyncRedisManager`` fan-out under uvicorn.

    python bench/peers/socketio_redis_server.py --port P --redis URL [--loop uvloop|asyncio]

``socketio.AsyncServer(client_manager=socketio.AsyncRedisManager(URL))`` as an
ASGI app under uvicorn (httptools, its default WebSocket protocol, no access
log). Clients speak Engine.IO 4 over a WebSocket straight away
(``/socket.io/?EIO=4&transport=websocket``):

- ``join`` (``42["join","<topic>"]``): ``enter_room(sid, topic)``, then the
  event ``joined`` back to that client.
- ``publisher`` (``42["publisher","<topic>"]``): this client publishes to
  ``<topic>`` from now on; ``joined`` back.
- ``pub`` (``42["pub","<text>"]``): ``await sio.emit("msg", text, room=topic)``:
  delivered here at once and published through Redis to every other
  instance, each of which delivers to its own members of the room (every
  instance receives every emit: python-socketio's design).

Engine.IO pings every 300 s (never during a run), as the other servers have
keepalive pings off.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import socketio
from _uvicorn import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_node import cli

publishers: dict[str, str] = {}


def application(url: str) -> tuple[socketio.AsyncServer, socketio.ASGIApp]:
    """Return the server and its ASGI app, on Redis at ``url``."""
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(url),
        ping_interval=300,
        ping_timeout=300,
        cors_allowed_origins=[],
    )

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, topic: str) -> None:
        await sio.enter_room(sid, topic)
        await sio.emit("joined", to=sid)

    @sio.on("publisher")  # type: ignore[untyped-decorator]
    async def publisher(sid: str, topic: str) -> None:
        publishers[sid] = topic
        await sio.emit("joined", to=sid)

    @sio.on("pub")  # type: ignore[untyped-decorator]
    async def pub(sid: str, text: str) -> None:
        await sio.emit("msg", text, room=publishers[sid])

    return sio, socketio.ASGIApp(sio)


async def main(port: int, url: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    _, app = application(url)
    await serve(app, port, f"python-socketio={importlib.metadata.version('python-socketio')}")


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
