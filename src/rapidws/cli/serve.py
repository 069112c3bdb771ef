"""``rapidws serve``: run an App, or an echo server, from the shell.

``rapidws serve module:app`` imports ``module`` (the current directory first
on ``sys.path``, as uvicorn does), takes its ``app`` attribute (dotted paths
allowed: ``pkg.mod:holder.app``; with ``--factory``, a callable returning the
App) and serves it until SIGTERM or SIGINT. ``rapidws serve --echo`` serves an
App that echoes every message on any path.

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
import importlib
import os
import signal
import ssl
import sys
from collections.abc import Callable
from typing import Any

from ..app import App
from ..app.static import StaticFiles
from ..asyncio.server import Server, ServerConnection
from ..core.limits import MAX_MESSAGE_SIZE

__all__ = ["AppLoadError", "add_serve_command", "echo", "echo_app", "load_app"]

#: Close code on shutdown: 1001 "going away", or 1012 "service restart" with
#: ``--restart`` (RFC 6455 section 7.4.1 and the IANA registry).
GOING_AWAY = 1001
SERVICE_RESTART = 1012


def add_serve_command(commands: Any) -> None:
    """Add the ``serve`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "serve",
        help="run an App (module:app) or an echo server",
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
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="certificate chain (PEM), to serve wss://"
    )
    parser.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    parser.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    parser.add_argument(
        "--drain",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help=(
            "on SIGTERM or SIGINT, answer readiness checks and new handshakes with 503 for "
            "this long before closing connections, for load balancers to notice; a second "
            "signal cuts it short (default: 0)"
        ),
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="close connections with 1012 (service restart: clients may reconnect at once) "
        "instead of 1001 (going away)",
    )
    parser.set_defaults(run=run_serve)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


# The echo server.


async def echo(connection: ServerConnection) -> None:
    """Send every message back to its sender, text as text and binary as binary."""
    async for message in connection:
        await connection.send(message)


async def _echo_route(connection: ServerConnection, **path_params: object) -> None:
    await echo(connection)


def echo_app() -> App:
    """Return an App that echoes every message, on any path (``rapidws serve --echo``)."""
    app = App()
    # "/{path:path}" matches "/" too; the static route is only its fast path.
    app.add_websocket("/", _echo_route)
    app.add_websocket("/{path:path}", _echo_route)
    return app


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
    if args.app is None and not args.echo:
        _error("nothing to serve; pass MODULE:APP (like main:app) or --echo")
        return 2
    if args.app is not None and args.echo:
        _error(f"serve {args.app} or --echo, not both")
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        _error("--tls-cert and --tls-key go together")
        return 2
    if args.root is not None and not os.path.isdir(args.root):
        _error(f"--root: not a directory: {args.root}")
        return 2
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            _error(f"cannot load the certificate: {exc}")
            return 1
    if args.echo:
        app, label = echo_app(), "echo server listening"
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
    print(f"rapidws serve: {message}", file=sys.stderr)


async def _serve(
    app: App, label: str, args: argparse.Namespace, context: ssl.SSLContext | None
) -> None:
    try:
        # App.serve() runs the startup hooks before listening, the shutdown
        # hooks after the server has closed.
        async with app.serve(
            args.host,
            args.port,
            ssl=context,
            max_size=args.max_size or None,
            compression=None if args.no_compression else "deflate",
        ) as server:
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
        print(f"rapidws: {label} on {scheme}://{host}:{server.port}", file=sys.stderr)
        await stop.wait()
        code = SERVICE_RESTART if args.restart else GOING_AWAY
        drain = f"draining for {args.drain:g} s, then " if args.drain else ""
        print(
            f"rapidws: {signal.Signals(signals[0]).name}: shutting down: "
            f"{drain}closing connections with {code}",
            file=sys.stderr,
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
