"""The websockets peer of bench/hub_bench.py: a chat room and a 10,000-subscriber fan-out.

    python bench/peers/websockets_hub_server.py --port P [--loop L] --mode MODE [--deflate]

The same contract as bench/hub_server.py (see there), on websockets' asyncio API:

- ``chat``: every connection is in one room; each message received goes to all of
  them, the sender included, with ``websockets.broadcast()``.
- ``fanout-broadcast`` / ``fanout-sendloop``: ``go`` on ``/control`` sends the
  1 KiB message to every ``/sub`` connection with ``broadcast()``, or with
  ``await ws.send()`` per connection, then answers ``{"cpu", "wall", "sent"}``.

Compression off unless ``--deflate`` (permessage-deflate with
``server_no_context_takeover``); keepalive pings off.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import websockets
from _runner import serve_until_signalled
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_server import MESSAGE, cli

MODES = ("chat", "fanout-broadcast", "fanout-sendloop")


def handler(mode: str) -> object:
    """Return the connection handler of ``mode``."""
    members: set[ServerConnection] = set()

    async def chat(ws: ServerConnection) -> None:
        members.add(ws)
        try:
            async for message in ws:
                broadcast(members, message)
        finally:
            members.discard(ws)

    async def fanout(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/sub":
            members.add(ws)
            try:
                await ws.wait_closed()
            finally:
                members.discard(ws)
            return
        async for _ in ws:
            cpu, wall = time.process_time(), time.perf_counter()
            if mode == "fanout-broadcast":
                broadcast(members, MESSAGE)
            else:
                for member in list(members):
                    await member.send(MESSAGE)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await ws.send(json.dumps({"cpu": cpu, "wall": wall, "sent": len(members)}))

    return chat if mode == "chat" else fanout


async def main(port: int, mode: str, deflate: bool) -> None:
    """Serve until SIGINT or SIGTERM."""
    extensions = [ServerPerMessageDeflateFactory(server_no_context_takeover=True)]
    async with serve(
        handler(mode),  # type: ignore[arg-type]
        "127.0.0.1",
        port,
        compression=None,
        extensions=extensions if deflate else None,
        ping_interval=None,
        backlog=4096,
    ):
        await serve_until_signalled(f"websockets={websockets.__version__} mode={mode}")


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0], MODES)
