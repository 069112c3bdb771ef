"""One rapidws node of bench/redis_bench.py: a Hub on the Redis broker behind a WebSocket server.

    python bench/redis_node.py --port P --redis URL [--loop uvloop|asyncio] [--mode MODE]

- ``/sub/<topic>``: the connection subscribes to ``<topic>`` (awaited: the
  broker has SUBSCRIBEd the topic's channel on this node), is sent
  ``joined``, then receives the topic's messages.
- ``/pub/<topic>``: is sent ``joined``; each text message it sends is
  published to ``<topic>`` through Redis, with the mode's API:

  - ``iterator`` (default): ``async for message in ws: await
    hub.publish(topic, message)``: one publish at a time per publisher
    connection, each waiting for Redis's reply.
  - ``tasks``: ``rapidws.Callbacks`` whose ``on_message`` creates a task for
    ``hub.publish()``: the publishes of one loop turn share a pipeline.

Topics keep no history (plain PUBLISH); compression and keepalive pings off.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from peers._runner import run, serve_until_signalled

import rapidws
import rapidws.speedups
from rapidws.pubsub import Hub
from rapidws.pubsub.redis import RedisBroker

MODES = ("iterator", "tasks")


def route(connection: rapidws.ServerConnection) -> tuple[str, str]:
    """Return the kind (``sub`` or ``pub``) and the topic of a connection's path."""
    assert connection.request is not None
    kind, _, topic = connection.request.path.strip("/").partition("/")
    return kind, topic


def iterator_handler(hub: Hub) -> Any:
    """Return the iterator handler: subscribe, or publish each message in turn."""

    async def handler(ws: rapidws.ServerConnection) -> None:
        kind, topic = route(ws)
        if kind == "sub":
            await hub.subscribe(ws, topic)
        await ws.send("joined")
        async for message in ws:
            if kind == "pub":
                await hub.publish(topic, message)

    return handler


class Publishing(rapidws.Callbacks):
    """The ``tasks`` mode: a task per publish; one loop turn's publishes share a pipeline."""

    def __init__(self, hub: Hub) -> None:
        """Keep the hub and the tasks in flight (the loop holds tasks weakly)."""
        self.hub = hub
        self.tasks: set[asyncio.Task[Any]] = set()

    def on_open(self, connection: rapidws.ServerConnection) -> None:
        """Subscribe a ``/sub`` connection, then say ``joined``."""
        self.spawn(self.opened(connection))

    async def opened(self, connection: rapidws.ServerConnection) -> None:
        """Subscribe (through Redis) before saying ``joined``."""
        kind, topic = route(connection)
        if kind == "sub":
            await self.hub.subscribe(connection, topic)
        await connection.send("joined")

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        """Publish a publisher's message in a task of its own."""
        kind, topic = route(connection)
        if kind == "pub":
            self.spawn(self.hub.publish(topic, message))

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` in a task kept until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def main(port: int, url: str, mode: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    async with Hub(RedisBroker(url)) as hub:
        handler = iterator_handler(hub) if mode == "iterator" else Publishing(hub)
        async with rapidws.serve(
            handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096
        ):
            await serve_until_signalled(
                f"rapidws={rapidws.__version__} speedups={rapidws.speedups.IMPLEMENTATION} "
                f"mode={mode}"
            )


def cli(main: Callable[..., Coroutine[Any, Any, None]], description: str, *modes: str) -> None:
    """Parse ``--redis`` (and ``--mode`` if ``modes``); run ``main`` as peers/_runner.py does.

    ``main`` is called as ``main(port, url)``, or ``main(port, url, mode)``.
    """
    helping = bool({"-h", "--help"} & set(sys.argv))
    parser = argparse.ArgumentParser(description=description, add_help=False)
    parser.add_argument("--redis", required=not helping, help="redis://127.0.0.1:PORT/0")
    if modes:
        parser.add_argument("--mode", choices=modes, default=modes[0])
    if helping:
        parser.print_help()  # then _runner.run()'s help, for --port and --loop
    args, rest = parser.parse_known_args()
    sys.argv[1:] = rest  # --port and --loop, for _runner.run()
    extra = (args.mode,) if modes else ()
    run(lambda port: main(port, args.redis, *extra), description)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0], *MODES)
