"""A Starlette endpoint using rapidws's ASGI extensions: ping, compression control, streaming.

    uvicorn starlette_extensions:app --app-dir examples --ws rapidws.asgi:UvicornProtocol

or ``python examples/starlette_extensions.py --port 8000``, then
``rapidws connect ws://127.0.0.1:8000/ws`` and type ``ping``, ``zip`` or any
text. A large message (up to 1 GiB, whatever uvicorn's ``--ws-max-size``)
is echoed as it arrives, chunk by chunk, never held whole. The endpoint looks
for each extension in ``scope["extensions"]``: on an ASGI server without them
it still works, without the extra.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from rapidws.asgi import UvicornProtocol

PING = "rapidws.websocket.ping"
COMPRESS = "rapidws.websocket.compress"
STREAM = "rapidws.websocket.stream"


async def endpoint(websocket: WebSocket) -> None:
    """``ping``: the round-trip time; ``zip``: a gzip file, sent as is; else an echo."""
    extensions = websocket.scope.get("extensions") or {}
    await websocket.receive()  # websocket.connect
    accept: dict[str, object] = {"type": "websocket.accept"}
    if STREAM in extensions:
        # Large messages in chunks: "rapidws.more" says whether more follow.
        accept.update({"rapidws.stream": True, "rapidws.max_stream_size": 1 << 30})
    await websocket.send(accept)
    chunked = False  # within a message that comes in chunks
    while True:
        # receive(), not receive_text(): pong events come this way too.
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if chunked or message.get("rapidws.more"):
            # Each chunk goes out as a fragment of the echo, at once; the
            # chunk that ends the message ends the echo.
            chunked = message["rapidws.more"]
            await websocket.send({**message, "type": "websocket.send"})
        elif "rapidws.pong" in message:
            rtt = message["rapidws.pong"]["rtt"]
            await websocket.send_text(f"rtt: {rtt * 1000:.3f} ms")
        elif message.get("text") == "ping":
            if PING in extensions:
                # A ping, not a message; a receive event with the pong follows.
                await websocket.send({"type": "websocket.send", "rapidws.ping": b""})
            else:
                await websocket.send_text("rtt: unknown (no ping extension)")
        elif message.get("text") == "zip":
            blob = gzip.compress(b"rapidws " * 1000)
            # Compressed already: deflating it again would cost CPU for nothing.
            send: dict[str, object] = {"type": "websocket.send", "bytes": blob}
            if COMPRESS in extensions:
                send["rapidws.compress"] = False
            await websocket.send(send)
        elif message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def main() -> None:
    """Serve the app with uvicorn on rapidws until interrupted."""
    parser = argparse.ArgumentParser(description="rapidws's ASGI extensions in Starlette.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Listening before uvicorn starts: the port is known (--port 0) and
    # printed, and clients that come early wait in the backlog.
    sock = socket.create_server((args.host, args.port))
    config = uvicorn.Config(app, ws=UvicornProtocol, log_level="warning")
    print(f"listening on ws://{args.host}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
