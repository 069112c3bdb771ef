"""A broadcast server in the style of Node's ``ws``, written in rapidws idioms.

The Node original (the ``ws`` README's "broadcast to all connected clients")::

    const wss = new WebSocketServer({ port: 8080 });
    wss.on('connection', function connection(ws) {
      ws.on('error', console.error);
      ws.on('message', function message(data, isBinary) {
        wss.clients.forEach(function each(client) {
          if (client.readyState === WebSocket.OPEN) {
            client.send(data, { binary: isBinary });
          }
        });
      });
    });

Run ``python examples/node_ws_style.py --port 8080`` (``--coroutine`` for the
second style), then ``rapidws connect ws://127.0.0.1:8080`` in a few shells.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import rapidws
from rapidws import ServerConnection

# Node: wss.clients, the set of connected clients; here we keep our own.
clients: set[ServerConnection] = set()


def broadcast(message: str | bytes) -> None:
    """Send ``message`` to every open client, as the forEach above does."""
    for client in clients:
        if client.state is rapidws.State.OPEN:  # client.readyState === WebSocket.OPEN
            # client.send(data, { binary: isBinary }): str goes as text, bytes as
            # binary. send_nowait() queues the frame without awaiting the drain.
            client.send_nowait(message)


class Broadcast(rapidws.Callbacks):
    """Style 1, the fast path: callbacks run as events arrive, no task per client.

    This is the closest to Node's event emitters: ``on_open`` is
    ``wss.on('connection')`` and ``on_message`` is ``ws.on('message')``.
    """

    def on_open(self, connection: ServerConnection) -> None:
        """Handle ``wss.on('connection', ...)``."""
        clients.add(connection)

    def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
        """Handle ``ws.on('message', ...)``."""
        broadcast(message)

    def on_close(self, connection: ServerConnection, code: int, reason: str) -> None:
        """Handle ``ws.on('close', ...)``: Node drops the client from wss.clients itself."""
        clients.discard(connection)


async def broadcast_handler(ws: ServerConnection) -> None:
    """Style 2, a coroutine per connection: the loop body is ``ws.on('message')``."""
    clients.add(ws)
    try:
        async for message in ws:  # ends when the client closes
            broadcast(message)
    finally:  # ws.on('close')
        clients.discard(ws)
    # ws.on('error', console.error): an exception here closes this connection with
    # 1011 and is logged on the "rapidws.server" logger; other clients go on.


async def main() -> None:
    """Serve until interrupted: ``new WebSocketServer({ port })``."""
    parser = argparse.ArgumentParser(description="A Node ws-style broadcast server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--coroutine", action="store_true", help="serve with the coroutine")
    args = parser.parse_args()
    handler = broadcast_handler if args.coroutine else Broadcast()
    async with rapidws.serve(handler, args.host, args.port) as server:
        print(f"listening on ws://{args.host}:{server.port}", file=sys.stderr)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
