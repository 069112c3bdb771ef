"""WebSockets over HTTP/2 (RFC 8441) against HTTP/1.1, on rapidws's server, over TLS, as ratios.

    python bench/http2_bench.py [--quick] [--rounds N] [--duration S] [--loop uvloop|asyncio]
                                [--json PATH]

Each measurement starts a fresh server (bench/run.py's ``Running``, pinned to
core 0): ``rapidws.serve()`` with TLS and bench/server.py's Callbacks echo,
with ``http2=True`` for the HTTP/2 side and without it for HTTP/1.1 (the
baseline). The load runs in this process, pinned to core 1, on the same loop:

- HTTP/1.1: ``rapidws.connect("wss://...")``, one TLS connection per WebSocket;
- HTTP/2: ``rapidws.connect("wss://...", http2=True)``, whose WebSockets are
  extended CONNECT streams of shared connections: one TLS connection for up
  to 100 WebSockets, the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``.

Cases (each side in turn, the order alternating by round; the best round kept):

- **open and close 1,000**: 1,000 WebSockets, 100 at a time, each closed
  with a closing handshake before the next 100 open. HTTP/2: one TLS handshake
  and 1,000 streams; HTTP/1.1: 1,000 TLS handshakes. Wall time, server CPU.
- **1,000 open at once**: 1,000 WebSockets (HTTP/2: 10 connections of 100
  streams), each echoing 16 B once, then idle: the server's RSS growth per
  WebSocket, 1 s after the last opened (after 20 warm-up sockets came and went).
- **echo 100 WebSockets, 16 B and 64 KiB**: one message in flight on each
  (HTTP/2: all 100 on one connection); messages/s and server CPU per message
  over the measured window, after a warm-up.

Every step is bounded in time (``STEP_TIMEOUT``) and every loop in count.
Prints a markdown table and saves it, with every raw number, as JSON under /tmp.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from run import (
    Running,
    Server,
    ensure_packages,
    machine,
    other_load,
    pinning,
    process_cpu,
    raise_nofile,
    rss_kib,
)

PACKAGES = {"uvloop": "uvloop", "h2": "h2", "trustme": "trustme"}
ensure_packages(PACKAGES)

import trustme  # noqa: E402 - installed just above when missing

import rapidws  # noqa: E402
from rapidws.asyncio.http2 import MAX_STREAMS  # noqa: E402

SOCKETS = 1000  # WebSockets opened in the open and memory cases
ECHO_SOCKETS = 100
BATCH = MAX_STREAMS  # WebSockets opening at once; streams per HTTP/2 connection
WARMUP_SOCKETS = 20
KIB = 1024
STEP_TIMEOUT = 120.0  # any one step (opening 1,000, a measured window) ends by then
MAX_SIZE = 64 * 1024 * 1024


# ---- the server (a child process) ----


def serve(port: int, cert: str, http2: bool, loop: str) -> None:
    """Serve bench/server.py's Callbacks echo over TLS until SIGTERM (in the child)."""
    import signal  # noqa: PLC0415 - only in the child

    from server import Echo  # noqa: PLC0415 - bench/server.py, beside this script

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert)
        async with rapidws.serve(
            Echo(), "127.0.0.1", port, ssl=context, http2=http2, compression=None,
            max_size=MAX_SIZE, max_queue=64,
        ):  # fmt: skip
            stop = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)
            print(f"ready pid={os.getpid()} http2={http2}", flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await stop

    run_on(loop, main())


def run_on(loop: str, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop or asyncio's own loop."""
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for this choice

        return uvloop.run(main)
    return asyncio.run(main)


# ---- the cases ----


@dataclass
class Side:
    """One side of a comparison: how to open a WebSocket, and how to close the connections."""

    name: str
    open: Callable[[], Awaitable[Any]]
    done: Callable[[], None]


def side_for(port: int, http2: bool, context: ssl.SSLContext) -> Side:
    """Return the HTTP/2 side (streams of shared connections) or HTTP/1.1's.

    Both open with ``rapidws.connect()``; with ``http2=True`` its WebSockets
    are streams of HTTP/2 connections that it shares, up to the server's
    ``MAX_STREAMS`` on each.
    """
    connections: list[rapidws.ClientConnection] = []

    async def open_websocket() -> rapidws.ClientConnection:
        ws = await rapidws.connect(
            f"wss://127.0.0.1:{port}/",
            ssl=context,
            http2=http2,
            compression=None,
            ping_interval=None,
            max_size=MAX_SIZE,
        )
        connections.append(ws)
        return ws

    def abort() -> None:
        # No closing handshakes: a connection dropped, or a stream reset (its
        # HTTP/2 connection ends with the measurement's event loop).
        for ws in connections:
            if ws.transport is not None:
                ws.transport.abort()

    return Side("HTTP/2" if http2 else "HTTP/1.1", open_websocket, abort)


async def bounded(aw: Awaitable[Any]) -> Any:
    """Await ``aw`` for at most ``STEP_TIMEOUT``."""
    return await asyncio.wait_for(aw, STEP_TIMEOUT)


async def open_close(side: Side, pid: int) -> dict[str, float]:
    """Open and close ``SOCKETS`` WebSockets, ``BATCH`` at a time."""
    cpu, start = process_cpu(pid), time.perf_counter()
    for _ in range(SOCKETS // BATCH):
        sockets = await bounded(asyncio.gather(*(side.open() for _ in range(BATCH))))
        await bounded(asyncio.gather(*(ws.close() for ws in sockets)))
    wall = time.perf_counter() - start
    side.done()
    return {"wall_s": wall, "server_cpu_s": process_cpu(pid) - cpu}


async def open_many(side: Side, warmup: Side, pid: int) -> dict[str, float]:
    """Keep ``SOCKETS`` WebSockets open at once, each after a 16 B echo: RSS per WebSocket."""
    sockets = [await bounded(warmup.open()) for _ in range(WARMUP_SOCKETS)]
    for ws in sockets:
        await bounded(ws.close())
    warmup.done()
    await asyncio.sleep(1.0)
    before, cpu, start = rss_kib(pid), process_cpu(pid), time.perf_counter()

    async def one() -> Any:
        ws = await side.open()
        await ws.send(b"x" * 16)
        assert len(await ws.recv()) == 16
        return ws

    sockets = []
    for _ in range(SOCKETS // BATCH):
        sockets += await bounded(asyncio.gather(*(one() for _ in range(BATCH))))
    wall, used = time.perf_counter() - start, process_cpu(pid) - cpu
    await asyncio.sleep(1.0)
    grown = rss_kib(pid) - before
    side.done()
    return {"wall_s": wall, "server_cpu_s": used, "kib_per_socket": grown / SOCKETS}


async def echo(side: Side, pid: int, size: int, warmup: float, duration: float) -> dict[str, float]:
    """Echo ``size`` bytes on ``ECHO_SOCKETS`` WebSockets, one message in flight on each."""
    sockets = []
    for _ in range(ECHO_SOCKETS // BATCH):
        sockets += await bounded(asyncio.gather(*(side.open() for _ in range(BATCH))))
    payload = os.urandom(size)
    count = [0]
    stop = [False]

    async def talk(ws: Any) -> None:
        while not stop[0]:
            await ws.send(payload)
            if len(await ws.recv()) != size:
                raise AssertionError("short echo")
            count[0] += 1

    tasks = [asyncio.ensure_future(talk(ws)) for ws in sockets]
    try:
        await asyncio.sleep(warmup)
        counted, cpu, mine = count[0], process_cpu(pid), time.process_time()
        start = time.perf_counter()
        await asyncio.sleep(duration)
        window = time.perf_counter() - start
        messages = count[0] - counted
        used, client = process_cpu(pid) - cpu, time.process_time() - mine
        stop[0] = True
        await bounded(asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
    side.done()
    return {
        "messages": messages,
        "msg_per_s": messages / window,
        "server_cpu_us_per_msg": used / max(messages, 1) * 1e6,
        "server_core_share": used / window,
        "client_core_share": client / window,
    }


# ---- the runner ----


@dataclass(frozen=True)
class Figure:
    """A line of the table: a figure of a measurement, and whether higher is better."""

    name: str
    measurement: str  # open_close, open_many, echo_16, echo_64k
    key: str
    higher_is_better: bool = False


FIGURES = (
    Figure("open and close 1,000 WebSockets: wall s", "open_close", "wall_s"),
    Figure("open and close 1,000 WebSockets: server CPU s", "open_close", "server_cpu_s"),
    Figure("1,000 open at once: wall s", "open_many", "wall_s"),
    Figure("1,000 open at once: server CPU s", "open_many", "server_cpu_s"),
    Figure("1,000 open at once: server RSS KiB per WebSocket", "open_many", "kib_per_socket"),
    Figure("echo 100 WebSockets 16 B: msg/s", "echo_16", "msg_per_s", True),
    Figure("echo 100 WebSockets 16 B: server CPU us/msg", "echo_16", "server_cpu_us_per_msg"),
    Figure("echo 100 WebSockets 64 KiB: msg/s", "echo_64k", "msg_per_s", True),
    Figure("echo 100 WebSockets 64 KiB: server CPU us/msg", "echo_64k", "server_cpu_us_per_msg"),
)
MEASUREMENTS = ("open_close", "open_many", "echo_16", "echo_64k")


def measure(
    kind: str, http2: bool, *, cert: Path, ca: Path, args: argparse.Namespace, logs: Path
) -> dict[str, float]:
    """Start a fresh server, measure ``kind`` against it, stop it."""
    server_prefix, _ = pinning()
    command = (sys.executable, __file__, "--serve", "--cert", str(cert))
    server = Server(f"rapidws {'h2' if http2 else 'h1'}", (*command, *(["--http2"] * http2)))
    running = Running(server, args.loop, server_prefix, logs)
    try:

        async def main() -> dict[str, float]:
            def side() -> Side:
                context = ssl.create_default_context(cafile=str(ca))
                return side_for(running.port, http2, context)

            if kind == "open_close":
                return await open_close(side(), running.pid)
            if kind == "open_many":
                return await open_many(side(), side(), running.pid)
            size = 16 if kind == "echo_16" else 64 * KIB
            return await echo(side(), running.pid, size, args.warmup, args.duration)

        return run_on(args.loop, main())  # type: ignore[no-any-return]
    finally:
        errors = [line for line in running.stop() if line.strip()]
        if errors:
            print(f"  server stderr ({kind}, http2={http2}): {errors[-3:]}", flush=True)


def main() -> None:
    """Run the cases in rounds and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 1.5 s windows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per echo")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--http2", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.cert, args.http2, args.loop)
        return
    if args.quick:
        args.rounds, args.duration = 1, 1.5
    raise_nofile()
    _, client_prefix = pinning()
    if client_prefix:
        os.sched_setaffinity(0, {1})  # the load, here; the servers on core 0
    print(f"other processes' load before starting: {other_load():.2f} cores", flush=True)
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    with tempfile.TemporaryDirectory(prefix="rapidws-http2-bench-") as tmp:
        directory = Path(tmp)
        authority = trustme.CA()
        cert, ca = directory / "server.pem", directory / "ca.pem"
        authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
        authority.cert_pem.write_to_path(str(ca))
        for number in range(args.rounds):
            results: dict[str, dict[str, dict[str, float]]] = {}
            for kind in MEASUREMENTS:
                order = (False, True) if number % 2 == 0 else (True, False)
                results[kind] = {}
                for http2 in order:
                    name = "h2" if http2 else "h1"
                    results[kind][name] = measure(
                        kind, http2, cert=cert, ca=ca, args=args, logs=directory
                    )
                    print(f"round {number + 1} {kind} {name}: {results[kind][name]}", flush=True)
            rounds.append(results)
    print()
    print(report(rounds, args))
    path = args.json or Path(f"/tmp/rapidws-http2-bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    raw = {"args": vars(args), "machine": machine(), "rounds": rounds}
    path.write_text(json.dumps(raw, default=str))
    print(f"\nraw numbers: {path}")


def report(rounds: list[dict[str, dict[str, dict[str, float]]]], args: argparse.Namespace) -> str:
    """Return the markdown table: each side's best round, their ratio, and the per-round ratios."""
    lines = [
        f"rapidws {rapidws.__version__}, {args.loop}, Python {sys.version.split()[0]}, "
        f"{len(rounds)} round(s), TLS on both sides",
        "",
        "| case | HTTP/1.1 | HTTP/2 | HTTP/2 / HTTP/1.1 | per round |",
        "|---|---:|---:|---:|---|",
    ]
    for figure in FIGURES:
        h1 = [r[figure.measurement]["h1"][figure.key] for r in rounds]
        h2 = [r[figure.measurement]["h2"][figure.key] for r in rounds]
        pick = max if figure.higher_is_better else min
        per_round = [b / a if a else float("nan") for a, b in zip(h1, h2, strict=True)]
        ratio = pick(h2) / pick(h1) if pick(h1) else float("nan")
        lines.append(
            f"| {figure.name} | {pick(h1):,.2f} | {pick(h2):,.2f} | {ratio:.2f}x "
            f"| {', '.join(f'{r:.2f}' for r in per_round)} (median {median(per_round):.2f}) |"
        )
    for kind, label in (("echo_16", "16 B"), ("echo_64k", "64 KiB")):
        shares = [
            f"{name} server {r[kind][name]['server_core_share']:.0%} "
            f"client {r[kind][name]['client_core_share']:.0%}"
            for r in rounds
            for name in ("h1", "h2")
        ]
        lines.append(f"\ncore use, echo {label}: {'; '.join(shares)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
