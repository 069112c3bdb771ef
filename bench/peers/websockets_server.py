"""The websockets peer: the same echo server as bench/server.py, on websockets' asyncio API.

    python bench/peers/websockets_server.py --port P [--loop uvloop|asyncio]

Echoes every message with its type on any path; on ``/ack`` answers each
message with its length, as text. Compression off, messages up to 64 MiB,
everything else at websockets' defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

import websockets
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
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
        print(f"ready pid={os.getpid()} websockets={websockets.__version__}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def run() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        uvloop.run(main(args.port))
    else:
        asyncio.run(main(args.port))


if __name__ == "__main__":
    run()
