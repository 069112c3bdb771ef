"""The load of bench/redis_bench.py: WebSocket subscribers on several server processes, a publisher.

    python bench/redis_load.py peak --protocol P --ports A,B [--server-pids a,b] [--redis-pid R]
                               [--subscribers N] [--window W] [--warmup S] [--duration S]
    python bench/redis_load.py rate ... --rate R
    python bench/redis_load.py interest ... --redis-port PORT --rate R

One process, uvloop, raw ``asyncio.Protocol`` connections (bench/hub_load.py's
client handshake): no client library stands between the servers and the
count. ``--protocol`` is what the servers speak: ``rapidws``
(bench/redis_node.py), ``channels`` (bench/peers/channels_redis_server.py,
the same paths with a trailing slash) or ``socketio``
(bench/peers/socketio_redis_server.py: Engine.IO 4 packets over the
WebSocket). Its last stdout line is ``result {json}``.

Every published message is a 64-byte text stamped with its send time
(``time.perf_counter()``, the same clock in every process) and a sequence
number, so every server frame of a run has the same length: subscribers
count deliveries by bytes, and read the stamp of the last frame of each read
(a sample of the publish-to-receive latency), on every ``N/16``-th
subscriber. The publisher writes its frames with a zero masking key (RFC
6455 section 5.3 lets the client choose; the servers unmask as usual).

- ``peak``: subscribers split evenly between the ports (in order), the
  publisher on the first; it keeps ``--window`` messages in flight, counted
  by a subscriber on the last port (so the window spans Redis). Delivered
  messages per second over ``--duration`` after ``--warmup``, with the CPU
  time of the servers (``--server-pids``), of Redis (``--redis-pid``) and of
  this client.
- ``rate``: the same, the publisher sending ``--rate`` messages per second
  (a 1 ms timer); adds p50/p99/max of the latency over the measured seconds.
- ``interest``: every subscriber on the first port, the publisher on the
  second, at ``--rate``, and one client of another topic on every port but
  the first (a node of a real fleet has clients); for each server process,
  its CPU time over the measured seconds, and the bytes it received from
  Redis (the ``bytes_received`` of its TCP connections to ``--redis-port``,
  from ``ss -tinp``) from their start until every message published since
  has arrived.

In every mode, once the publisher stops, each subscriber has a few seconds
to receive everything published; what did not arrive is counted as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from hub_load import Client, close_all, masked, open_all
from run import process_cpu

PAYLOAD_SIZE = 64
STAMP = b"t="
LATENCY_SAMPLERS = 16
DRAIN_SECONDS = 5.0


def payload(sequence: int) -> bytes:
    """Return a message stamped with the time now and ``sequence``, of PAYLOAD_SIZE bytes."""
    text = f"t={time.perf_counter():017.6f} n={sequence:010d} "
    return text.ljust(PAYLOAD_SIZE, ".").encode()


@dataclass(frozen=True)
class Speech:
    """What differs between the servers: paths, the joining dialogue, the message wrapping."""

    name: str
    #: How a publish is wrapped in the client's text frame, and in the server's.
    publish_prefix: bytes = b""
    deliver_prefix: bytes = b""
    suffix: bytes = b""
    slash: str = ""

    def path(self, kind: str, topic: str) -> str:
        """Return the path of a subscriber (``sub``) or publisher (``pub``) of ``topic``."""
        if self.name == "socketio":
            return "/socket.io/?EIO=4&transport=websocket"
        return f"/{kind}/{topic}{self.slash}"

    def steps(self, kind: str, topic: str) -> list[tuple[bytes, bytes | None]]:
        """Return the dialogue until the server says ``joined``: (expected prefix, reply)."""
        if self.name != "socketio":
            return [(b"joined", None)]
        # Engine.IO open, Socket.IO connect to "/", then our event (an Engine.IO
        # "4" message carrying a Socket.IO "2" event).
        event = "join" if kind == "sub" else "publisher"
        return [
            (b"0{", b"40"),
            (b"40", f'42["{event}","{topic}"]'.encode()),
            (b'42["joined"', None),
        ]

    def frame_length(self) -> int:
        """Return the length of every server frame that delivers a message."""
        return 2 + len(self.deliver_prefix) + PAYLOAD_SIZE + len(self.suffix)

    def publish_frames(self, first: int, count: int) -> bytes:
        """Return ``count`` client frames, numbered from ``first``, stamped now."""
        frames = []
        for sequence in range(first, first + count):
            data = self.publish_prefix + payload(sequence) + self.suffix
            # FIN + text, masked, a zero masking key: the payload goes as is.
            frames.append(b"\x81" + bytes([0x80 | len(data)]) + b"\0\0\0\0" + data)
        return b"".join(frames)


SPEECHES = {
    "rapidws": Speech("rapidws"),
    "channels": Speech("channels", slash="/"),
    "socketio": Speech(
        "socketio", publish_prefix=b'42["pub","', deliver_prefix=b'42["msg","', suffix=b'"]'
    ),
}


def frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split unmasked server frames off ``buffer``: their payloads, and what remains."""
    found = []
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                break
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        if len(buffer) < start + length:
            break
        found.append(buffer[start : start + length])
        buffer = buffer[start + length :]
    return found, buffer


class Peer(Client):
    """A connection that joins through its server's dialogue, then receives or publishes."""

    def __init__(self, opened: asyncio.Future[None], speech: Speech, kind: str, topic: str) -> None:
        """Start the dialogue of ``kind`` (``sub`` or ``pub``) for ``topic``."""
        super().__init__(opened)
        self.speech = speech
        self.steps = speech.steps(kind, topic)
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def on_data(self, data: bytes) -> None:
        """Follow the dialogue; then count."""
        if self.joined.done():
            self.count(data)
            return
        messages, self.buffer = frames(self.buffer + data)
        for index, message in enumerate(messages):
            expected, reply = self.steps.pop(0)
            if not message.startswith(expected):
                self.joined.set_exception(RuntimeError(f"expected {expected!r}: {message[:80]!r}"))
                return
            if reply is not None:
                assert self.transport is not None
                self.transport.write(masked(reply))
            if not self.steps:
                self.joined.set_result(None)
                rest = messages[index + 1 :]
                if rest or self.buffer:
                    raise RuntimeError("a message arrived before the publisher started")
                return

    def count(self, data: bytes) -> None:
        """Handle data once joined."""


class Subscriber(Peer):
    """Counts deliveries by bytes; samples the latency if asked to."""

    frame_length = 0
    probe: Publisher | None = None  # the peak publisher, on the probe subscriber only

    def __init__(self, opened: asyncio.Future[None], speech: Speech, kind: str, topic: str) -> None:
        """Start with nothing received."""
        super().__init__(opened, speech, kind, topic)
        self.received = 0
        self.sampling = False
        self.latencies: list[float] = []

    @property
    def delivered(self) -> int:
        """Return the messages received whole."""
        return self.received // self.frame_length

    def count(self, data: bytes) -> None:
        """Count the bytes; sample the latency of the last frame when the read ends with one."""
        self.received += len(data)
        if self.sampling and self.received % self.frame_length == 0:
            now = time.perf_counter()
            frame = data[-self.frame_length :]
            at = frame.find(STAMP)
            if at >= 0:
                self.latencies.append(now - float(frame[at + 2 : at + 19]))
        if self.probe is not None:
            self.probe.top_up(self.delivered)


class Publisher(Peer):
    """Sends stamped messages: within a window, or at a rate."""

    window = 64

    def __init__(self, opened: asyncio.Future[None], speech: Speech, kind: str, topic: str) -> None:
        """Start with nothing sent."""
        super().__init__(opened, speech, kind, topic)
        self.sent = 0
        self.stopped = False

    def send(self, count: int) -> None:
        """Send ``count`` messages now."""
        if count > 0 and not self.stopped and self.transport is not None:
            self.transport.write(self.speech.publish_frames(self.sent, count))
            self.sent += count

    def top_up(self, delivered: int) -> None:
        """Keep ``window`` messages in flight (``delivered`` by the probe); in batches."""
        allowed = self.window + delivered - self.sent
        if allowed >= max(1, self.window // 8):
            self.send(allowed)

    async def at_rate(self, rate: float) -> None:
        """Send ``rate`` messages per second until stopped."""
        start = time.perf_counter()
        while not self.stopped:
            self.send(int(rate * (time.perf_counter() - start)) - self.sent)
            await asyncio.sleep(0.001)


def redis_bytes(redis_port: int) -> dict[int, int]:
    """Return, per process, the bytes received on its TCP connections to Redis (``ss -tinp``)."""
    listing = subprocess.run(
        ["ss", "-tinpH", "dst", f"127.0.0.1:{redis_port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    received: dict[int, int] = {}
    pids: list[int] = []
    for line in listing.splitlines():
        if not line[:1].isspace():  # a socket's line; its details follow, indented
            pids = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
            continue
        found = re.search(r"bytes_received:(\d+)", line)
        for pid in pids:
            received[pid] = received.get(pid, 0) + (int(found.group(1)) if found else 0)
    return received


@dataclass
class Run:
    """The connections of one run and the processes whose CPU is accounted."""

    subscribers: list[Subscriber]
    publisher: Publisher
    server_pids: list[int]
    redis_pid: int
    #: Clients of other topics (interest: one on every node but the first); not counted.
    bystanders: list[Subscriber]

    def snapshot(self) -> dict[str, Any]:
        """Return the time, the deliveries, the publishes and every CPU time now."""
        return {
            "time": time.perf_counter(),
            "delivered": sum(s.delivered for s in self.subscribers),
            "sent": self.publisher.sent,
            "servers": [process_cpu(pid) for pid in self.server_pids],
            "redis": process_cpu(self.redis_pid) if self.redis_pid else 0.0,
            "client": time.process_time(),
        }

    async def drain(self) -> int:
        """Stop publishing; return how many deliveries are still missing a few seconds on."""
        publisher = self.publisher
        publisher.stopped = True
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            if all(s.delivered >= publisher.sent for s in self.subscribers):
                break
            await asyncio.sleep(0.02)
        return sum(max(publisher.sent - s.delivered, 0) for s in self.subscribers)


def rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return the rates and the CPU use between two snapshots."""
    elapsed = after["time"] - before["time"]
    delivered = after["delivered"] - before["delivered"]
    servers = [b - a for a, b in zip(before["servers"], after["servers"], strict=True)]
    return {
        "seconds": elapsed,
        "value": delivered / elapsed,
        "delivered": delivered,
        "publishes_per_s": (after["sent"] - before["sent"]) / elapsed,
        "server_cpu_pct": [round(100 * cpu / elapsed, 1) for cpu in servers],
        "server_cpu_us_per_msg": 1e6 * sum(servers) / max(delivered, 1),
        "redis_cpu_pct": 100 * (after["redis"] - before["redis"]) / elapsed,
        "client_cpu_pct": 100 * (after["client"] - before["client"]) / elapsed,
    }


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def connect(args: argparse.Namespace) -> Run:
    """Open the subscribers and the publisher; wait until each has joined."""
    speech = SPEECHES[args.protocol]
    ports = [int(port) for port in args.ports.split(",")]
    Subscriber.frame_length = speech.frame_length()
    Publisher.window = args.window
    if args.mode == "interest":
        placement = [args.subscribers] + [0] * (len(ports) - 1)
        publisher_port = ports[1]
    else:
        share, extra = divmod(args.subscribers, len(ports))
        placement = [share + (index < extra) for index in range(len(ports))]
        publisher_port = ports[0]
    subscribers: list[Subscriber] = []
    for port, count in zip(ports, placement, strict=True):
        path = speech.path("sub", args.topic)
        subscribers += await open_all(
            Subscriber, port, path, count, speech=speech, kind="sub", topic=args.topic
        )
    (publisher,) = await open_all(
        Publisher, publisher_port, speech.path("pub", args.topic), 1, speech=speech, kind="pub",
        topic=args.topic,
    )  # fmt: skip
    bystanders: list[Subscriber] = []
    if args.mode == "interest":
        # Every other node has a client of its own, in another topic, as in a
        # real fleet (python-socketio starts its Redis listener with a node's
        # first client).
        elsewhere = args.topic + "-elsewhere"
        for port in ports[1:]:
            bystanders += await open_all(
                Subscriber, port, speech.path("sub", elsewhere), 1, speech=speech, kind="sub",
                topic=elsewhere,
            )  # fmt: skip
    everyone: list[Peer] = [*subscribers, *bystanders, publisher]
    await asyncio.wait_for(asyncio.gather(*(peer.joined for peer in everyone)), 60)
    step = max(1, len(subscribers) // LATENCY_SAMPLERS)
    for subscriber in subscribers[::step]:
        subscriber.sampling = True
    pids = [int(pid) for pid in args.server_pids.split(",")] if args.server_pids else []
    return Run(subscribers, publisher, pids, args.redis_pid, bystanders)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the mode; return its figures."""
    run = await connect(args)
    publisher = run.publisher
    sending = None
    if args.mode == "peak":
        run.subscribers[-1].probe = publisher
        publisher.send(publisher.window)
    else:
        sending = asyncio.get_running_loop().create_task(publisher.at_rate(args.rate))
    await asyncio.sleep(args.warmup)
    for subscriber in run.subscribers:
        subscriber.latencies.clear()
    received_before = redis_bytes(args.redis_port) if args.mode == "interest" else {}
    before = run.snapshot()
    await asyncio.sleep(args.duration)
    after = run.snapshot()
    latencies = [value for s in run.subscribers for value in s.latencies]
    for subscriber in run.subscribers:
        subscriber.sampling = False
    lost = await run.drain()
    # Once every message arrived: the bytes of each one sent since ``before``.
    received_after = redis_bytes(args.redis_port) if args.mode == "interest" else {}
    if sending is not None:
        await sending
    result = rates(before, after)
    result.update(
        subscribers=len(run.subscribers), published=publisher.sent, lost=lost, mode=args.mode
    )
    if args.mode == "rate":
        result.update(
            rate=args.rate,
            samples=len(latencies),
            p50_ms=1e3 * percentile(latencies, 0.50) if latencies else None,
            p99_ms=1e3 * percentile(latencies, 0.99) if latencies else None,
            max_ms=1e3 * max(latencies) if latencies else None,
        )
    if args.mode == "interest":
        result["published_measured"] = publisher.sent - before["sent"]
        result["redis_bytes"] = [
            received_after.get(pid, 0) - received_before.get(pid, 0) for pid in run.server_pids
        ]
        result["server_cpu_s"] = [
            b - a for a, b in zip(before["servers"], after["servers"], strict=True)
        ]
    if any(bystander.received for bystander in run.bystanders):
        raise RuntimeError("a client of another topic received the topic's messages")
    await close_all([*run.subscribers, *run.bystanders, publisher])
    return result


def main() -> None:
    """Parse the command line, run the mode, print its result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["peak", "rate", "interest"])
    parser.add_argument("--protocol", choices=sorted(SPEECHES), default="rapidws")
    parser.add_argument("--ports", required=True, help="comma-separated server ports")
    parser.add_argument("--server-pids", default="", help="comma-separated, in --ports order")
    parser.add_argument("--redis-pid", type=int, default=0)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 - a bench dependency, installed by redis_bench.py

    result = uvloop.run(measure(args))
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
