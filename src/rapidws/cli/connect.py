"""``rapidws connect URL``: an interactive client in the habits of wscat."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import threading
from typing import Any

from ..asyncio.client import ClientConnection, connect
from ..asyncio.connection import Data
from ..core.headers import Headers
from ..exceptions import ConnectionClosed, WebSocketError

__all__ = ["add_connect_command", "format_message"]


def add_connect_command(commands: Any) -> None:
    """Add the ``connect`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "connect",
        help="connect to a WebSocket server",
        description="Send each line of standard input as a text message and print "
        "received messages after '< '.",
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="add a request header (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "-s", "--subprotocol", action="append", default=[], metavar="NAME",
        help="offer a subprotocol (repeatable)",
    )  # fmt: skip
    parser.add_argument("-o", "--origin", help="send this Origin header")
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    parser.add_argument(
        "-x", "--execute", metavar="MESSAGE", help="send MESSAGE, print the reply, and exit"
    )
    parser.add_argument(
        "-w", "--wait", type=float, default=10.0, metavar="SECONDS",
        help="with --execute, how long to wait for the reply (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--no-compression", action="store_true", help="do not offer permessage-deflate"
    )
    parser.set_defaults(run=run_connect)


def format_message(message: Data) -> str:
    """Format a received message for the terminal: text as is, binary as hex."""
    if isinstance(message, str):
        return message
    return f"(binary, {len(message)} bytes) {message.hex(' ')}"


def run_connect(args: argparse.Namespace) -> int:
    """Run ``rapidws connect``; return the exit status."""
    headers = Headers()
    for header in args.header:
        name, colon, value = header.partition(":")
        try:
            if not colon:
                raise ValueError(header)
            headers.add(name.strip(), value.strip())
        except ValueError:
            print(f"rapidws connect: invalid header {header!r}, use 'Name: value'",
                  file=sys.stderr)  # fmt: skip
            return 2
    context = None
    if args.insecure and args.url.lower().startswith("wss:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        client = connect(
            args.url,
            additional_headers=headers,
            subprotocols=args.subprotocol or None,
            origin=args.origin,
            ssl=context,
            compression=None if args.no_compression else "deflate",
        )
        return asyncio.run(_session(client, args))
    except (OSError, WebSocketError) as exc:
        print(f"rapidws connect: {_describe(exc, args.url)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException, url: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {url} not trusted: {exc.verify_message} (use --insecure to skip)"
        )
    if isinstance(exc, OSError) and not str(exc):
        return f"cannot connect to {url}: {type(exc).__name__}"
    return str(exc)


async def _session(client: connect, args: argparse.Namespace) -> int:
    async with client as ws:
        if args.execute is not None:
            await ws.send(args.execute)
            try:
                reply = await asyncio.wait_for(ws.recv(), args.wait)
            except asyncio.TimeoutError:
                # The connection is up: this is no connection timeout.
                print(f"rapidws connect: no reply within {args.wait:g} s", file=sys.stderr)
                return 1
            print(f"< {format_message(reply)}", flush=True)
            return 0
        print(f"connected to {args.url} (end input with Ctrl+D)", file=sys.stderr, flush=True)
        input_errors: list[Exception] = []
        sender = asyncio.get_running_loop().create_task(_send_lines(ws, input_errors))
        try:
            async for message in ws:
                print(f"< {format_message(message)}", flush=True)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
    code = ws.close_code
    print(f"disconnected (code: {code}, reason: {ws.close_reason!r})", file=sys.stderr)
    return 0 if code in (1000, 1001) and not input_errors else 1


async def _send_lines(ws: ClientConnection, errors: list[Exception]) -> None:
    """Send the lines of stdin, then close; add to ``errors`` when stdin cannot be sent."""
    lines = _stdin_lines()
    while True:
        line = await lines.get()
        if line is None:
            # End of input: close normally, as wscat does.
            await ws.close()
            return
        try:
            if isinstance(line, Exception):
                raise line
            await ws.send(line.rstrip("\r\n"))
        except (OSError, ValueError) as exc:
            # Undecodable input (UnicodeDecodeError, or UnicodeEncodeError for
            # surrogate escapes): end the session rather than hang.
            print(f"rapidws connect: cannot send standard input: {exc}", file=sys.stderr)
            errors.append(exc)
            await ws.close()
            return


def _stdin_lines() -> asyncio.Queue[str | Exception | None]:
    # A daemon thread reads stdin, so that a blocked read never delays exit.
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | Exception | None] = asyncio.Queue()

    def read() -> None:
        end: Exception | None = None
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:
            return  # the session is over and its loop closed: stop reading
        except (OSError, ValueError) as exc:
            end = exc
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, end)

    threading.Thread(target=read, name="rapidws-stdin", daemon=True).start()
    return queue
