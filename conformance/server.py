"""An echo server for the Autobahn fuzzing client, on the rapidws asyncio server.

    python conformance/server.py 9002

Limits are raised for 9.x (messages up to 16 MiB in 65,536 fragments) and
keepalive is off: a ping would land in a case's list of received frames.
Compression (12.x, 13.x) compresses every message (threshold 0): the suite's
13.2/13.5-13.7 cases crash on an uncompressed message (a kosoku defect).
"""

from __future__ import annotations

import asyncio
import sys

import rapidws

MAX_SIZE = 64 * 1024 * 1024


async def echo(ws: rapidws.ServerConnection) -> None:
    """Send every message back."""
    async for message in ws:
        await ws.send(message)


def serve(port: int = 0) -> rapidws.serve:
    """Return the echo server configured for the suite (not yet started)."""
    return rapidws.serve(
        echo,
        "127.0.0.1",
        port,
        compression=rapidws.ServerPerMessageDeflate(
            server_max_window_bits=15, client_max_window_bits=None, threshold=0
        ),
        max_size=MAX_SIZE,
        ping_interval=None,
        max_queue=None,
    )


async def main(port: int) -> None:
    """Serve until interrupted."""
    async with serve(port) as server:
        print(f"listening on ws://127.0.0.1:{server.port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9002))
