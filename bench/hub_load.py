"""The load clients of bench/hub_bench.py: a chat room, a 10,000-subscriber fan-out, memory.

    python bench/hub_load.py chat --port P --server-pid PID [--clients 16] [--window 16]
                                  [--warmup S] [--duration S]
    python bench/hub_load.py fanout --port P [--connections N] [--publishes N] [--deflate]
    python bench/hub_load.py memory --port P [--connections N]

One process, uvloop, raw ``asyncio.Protocol`` connections with a minimal
client handshake: fast enough that the server, not this client, is the limit
(each mode reports its own CPU use so that this can be checked). Its last
stdout line is ``result {json}``.

- ``chat``: ``--clients`` connections in one room. Every server message is the
  same 16-byte text, so each connection counts deliveries by bytes (18 per
  frame) and checks the stream against the expected frames with one
  comparison per read. Each client keeps ``--window`` of its own messages in
  flight: it may have sent ``window + delivered / clients`` messages (every
  message reaches every client, the sender included). It writes the same
  masked frame each time (a fixed masking key: the servers cannot tell, and a
  fresh one per frame would cost this client, not the servers). Reports
  deliveries per second over ``--duration`` after ``--warmup``, and the CPU
  use of the server (``/proc/PID/stat``) and of this client.
- ``fanout``: ``--connections`` to ``/sub`` (offering permessage-deflate with
  ``--deflate``), one to ``/control``; ``--publishes`` times, sends ``go`` and
  measures until the last subscriber has the whole message (each one's bytes
  are compared with the first one's; the first is decoded, inflated if
  compressed, and compared with the message), then reads the server's report
  of the CPU and wall time the publish took.
- ``memory``: ``--connections`` to ``/sub``, then ``measure`` on ``/control``;
  reports the server's answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import time
import zlib
from typing import Any, cast

from hub_server import MESSAGE
from run import process_cpu

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3's example key and answer
OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
CHAT_PAYLOAD = b"hello, fan-out!!"
CHAT_FRAME = b"\x81" + bytes([len(CHAT_PAYLOAD)]) + CHAT_PAYLOAD
HANDSHAKES_AT_ONCE = 200


def masked(payload: bytes, opcode: int = 1) -> bytes:
    """Return a client frame (FIN, ``opcode``) of a short payload, masked (RFC 6455 section 5.3)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


class Client(asyncio.Protocol):
    """A WebSocket client connection: the handshake, then ``on_data()`` for every read."""

    def __init__(self, opened: asyncio.Future[None], deflate: bool = False) -> None:
        """Resolve ``opened`` once the server accepted the upgrade."""
        self.opened = opened
        self.deflate = deflate
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        # uvloop's transports are no asyncio.Transport subclass: no isinstance() check.
        self.transport = cast(asyncio.Transport, transport)

    def request(self, host: str, path: str) -> None:
        """Send the handshake request for ``path``."""
        assert self.transport is not None
        self.transport.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n" + (OFFER if self.deflate else b"") + b"\r\n"
        )

    def data_received(self, data: bytes) -> None:
        """Finish the handshake, then pass the data on."""
        if self.opened.done():
            if not self.closing:  # else the close handshake: not counted
                self.on_data(data)
            return
        self.head += data
        head, found, rest = self.head.partition(b"\r\n\r\n")
        if not found:
            return
        if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
            self.opened.set_exception(RuntimeError(f"handshake refused: {head[:200]!r}"))
            return
        if self.deflate and b"permessage-deflate" not in head:
            self.opened.set_exception(RuntimeError("permessage-deflate was not accepted"))
            return
        self.opened.set_result(None)
        if rest:
            self.on_data(rest)

    def on_data(self, data: bytes) -> None:
        """Handle data after the handshake."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the handshake if it was not over."""
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        """Send a close frame (1000): the server answers and closes the TCP connection."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked(struct.pack("!H", 1000), opcode=8))


async def close_all(clients: list[Client]) -> None:
    """Close every connection cleanly, as the servers expect; abort those that hang."""
    for client in clients:
        client.close()
    await asyncio.wait([client.lost for client in clients], timeout=5)
    for client in clients:
        if client.transport is not None and not client.lost.done():
            client.transport.abort()


async def open_all(factory: Any, port: int, path: str, count: int, **options: Any) -> list[Any]:
    """Open ``count`` connections of class ``factory``, a few hundred handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def one() -> Any:
        async with gate:
            opened = loop.create_future()
            _, client = await loop.create_connection(
                lambda: factory(opened, **options), "127.0.0.1", port
            )
            client.request(f"127.0.0.1:{port}", path)
            await asyncio.wait_for(opened, 30)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


# ---- chat ----


class ChatClient(Client):
    """One member of the room: counts deliveries by bytes, keeps its window of messages."""

    pattern = CHAT_FRAME * 20_000  # longer than any read
    frame = b""  # this client's masked message, set in chat()
    clients = 16
    window = 16

    def __init__(self, opened: asyncio.Future[None]) -> None:
        """Start with nothing received or sent."""
        super().__init__(opened)
        self.received = 0  # bytes
        self.sent = 0
        self.errors = 0

    def on_data(self, data: bytes) -> None:
        """Count, check, and send as many messages as the window allows."""
        offset = self.received % len(CHAT_FRAME)
        if not self.errors and data != self.pattern[offset : offset + len(data)]:
            self.errors += 1  # not the expected frames: stop checking, the count is suspect
        self.received += len(data)
        self.top_up()

    def top_up(self) -> None:
        """Send what the window allows."""
        allowed = self.window + self.received // len(CHAT_FRAME) // self.clients - self.sent
        if allowed > 0 and self.transport is not None and not self.closing:
            self.transport.write(self.frame * allowed)
            self.sent += allowed


def snapshot(clients: list[ChatClient], server_pid: int) -> tuple[float, int, float, float]:
    """Return the time, the messages delivered, the server's and this client's CPU time."""
    delivered = sum(c.received for c in clients) // len(CHAT_FRAME)
    server = process_cpu(server_pid) if server_pid else 0.0  # 0: not accounted
    return time.monotonic(), delivered, server, time.process_time()


async def chat(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chat room; return deliveries per second and CPU use."""
    ChatClient.frame = masked(CHAT_PAYLOAD)
    ChatClient.clients, ChatClient.window = args.clients, args.window
    clients = await open_all(ChatClient, args.port, "/chat", args.clients)
    await asyncio.sleep(args.settle)  # let every handler join the room
    for client in clients:
        client.top_up()
    await asyncio.sleep(args.warmup)
    t0, d0, s0, c0 = snapshot(clients, args.server_pid)
    await asyncio.sleep(args.duration)
    t1, d1, s1, c1 = snapshot(clients, args.server_pid)
    await close_all(clients)
    elapsed = t1 - t0
    return {
        "value": (d1 - d0) / elapsed,
        "delivered": d1 - d0,
        "seconds": elapsed,
        "errors": sum(c.errors for c in clients),
        "server_cpu_pct": 100 * (s1 - s0) / elapsed,
        "client_cpu_pct": 100 * (c1 - c0) / elapsed,
        "cpu_us_per_op": 1e6 * (s1 - s0) / max(d1 - d0, 1),
        "sent": sum(c.sent for c in clients),
    }


# ---- fan-out ----


class Subscriber(Client):
    """Receives one message per publish; records when the whole frame is in."""

    def __init__(self, opened: asyncio.Future[None], deflate: bool = False) -> None:
        """Start with no message."""
        super().__init__(opened, deflate)
        self.buffer = b""
        self.round: Round | None = None

    def on_data(self, data: bytes) -> None:
        """Collect the frame; tell the round when it is whole."""
        self.buffer += data
        buffer = self.buffer
        if len(buffer) < 4:
            return
        length = buffer[1] & 0x7F
        if length == 126:
            size = 4 + struct.unpack_from("!H", buffer, 2)[0]
        elif length == 127:
            size = 10 + struct.unpack_from("!Q", buffer, 2)[0] if len(buffer) >= 10 else 1 << 62
        else:
            size = 2 + length
        if len(buffer) >= size and self.round is not None:
            self.round.arrived(buffer[:size])
            self.buffer = buffer[size:]


class Round:
    """One publish: when the last subscriber had it, and whether the bytes were right."""

    def __init__(self, count: int, expected: bytes | None) -> None:
        """Wait for ``count`` frames, each equal to ``expected`` (or to the first one)."""
        self.count = count
        self.expected = expected
        self.wrong = 0
        self.done = asyncio.get_running_loop().create_future()
        self.last = 0.0

    def arrived(self, frame: bytes) -> None:
        """Count one subscriber's frame."""
        if self.expected is None:
            self.expected = frame
        elif frame != self.expected:
            self.wrong += 1
        self.count -= 1
        if self.count == 0:
            self.last = time.perf_counter()
            self.done.set_result(None)


def decode(frame: bytes) -> str:
    """Return the text of a server frame, inflated when RSV1 says it is compressed."""
    length = frame[1] & 0x7F
    start = {126: 4, 127: 10}.get(length, 2)
    payload = frame[start:]
    if frame[0] & 0x40:  # RSV1: permessage-deflate (RFC 7692 section 7.2.2)
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return payload.decode()


class Control(Client):
    """The connection that triggers a publish and reads the server's report."""

    def __init__(self, opened: asyncio.Future[None]) -> None:
        """Start with no report."""
        super().__init__(opened)
        self.buffer = b""
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_data(self, data: bytes) -> None:
        """Queue each report (a short unmasked text frame)."""
        self.buffer += data
        while len(self.buffer) >= 4:
            length = self.buffer[1] & 0x7F
            start = 4 if length == 126 else 2
            if length == 126:
                length = struct.unpack_from("!H", self.buffer, 2)[0]
            if len(self.buffer) < start + length:
                return
            self.reports.put_nowait(json.loads(self.buffer[start : start + length]))
            self.buffer = self.buffer[start + length :]

    def send(self, text: str) -> None:
        """Send a command."""
        assert self.transport is not None
        self.transport.write(masked(text.encode()))


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    """Publish ``--publishes`` times to ``--connections``; return each publish's figures."""
    opening = time.monotonic()
    subscribers = await open_all(
        Subscriber, args.port, "/sub", args.connections, deflate=args.deflate
    )
    (control,) = await open_all(Control, args.port, "/control", 1)
    opened_s = time.monotonic() - opening
    await asyncio.sleep(args.settle)  # every server handler has run
    expected: bytes | None = None
    publishes, wrong = [], 0
    for _ in range(args.publishes):
        current = Round(len(subscribers), expected)
        for subscriber in subscribers:
            subscriber.round = current
        cpu = time.process_time()
        start = time.perf_counter()
        control.send("go")
        await asyncio.wait_for(current.done, 60)
        report = await asyncio.wait_for(control.reports.get(), 60)
        client_cpu = time.process_time() - cpu
        if expected is None:
            expected = current.expected
            assert expected is not None
            if decode(expected) != MESSAGE:
                raise RuntimeError(f"unexpected message: {expected[:40]!r}")
        wrong += current.wrong
        publishes.append(
            {
                "last_s": current.last - start,
                "server_cpu_s": report["cpu"],
                "server_wall_s": report["wall"],
                "sent": report["sent"],
                "client_cpu_s": client_cpu,
            }
        )
        await asyncio.sleep(0.05)
    await close_all([*subscribers, control])
    assert expected is not None
    return {
        "connections": len(subscribers),
        "open_s": opened_s,
        "frame_bytes": len(expected),
        "compressed": bool(expected[0] & 0x40),
        "errors": wrong,
        "publishes": publishes,
    }


async def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Open ``--connections``, ask the server to subscribe them; return its report."""
    subscribers = await open_all(Subscriber, args.port, "/sub", args.connections)
    (control,) = await open_all(Control, args.port, "/control", 1)
    await asyncio.sleep(args.settle)
    control.send("measure")
    report: dict[str, Any] = await asyncio.wait_for(control.reports.get(), 120)
    await close_all([*subscribers, control])
    return report


def main() -> None:
    """Parse the command line, run the mode, print its result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["chat", "fanout", "memory"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds for the server's handlers to subscribe"
    )
    args = parser.parse_args()
    run = {"chat": chat, "fanout": fanout, "memory": memory}[args.mode]
    import uvloop  # noqa: PLC0415 - a bench dependency, installed by hub_bench.py

    result = uvloop.run(run(args))
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
