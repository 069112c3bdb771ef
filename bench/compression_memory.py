"""Server memory per connection with compression off, default and lean, beside websockets.

    python bench/compression_memory.py [--connections 500]

Each server runs in its own process. The same client (rapidws, with the
browsers' offer ``permessage-deflate; client_max_window_bits``) opens N
connections, sends one 2 KiB JSON-like text message on each and reads the
echo, so that both directions have compressed once; then the connections stay
open and idle. The figure is the growth of the server's resident memory,
divided by N. Needs websockets (pip install websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from run import rss_kib  # bench/run.py, beside this script

import rapidws

SERVERS = {
    "rapidws, compression off": "rapidws:off",
    "rapidws, compression default": "rapidws:default",
    "rapidws, compression lean": "rapidws:lean",
    "websockets, compression off": "websockets:off",
    "websockets, compression default": "websockets:default",
}

MESSAGE = json.dumps(
    [
        {"id": i, "user": f"user{i % 7}", "text": "hello there, how are you today?"}
        for i in range(30)
    ]
)


def serve(kind: str, port: int) -> None:
    """Run one server until killed (in the child process)."""
    library, setting = kind.split(":")

    async def echo(ws: object) -> None:
        async for message in ws:  # type: ignore[attr-defined]
            await ws.send(message)  # type: ignore[attr-defined]

    async def main() -> None:
        if library == "rapidws":
            compression: object = {
                "off": None,
                "default": "deflate",
                "lean": rapidws.ServerPerMessageDeflate(
                    server_no_context_takeover=True, client_no_context_takeover=True
                ),
            }[setting]
            server = rapidws.serve(echo, "127.0.0.1", port, compression=compression)  # type: ignore[arg-type]
        else:
            import websockets.asyncio.server  # noqa: PLC0415 - only in the child

            server = websockets.asyncio.server.serve(
                echo, "127.0.0.1", port, compression=None if setting == "off" else "deflate"
            )
        async with server:
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


async def load(port: int, count: int) -> list[rapidws.ClientConnection]:
    """Open ``count`` connections and echo one message on each."""
    connections = []
    for _ in range(count):
        ws = await rapidws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
        await ws.send(MESSAGE)
        assert await ws.recv() == MESSAGE
        connections.append(ws)
    return connections


def measure(kind: str, count: int, port: int) -> float:
    """Return the server's memory growth per connection, in KiB."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        before = rss_kib(child.pid)

        async def run() -> float:
            connections = await load(port, count)
            await asyncio.sleep(1.0)
            after = rss_kib(child.pid)
            for ws in connections:
                await ws.close()
            return (after - before) / count

        return asyncio.run(run())
    finally:
        child.kill()
        child.wait()


def main() -> None:
    """Measure every server and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--serve")
    parser.add_argument("--port", type=int, default=8780)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    print(f"server RSS growth per connection, {args.connections} connections, one 2 KiB echo each")
    results = {}
    for offset, (label, kind) in enumerate(SERVERS.items()):
        results[label] = measure(kind, args.connections, args.port + offset)
        print(f"  {label:34} {results[label]:6.1f} KiB", flush=True)
    print(f"(python {sys.version.split()[0]}, pid {os.getpid()})")


if __name__ == "__main__":
    main()
