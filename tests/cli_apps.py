"""Apps for the tests of ``rapidws serve module:app`` (tests/test_cli.py).

The server runs in a subprocess; the hooks report to the file named by the
``RAPIDWS_TEST_MARKER`` environment variable, when it is set.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import rapidws
from rapidws.app import App

MARKER = "RAPIDWS_TEST_MARKER"


def _mark(event: str) -> None:
    path = os.environ.get(MARKER)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(event + "\n")


def make_app(greeting: str = "hello") -> App:
    """An app with a WebSocket route, an HTTP route, a readiness route and hooks."""
    app = App()

    @app.websocket("/ws/{name}")
    async def chat(ws: rapidws.ServerConnection, name: str) -> None:
        async for message in ws:
            await ws.send(f"{greeting} {name}: {message!s}")

    @app.get("/hello")
    def hello(request: rapidws.Request) -> dict[str, str]:
        return {"greeting": greeting}

    @app.get("/ready", readiness=True)
    def ready(request: rapidws.Request) -> str:
        return "ready\n"

    @app.on_startup
    def started() -> None:
        _mark("startup")

    @app.on_shutdown
    async def stopped() -> None:
        _mark("shutdown")

    return app


app = make_app()

# A dotted attribute: tests.cli_apps:holder.app.
holder = SimpleNamespace(app=app)


def factory() -> App:
    """A factory for ``--factory``."""
    return make_app("bonjour")


def not_an_app_factory() -> int:
    """A factory that returns no App."""
    return 42


def failing_factory() -> App:
    """A factory that raises."""
    raise RuntimeError("no configuration")


not_an_app = 42

failing = App()


@failing.on_startup
async def _fail() -> None:
    raise RuntimeError("no database")


failing_shutdown = App()


@failing_shutdown.on_shutdown
def _fail_shutdown() -> None:
    raise RuntimeError("cannot flush")
