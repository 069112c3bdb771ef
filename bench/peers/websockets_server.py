"""The websockets peer: the same echo server as bench/server.py, on websockets' asyncio API.

    python bench/peers/websockets_server.py --port P [--loop uvloop|asyncio]

Echoes every message with its type on any path; on ``/ack`` answers each
message with its length, as text. Compression off, messages up to 64 MiB,
everything else at websockets' defaults.
"""

from __future__ import annotations

import websockets
from _runner import run, serve_until_signalled
from websockets.asyncio.server import ServerConnection, serve

MAX_SIZE = 64 * 1024 * 1024


async def echo(connection: ServerConnection) -> None:
    """Echo, or answer lengths on ``/ack``."""
    ack = connection.request is not None and connection.request.path == "/ack"
    async for message in connection:
        await connection.send(str(len(message)) if ack else message)


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    async with serve(echo, "127.0.0.1", port, compression=None, max_size=MAX_SIZE):
        await serve_until_signalled(f"websockets={websockets.__version__}")


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
