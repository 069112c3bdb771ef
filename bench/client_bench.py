"""The blocking and event clients against their peers: request-reply rate and cost per connection.

    python bench/client_bench.py [--rounds N] [--duration S] [--connections N] [--json PATH]

A rapidws echo server (bench/server.py, callbacks, uvloop) runs in its own
process pinned to core 0; every client runs in this process pinned to core 1
(its threads included: rapidws.sync's loop thread, websockets' receiver
thread). Each client sends a 16 B binary message and waits for the reply,
over one connection, for ``--duration`` seconds:

- blocking: ``rapidws.sync.connect`` vs ``websocket.create_connection``
  (websocket-client) vs ``websockets.sync.client.connect``;
- event: ``rapidws.WebSocketApp`` vs ``websocket.WebSocketApp``, each
  sending the next request from ``on_message``;
- a bound: rapidws's sans-I/O engine on a blocking socket in one thread, no
  client around it (no thread, no loop, no keepalive, no thread safety): what
  no Python client can beat against this server. Its ratio to websocket-client
  says how far the client's share of a round trip can move the rate.
- a floor: bench/loadclient.c (C, epoll, one connection, one message in
  flight), built at each run: what no client at all beats against this
  server on this machine, where the server and the wake-ups between the two
  cores take most of a round trip.

Rounds alternate the clients; each client's best round counts, and the
ratios are taken from the same run. Each round also measures the client's
CPU time per round trip (this process, all its threads): on a shared machine,
it moves far less than the rates. Then, in a fresh process per client,
``--connections`` blocking connections are opened to measure resident memory
and threads per connection. The machine may be shared: the figures are
indicative. Prints a markdown table and saves the JSON under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    Running,
    Server,
    build_client,
    client_result,
    ensure_packages,
    machine,
    other_load,
    pinning,
    rss_kib,
)

# What this runner needs beyond the rapidws install: module name -> pip name.
PACKAGES = {"uvloop": "uvloop", "websocket": "websocket-client", "websockets": "websockets"}
SERVER = Server("rapidws callback", (sys.executable, str(BENCH / "server.py"), "--api", "callback"))
MESSAGE = b"x" * 16

# Each client: (uri, seconds) -> round trips done.
Client = Callable[[str, float], int]


def rapidws_sync(uri: str, seconds: float) -> int:
    """Round trips with rapidws.sync.connect."""
    import rapidws.sync  # noqa: PLC0415 - imported where measured, as each peer is

    with rapidws.sync.connect(uri, compression=None) as ws:
        return _loop(ws.send, ws.recv, seconds)


def websocket_client(uri: str, seconds: float) -> int:
    """Round trips with websocket-client's create_connection."""
    import websocket  # noqa: PLC0415

    ws = websocket.create_connection(uri)
    try:
        return _loop(ws.send_binary, ws.recv, seconds)
    finally:
        ws.close()


def websockets_sync(uri: str, seconds: float) -> int:
    """Round trips with websockets.sync.client.connect."""
    from websockets.sync.client import connect  # noqa: PLC0415

    with connect(uri, compression=None) as ws:
        return _loop(ws.send, ws.recv, seconds)


def _loop(send: Callable[[bytes], object], recv: Callable[[], object], seconds: float) -> int:
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            send(MESSAGE)
            recv()
        count += 100
    return count


def engine_bound(uri: str, seconds: float) -> int:
    """Round trips with rapidws's engine driven from a blocking socket: the bound."""
    from rapidws.core.client import ClientProtocol  # noqa: PLC0415
    from rapidws.core.uri import parse_uri  # noqa: PLC0415

    engine = ClientProtocol(parse_uri(uri))
    parsed = parse_uri(uri)
    with socket.create_connection((parsed.host, parsed.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send(message: bytes) -> None:
            engine.send_message(message)
            for data in engine.data_to_send():
                sock.sendall(data)

        def recv() -> object:
            while True:
                events = engine.events_received()
                if events:
                    return events
                engine.receive_data(sock.recv(65536))

        engine.send_request(engine.connect())
        for data in engine.data_to_send():
            sock.sendall(data)
        recv()  # the handshake's response
        return _loop(send, recv, seconds)


def rapidws_app(uri: str, seconds: float) -> int:
    """Round trips with rapidws.WebSocketApp, the next request sent from on_message."""
    import rapidws  # noqa: PLC0415

    app = rapidws.WebSocketApp(rapidws.connect(uri, compression=None))
    return _run_app(app, app.run_forever, "send", seconds)


def websocket_client_app(uri: str, seconds: float) -> int:
    """Round trips with websocket-client's WebSocketApp."""
    import websocket  # noqa: PLC0415

    app = websocket.WebSocketApp(uri)
    return _run_app(app, app.run_forever, "send_bytes", seconds)


def _run_app(app: Any, run_forever: Callable[[], object], send: str, seconds: float) -> int:
    # The same callbacks for both apps: they share the names and arguments;
    # ``send`` names the method that sends a binary message.
    count = 0
    deadline = 0.0

    def on_open(ws: Any) -> None:
        nonlocal deadline
        deadline = time.perf_counter() + seconds
        getattr(ws, send)(MESSAGE)

    def on_message(ws: Any, message: object) -> None:
        nonlocal count
        count += 1
        if count % 100 or time.perf_counter() < deadline:
            getattr(ws, send)(MESSAGE)
        else:
            ws.close()

    app.on_open = on_open
    app.on_message = on_message
    run_forever()
    return count


BLOCKING: dict[str, Client] = {
    "rapidws.sync": rapidws_sync,
    "websocket-client": websocket_client,
    "websockets.sync": websockets_sync,
}
EVENT: dict[str, Client] = {
    "rapidws.WebSocketApp": rapidws_app,
    "websocket-client WebSocketApp": websocket_client_app,
}
BOUND: dict[str, Client] = {"bound: engine, blocking socket": engine_bound}
TARGETS = [
    ("rapidws.sync", "websocket-client", 2.0),
    ("rapidws.sync", "websockets.sync", 1.2),
    ("rapidws.WebSocketApp", "websocket-client WebSocketApp", 2.0),
]
# No target: how far any client could go, in the same run.
REFERENCE = ("bound: engine, blocking socket", "websocket-client")
FLOOR = "floor: C client (loadclient.c)"


def c_floor(binary: Path, port: int, seconds: float) -> tuple[float, float]:
    """Run the C load client on one connection; return its round trips/s and CPU µs each."""
    before = os.times()
    child = subprocess.run(
        [str(binary), "-m", "echo", "-P", str(port), "-c", "1", "-s", str(len(MESSAGE)),
         "-w", "0.5", "-d", str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    )  # fmt: skip
    after = os.times()
    result = client_result(child.stdout)
    if result is None:
        raise RuntimeError(f"loadclient gave no result: {child.stderr[-300:]}")
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    # The CPU of its warm-up too: an upper bound per round trip.
    return result["rate"], cpu / max(result["count"], 1) * 1e6


def cost(name: str, uri: str, connections: int) -> dict[str, float]:
    """Open ``connections`` blocking connections with client ``name`` (in a child process)."""
    before_rss = rss_kib(os.getpid())
    before_threads = threading.active_count()
    held: list[Any] = []
    if name == "rapidws.sync":
        import rapidws.sync  # noqa: PLC0415

        held = [rapidws.sync.connect(uri, compression=None) for _ in range(connections)]
    elif name == "websocket-client":
        import websocket  # noqa: PLC0415

        held = [websocket.create_connection(uri) for _ in range(connections)]
    else:
        from websockets.sync.client import connect  # noqa: PLC0415

        held = [connect(uri, compression=None) for _ in range(connections)]
    record = {
        "kib_per_connection": (rss_kib(os.getpid()) - before_rss) / connections,
        "threads_per_connection": (threading.active_count() - before_threads) / connections,
    }
    for ws in held:
        ws.close()
    return record


def main() -> None:
    """Parse the command line, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cost", help=argparse.SUPPRESS)  # a child: name,uri
    args = parser.parse_args()
    if args.cost:
        name, uri = args.cost.split(",", 1)
        print(json.dumps(cost(name, uri, args.connections)))
        return

    ensure_packages(PACKAGES)
    server_prefix, client_prefix = pinning()
    if client_prefix:
        os.sched_setaffinity(0, {int(client_prefix[-1])})
    busy = other_load()
    logs = Path(tempfile.mkdtemp(prefix="rapidws-client-bench-"))
    running = Running(SERVER, "uvloop", server_prefix, logs)
    uri = f"ws://127.0.0.1:{running.port}/"
    clients = {**BLOCKING, **EVENT, **BOUND}
    rates: dict[str, list[float]] = {name: [] for name in [*clients, FLOOR]}
    cpu: dict[str, list[float]] = {name: [] for name in rates}  # µs per round trip
    costs: dict[str, dict[str, float]] = {}
    loadclient = build_client(logs)
    try:
        for _ in range(args.rounds):
            for name, client in clients.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                done = client(uri, args.duration)
                rates[name].append(done / (time.perf_counter() - start))
                cpu[name].append((time.process_time() - start_cpu) / done * 1e6)
            rate, each = c_floor(loadclient, running.port, args.duration)
            rates[FLOOR].append(rate)
            cpu[FLOOR].append(each)
        for name in BLOCKING:
            command = [sys.executable, __file__, "--cost", f"{name},{uri}"]
            child = subprocess.run(
                [*client_prefix, *command, "--connections", str(args.connections)],
                capture_output=True,
                text=True,
                check=True,
            )
            costs[name] = json.loads(child.stdout)
    finally:
        stderr = running.stop()

    best = {name: max(values) for name, values in rates.items()}
    least = {name: min(values) for name, values in cpu.items()}
    bound, peer = REFERENCE
    lines = [
        f"request-reply, 16 B, 1 connection; best of {args.rounds} rounds of {args.duration} s",
        "",
        "| client | round trips/s | rounds | client CPU µs/round trip |",
        "|---|---:|---|---:|",
        *(
            f"| {name} | {best[name]:,.0f} | {', '.join(f'{v:,.0f}' for v in rates[name])} "
            f"| {least[name]:.1f} |"
            for name in rates
        ),
        "",
        "| ratio | rate | client CPU (theirs / ours) | target (rate) |",
        "|---|---:|---:|---:|",
        *(
            f"| {ours} / {theirs} | {best[ours] / best[theirs]:.2f}x "
            f"| {least[theirs] / least[ours]:.2f}x | >= {target}x |"
            for ours, theirs, target in TARGETS
        ),
        f"| {bound} / {peer} | {best[bound] / best[peer]:.2f}x "
        f"| {least[peer] / least[bound]:.2f}x | (the bound) |",
        f"| {FLOOR} / {peer} | {best[FLOOR] / best[peer]:.2f}x "
        f"| {least[peer] / least[FLOOR]:.2f}x | (the floor) |",
        "",
        f"cost per blocking connection, {args.connections} open connections:",
        "",
        "| client | RSS KiB/conn | threads/conn |",
        "|---|---:|---:|",
        *(
            f"| {name} | {c['kib_per_connection']:.1f} | {c['threads_per_connection']:.3f} |"
            for name, c in costs.items()
        ),
    ]
    notes = []
    if busy > 0.25:
        notes.append(f"other processes used {busy:.2f} cores before the run: figures are noisy")
    if stderr:
        notes.append("server stderr, first: " + " | ".join(stderr[:3])[:300])
    print("\n".join(lines + [""] + [f"- {note}" for note in notes]))
    path = args.json or Path(tempfile.gettempdir()) / "rapidws-client-bench.json"
    record = {
        "machine": machine(),
        "rates": rates,
        "cpu_us_per_round_trip": cpu,
        "costs": costs,
        "other_load": busy,
    }
    path.write_text(json.dumps(record, indent=2))
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
