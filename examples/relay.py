"""A relay: each client is paired with a connection upstream, messages streamed both ways.

A message from one side goes to the other chunk by chunk, as it arrives: the
relay never holds a whole message, so a 4 GiB upload costs it a few chunks of
memory, and the other side sees its first byte before the last one left the
sender. Backpressure carries through: while one side reads slowly, the relay
stops reading from the other.

Run an upstream server (``rapidws serve --echo --port 8765``), then
``python examples/relay.py --port 8000 --upstream ws://127.0.0.1:8765``, and
talk to ``ws://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import rapidws
from rapidws import Connection, ServerConnection


async def pump(source: Connection[Any], target: Connection[Any]) -> None:
    """Stream every message from ``source`` to ``target``, until ``source`` closes."""
    with contextlib.suppress(rapidws.ConnectionClosed):
        while True:
            stream = await source.recv_stream()
            # Each chunk goes out as a frame of one fragmented message, at once.
            async with target.send_stream(text=stream.text) as out:
                async for chunk in stream:
                    await out.send(chunk)


def forwarded(code: int | None) -> int:
    """Return the close code to pass on: one a close frame may carry (RFC 6455 7.4.1)."""
    if code is None or code in (1005, 1006, 1015):
        return 1000 if code == 1005 else 1011
    return code


def relay_handler(upstream: str) -> Callable[[ServerConnection], Awaitable[None]]:
    """Return a handler that pairs each client with a new connection to ``upstream``."""

    async def relay(client: ServerConnection) -> None:
        client.max_stream_size = None  # a relay holds no message: no size to bound
        async with rapidws.connect(upstream) as server:
            server.max_stream_size = None
            _, pending = await asyncio.wait(
                [
                    asyncio.create_task(pump(client, server)),
                    asyncio.create_task(pump(server, client)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
            # One side closed: close the other with the same code.
            closed, other = (client, server) if client.close_code is not None else (server, client)
            await other.close(forwarded(closed.close_code), closed.close_reason or "")

    return relay


async def main() -> None:
    """Parse the options and relay until interrupted."""
    parser = argparse.ArgumentParser(description="Relay WebSocket messages as streams.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--upstream", required=True, help="the ws:// URI to relay to")
    args = parser.parse_args()
    async with rapidws.serve(relay_handler(args.upstream), args.host, args.port) as server:
        print(f"listening on ws://{args.host}:{server.port}", file=sys.stderr)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
