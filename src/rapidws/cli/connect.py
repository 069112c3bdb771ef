"""``rapidws connect URL``: a client with the habits of wscat and websocat.

Interactive mode, when standard input and output are a terminal: a ``> ``
prompt with line editing and history (prompt_toolkit, from the ``rapidws[cli]``
extra; plain ``input()`` without it), slash commands (``/ping [data]``,
``/pong [data]``, ``/close [code [reason]]``, ``/binary <hex>``; ``//text``
sends ``/text``), and received messages shown as ``< message``, in colour
unless ``--no-color`` or ``NO_COLOR`` is set.

Pipe mode, when either is not a terminal: each line of standard input (each
NUL-terminated record with ``-0``) is a message; when standard output is not a
terminal, each received message is one bare line (record) of it, binary ones
in hex or base64 (``--binary-out``), or one JSON object per line with
``--jsonl``. Status lines go to standard error.

Exit statuses: 0 when the connection ends normally (closed by us, or by the
server with 1000 or 1001); 1 when it cannot open, fails (invalid UTF-8, a
message over ``--max-size``, no closing handshake), the server closes with
another code, ``-n`` messages did not come within ``--wait``, or standard input
could not be sent; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from ..asyncio.client import ClientConnection, connect
from ..asyncio.connection import Data
from ..asyncio.reconnect import Backoff
from ..core.limits import MAX_MESSAGE_SIZE
from ..core.protocol import Ping, Pong
from ..exceptions import ConnectionClosed, WebSocketError
from .options import (
    UsageError,
    add_client_options,
    client_options,
    positive,
    save_cookies,
    seconds,
)

__all__ = ["add_connect_command", "format_message"]

#: With ``--execute``, how long to wait for the replies by default, in seconds.
EXECUTE_WAIT = 10.0

# ANSI colours (ECMA-48 SGR).
GREEN, CYAN, RED, RESET = "\x1b[32m", "\x1b[36m", "\x1b[31m", "\x1b[0m"

SLASH_HELP = "/ping [data], /pong [data], /close [code [reason]], /binary <hex>, //text"


def add_connect_command(commands: Any) -> None:
    """Add the ``connect`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "connect",
        help="connect to a WebSocket server",
        description="Send each line of standard input as a message and print the "
        "messages received: after '< ' with a prompt on a terminal, one per line "
        "otherwise.",
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    add_client_options(parser)
    messages = parser.add_argument_group("messages")
    messages.add_argument(
        "-x", "--execute", action="append", metavar="MESSAGE",
        help="send MESSAGE (repeatable), print the replies, and exit",
    )  # fmt: skip
    messages.add_argument(
        "-n", "--count", type=positive, metavar="N", help="exit after receiving N messages"
    )
    messages.add_argument(
        "-w", "--wait", type=seconds, metavar="SECONDS",
        help="once the input has ended, how long to wait for messages before closing "
        f"(default: {EXECUTE_WAIT:g} with --execute, as long as it takes with --count, "
        "else 0)",
    )  # fmt: skip
    messages.add_argument(
        "-b", "--binary", action="store_true", help="send each line as a binary message"
    )
    messages.add_argument(
        "--binary-out", choices=("hex", "base64"), default="hex",
        help="how to show received binary messages (default: %(default)s)",
    )  # fmt: skip
    messages.add_argument(
        "-0", "--null", action="store_true",
        help="messages end with NUL instead of a newline, in and out (pipe mode)",
    )  # fmt: skip
    messages.add_argument(
        "--max-size", type=int, default=MAX_MESSAGE_SIZE, metavar="BYTES",
        help="largest message accepted, in bytes; 0 for no limit (default: %(default)s)",
    )  # fmt: skip
    display = parser.add_argument_group("display")
    display.add_argument(
        "-P", "--show-ping-pong", action="store_true", help="show the pings and pongs received"
    )
    display.add_argument(
        "--jsonl", action="store_true",
        help="print each message received as a JSON line: type, time, size, data",
    )  # fmt: skip
    display.add_argument(
        "--slash", action=argparse.BooleanOptionalAction, default=None,
        help=f"read slash commands ({SLASH_HELP}); default: on a terminal",
    )  # fmt: skip
    display.add_argument("--no-color", action="store_true", help="no colours on a terminal")
    display.add_argument("--history", metavar="FILE", help="keep the prompt's history in FILE")
    parser.add_argument(
        "--reconnect", action="store_true",
        help="reconnect, with backoff, when the connection drops or the server restarts",
    )  # fmt: skip
    parser.add_argument(
        "--reconnect-delay", type=seconds, default=1.0, metavar="SECONDS",
        help="with --reconnect: the first delay, doubled at each attempt up to a minute, "
        "with full jitter (default: %(default)s)",
    )  # fmt: skip
    parser.set_defaults(run=run_connect)


def format_message(message: Data, binary_out: str = "hex") -> str:
    """Format a received message for the terminal: text as is, binary as hex or base64."""
    if isinstance(message, str):
        return message
    shown = message.hex(" ") if binary_out == "hex" else base64.b64encode(message).decode()
    return f"(binary, {len(message)} bytes) {shown}"


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed
        return False


class _Printer:
    """Writes what is received to stdout, and status lines to stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.jsonl: bool = args.jsonl
        self.terminal = _isatty(sys.stdout) and not self.jsonl
        color = not args.no_color and not os.environ.get("NO_COLOR")
        self.color = color and self.terminal
        self.err_color = color and _isatty(sys.stderr)
        self.binary_out: str = args.binary_out
        self.end = "\0" if args.null and not self.terminal and not self.jsonl else "\n"
        self.quiet = bool(args.execute)  # no status lines with --execute

    def _encode(self, data: bytes) -> str:
        return data.hex() if self.binary_out == "hex" else base64.b64encode(data).decode()

    def _json(self, kind: str, **fields: object) -> None:
        line = json.dumps({"type": kind, "time": round(time.time(), 6), **fields})
        print(line, flush=True)

    def message(self, message: Data) -> None:
        """Show a received message."""
        if self.jsonl:
            if isinstance(message, str):
                self._json("text", size=len(message.encode()), data=message)
            else:
                data = self._encode(message)
                self._json("binary", size=len(message), data=data, encoding=self.binary_out)
        elif self.terminal:
            prefix = f"{GREEN}<{RESET}" if self.color else "<"
            print(f"{prefix} {format_message(message, self.binary_out)}", flush=True)
        else:
            text = message if isinstance(message, str) else self._encode(message)
            print(text, end=self.end, flush=True)

    def control(self, event: Ping | Pong) -> None:
        """Show a received ping or pong (``-P``)."""
        kind = "ping" if type(event) is Ping else "pong"
        if self.jsonl:
            self._json(kind, size=len(event), data=self._encode(event), encoding=self.binary_out)
        elif self.terminal:
            line = f"< {kind} {self._encode(event)}".rstrip()
            print(f"{CYAN}{line}{RESET}" if self.color else line, flush=True)
        else:
            self.status(f"{kind} {self._encode(event)}".rstrip())

    def closed(self, code: int | None, reason: str | None) -> None:
        """Record the end of the connection (a JSON line with ``--jsonl``)."""
        if self.jsonl:
            self._json("close", code=code, reason=reason)

    def status(self, text: str) -> None:
        """Write a status line to stderr (not with ``--execute``)."""
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        """Write an error line to stderr."""
        line = f"rapidws connect: {text}"
        print(f"{RED}{line}{RESET}" if self.err_color else line, file=sys.stderr, flush=True)


class _Connection(ClientConnection):
    """A client connection that reports the pings and pongs it receives (``-P``)."""

    on_control: Callable[[Ping | Pong], None] | None = None

    def _process_events(self) -> None:
        # The asyncio layer reports neither (the engine answers pings): look
        # at the engine's events before it takes them.
        if self.on_control is not None:
            for event in self.protocol._events:
                if type(event) is Ping or type(event) is Pong:
                    self.on_control(event)
        super()._process_events()


# Input.

Item = str | bytes | Exception | None  # a message, an input error, or the end


class _Input:
    """What to send: lines of stdin, of the prompt, or the ``--execute`` messages."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.ended = False
        self.task: asyncio.Task[None] | None = None
        #: Starts reading, once connected (a prompt shows only then).
        self.start: Callable[[], None] | None = None

    def begin(self) -> None:
        """Start reading, unless it started already."""
        if self.start is not None:
            self.start()
            self.start = None

    async def stop(self) -> None:
        """Stop the prompt, if any, so that the lines printed after it reach the terminal."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def get(self) -> Item:
        """Return the next item; ``None`` at the end of the input, ever after."""
        if self.ended:
            return None
        item = await self.queue.get()
        self.ended = item is None or isinstance(item, Exception)
        return item

    def feed_from_thread(self, items: Callable[[], Iterable[str | bytes]]) -> None:
        """Read ``items()`` in a daemon thread, so that a blocked read never delays exit."""
        loop = asyncio.get_running_loop()
        put = self.queue.put_nowait

        def read() -> None:
            end: Exception | None = None
            try:
                for item in items():
                    loop.call_soon_threadsafe(put, item)
            except RuntimeError:
                return  # the session is over and its loop closed: stop reading
            except (OSError, ValueError) as exc:
                end = exc
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(put, end)

        threading.Thread(target=read, name="rapidws-stdin", daemon=True).start()

    def feed_from_prompt(self, history: str | None) -> None:
        """Read lines from a prompt_toolkit prompt, with line editing and history."""
        from prompt_toolkit import PromptSession  # noqa: PLC0415 - an optional extra
        from prompt_toolkit.history import FileHistory, InMemoryHistory  # noqa: PLC0415

        session: PromptSession[str] = PromptSession(
            history=FileHistory(history) if history else InMemoryHistory()
        )

        async def prompt() -> None:
            while True:
                try:
                    line = await session.prompt_async("> ")
                except (EOFError, KeyboardInterrupt):  # Ctrl+D, Ctrl+C: the end
                    self.queue.put_nowait(None)
                    return
                self.queue.put_nowait(line)

        self.task = asyncio.get_running_loop().create_task(prompt())


def _lines(stream: TextIO) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\r\n")


def _records(stream: TextIO, end: bytes, binary: bool) -> Iterator[str | bytes]:
    """Split ``stream``'s bytes into records ending with ``end``: bytes, or UTF-8 text."""
    # read1: what a pipe has now, without waiting for a full buffer.
    read = getattr(stream.buffer, "read1", stream.buffer.read)
    pending = b""
    while chunk := read(65536):
        *records, pending = (pending + chunk).split(end)
        for record in records:
            yield record if binary else record.decode()
    if pending:
        yield pending if binary else pending.decode()


def _input_lines(history: str | None) -> Iterator[str]:
    """Lines typed at an ``input()`` prompt, edited by readline where there is one."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: PLC0415 - not on every platform

        if history:
            with contextlib.suppress(OSError):
                readline.read_history_file(history)
    try:
        while True:
            try:
                yield input("> ")
            except EOFError:
                return
    finally:
        if history:
            with contextlib.suppress(NameError, OSError):
                readline.write_history_file(history)


def _has_prompt_toolkit() -> bool:
    try:
        import prompt_toolkit  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


# The session.


class _Session:
    """One run of ``rapidws connect``, over one connection or several (``--reconnect``)."""

    def __init__(self, args: argparse.Namespace, printer: _Printer, source: _Input) -> None:
        self.url: str = args.url
        self.printer = printer
        self.source = source
        self.binary: bool = args.binary
        self.slash: bool = args.slash
        self.count: int | None = args.count
        self.wait: float | None = args.wait
        self.received = 0
        self.closing = False  # we started the closing handshake
        self.failure: str | None = None
        self.input_failed = False

    async def run(self, ws: ClientConnection) -> int:
        """Exchange messages over ``ws`` until it closes; return the exit status."""
        self.closing = False
        self.printer.status(f"connected to {self.url} (end input with Ctrl+D)")
        self.source.begin()
        receiver = asyncio.create_task(self._receive(ws))
        sender = asyncio.create_task(self._send(ws))
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not receiver.done() and sender.exception() is None:
                await self._linger(ws, receiver)
            await receiver
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        return self._status(ws)

    @property
    def finished(self) -> bool:
        """Whether the session is over: no reconnection after this connection."""
        return self.closing or self.failure is not None

    async def close(self, ws: ClientConnection, code: int = 1000, reason: str = "") -> None:
        """Start (and wait for) the closing handshake."""
        self.closing = True
        await ws.close(code, reason)

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                self.printer.message(message)
                self.received += 1
                if self.count is not None and self.received >= self.count:
                    await self.close(ws)
                    return

    async def _linger(self, ws: ClientConnection, receiver: asyncio.Task[None]) -> None:
        """Wait ``--wait`` for messages (``-n`` of them) once the input has ended, then close."""
        if self.closing:
            return  # /close
        try:
            await asyncio.wait_for(asyncio.shield(receiver), self.wait)
        except asyncio.TimeoutError:
            if self.count is not None:
                got = f"only {self.received} of {self.count} replies"
                self.failure = f"{got if self.received else 'no reply'} within {self.wait:g} s"
            await self.close(ws)

    async def _send(self, ws: ClientConnection) -> None:
        while (item := await self.source.get()) is not None:
            try:
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, str) and self.slash and item.startswith("/"):
                    if item.startswith("//"):
                        item = item[1:]
                    elif await self._command(ws, item):
                        return
                    else:
                        continue
                await ws.send(item.encode() if self.binary and isinstance(item, str) else item)
            except (OSError, ValueError) as exc:
                # Undecodable input (UnicodeDecodeError, or UnicodeEncodeError for
                # surrogate escapes): end the session rather than hang.
                self.printer.error(f"cannot send standard input: {exc}")
                self.input_failed = True
                await self.close(ws)
                return

    async def _command(self, ws: ClientConnection, line: str) -> bool:
        """Run a slash command; return whether it closed the connection."""
        name, _, rest = line[1:].partition(" ")
        try:
            if name == "ping":
                waiter = ws.ping(rest or None)
                waiter.add_done_callback(self._pong_received)
            elif name == "pong":
                await ws.pong(rest)
            elif name == "binary":
                await ws.send(bytes.fromhex(rest))
            elif name == "close":
                code, _, reason = rest.strip().partition(" ")
                await self.close(ws, int(code) if code else 1000, reason)
                return True
            else:
                self.printer.error(f"unknown command /{name}; commands: {SLASH_HELP}")
        except ConnectionClosed:
            raise  # the connection is gone: the session ends
        except (ValueError, WebSocketError) as exc:
            self.printer.error(f"/{name}: {exc}")
        return False

    def _pong_received(self, waiter: asyncio.Future[float]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            self.printer.status(f"pong received after {waiter.result() * 1000:.3f} ms")

    def _status(self, ws: ClientConnection) -> int:
        protocol = ws.protocol
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        self.printer.closed(ws.close_code, ws.close_reason)
        if self.failure is not None:
            self.printer.error(self.failure)
            return 1
        line = f"disconnected (code: {ws.close_code}, reason: {ws.close_reason!r})"
        if self.closing:
            self.printer.status(line)
            return 1 if self.input_failed else 0
        error = None
        if sent is not None and (rcvd is None or protocol.close_rcvd_then_sent is False):
            # The engine failed the connection: the server broke a rule or a limit.
            error = _failed(sent.code, sent.reason)
        elif rcvd is None:
            error = "connection lost: closed abnormally, without a closing handshake (1006)"
        elif rcvd.code not in (1000, 1001):
            error = line
        if error is not None:
            self.printer.error(error)
            return 1
        self.printer.status(line)
        return 0


def _failed(code: int, reason: str) -> str:
    what = {
        1002: "protocol error",
        1007: "the server sent invalid UTF-8 in a text message",
        1009: "the server sent a message too big (see --max-size)",
    }.get(code, "connection failed")
    return f"{what} (closed with {code}: {reason})" if reason else f"{what} (closed with {code})"


# Running.


def run_connect(args: argparse.Namespace) -> int:
    """Run ``rapidws connect``; return the exit status."""
    printer = _Printer(args)
    try:
        kwargs = client_options(args)
    except UsageError as exc:
        printer.error(str(exc))
        return 2
    kwargs["max_size"] = args.max_size or None
    if args.show_ping_pong:
        # A class of its own: pings may come with the handshake's response.
        shown = {"on_control": staticmethod(printer.control)}
        kwargs["create_connection"] = type("_ShownConnection", (_Connection,), shown)
    # A prompt needs both: typed lines in, and a screen to draw it on.
    interactive = _isatty(sys.stdin) and _isatty(sys.stdout) and not args.execute
    if args.slash is None:
        args.slash = interactive
    if args.wait is None:
        args.wait = EXECUTE_WAIT if args.execute else None if args.count else 0.0
    if args.execute and args.count is None:
        args.count = len(args.execute)
    try:
        status = asyncio.run(_main(args, kwargs, printer, interactive))
    except (OSError, WebSocketError) as exc:
        printer.error(_describe(exc, args.url))
        status = 1
    try:
        save_cookies(kwargs)
    except UsageError as exc:
        printer.error(str(exc))
        status = status or 1
    return status


async def _main(
    args: argparse.Namespace, kwargs: dict[str, Any], printer: _Printer, interactive: bool
) -> int:
    source = _Input()
    session = _Session(args, printer, source)
    patched: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if args.execute:
        for message in args.execute:
            source.queue.put_nowait(message)
        source.queue.put_nowait(None)
    elif interactive and _has_prompt_toolkit():
        from prompt_toolkit.patch_stdout import patch_stdout  # noqa: PLC0415

        source.start = lambda: source.feed_from_prompt(args.history)
        # Messages print above the prompt, which is drawn again below them.
        patched = patch_stdout(raw=True)
    elif interactive:
        source.start = lambda: source.feed_from_thread(lambda: _input_lines(args.history))
    elif args.null or args.binary:
        separator = b"\0" if args.null else b"\n"
        records = lambda: _records(sys.stdin, separator, args.binary)  # noqa: E731
        source.start = lambda: source.feed_from_thread(records)
    else:
        source.start = lambda: source.feed_from_thread(lambda: _lines(sys.stdin))
    with patched:
        try:
            return await _sessions(args, kwargs, session)
        finally:
            await source.stop()


async def _sessions(args: argparse.Namespace, kwargs: dict[str, Any], session: _Session) -> int:
    if not args.reconnect:
        async with connect(args.url, **kwargs) as ws:
            return await session.run(ws)
    status = 1
    hook = _on_reconnect(session.printer)
    delay = args.reconnect_delay or 0.001  # a Backoff's delays are positive
    backoff = Backoff(initial=delay, max_delay=max(delay, 60.0))
    async for ws in connect(args.url, reconnect=backoff, on_reconnect=hook, **kwargs):
        status = await session.run(ws)
        if session.finished:
            break
    return status


def _on_reconnect(printer: _Printer) -> Callable[[int, float, BaseException], None]:
    def on_reconnect(attempt: int, delay: float, cause: BaseException) -> None:
        printer.status(f"reconnecting in {delay:.1f} s (attempt {attempt}): {cause}")

    return on_reconnect


def _describe(exc: BaseException, url: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {url} not trusted: {exc.verify_message} (use --insecure to skip)"
        )
    if isinstance(exc, OSError) and not str(exc):
        return f"cannot connect to {url}: {type(exc).__name__}"
    return " ".join(str(exc).split())
