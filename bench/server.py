"""The rapidws server that the benchmarks measure.

    python bench/server.py --port P --api callback|iterator|stream --loop uvloop|asyncio

It echoes every message with its type on any path, except on path ``/ack``
where it answers each message with its length, as text. With ``--api stream``
it receives every message as a stream and echoes it chunk by chunk as the
chunks arrive (on ``/ack``: counts the chunks' bytes, then answers). Compression is off
(the benchmark measures the protocol path, and not every peer compresses);
messages up to 64 MiB are accepted, and streamed messages up to 4 GiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable

import rapidws
import rapidws.speedups

MAX_SIZE = 64 * 1024 * 1024
MAX_STREAM_SIZE = 4 * 1024 * 1024 * 1024  # the 1 GiB upload of run.py's stream memory case


class Echo(rapidws.Callbacks):
    """The callback API: replies are sent from on_message, without a task."""

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        """Echo ``message``, or its length on ``/ack``."""
        request = connection.request
        if request is not None and request.path == "/ack":
            connection.send_nowait(str(len(message)))
        else:
            connection.send_nowait(message)


async def echo(connection: rapidws.ServerConnection) -> None:
    """Echo with the async-iterator API: one task per connection."""
    ack = connection.request is not None and connection.request.path == "/ack"
    async for message in connection:
        await connection.send(str(len(message)) if ack else message)


async def stream_echo(connection: rapidws.ServerConnection) -> None:
    """Echo with the streaming API: each chunk goes back as it arrives."""
    ack = connection.request is not None and connection.request.path == "/ack"
    connection.max_stream_size = MAX_STREAM_SIZE
    with contextlib.suppress(rapidws.ConnectionClosedOK):
        while True:
            stream = await connection.recv_stream()
            if ack:
                size = 0
                async for chunk in stream:
                    size += len(chunk)
                await connection.send(str(size))
                continue
            async with connection.send_stream(text=stream.text) as out:
                async for chunk in stream:
                    await out.send(chunk)


async def main(port: int, api: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    handler: rapidws.Callbacks | Callable[[rapidws.ServerConnection], Awaitable[None]]
    handler = Echo() if api == "callback" else stream_echo if api == "stream" else echo
    async with rapidws.serve(
        handler, "127.0.0.1", port, compression=None, max_size=MAX_SIZE, max_queue=64
    ):
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
        print(f"ready pid={os.getpid()} speedups={rapidws.speedups.IMPLEMENTATION}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def run() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", choices=["callback", "iterator", "stream"], default="callback")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        uvloop.run(main(args.port, args.api))
    else:
        asyncio.run(main(args.port, args.api))


if __name__ == "__main__":
    run()
