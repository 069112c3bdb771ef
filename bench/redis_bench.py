"""rapidws.Hub across processes through Redis, beside python-socketio and Django Channels.

    python bench/redis_bench.py [--quick] [--only fanout,latency,publish,interest]
                                [--rounds N] [--duration S] [--subscribers N]
                                [--window N] [--json PATH]

It starts its own ``redis-server`` (Debian's package; no persistence, on a
free port, in a temporary directory), then every server process and the load
(bench/redis_load.py, one process), with bench/run.py's machinery (imported).
Placement, the same for every system: **the server processes on core 0**
(both, or all four, share it: equal CPU), **Redis and the load client on
core 1** (Redis does little here: a PUBLISH goes to at most 4 nodes).
uvloop everywhere.

Systems: the rapidws Hub on ``RedisBroker`` (bench/redis_node.py; ``tasks``:
``on_message`` starts a publish task, so one loop turn's publishes share a
pipeline; ``iterator``: ``await hub.publish()`` in the handler's loop),
python-socketio's ``AsyncRedisManager`` and channels_redis's
``RedisPubSubChannelLayer`` (bench/peers/socketio_redis_server.py and
channels_redis_server.py, under uvicorn).

- **fanout**: 2 server processes, ``--subscribers`` (100) WebSocket
  subscribers split between them, a publisher on the first keeping
  ``--window`` (128) 64-byte texts in flight. Delivered messages per second (best
  of ``--rounds`` interleaved rounds) and server CPU per delivered message.
- **latency**: the same at fixed rates: 50% of the slowest system's peak
  (all at the same rate), 50% of the system's own peak, and 50% of the best
  rapidws peak where the system's peak reaches it: p50/p99/max of the
  publish-to-receive latency (each message carries its send time).
- **publish**: bench/redis_publish.py on core 0: publishes per second from
  one process against this Redis, pipelined, beside redis-py alone and raw
  RESP (the ceiling): is the broker path the bottleneck before Redis?
- **interest**: 4 server processes, every subscriber on the first, the
  publisher on the second, one client of another topic on each of the
  others: the bytes each process received from Redis
  (``ss``'s per-connection ``bytes_received``) and its CPU time.

Prints markdown tables with the targets of issue 13 and saves them with
every raw number as JSON (and the markdown) under /tmp.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import hub_bench
import run as harness
from hub_bench import failed, markdown_table, nofile, save, verdict
from run import Running, Server

PY = sys.executable
PACKAGES = {
    "uvloop": "uvloop",
    "redis": "redis",
    "hiredis": "hiredis",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "websockets": "websockets",
    "socketio": "python-socketio",
    "channels": "channels",
    "channels_redis": "channels_redis",
    "django": "django",
}
VERSIONS = (
    "redis",
    "hiredis",
    "uvicorn",
    "websockets",
    "python-socketio",
    "channels",
    "channels_redis",
    "django",
)
LOAD = str(harness.BENCH / "redis_load.py")
NODE = str(harness.BENCH / "redis_node.py")
PUBLISH = str(harness.BENCH / "redis_publish.py")
#: Issue 13's targets: delivered messages/s over the better peer, and p99 at 50% of our peak.
FANOUT_TARGET = 5.0
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class System:
    """One system under test: its server, the protocol its clients speak, and a topic."""

    name: str
    script: str
    protocol: str
    options: tuple[str, ...] = ()

    @property
    def rapidws(self) -> bool:
        """Whether this is one of ours."""
        return self.protocol == "rapidws"

    @property
    def topic(self) -> str:
        """A topic (room, group) of its own: systems never hear each other's messages."""
        return "t" + "".join(c for c in self.name if c.isalnum())[:30]

    def server(self, url: str) -> Server:
        """Return its server process, on Redis at ``url``."""
        return Server(self.name, (PY, self.script, "--redis", url, *self.options))


SYSTEMS = (
    System("rapidws Hub, tasks", NODE, "rapidws", ("--mode", "tasks")),
    System("rapidws Hub, iterator", NODE, "rapidws", ("--mode", "iterator")),
    System(
        "python-socketio AsyncRedisManager",
        str(harness.PEERS / "socketio_redis_server.py"),
        "socketio",
    ),
    System(
        "channels_redis RedisPubSubChannelLayer",
        str(harness.PEERS / "channels_redis_server.py"),
        "channels",
    ),
)


Result = dict[str, Any]  # a load's record: its figures, or "failed"
Results = dict[str, Result]  # system name -> its record


# ---- processes ----


class Redis:
    """A ``redis-server`` pinned like the load, without persistence, in a temporary directory."""

    def __init__(self, prefix: list[str], directory: Path) -> None:
        """Start it on a free port; wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is needed: apt-get install redis-server")
        self.port = harness.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = open(directory / "redis.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *prefix, binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(directory),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pid = self.process.pid  # taskset execs redis-server: same process
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                sys.exit(f"redis-server did not start: see {directory / 'redis.log'}")
            time.sleep(0.05)
        self.version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]

    def answers(self) -> bool:
        """Whether it answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


@dataclass
class Setup(hub_bench.Setup):
    """What every part of the run shares, as in bench/hub_bench.py, and Redis."""

    redis: Redis

    @contextlib.contextmanager
    def nodes(self, system: System, count: int) -> Iterator[list[Running]]:
        """Run ``count`` server processes of ``system`` pinned; keep what they write on stderr."""
        started: list[Running] = []
        try:
            for _ in range(count):
                started.append(self.start(system.server(self.redis.url)))
            yield started
        finally:
            lines = [line for running in started for line in running.stop()]
            self.report["stderr"].setdefault(system.name, []).extend(lines[-20:])

    def drive(self, mode: str, system: System, nodes: list[Running], *options: str) -> Result:
        """Run the load client pinned, against ``nodes``; return its result with the CPU beside."""
        settings = self.settings
        args = [mode, "--protocol", system.protocol, "--topic", system.topic]
        args += ["--ports", ",".join(str(n.port) for n in nodes)]
        args += ["--server-pids", ",".join(str(n.pid) for n in nodes)]
        args += ["--redis-pid", str(self.redis.pid), "--redis-port", str(self.redis.port)]
        args += ["--warmup", str(settings.warmup), "--duration", str(settings.duration)]
        args += [*options]
        pids = [n.pid for n in nodes] + [self.redis.pid]
        return accounted(pids, lambda: result_of([*self.client_prefix, PY, LOAD, *args], 120))


def result_of(command: list[str], timeout: float) -> Result:
    """Run ``command``; return its ``result`` line, or ``{"failed": why}``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"{Path(command[-1]).name}: timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("result ")]
    if done.returncode or not lines:
        return {"failed": (done.stderr.strip().splitlines() or ["no result"])[-1][:300]}
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("result "))
    return result


def accounted(pids: list[int], measure: Callable[[], Result]) -> Result:
    """Run ``measure()``; add how many cores processes other than ours used meanwhile."""
    start, busy, kids = time.monotonic(), harness.system_busy(), harness.children_cpu()
    ours = sum(harness.process_cpu(pid) for pid in pids)
    record = measure()
    elapsed = time.monotonic() - start
    ours = harness.children_cpu() - kids + sum(harness.process_cpu(pid) for pid in pids) - ours
    record["other_cores"] = round(max(harness.system_busy() - busy - ours, 0.0) / elapsed, 3)
    return record


# ---- fan-out and latency ----


def run_fanout(setup: Setup) -> Results:
    """Measure every system's peak in interleaved rounds; keep each one's best round."""
    settings = setup.settings
    per_round: dict[str, list[dict[str, Any]]] = {s.name: [] for s in SYSTEMS}
    options = ["--subscribers", str(settings.subscribers), "--window", str(settings.window)]
    with contextlib.ExitStack() as stack:
        pool = {s.name: stack.enter_context(setup.nodes(s, 2)) for s in SYSTEMS}
        for index in range(settings.rounds):
            shift = index % len(SYSTEMS)
            for system in SYSTEMS[shift:] + SYSTEMS[:shift]:
                record = setup.drive("peak", system, pool[system.name], *options)
                per_round[system.name].append(record)
                shown = f"{harness.number(record['value'])} msg/s" if "value" in record else record
                print(f"  fan-out round {index + 1}  {system.name:40} {shown}", flush=True)
    results = {}
    for name, records in per_round.items():
        usable = [r for r in records if "value" in r]
        best = dict(max(usable, key=lambda r: r["value"]) if usable else records[-1])
        best["rounds"] = [r.get("value") for r in records]
        best["other_cores"] = max(r.get("other_cores", 0) for r in records)
        results[name] = best
    return results


def latency_rates(peaks: Results) -> dict[str, dict[int, str]]:
    """Return the rates to measure each system at: rate -> label.

    Half the slowest system's peak (every system at the same rate), half its
    own peak, and half the best rapidws peak where the system's peak reaches
    it: beyond its peak a system's backlog only grows.
    """
    half = {s.name: round(0.5 * peaks.get(s.name, {}).get("publishes_per_s", 0.0)) for s in SYSTEMS}
    ours = max(half[s.name] for s in SYSTEMS if s.rapidws)
    common = min((rate for rate in half.values() if rate > 0), default=0)
    found: dict[str, dict[int, str]] = {}
    for system in SYSTEMS:
        own = half[system.name]
        rates = {common: "50% of the slowest peak", own: "50% of its own peak"}
        if own >= ours:
            rates[ours] = "50% of the best rapidws peak"
        found[system.name] = {rate: label for rate, label in rates.items() if rate > 0}
    return found


def run_latency(setup: Setup, peaks: Results) -> Results:
    """Measure each system at the rates of :func:`latency_rates`."""
    settings = setup.settings
    results: Results = {}
    for system in SYSTEMS:
        rates = latency_rates(peaks)[system.name]
        if not rates:
            continue
        with setup.nodes(system, 2) as nodes:
            for rate, label in sorted(rates.items()):
                record = setup.drive(
                    "rate", system, nodes, "--subscribers", str(settings.subscribers),
                    "--rate", str(rate),
                )  # fmt: skip
                record["label"] = f"{rate:,}/s: {label}"
                results[f"{system.name} @ {rate}"] = record
                shown = (
                    f"p50 {record['p50_ms']:.2f} ms, p99 {record['p99_ms']:.2f} ms"
                    if record.get("p99_ms") is not None
                    else record.get("failed")
                )
                print(f"  latency {system.name:40} {rate:>6}/s {shown}", flush=True)
    return results


RATIO_HEADER = ("rapidws", "vs the better peer", "delivered msg/s", "median of paired rounds")


def fanout_table(results: Results) -> str:
    """Return the peak table and each rapidws variant's ratios to the better peer."""
    rows = []
    for system in SYSTEMS:
        r = results.get(system.name, {})
        if "value" not in r:
            rows.append(failed(system.name, r, 9))
            continue
        rounds = ", ".join(harness.number(v) if v else "—" for v in r["rounds"])
        servers = " + ".join(f"{pct:.0f}" for pct in r["server_cpu_pct"])
        rows.append(
            [
                system.name,
                harness.number(r["value"]),
                rounds,
                harness.number(r["publishes_per_s"]),
                f"{r['server_cpu_us_per_msg']:.2f}",
                f"{servers} %",
                f"{r['redis_cpu_pct']:.0f} %",
                f"{r['client_cpu_pct']:.0f} %",
                f"{r['lost']:,}",
            ]
        )
    header = ["system", "delivered msg/s (best)", "rounds", "publishes/s", "server µs/msg"]
    header += ["server CPU (each)", "Redis CPU", "client CPU", "lost"]
    peers = [s for s in SYSTEMS if not s.rapidws and "value" in results.get(s.name, {})]
    better = max(peers, key=lambda s: results[s.name]["value"], default=None)
    ratios = []
    for subject in (s for s in SYSTEMS if s.rapidws):
        mine = results.get(subject.name, {})
        if better is None or "value" not in mine:
            continue
        theirs = results[better.name]
        ratio = mine["value"] / theirs["value"]
        cpu = theirs["server_cpu_us_per_msg"] / max(mine["server_cpu_us_per_msg"], 1e-9)
        paired = [a / b for a, b in zip(mine["rounds"], theirs["rounds"], strict=False) if a and b]
        ratios.append(
            [
                subject.name,
                better.name,
                f"{ratio:.1f}x",
                f"{median(paired):.1f}x" if paired else "—",
                f"{cpu:.1f}x",
                *verdict(min(ratio, cpu), FANOUT_TARGET),
            ]
        )
    return (
        markdown_table(header, rows)
        + "\n"
        + markdown_table(
            [*RATIO_HEADER, "CPU per msg (theirs / ours)", "target", "met?"],
            ratios,
        )
    )


def latency_table(results: Results) -> str:
    """Return the latency table, with the p99 target on rapidws at 50% of its best peak."""
    rows = []
    for name, r in results.items():
        system = name.split(" @ ")[0]
        if r.get("p99_ms") is None:
            rows.append(failed(name, r, 9))
            continue
        ours = system.startswith("rapidws") and "best rapidws peak" in r["label"]
        target = [f"< {P99_TARGET_MS:g} ms", "yes" if r["p99_ms"] < P99_TARGET_MS else "**no**"]
        rows.append(
            [
                system,
                r["label"],
                harness.number(r["value"]),
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['max_ms']:.1f}",
                f"{r['samples']:,}",
                f"{r['lost']:,}",
                " ".join(target) if ours else "—",
            ]
        )
    header = ["system", "publish rate", "delivered msg/s", "p50 ms", "p99 ms", "max ms"]
    return markdown_table([*header, "samples", "lost", "target p99, met?"], rows)


# ---- the publish path ----


def run_publish(setup: Setup) -> dict[str, Any]:
    """Run bench/redis_publish.py on the servers' core."""
    settings = setup.settings
    command = [*setup.server_prefix, PY, PUBLISH, "--redis", setup.redis.url]
    command += ["--redis-pid", str(setup.redis.pid), "--batches", settings.batches]
    command += ["--duration", str(settings.duration)]
    record = accounted([setup.redis.pid], lambda: result_of(command, 300))
    print(f"  publish path: {'failed' if 'failed' in record else 'done'}", flush=True)
    return record


def publish_table(record: dict[str, Any]) -> str:
    """Return the publish-path table."""
    if "failed" in record:
        return f"failed: {record['failed']}\n"
    rows = []
    for batch, ways in record.items():
        if not isinstance(ways, dict):
            continue
        for way, r in ways.items():
            rows.append(
                [
                    batch,
                    WAYS[way],
                    harness.number(r["publishes_per_s"]),
                    f"{r['cpu_us_per_publish']:.2f}",
                    f"{r['cpu_pct']:.0f} %",
                    f"{r['redis_cpu_pct']:.0f} %",
                ]
            )
    header = ["in flight", "way", "publishes/s", "publisher CPU µs/publish", "publisher CPU"]
    return markdown_table([*header, "Redis CPU"], rows)


WAYS = {
    "plain": "rapidws hub.publish(), no history (PUBLISH)",
    "kept": "rapidws hub.publish(), history (Lua: XADD + PUBLISH)",
    "redis-py": "redis-py pipeline of PUBLISH (no broker)",
    "redis-py packed": "redis-py connection: packed PUBLISHes, read_response() each",
    "floor": "raw RESP on an asyncio stream (the ceiling)",
}


# ---- interest routing ----


def run_interest(setup: Setup) -> Results:
    """Measure the bytes each of 4 nodes receives from Redis when one has every subscriber."""
    settings = setup.settings
    results: Results = {}
    options = ["--subscribers", str(settings.interest_subscribers)]
    options += ["--rate", str(settings.interest_rate)]
    for system in (s for s in SYSTEMS if s.name != "rapidws Hub, iterator"):
        with setup.nodes(system, 4) as nodes:
            record = setup.drive("interest", system, nodes, *options)
        results[system.name] = record
        shown = record.get("redis_bytes", record.get("failed"))
        print(f"  interest {system.name:40} bytes from Redis per node: {shown}", flush=True)
    return results


def interest_table(results: Results) -> str:
    """Return one row per node: its subscribers, what it received from Redis, its CPU."""
    rows = []
    for name, r in results.items():
        if "redis_bytes" not in r:
            rows.append(failed(name, r, 7))
            continue
        published = max(r["published_measured"], 1)
        for index, (received, cpu) in enumerate(
            zip(r["redis_bytes"], r["server_cpu_s"], strict=True)
        ):
            subscribers = r["subscribers"] if index == 0 else 0
            role = ["every subscriber", "the publisher", "other topic", "other topic"][index]
            rows.append(
                [
                    name if index == 0 else "",
                    f"{index} ({role})",
                    str(subscribers),
                    f"{r['published_measured']:,}" if index == 0 else "",
                    f"{received:,}",
                    f"{received / published:.1f}",
                    f"{1e3 * cpu:.0f}",
                ]
            )
    header = ["system", "node", "subscribers", "published", "bytes from Redis"]
    return (
        markdown_table([*header, "bytes per publish", "CPU ms"], rows)
        + "\nNodes 1-3 each have one client subscribed to another topic. The publisher's "
        "node receives Redis's reply to each PUBLISH (`:1\\r\\n`, 4 bytes) on its command "
        "connection; anything more is the topic's messages.\n"
    )


# ---- main ----


def main() -> None:
    """Parse the command line, run the chosen parts, print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 20 subscribers, 1 s")
    parser.add_argument("--only", help="comma-separated parts: fanout, latency, publish, interest")
    parser.add_argument("--rounds", type=int, help="fan-out rounds, best kept (3; quick: 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (3; quick: 1)")
    parser.add_argument("--subscribers", type=int, help="fan-out subscribers (100; quick: 20)")
    parser.add_argument("--window", type=int, default=128, help="publishes in flight at peak")
    parser.add_argument("--json", help="where to save the results (default: under /tmp)")
    settings = parser.parse_args()
    quick = settings.quick
    settings.warmup = 0.5
    settings.rounds = settings.rounds or (1 if quick else 3)
    settings.duration = settings.duration or (1.0 if quick else 3.0)
    settings.subscribers = nofile(settings.subscribers or (20 if quick else 100))
    settings.batches = "100" if quick else "10,100,1000"
    settings.interest_subscribers = 10 if quick else 20
    settings.interest_rate = 100 if quick else 200
    parts = settings.only.split(",") if settings.only else ["fanout", "latency", "publish"]
    if not settings.only:
        parts.append("interest")
    if "latency" in parts and "fanout" not in parts:
        parts.insert(0, "fanout")  # the rate is 50% of the peak

    installed = harness.ensure_packages(PACKAGES)
    workdir = Path(tempfile.mkdtemp(prefix="rapidws-redis-bench-"))
    server_prefix, client_prefix = harness.pinning()
    load = harness.other_load()
    redis = Redis(client_prefix, workdir)
    versions = harness.versions(False)
    for name in VERSIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    versions["redis-server"] = redis.version
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {k: v for k, v in vars(settings).items() if k != "json"},
        "machine": harness.machine(),
        "versions": versions,
        "installed": installed,
        "other_cores_before": round(load, 3),
        "banners": {},
        "stderr": {},
    }
    print(f"versions: {versions}; other processes use {load:.2f} cores", flush=True)
    setup = Setup(settings, server_prefix, client_prefix, workdir, report, redis)
    started = time.monotonic()
    sections = []
    n = settings.subscribers
    try:
        if "fanout" in parts:
            peaks = report["fanout"] = run_fanout(setup)
            sections.append(
                f"### Fan-out through Redis: 2 server processes, {n} subscribers split "
                f"between them, a publisher on the first ({settings.window} in flight)\n\n"
                + fanout_table(peaks)
            )
        if "latency" in parts:
            latency = report["latency"] = run_latency(setup, report["fanout"])
            sections.append(
                f"### Publish-to-receive latency at a fixed rate ({n} subscribers, "
                f"{settings.duration:g} s)\n\n" + latency_table(latency)
            )
        if "publish" in parts:
            report["publish"] = run_publish(setup)
            sections.append(
                "### Publishes per second from one process against one Redis, pipelined "
                "(no subscriber)\n\n" + publish_table(report["publish"])
            )
        if "interest" in parts:
            report["interest"] = run_interest(setup)
            sections.append(
                f"### Interest routing: 4 server processes, {settings.interest_subscribers} "
                f"subscribers all on node 0, the publisher on node 1 at "
                f"{settings.interest_rate}/s, over {settings.duration:g} s\n\n"
                + interest_table(report["interest"])
            )
    finally:
        redis.stop()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["other_cores_after"] = round(harness.other_load(), 3)
    notes = [
        f"{name}: {line}"
        for name, lines in report["stderr"].items()
        for line in lines
        if line.strip()
    ]
    measured = [
        record.get("other_cores", 0.0)
        for part in ("fanout", "latency", "interest")
        for record in report.get(part, {}).values()
    ]
    report["other_cores_max"] = max(measured, default=0.0)
    described = "{cpus} cores ({cpu}), kernel {kernel}".format(**report["machine"])
    text = (
        f"## rapidws.Hub through Redis, {report['started']}\n\n{described}; server processes "
        "on core 0 (uvloop), redis-server and the load client on core 1. Other processes used "
        f"{report['other_cores_before']:.2f} cores before the run and "
        f"{report['other_cores_after']:.2f} after it, and up to {report['other_cores_max']:.2f} "
        "during a measurement (the machine is shared: indicative figures).\n"
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.\n\n"
        + "\n".join(sections)
        + ("\nServer stderr:\n" + "".join(f"- {line}\n" for line in notes[:20]) if notes else "")
    )
    report["markdown"] = text
    print("\n" + text)
    path = save(report, settings.json or default_path())
    print(f"saved {path} and {path.with_suffix('.md')} ({report['seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)


def default_path() -> str:
    """Return where the report goes by default."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(tempfile.gettempdir()) / f"rapidws-redis-bench-{stamp}.json")


if __name__ == "__main__":
    main()
