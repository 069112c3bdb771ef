"""``rapidws serve``: run an App, or an echo server, from the shell.

``rapidws serve module:app`` imports ``module`` (the current directory first
on ``sys.path``, as uvicorn does), takes its ``app`` attribute (dotted paths
allowed: ``pkg.mod:holder.app``; with ``--factory``, a callable returning the
App) and serves it until SIGTERM or SIGINT. ``rapidws serve --echo`` serves an
App that echoes every message on any path; ``--broadcast`` one that sends
every message to every client, ``--exec CMD`` one that joins each connection
to a process of CMD (websocat's ``exec:``); knobs make them answer late, push
timestamped messages and close as told (:class:`Reference`).

Shutdown is graceful: on the first signal the app drains (readiness routes and
new handshakes answer 503), ``--drain`` seconds pass (a second signal cuts
them short), the server closes every connection with 1001 (1012 with
``--restart``), waiting for their closing handshakes, and the app's shutdown
hooks run; the exit status is then 0.

Exit statuses: 0 after a signal, 1 when the server cannot start (address in
use, a startup hook raised, a bad certificate), 2 for a usage error (the app
cannot be imported or is not an App).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import random
import shlex
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import logging as rapidws_logging
from ..app import App
from ..app.static import StaticFiles
from ..asyncio.server import Server, ServerConnection
from ..core.frames import is_valid_close_code
from ..core.limits import MAX_MESSAGE_SIZE
from ..exceptions import ConnectionClosed
from . import workers
from .options import (
    UsageError,
    add_server_options,
    bounded,
    positive,
    seconds,
    server_options,
)

__all__ = [
    "AppLoadError",
    "Reference",
    "add_serve_command",
    "echo",
    "echo_app",
    "load_app",
    "reference_app",
]

#: Close code on shutdown: 1001 "going away", or 1012 "service restart" with
#: ``--restart`` (RFC 6455 section 7.4.1 and the IANA registry).
GOING_AWAY = 1001
SERVICE_RESTART = 1012


def add_serve_command(commands: Any) -> None:
    """Add the ``serve`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "serve",
        help="run an App (module:app) or a reference server (--echo, --broadcast, --exec)",
        description=(
            "Serve the rapidws.App found at MODULE:APP (the current directory is searched "
            "first), or an echo server with --echo, until SIGTERM or SIGINT. Shutdown is "
            "graceful: readiness routes and new handshakes answer 503, --drain seconds pass "
            "(a second signal cuts them short), open connections close with 1001 (1012 with "
            "--restart) and the app's shutdown hooks run."
        ),
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="MODULE:APP",
        help="the App to serve, as module:attribute (pkg.mod:app, pkg.mod:holder.app)",
    )
    parser.add_argument(
        "--factory",
        action="store_true",
        help="MODULE:APP is a callable, called with no arguments, that returns the App",
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        help="instead of an app: echo every message back, with its type, on any path",
    )
    _add_reference_options(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on; 0 picks a free one, shown at start (default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        metavar="PATH",
        help="also serve the static files under the directory PATH at /, beside the routes",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest message accepted, in bytes; 0 for no limit (default: %(default)s)",
    )
    add_server_options(parser)
    parser.add_argument(
        "--drain",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help=(
            "on SIGTERM or SIGINT, answer readiness checks and new handshakes with 503 for "
            "this long before closing connections, for load balancers to notice; a second "
            "signal cuts it short (default: 0)"
        ),
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=1,
        metavar="N",
        help="run N worker processes on the port (SO_REUSEPORT), restarted if they die "
        "(default: 1, no supervisor)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="share the app's hub (topics, presence, history) through Redis at URL "
        "(redis://host:port/db; needs rapidws[redis]); without it, each worker has its own",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="close connections with 1012 (service restart: clients may reconnect at once) "
        "instead of 1001 (going away)",
    )
    parser.add_argument(
        "--metrics",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics; 0 picks a free port "
        "(needs rapidws[metrics])",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log a line per connection's end and per refused handshake, and errors, on "
        "stderr: as text, or as one JSON object per line (default: text on a terminal; "
        "else errors only)",
    )
    parser.set_defaults(run=run_serve)


# The echo server.


async def echo(connection: ServerConnection) -> None:
    """Send every message back to its sender, text as text and binary as binary."""
    async for message in connection:
        await connection.send(message)


def echo_app() -> App:
    """Return an App that echoes every message, on any path (``rapidws serve --echo``)."""
    return reference_app(Reference())


# The reference servers: --echo, --broadcast and --exec, with knobs for
# testing clients and load tools against.

#: The topic of ``--broadcast``.
BROADCAST_TOPIC = "broadcast"


def _add_reference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broadcast",
        action="store_true",
        help="instead of an app: send every message to every client (the sender too)",
    )
    parser.add_argument(
        "--exec",
        metavar="CMD",
        help="instead of an app: run CMD (split as a shell would, not run by one) for each "
        "connection and join its stdin and stdout to the connection",
    )
    parser.add_argument(
        "--exec-framing",
        choices=("line", "message"),
        default="line",
        help="with --exec: 'line' makes each message a line of stdin and each line of "
        "stdout a message; 'message' passes bytes as they come (default: %(default)s)",
    )
    knobs = parser.add_argument_group(
        "reference-server knobs (with --echo or --broadcast)",
        "Behaviours to test clients and load tools against.",
    )
    knobs.add_argument(
        "--delay", type=seconds, default=0.0, metavar="SECONDS", help="answer each message late"
    )
    knobs.add_argument(
        "--jitter",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="add a uniform random delay of up to SECONDS to each answer (replies may reorder)",
    )
    knobs.add_argument(
        "--push",
        type=_rate,
        metavar="RATE",
        help='send RATE messages per second, {"seq": N, "time": UNIX_SECONDS}, to each '
        "client (with --broadcast: published once, to all)",
    )
    knobs.add_argument(
        "--close-after",
        type=positive,
        metavar="N",
        help="close each connection after it sent N messages (and they were answered)",
    )
    knobs.add_argument(
        "--close-code",
        type=_close_code,
        default=1000,
        metavar="CODE",
        help="with --close-after: the close code (default: %(default)s)",
    )
    knobs.add_argument(
        "--close-reason", default="", metavar="TEXT", help="with --close-after: the reason"
    )
    knobs.add_argument(
        "--close-abruptly",
        action="store_true",
        help="with --close-after: drop the TCP connection without a closing handshake "
        "(the client sees 1006)",
    )


_rate = bounded(float, lambda value: 0 < value < math.inf, "a rate in messages per second")
_close_code = bounded(int, is_valid_close_code, "a close code to send")


@dataclasses.dataclass(frozen=True)
class Reference:
    """How a reference server behaves (``rapidws serve --echo``, ``--broadcast``, ``--exec``).

    Attributes:
        mode: ``"echo"`` (each message back to its sender), ``"broadcast"``
            (each message to every client) or ``"exec"``.
        command: with ``"exec"``, the program and its arguments, run for each
            connection with its stdin and stdout joined to the connection.
        framing: with ``"exec"``, ``"line"`` (a message is a line) or
            ``"message"`` (bytes as they come, as binary messages).
        delay: seconds before each answer.
        jitter: up to this many more seconds, uniformly at random.
        push: messages per second of ``{"seq": N, "time": T}``; 0 for none.
        close_after: close a connection after it sent this many messages.
        close_code: the code of that close.
        close_reason: its reason.
        close_abruptly: drop the TCP connection instead of closing.
    """

    mode: str = "echo"
    command: tuple[str, ...] = ()
    framing: str = "line"
    delay: float = 0.0
    jitter: float = 0.0
    push: float = 0.0
    close_after: int | None = None
    close_code: int = 1000
    close_reason: str = ""
    close_abruptly: bool = False


def reference_app(reference: Reference) -> App:
    """Return an App that behaves as ``reference`` says, on any path."""
    app = App()
    hub = app.hub if reference.mode == "broadcast" else None

    async def route(connection: ServerConnection, **path_params: object) -> None:
        if reference.mode == "exec":
            await _exec(connection, reference)
        else:
            await _answer(connection, reference, hub)

    # "/{path:path}" matches "/" too; the static route is only its fast path.
    app.add_websocket("/", route)
    app.add_websocket("/{path:path}", route)
    if hub is not None and reference.push:
        pushing: list[asyncio.Task[None]] = []

        async def publish(message: str) -> None:
            await hub.publish(BROADCAST_TOPIC, message)

        @app.on_startup
        def start_pushing() -> None:
            pushing.append(asyncio.get_running_loop().create_task(_push(publish, reference.push)))

        @app.on_shutdown
        def stop_pushing() -> None:
            for task in pushing:
                task.cancel()

    return app


async def _answer(connection: ServerConnection, reference: Reference, hub: Any) -> None:
    """Echo or broadcast each message, late if told; push; close as told."""
    tasks: set[asyncio.Task[None]] = set()
    if hub is not None:
        await hub.subscribe(connection, BROADCAST_TOPIC)
    elif reference.push:
        tasks.add(asyncio.get_running_loop().create_task(_push(connection.send, reference.push)))
    late = reference.delay or reference.jitter
    received = 0
    try:
        async for message in connection:
            answer = hub.publish(BROADCAST_TOPIC, message) if hub else connection.send(message)
            if late:
                delay = reference.delay + random.uniform(0, reference.jitter)
                tasks.add(asyncio.get_running_loop().create_task(_later(delay, answer)))
            else:
                await answer
            received += 1
            if received == reference.close_after:
                await asyncio.gather(*tasks)  # the answers go before the close
                if reference.close_abruptly and connection.transport is not None:
                    connection.transport.abort()
                else:
                    await connection.close(reference.close_code, reference.close_reason)
                break
    finally:
        for task in tasks:
            task.cancel()


async def _later(delay: float, answer: Awaitable[Any]) -> None:
    await asyncio.sleep(delay)
    with contextlib.suppress(ConnectionClosed):
        await answer


async def _push(send: Callable[[str], Awaitable[Any]], rate: float) -> None:
    """Send ``rate`` timestamped messages per second, on a schedule that does not drift."""
    loop = asyncio.get_running_loop()
    interval, due, seq = 1 / rate, loop.time(), 0
    with contextlib.suppress(ConnectionClosed):
        while True:
            seq += 1
            await send(json.dumps({"seq": seq, "time": time.time()}))
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))


async def _exec(connection: ServerConnection, reference: Reference) -> None:
    """Join ``connection`` to a new process of ``reference.command``, as websocat's exec: does.

    The process is killed when the connection ends; the connection closes when
    the process ends its output: with 1000 if it exits with 0, else 1011.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *reference.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_MESSAGE_SIZE,
        )
    except OSError as exc:
        await connection.close(1011, f"cannot run the command: {exc}"[:120])
        return
    line = reference.framing == "line"
    output = asyncio.create_task(_exec_output(connection, process, line))
    feeder = asyncio.create_task(_exec_input(connection, process, line))
    try:
        await asyncio.wait({output, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if not feeder.done():
            status = await process.wait()
            if status == 0:
                await connection.close()
            else:
                await connection.close(1011, f"the command exited with status {status}")
    finally:
        feeder.cancel()
        output.cancel()
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _exec_input(
    connection: ServerConnection, process: asyncio.subprocess.Process, line: bool
) -> None:
    assert process.stdin is not None
    with contextlib.suppress(ConnectionClosed, ConnectionError):
        async for message in connection:
            data = message.encode() if isinstance(message, str) else message
            process.stdin.write(data + b"\n" if line else data)
            await process.stdin.drain()
    # The connection ended (or the process stopped reading): the caller kills it.
    await connection.wait_closed()


async def _exec_output(
    connection: ServerConnection, process: asyncio.subprocess.Process, line: bool
) -> None:
    assert process.stdout is not None
    stdout = process.stdout
    with contextlib.suppress(ConnectionClosed):
        while data := await (stdout.readline() if line else stdout.read(65536)):
            if line:
                data = data.rstrip(b"\n")
                with contextlib.suppress(UnicodeDecodeError):
                    await connection.send(data.decode())  # a line of text: a text message
                    continue
            await connection.send(data)


# Loading module:app.


class AppLoadError(Exception):
    """The App named on the command line cannot be loaded; the message says why."""


def load_app(spec: str, *, factory: bool = False) -> App:
    """Import the App named ``spec`` (``module:attribute``), as ``rapidws serve`` does.

    The current directory is put first on ``sys.path`` unless it is there
    already. ``attribute`` may be dotted (``holder.app``). With ``factory``,
    the attribute is called with no arguments and must return the App.

    Raises:
        AppLoadError: ``spec`` is malformed, the module is missing or raised on
            import, the attribute is missing, or the object is not an App.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise AppLoadError(f"expected MODULE:APP (like main:app), not {spec!r}")
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppLoadError(f"no module named {module_name!r}") from None
        raise AppLoadError(f"cannot import module {module_name!r}: {_describe(exc)}") from None
    except Exception as exc:
        raise AppLoadError(f"cannot import module {module_name!r}: {_describe(exc)}") from None
    target: object = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        if isinstance(target, App):
            raise AppLoadError(f"{spec} is an App, not a factory: drop --factory")
        if not callable(target):
            raise AppLoadError(
                f"{spec} is not callable but {_kind(target)}; with --factory, "
                "name a function that returns the App"
            )
        try:
            target = target()
        except Exception as exc:
            raise AppLoadError(f"the factory {spec} raised {_describe(exc)}") from None
        if not isinstance(target, App):
            raise AppLoadError(f"the factory {spec} returned {_kind(target)}, not a rapidws.App")
    elif not isinstance(target, App):
        hint = "; pass --factory if it returns one" if callable(target) else ""
        raise AppLoadError(f"{spec} is not a rapidws.App but {_kind(target)}{hint}")
    return target


def _kind(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    return type(value).__qualname__


def _describe(exc: BaseException) -> str:
    """One line: the exception's type and message."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# Running.


def run_serve(args: argparse.Namespace) -> int:
    """Run ``rapidws serve`` until a signal; return the exit status."""
    if args.factory and args.app is None:
        _error("--factory goes with MODULE:APP")
        return 2
    try:
        reference = _reference(args)
        options = server_options(args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except (OSError, ssl.SSLError) as exc:
        _error(f"cannot load the certificate: {exc}")
        return 1
    if args.root is not None and not os.path.isdir(args.root):
        _error(f"--root: not a directory: {args.root}")
        return 2
    if args.metrics is not None:
        if args.workers > 1:
            _error("--metrics reports one process: use it without --workers")
            return 2
        try:
            from .. import metrics  # noqa: F401, PLC0415 - an optional extra
        except ImportError as exc:
            _error(f"--metrics: {exc} (pip install 'rapidws[metrics]')")
            return 2
    # Asked for, or on a terminal: a line per connection; piped, errors only.
    verbose = args.log_format is not None or sys.stderr.isatty()
    rapidws_logging.configure(
        args.log_format or "text", level=logging.INFO if verbose else logging.WARNING
    )
    args.server_options = options
    context = options["ssl"]
    if reference is not None:
        app, label = reference_app(reference), f"{reference.mode} server listening"
    else:
        try:
            app = load_app(args.app, factory=args.factory)
        except AppLoadError as exc:
            _error(str(exc))
            return 2
        label = f"serving {args.app}"
    if args.root is not None:
        try:
            _add_static(app, args.root)
        except (TypeError, ValueError, RuntimeError) as exc:
            _error(f"--root: {exc}")
            return 2
    if args.broker is not None:
        try:
            from ..pubsub.redis import RedisBroker  # noqa: PLC0415 - an optional extra
        except ImportError as exc:
            _error(f"--broker: {exc}")
            return 2
        app.hub.broker = RedisBroker(args.broker)
    if args.workers == 1:
        return _serve_once(app, label, args, context)
    try:
        reserved, args.port = workers.reserve_port(args.host, args.port)
    except OSError as exc:
        _error(str(exc))
        return 1
    with reserved:
        _say(f"rapidws: {args.workers} workers (supervisor pid {os.getpid()})")
        if args.broker is None:
            _say(
                "rapidws: no --broker: each worker has its own topics (a message "
                "published in one reaches only that worker's subscribers)"
            )
        return workers.supervise(
            args.workers,
            lambda index: _serve_once(
                app, f"worker {index} (pid {os.getpid()}): {label}", args, context
            ),
            drain=args.drain,
        )


def _reference(args: argparse.Namespace) -> Reference | None:
    """Return the reference server that the flags ask for, or ``None`` for MODULE:APP.

    Raises:
        UsageError: for no server, or two, or a knob without its server.
    """
    modes = [name for name in ("echo", "broadcast", "exec") if getattr(args, name)]
    if args.app is not None and modes:
        raise UsageError(f"serve {args.app} or --{modes[0]}, not both")
    if len(modes) > 1:
        raise UsageError(f"--{modes[0]} or --{modes[1]}, not both")
    if args.app is None and not modes:
        raise UsageError("nothing to serve; pass MODULE:APP (like main:app) or --echo")
    knobs = [
        flag
        for flag, value in (
            ("--delay", args.delay), ("--jitter", args.jitter), ("--push", args.push),
            ("--close-after", args.close_after),
        )
        if value
    ]  # fmt: skip
    if knobs and modes not in (["echo"], ["broadcast"]):
        raise UsageError(f"{knobs[0]} goes with --echo or --broadcast")
    closing = args.close_code != 1000 or args.close_reason or args.close_abruptly
    if closing and not args.close_after:
        raise UsageError("--close-code, --close-reason and --close-abruptly go with --close-after")
    if args.app is not None:
        return None
    command: tuple[str, ...] = ()
    if args.exec is not None:
        command = tuple(shlex.split(args.exec))
        if not command or shutil.which(command[0]) is None:
            raise UsageError(f"--exec: no such command: {args.exec!r}")
    return Reference(
        mode=modes[0],
        command=command,
        framing=args.exec_framing,
        delay=args.delay,
        jitter=args.jitter,
        push=args.push or 0.0,
        close_after=args.close_after,
        close_code=args.close_code,
        close_reason=args.close_reason,
        close_abruptly=args.close_abruptly,
    )


def _serve_once(
    app: App, label: str, args: argparse.Namespace, context: ssl.SSLContext | None
) -> int:
    try:
        asyncio.run(_serve(app, label, args, context))
    except _HookFailed as exc:
        _error(f"{exc}: {_describe(exc.__cause__ or exc)}")
        return 1
    except OSError as exc:
        _error(str(exc))
        return 1
    return 0


def _add_static(app: App, directory: str) -> None:
    """Serve the files under ``directory`` at "/", after the app's own routes."""
    static = getattr(app, "static", None)
    if callable(static):
        static("/", directory)
    else:
        app.add_route("/{path:path}", StaticFiles(directory), methods=("GET",))


class _HookFailed(Exception):
    """A startup or shutdown hook raised (the exception is the ``__cause__``)."""


def _error(message: str) -> None:
    _say(f"rapidws serve: {message}")


def _say(line: str) -> None:
    # One write per line: the lines of workers sharing stderr never interleave.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def _serve(
    app: App, label: str, args: argparse.Namespace, context: ssl.SSLContext | None
) -> None:
    try:
        # App.serve() runs the startup hooks before listening, the shutdown
        # hooks after the server has closed.
        async with app.serve(
            args.host,
            args.port,
            max_size=args.max_size or None,
            **args.server_options,
            # Workers share the port, each with its own accept queue.
            reuse_port=True if args.workers > 1 else None,
        ) as server:
            if args.metrics is None:
                await _run_until_signal(app, server, label, args, context)
                return
            from .. import metrics  # noqa: PLC0415 - an optional extra

            # The hub, if the app made one: app.hub would make one.
            collector = metrics.Collector(server, hub=lambda: getattr(app, "_hub", None))
            async with metrics.exporter(collector).serve(args.host, args.metrics) as exporter:
                host = f"[{args.host}]" if ":" in args.host else args.host
                _say(f"rapidws: metrics on http://{host}:{exporter.port}/metrics")
                await _run_until_signal(app, server, label, args, context)
    except Exception as exc:
        if _raised_in(exc, App.startup):
            raise _HookFailed("the app failed to start") from exc
        if _raised_in(exc, App.shutdown):
            raise _HookFailed("a shutdown hook failed") from exc
        raise


async def _run_until_signal(
    app: App, server: Server, label: str, args: argparse.Namespace, context: ssl.SSLContext | None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and close the server."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # the first signal
    hurry = asyncio.Event()  # a second one, or the end of the drain
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if stop.is_set():
            hurry.set()
        stop.set()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        scheme = "wss" if context else "ws"
        host = f"[{args.host}]" if ":" in args.host else args.host
        # Only now: a supervisor may signal as soon as it reads this line.
        _say(f"rapidws: {label} on {scheme}://{host}:{server.port}")
        await stop.wait()
        code = SERVICE_RESTART if args.restart else GOING_AWAY
        drain = f"draining for {args.drain:g} s, then " if args.drain else ""
        _say(
            f"rapidws: {signal.Signals(signals[0]).name}: shutting down: "
            f"{drain}closing connections with {code}"
        )
        app.start_draining()
        if args.drain:
            timer = loop.call_later(args.drain, hurry.set)
            await hurry.wait()
            timer.cancel()
        # Later signals change nothing: each connection gets its close
        # timeout, and a handler that outlives it is cancelled.
        server.close(code, "service restart" if args.restart else "server shutting down")
        await server.wait_closed()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    """Whether ``exc`` went through a call of ``function`` (its traceback has a frame of it)."""
    code = getattr(function, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False
