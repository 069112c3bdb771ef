"""What the ASGI peers of bench/redis_bench.py share: uvicorn, bound before the ready line."""

from __future__ import annotations

import os
import socket
from typing import Any

import uvicorn


async def serve(app: Any, port: int, label: str) -> None:
    """Serve ``app`` under uvicorn until SIGINT or SIGTERM (uvicorn's own handlers stop it).

    httptools, uvicorn's default WebSocket protocol, no access log, no
    lifespan, keepalive pings off. The socket is bound before the ready line:
    connections wait in the backlog until uvicorn accepts them.
    """
    config = uvicorn.Config(
        app,
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_ping_interval=None,
    )
    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    print(
        f"ready pid={os.getpid()} {label} uvicorn={uvicorn.__version__} ws={config.ws}", flush=True
    )
    await uvicorn.Server(config).serve(sockets=[sock])
