"""The floor of a fixed-rate load generator in Python: the least work a message can cost.

    python bench/python_rate_floor.py -P PORT [-c 100] [-r 50] [-s 32] [-w 1] [-d 4] [-p SERVER_PID]

Not a load generator: a yardstick for issue 15's fixed-rate target (``rapidws
bench -w rate`` within 10% of bench/loadclient.c's latency percentiles). It
does what ``loadclient -m rate`` does, with as little Python per message as it
can: connection k of n sends at ``origin + (i + k / n) / rate``, in turn, on
the timerfd ``rapidws bench`` uses; each frame is its stamp (sequence number
and intended send time) and padding, framed and masked in one call of
rapidws's C ``encode_frame`` with a key from a pool of random ones; the
echoes are parsed in ``data_received`` and their latency, from the intended
send time, appended to a list. No HDR histogram, no checks
beyond the sequence, no reconnects, no live display.

It prints ``result {json}`` with the fields of loadclient's rate mode that
bench/cli_bench.py reads: ``rate``, ``count``, ``errors``, ``p50_us`` ...
``max_us`` and ``late_p99_us``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time

import uvloop

from rapidws.cli.loadgen import _TimerFd, _timerfd
from rapidws.speedups import encode_frame

STAMP = struct.Struct("<Qd")  # sequence number, intended send time
# The percentiles of the result line: its names, their shares.
_SHARES = (("50", 50), ("90", 90), ("99", 99), ("999", 99.9))
KEYS = [os.urandom(4) for _ in range(4096)]  # masking keys (RFC 6455 section 5.3), reused in turn


class Conn(asyncio.Protocol):
    """One connection: its handshake, then echoes matched to their intended times."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.open = False
        self.sent = 0
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        transport.write(  # type: ignore[attr-defined]
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        """Take the response, then echoes: a 2-byte header and the payload each."""
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(buffer[:40].decode()))
                return
            self.open = True
            self.opened.set_result(None)
            buffer = buffer[end + 4 :]
        run = self.run
        now = time.perf_counter()
        position, end = 0, len(buffer)
        size = run.size
        while end - position >= size + 2:
            seq, intended = STAMP.unpack_from(buffer, position + 2)
            if seq != self.received:
                run.errors += 1
            self.received = seq + 1
            if run.start <= now < run.stop:
                run.latencies.append(now - intended)
            position += size + 2
        self.buffer = buffer[position:]


class Run:
    """The schedule, the connections and what was measured."""

    def __init__(self, args: argparse.Namespace, timer: _TimerFd) -> None:
        self.timer = timer
        self.size = args.size
        self.rate = args.rate
        self.connections: list[Conn] = []
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.errors = 0
        self.start = self.stop = 0.0
        self.due = 0.0  # the next send's intended time
        self.turn = 0  # the connection that sends it
        self.keys = 0  # masking keys used
        self.padding = bytes(args.size - STAMP.size)

    def fire(self) -> None:
        """Send every message now due, in the connections' turn; wait for the next."""
        now = time.perf_counter()
        step = 1 / (self.rate * len(self.connections))
        connections = self.connections
        while self.due <= now:
            conn = connections[self.turn]
            intended = self.due
            payload = STAMP.pack(conn.sent, intended) + self.padding
            key = KEYS[self.keys % len(KEYS)]
            self.keys += 1
            conn.transport.write(encode_frame(0x82, payload, key))  # binary, masked
            conn.sent += 1
            if self.start <= intended < self.stop:
                self.lateness.append(now - intended)
            self.turn = (self.turn + 1) % len(connections)
            self.due = intended + step
            now = time.perf_counter()
        self.timer.arm(self.due)


def percentile(values: list[float], share: float) -> float:
    """Return the value at ``share`` (0-100) of the sorted ``values``, in microseconds."""
    if not values:
        return 0.0
    return 1e6 * values[min(len(values) - 1, int(len(values) * share / 100))]


async def main(args: argparse.Namespace) -> None:
    """Open the connections, send at the rate for warm-up plus duration, print the result."""
    loop = asyncio.get_running_loop()
    timer = _timerfd(time.perf_counter)
    if timer is None:
        raise SystemExit("a timerfd is needed (Linux)")
    run = Run(args, timer)
    for _ in range(args.connections):
        _, conn = await loop.create_connection(lambda: Conn(run), "127.0.0.1", args.port)
        await conn.opened
        run.connections.append(conn)
    cpu0 = os.times()
    origin = run.due = time.perf_counter() + 0.01
    run.start, run.stop = origin + args.warmup, origin + args.warmup + args.duration
    loop.add_reader(timer.fd, lambda: (timer.clear(), run.fire()))
    timer.arm(run.due)
    await asyncio.sleep(run.stop - time.perf_counter() + 0.05)
    loop.remove_reader(timer.fd)
    cpu = os.times()
    latencies = sorted(run.latencies)
    lateness = sorted(run.lateness)
    used = cpu.user + cpu.system - cpu0.user - cpu0.system
    result = {
        "mode": "rate",
        "connections": args.connections,
        "count": len(latencies),
        "rate": len(latencies) / args.duration,
        "errors": run.errors,
        **{f"p{name}_us": percentile(latencies, share) for name, share in _SHARES},
        "max_us": 1e6 * latencies[-1] if latencies else 0.0,
        "late_p99_us": percentile(lateness, 99),
        "client_cpu_pct": round(100 * used / (time.perf_counter() - origin), 1),
    }
    print("result " + json.dumps(result), flush=True)
    for conn in run.connections:
        conn.transport.abort()


def parse() -> argparse.Namespace:
    """Parse the command line (loadclient's letters)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-P", dest="port", type=int, required=True)
    parser.add_argument("-c", dest="connections", type=int, default=100)
    parser.add_argument("-r", dest="rate", type=float, default=50.0, help="msg/s per connection")
    parser.add_argument("-s", dest="size", type=int, default=32, help="16 to 125 bytes")
    parser.add_argument("-w", dest="warmup", type=float, default=1.0)
    parser.add_argument("-d", dest="duration", type=float, default=4.0)
    parser.add_argument("-p", dest="server_pid", type=int, help="ignored (loadclient's)")
    args = parser.parse_args()
    if not STAMP.size <= args.size <= 125:
        parser.error("-s must be 16 to 125")
    return args


if __name__ == "__main__":
    uvloop.run(main(parse()))
