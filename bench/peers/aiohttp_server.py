"""The aiohttp peer: the same echo server as bench/server.py, as an aiohttp.web handler.

    python bench/peers/aiohttp_server.py --port P [--loop uvloop|asyncio]

Echoes every message with its type on any path; on ``/ack`` answers each
message with its length, as text. ``compress=False``, messages up to 64 MiB,
the access log off (a log line per handshake would measure logging).
"""

from __future__ import annotations

import aiohttp
from _runner import run, serve_until_signalled
from aiohttp import WSMsgType, web

MAX_SIZE = 64 * 1024 * 1024


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Upgrade, then echo, or answer lengths on ``/ack``."""
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SIZE)
    await ws.prepare(request)
    ack = request.path == "/ack"
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(str(len(message.data)) if ack else message.data)
        elif message.type == WSMsgType.BINARY:
            if ack:
                await ws.send_str(str(len(message.data)))
            else:
                await ws.send_bytes(message.data)
    return ws


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = web.Application(client_max_size=MAX_SIZE)
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    await serve_until_signalled(f"aiohttp={aiohttp.__version__}")
    await runner.cleanup()


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
