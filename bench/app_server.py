"""The rapidws App that bench/app_bench.py measures against the bare engine (bench/server.py).

    python bench/app_server.py --port P --routes N --loop uvloop|asyncio

An ``App`` with ``N`` WebSocket routes (at least 3) and one interceptor
(``Host`` must be there: the cheap header check of a real app), plus one plain
HTTP route:

- ``/ws/r{i}/{room}`` for the first N - 2 routes, every fifth one static
  (``/ws/s{i}``) instead: fillers, registered first, echoing like the next one;
- ``/ws/echo/{room}``: the Callbacks echo of bench/server.py (the same
  class), registered second to last (the router's trie keeps the match as
  cheap as with one route: this checks it);
- ``/ws/endpoint/{room}``: an ``Endpoint`` class whose ``on_message`` does
  ``await ws.send(message)``, registered last;
- ``GET /healthz``: "ok" and a newline, as text/plain.

Compression off, messages up to 64 MiB, ``max_queue=64``: as bench/server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

from server import MAX_SIZE, Echo

import rapidws
import rapidws.speedups

ECHO_TEMPLATE = "/ws/echo/{room}"
ENDPOINT_TEMPLATE = "/ws/endpoint/{room}"


class EndpointEcho(rapidws.Endpoint):
    """The endpoint-class API: one instance per connection, a method per event."""

    async def on_message(self, ws: rapidws.ServerConnection, message: str | bytes) -> None:
        """Echo ``message`` with its type."""
        await ws.send(message)


def require_host(ws: rapidws.ServerConnection, request: rapidws.Request) -> rapidws.Response | None:
    """Refuse a handshake without ``Host``: an interceptor as cheap as a real one gets."""
    if "Host" not in request.headers:
        return rapidws.Response(400, "Bad Request: no Host\n")
    return None


def health(request: rapidws.Request) -> str:
    """Answer the health check."""
    return "ok\n"


def build(routes: int) -> rapidws.App:
    """Return the App with ``routes`` WebSocket routes, the measured ones last."""
    if routes < 3:
        raise ValueError("at least 3 routes: a filler, the echo and the endpoint")
    app = rapidws.App(interceptors=[require_host])
    echo = Echo()
    for i in range(routes - 2):
        app.add_websocket(f"/ws/s{i}" if i % 5 == 4 else f"/ws/r{i}/{{room}}", echo)
    app.add_websocket(ECHO_TEMPLATE, echo)
    app.add_websocket(ENDPOINT_TEMPLATE, EndpointEcho)
    app.add_route("/healthz", health)
    return app


async def main(port: int, routes: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = build(routes)
    async with app.serve("127.0.0.1", port, compression=None, max_size=MAX_SIZE, max_queue=64):
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
        print(
            f"ready pid={os.getpid()} speedups={rapidws.speedups.IMPLEMENTATION} routes={routes}",
            flush=True,
        )
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def run() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--routes", type=int, default=50, help="WebSocket routes (50)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        uvloop.run(main(args.port, args.routes))
    else:
        asyncio.run(main(args.port, args.routes))


if __name__ == "__main__":
    run()
