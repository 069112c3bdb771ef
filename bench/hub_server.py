"""The rapidws servers that bench/hub_bench.py measures: rapidws.Hub fan-out and its baselines.

    python bench/hub_server.py --port P --loop uvloop|asyncio --mode MODE [--deflate]

Modes (compression off unless ``--deflate``; keepalive pings off, so that the
load clients only ever read the messages they count):

- ``chat-iterator``: every connection joins the room ``chat``; an iterator
  handler does ``await hub.publish("chat", message)`` for each message it
  receives. The sender is included, as in socketify's and uWebSockets'
  benchmark: each message reaches all 16 clients.
- ``chat-callbacks``: the same with ``rapidws.Callbacks``: ``on_message``
  creates a task for ``hub.publish()`` (the Hub has no synchronous publish).
- ``chat-inline``: ``on_message`` drives the ``hub.publish()`` coroutine by
  hand with ``send(None)``: with the in-process broker it never suspends, so
  it completes at once. A stand-in for the synchronous publish that Callbacks
  would need (not an API to copy: it relies on the broker not suspending).
- ``fanout-hub``: connections on ``/sub`` join the topic ``all``; a text
  message ``go`` on ``/control`` makes the server ``await hub.publish()`` a
  1 KiB text to them, then answer with the CPU and wall time that took, as
  JSON: ``{"cpu": s, "wall": s, "sent": n}``. ``--deflate`` negotiates
  permessage-deflate with ``server_no_context_takeover`` (RFC 7692 section
  7.1.1.1), which lets the Hub compress once for every connection.
- ``fanout-sendloop``: the same, publishing with ``await ws.send()`` per connection.
- ``fanout-floor``: the same, writing the frame, built beforehand, straight to
  each connection's transport: no WebSocket library at all, the floor of any
  asyncio server (compression off only).
- ``memory``: connections on ``/sub`` open and wait; ``measure`` on
  ``/control`` makes each of them subscribe to 10 topics (``t0`` to ``t9``)
  and answers ``{"subscriptions": n, "rss_before": b, "rss_after": b,
  "traced": b}``: the resident memory before and after (after
  ``gc.collect()``) and the bytes that tracemalloc saw allocated and still
  held by the subscribing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from peers._runner import serve_until_signalled

import rapidws
import rapidws.speedups
from rapidws.pubsub import Hub

ROOM = "chat"
TOPIC = "all"
MEMORY_TOPICS = 10
#: The published message of the fan-out cases: 1 KiB of JSON-like text.
MESSAGE = (
    '{"type":"update","items":['
    + ",".join(f'{{"id":{i},"name":"item {i}","price":{i * 7 % 1000}.25}}' for i in range(40))
)[:1022] + "]}"
assert len(MESSAGE) == 1024
#: The uncompressed frame of MESSAGE (RFC 6455 section 5.2: FIN, text, 16-bit length).
FLOOR_FRAME = b"\x81\x7e\x04\x00" + MESSAGE.encode()


def rss_bytes() -> int:
    """Return this process's resident memory, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def run_inline(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine that never suspends to its end, now.

    ``hub.publish()`` is one once the hub started, with the in-process broker.
    """
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("hub.publish() suspended: start the hub first")


class ChatCallbacks(rapidws.Callbacks):
    """A chat room with the callback API: publish each message to the room."""

    def __init__(self, hub: Hub, inline: bool) -> None:
        """Keep the hub; ``inline`` drives ``publish()`` by hand instead of in a task."""
        self.hub = hub
        self.inline = inline

    def on_open(self, connection: rapidws.ServerConnection) -> None:
        """Join the room."""
        self.hub.subscribe(connection, ROOM)

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        """Publish to the room, the sender included."""
        if self.inline:
            run_inline(self.hub.publish(ROOM, message))
        else:
            asyncio.get_running_loop().create_task(self.hub.publish(ROOM, message))


class Fanout(rapidws.Callbacks):
    """Subscribers on ``/sub``; commands on ``/control``."""

    def __init__(self, hub: Hub, mode: str) -> None:
        """Keep the hub and which command set ``mode`` answers."""
        self.hub = hub
        self.mode = mode
        self.subscribers: set[rapidws.ServerConnection] = set()

    def on_open(self, connection: rapidws.ServerConnection) -> None:
        """Count a subscriber in (the Hub only in the Hub mode)."""
        if connection.request is not None and connection.request.path == "/sub":
            self.subscribers.add(connection)
            if self.mode == "fanout-hub":
                self.hub.subscribe(connection, TOPIC)

    def on_close(self, connection: rapidws.ServerConnection, code: int, reason: str) -> None:
        """Forget a subscriber."""
        self.subscribers.discard(connection)

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        """Run the command ``message`` of a control connection."""
        command = self.publish if message == "go" else self.subscribe_all
        asyncio.get_running_loop().create_task(command(connection))

    async def publish(self, control: rapidws.ServerConnection) -> None:
        """Publish the message once to every subscriber; report CPU and wall time."""
        cpu, wall = time.process_time(), time.perf_counter()
        if self.mode == "fanout-hub":
            await self.hub.publish(TOPIC, MESSAGE)
        elif self.mode == "fanout-floor":
            for ws in list(self.subscribers):
                assert ws.transport is not None
                ws.transport.write(FLOOR_FRAME)
        else:
            for ws in list(self.subscribers):
                await ws.send(MESSAGE)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await control.send(json.dumps({"cpu": cpu, "wall": wall, "sent": len(self.subscribers)}))

    async def subscribe_all(self, control: rapidws.ServerConnection) -> None:
        """Subscribe every connection to the memory topics; report what that holds."""
        await self.hub.start()
        connections = list(self.subscribers)
        gc.collect()
        before = rss_bytes()
        tracemalloc.start()
        for ws in connections:
            for topic in range(MEMORY_TOPICS):
                self.hub.subscribe(ws, f"t{topic}")
        gc.collect()
        traced, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = rss_bytes()
        report = {
            "subscriptions": sum(len(self.hub.topics(ws)) for ws in connections),
            "rss_before": before,
            "rss_after": after,
            "traced": traced,
        }
        await control.send(json.dumps(report))


def handler_for(mode: str, hub: Hub) -> Callable[..., Any] | rapidws.Callbacks:
    """Return the connection handler of ``mode``."""
    if mode == "chat-iterator":

        async def chat(ws: rapidws.ServerConnection) -> None:
            await hub.subscribe(ws, ROOM)
            async for message in ws:
                await hub.publish(ROOM, message)

        return chat
    if mode in ("chat-callbacks", "chat-inline"):
        return ChatCallbacks(hub, inline=mode == "chat-inline")
    return Fanout(hub, mode)


MODES = (
    "chat-iterator",
    "chat-callbacks",
    "chat-inline",
    "fanout-hub",
    "fanout-sendloop",
    "fanout-floor",
    "memory",
)


async def main(port: int, mode: str, deflate: bool) -> None:
    """Serve until SIGINT or SIGTERM."""
    hub = Hub()
    await hub.start()
    compression = (
        rapidws.ServerPerMessageDeflate(server_no_context_takeover=True) if deflate else None
    )
    async with rapidws.serve(
        handler_for(mode, hub),
        "127.0.0.1",
        port,
        compression=compression,
        ping_interval=None,
        backlog=4096,
    ):
        await serve_until_signalled(f"speedups={rapidws.speedups.IMPLEMENTATION} mode={mode}")


def cli(
    main: Callable[[int, str, bool], Coroutine[Any, Any, None]],
    description: str,
    modes: Sequence[str],
) -> None:
    """Parse ``--port``, ``--loop``, ``--mode`` and ``--deflate``; run ``main`` on that loop."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--mode", choices=modes, required=True)
    parser.add_argument("--deflate", action="store_true", help="permessage-deflate, no takeover")
    args = parser.parse_args()
    serving = main(args.port, args.mode, args.deflate)
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        uvloop.run(serving)
    else:
        asyncio.run(serving)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0], MODES)
