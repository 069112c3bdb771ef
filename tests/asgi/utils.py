"""Running ASGI apps under a real uvicorn server, in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn

from rapidws.asgi import UvicornProtocol

from ..asyncio.utils import TIMEOUT, wait

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Served:
    """A uvicorn server running an app in this test's loop."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.port: int = server.servers[0].sockets[0].getsockname()[1]

    def uri(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve(app: Any, **options: Any) -> AsyncIterator[Served]:
    """Run ``app`` under uvicorn, on a free port; ``ws=UvicornProtocol`` unless given."""
    options = {"ws": UvicornProtocol, "lifespan": "off", "log_config": None, **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=0, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it did not start
        await asyncio.sleep(0.01)
    try:
        yield Served(server)
    finally:
        server.should_exit = True
        await wait(task, 3 * TIMEOUT)
