"""``rapidws serve``: run a WebSocket server from the shell."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from typing import Any

from ..asyncio.server import ServerConnection, serve
from ..core.limits import MAX_MESSAGE_SIZE

__all__ = ["add_serve_command", "echo"]


def add_serve_command(commands: Any) -> None:
    """Add the ``serve`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser("serve", help="run a WebSocket server")
    parser.add_argument(
        "--echo", action="store_true", help="echo every message back, with its type, on any path"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest message accepted, in bytes; 0 for no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="certificate chain (PEM), to serve wss://"
    )
    parser.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    parser.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    parser.set_defaults(run=run_serve)


async def echo(connection: ServerConnection) -> None:
    """Send every message back to its sender, text as text and binary as binary."""
    async for message in connection:
        await connection.send(message)


def run_serve(args: argparse.Namespace) -> int:
    """Run ``rapidws serve`` until interrupted."""
    if not args.echo:
        print("rapidws serve: nothing to serve; pass --echo", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("rapidws serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"rapidws serve: cannot load the certificate: {exc}", file=sys.stderr)
            return 1
    try:
        asyncio.run(_serve(args, context))
    except OSError as exc:
        print(f"rapidws serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(args: argparse.Namespace, context: ssl.SSLContext | None) -> None:
    max_size = args.max_size or None
    compression = None if args.no_compression else "deflate"
    async with serve(
        echo, args.host, args.port, ssl=context, max_size=max_size, compression=compression
    ) as server:
        scheme = "wss" if context else "ws"
        host = f"[{args.host}]" if ":" in args.host else args.host
        stop = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Close every connection with 1001 on Ctrl+C or a service stop.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.cancel)
        # Only now: a supervisor may signal as soon as it reads this line.
        print(f"rapidws: echo server listening on {scheme}://{host}:{server.port}", file=sys.stderr)
        with contextlib.suppress(asyncio.CancelledError):
            await stop
        print("rapidws: shutting down", file=sys.stderr)
