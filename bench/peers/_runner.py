"""What every peer server shares: the command line, the loop, the ready line, the stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable


async def serve_until_signalled(label: str) -> None:
    """Print the ready line the harness waits for, then wait for SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.cancel)
    print(f"ready pid={os.getpid()} {label}".rstrip(), flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await stop


def run(main: Callable[[int], Awaitable[None]], description: str) -> None:
    """Parse ``--port`` and ``--loop``, then run ``main(port)`` on that loop."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        uvloop.run(main(args.port))  # type: ignore[arg-type]
    else:
        asyncio.run(main(args.port))  # type: ignore[arg-type]
