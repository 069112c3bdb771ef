"""rapidws.Hub fan-out beside websockets, uvicorn + Starlette and socketify, as ratios in one run.

    python bench/hub_bench.py [--quick] [--only chat,fanout,memory] [--rounds N]
                              [--duration S] [--window N] [--connections N]
                              [--publishes N] [--json PATH]

Each server is its own process pinned to core 0 (uvloop), the load client
(bench/hub_load.py, one process) pinned to core 1, with bench/run.py's
machinery (imported): servers, pinning, CPU accounting, notes.

- **chat**: 16 clients in one room, each keeping ``--window`` of its own short
  text messages in flight; every message reaches all 16, the sender included
  (as in socketify's benchmark). Delivered messages per second, servers
  interleaved over ``--rounds`` rounds (the order rotates), best round kept:
  rapidws Hub (an iterator handler awaiting ``hub.publish()``; Callbacks
  creating a task per publish; Callbacks driving ``publish()`` inline, the
  stand-in for a synchronous publish), websockets ``broadcast()``, a loop of
  ``await ws.send_text()`` in Starlette under uvicorn, and socketify's
  ``app.publish()`` (uWebSockets: the native ceiling).
- **fan-out**: one 1 KiB text to ``--connections`` subscribers (10,000),
  ``--publishes`` times (20): the time until the last subscriber has it, and
  the server's CPU time for the publish per delivered message; compression
  off, then permessage-deflate with ``server_no_context_takeover`` offered by
  every client. rapidws Hub, rapidws loop of ``await ws.send()``, websockets
  ``broadcast()``, websockets loop of ``await ws.send()``.
- **memory**: 10,000 connections (open first) each subscribing to 10 topics
  in one rapidws server: RSS and tracemalloc growth per subscription.

Prints markdown tables with the targets of issue 13 and saves them with
every raw number as JSON (and the markdown) under /tmp. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import run as harness
from run import Running, Server

PY = sys.executable
PACKAGES = {
    "uvloop": "uvloop",
    "websockets": "websockets",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
}
LOAD = str(harness.BENCH / "hub_load.py")
HUB_SERVER = str(harness.BENCH / "hub_server.py")
WEBSOCKETS = str(harness.PEERS / "websockets_hub_server.py")


def rapidws_server(name: str, mode: str, *options: str) -> Server:
    """Return a bench/hub_server.py server."""
    return Server(name, (PY, HUB_SERVER, "--mode", mode, *options))


HUB_ITERATOR = rapidws_server("rapidws Hub, iterator", "chat-iterator")
HUB_CALLBACKS = rapidws_server("rapidws Hub, Callbacks + task", "chat-callbacks")
HUB_INLINE = rapidws_server("rapidws Hub, Callbacks inline", "chat-inline")
WS_CHAT = Server("websockets broadcast()", (PY, WEBSOCKETS, "--mode", "chat"))
UVICORN = Server(
    "uvicorn+Starlette send loop", (PY, str(harness.PEERS / "starlette_chat_server.py"))
)
SOCKETIFY = Server(
    "socketify publish()", (PY, str(harness.PEERS / "socketify_chat_server.py")), python=False
)
CHAT_SUBJECTS = (HUB_ITERATOR, HUB_CALLBACKS, HUB_INLINE)
# Peer -> the target ratio of issue 13 (rapidws / peer, delivered messages per second).
CHAT_TARGETS = ((UVICORN, 10.0), (WS_CHAT, 3.0), (SOCKETIFY, 0.5))


def fanout_servers(deflate: bool) -> list[Server]:
    """Return the fan-out servers: rapidws Hub and send loop, websockets broadcast and send loop.

    Without compression, the floor comes last: the frame written to each
    transport, without any WebSocket library.
    """
    option = ("--deflate",) if deflate else ()
    suffix = ", deflate" if deflate else ""
    found = [
        rapidws_server(f"rapidws Hub{suffix}", "fanout-hub", *option),
        rapidws_server(f"rapidws send loop{suffix}", "fanout-sendloop", *option),
        Server(
            f"websockets broadcast(){suffix}",
            (PY, WEBSOCKETS, "--mode", "fanout-broadcast", *option),
        ),
        Server(
            f"websockets send loop{suffix}", (PY, WEBSOCKETS, "--mode", "fanout-sendloop", *option)
        ),
    ]
    if not deflate:
        found.append(rapidws_server("floor: transport.write() loop", "fanout-floor"))
    return found


MEMORY = rapidws_server("rapidws Hub", "memory")


def run_load(prefix: list[str], args: list[str], timeout: float) -> dict[str, Any]:
    """Run bench/hub_load.py pinned; return its result, or ``{"failed": why}``."""
    try:
        done = subprocess.run(
            [*prefix, PY, LOAD, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"load client timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("result ")]
    if done.returncode or not lines:
        return {"failed": (done.stderr.strip().splitlines() or ["no result"])[-1][:300]}
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("result "))
    return result


Results = dict[str, dict[str, Any]]  # server name -> its record
Stderr = dict[str, list[str]]  # server name -> what it wrote on stderr


@dataclass
class Setup:
    """What every part of the run shares: the settings, the pinning, the logs, the report."""

    settings: argparse.Namespace
    server_prefix: list[str]
    client_prefix: list[str]
    workdir: Path
    report: dict[str, Any]

    def start(self, server: Server) -> Running:
        """Start ``server`` pinned, on uvloop; keep its ready line in the report."""
        running = Running(server, "uvloop", self.server_prefix, self.workdir)
        self.report["banners"][server.name] = running.banner
        return running

    def load(self, args: list[str], timeout: float) -> dict[str, Any]:
        """Run the load client, pinned."""
        return run_load(self.client_prefix, args, timeout)


def accounted(running: Running, measure: Any) -> dict[str, Any]:
    """Run ``measure()``; add how many cores other processes used meanwhile."""
    busy, kids, server, start = (
        harness.system_busy(),
        harness.children_cpu(),
        harness.process_cpu(running.pid),
        time.monotonic(),
    )
    record: dict[str, Any] = measure()
    elapsed = time.monotonic() - start
    ours = (
        harness.children_cpu()
        - kids
        + (harness.process_cpu(running.pid) - server if running.alive() else 0)
    )
    record["other_cores"] = round(max(harness.system_busy() - busy - ours, 0.0) / elapsed, 3)
    return record


# ---- chat ----


def run_chat(servers: list[Server], setup: Setup) -> tuple[Results, Stderr]:
    """Measure every chat server in interleaved rounds; return the best round of each."""
    settings = setup.settings
    per_round: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    pool: dict[str, Running] = {}
    stderr: dict[str, list[str]] = {}
    options = ["--warmup", str(settings.warmup), "--duration", str(settings.duration)]
    options += ["--window", str(settings.window)]
    try:
        for server in servers:
            pool[server.name] = setup.start(server)
        for index in range(settings.rounds):
            shift = index % len(servers)
            for server in servers[shift:] + servers[:shift]:
                running = pool[server.name]
                if not running.alive():
                    per_round[server.name].append({"failed": "server died"})
                    continue
                args = ["chat", "--port", str(running.port), "--server-pid", str(running.pid)]
                record = accounted(running, lambda args=args: setup.load([*args, *options], 60))
                per_round[server.name].append(record)
                shown = harness.number(record["value"]) if "value" in record else record["failed"]
                print(f"  chat round {index + 1}  {server.name:32} {shown} msg/s", flush=True)
    finally:
        for name, running in pool.items():
            stderr[name] = running.stop()
    results = {}
    for name, records in per_round.items():
        usable = [r for r in records if "value" in r]
        best = dict(max(usable, key=lambda r: r["value"]) if usable else records[-1])
        best["rounds"] = [r.get("value") for r in records]
        best["errors"] = sum(r.get("errors", 0) for r in records)
        best["other_cores"] = max(r.get("other_cores", 0) for r in records)
        results[name] = best
    return results, stderr


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return a markdown table, the first column left-aligned, the others right-aligned."""
    lines = [header, ["---", *["---:"] * (len(header) - 1)], *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def failed(name: str, record: dict[str, Any], columns: int) -> list[str]:
    """Return the row of a server whose measurement failed."""
    return [name, f"failed: {record.get('failed', '—')}", *[""] * (columns - 2)]


def verdict(ratio: float, target: float | None) -> list[str]:
    """Return the target and whether ``ratio`` meets it."""
    if target is None:
        return ["none", "—"]
    return [f"≥ {target:g}x", "yes" if ratio >= target else "**no**"]


def chat_table(results: Results, servers: list[Server]) -> str:
    """Return the chat table: rates, CPU, and each rapidws variant's ratios to the targets."""
    rows = []
    for server in servers:
        r = results.get(server.name, {})
        if "value" not in r:
            rows.append(failed(server.name, r, 6))
            continue
        rounds = ", ".join(harness.number(v) if v else "—" for v in r["rounds"])
        cpu = [f"{r['cpu_us_per_op']:.2f}", f"{r['server_cpu_pct']:.0f}%"]
        rows.append(
            [server.name, harness.number(r["value"]), rounds, *cpu, f"{r['client_cpu_pct']:.0f}%"]
        )
    header = ["server", "delivered msg/s (best)", "rounds", "server µs/msg", "server CPU"]
    ratios = []
    for subject in CHAT_SUBJECTS:
        mine = results.get(subject.name, {})
        for peer, target in CHAT_TARGETS:
            theirs = results.get(peer.name, {})
            if "value" not in mine or "value" not in theirs:
                continue
            ratio = mine["value"] / theirs["value"]
            paired = [
                a / b for a, b in zip(mine["rounds"], theirs["rounds"], strict=False) if a and b
            ]
            shown = [f"{ratio:.2f}x", f"{median(paired):.2f}x", *verdict(ratio, target)]
            ratios.append([subject.name, peer.name, *shown])
    return (
        markdown_table([*header, "client CPU"], rows)
        + "\n"
        + markdown_table(
            ["rapidws", "vs", "ratio (best)", "median of paired rounds", "target", "met?"], ratios
        )
    )


# ---- fan-out ----


def run_fanout(servers: list[Server], setup: Setup) -> tuple[Results, Stderr]:
    """Start each fan-out server in turn, publish to its subscribers; return the figures."""
    settings = setup.settings
    results, stderr = {}, {}
    for server in servers:
        running = setup.start(server)
        args = ["fanout", "--port", str(running.port), "--connections", str(settings.connections)]
        args += ["--publishes", str(settings.publishes)]
        if "--deflate" in server.command:
            args.append("--deflate")
        try:
            record = accounted(running, lambda args=args: setup.load(args, 600))
        finally:
            stderr[server.name] = running.stop()
        if "publishes" in record:
            publishes = record["publishes"]
            last = sorted(p["last_s"] for p in publishes)
            cpu = sorted(p["server_cpu_s"] / max(p["sent"], 1) for p in publishes)
            record.update(
                last_median_s=median(last),
                last_best_s=last[0],
                cpu_median_us=1e6 * median(cpu),
                cpu_best_us=1e6 * cpu[0],
                client_cpu_median_s=median(p["client_cpu_s"] for p in publishes),
                sent=min(p["sent"] for p in publishes),
            )
            print(
                f"  fan-out {server.name:32} last at {1e3 * record['last_median_s']:.1f} ms "
                f"(median), {record['cpu_median_us']:.2f} µs CPU/msg",
                flush=True,
            )
        else:
            print(f"  fan-out {server.name:32} {record.get('failed')}", flush=True)
        results[server.name] = record
    return results, stderr


def fanout_table(results: Results, deflate: bool) -> str:
    """Return the fan-out table of one compression setting, with the Hub's ratios.

    Ratios compare the best publishes (the machine is shared: the median is
    shown beside them).
    """
    servers = fanout_servers(deflate)
    hub, _, ws_broadcast, ws_loop = servers[:4]
    rows = []
    for server in servers:
        r = results.get(server.name, {})
        if "last_median_s" not in r:
            rows.append(failed(server.name, r, 7))
            continue
        wall = median(p["server_wall_s"] for p in r["publishes"])
        rows.append(
            [
                server.name,
                f"{r['sent']:,}",
                f"{r['frame_bytes']:,}",
                f"{1e3 * r['last_best_s']:.1f} ({1e3 * r['last_median_s']:.1f})",
                f"{r['cpu_best_us']:.2f} ({r['cpu_median_us']:.2f})",
                f"{1e3 * wall:.1f}",
                f"{1e3 * r['client_cpu_median_s']:.1f}",
            ]
        )
    mine = results.get(hub.name, {})
    ratios = []
    peers = [(ws_broadcast, 3.0), (ws_loop, 5.0), *((other, None) for other in servers[1::3])]
    for peer, target in peers:
        theirs = results.get(peer.name, {})
        if "last_best_s" not in mine or "last_best_s" not in theirs:
            continue
        time_ratio = theirs["last_best_s"] / mine["last_best_s"]
        cpu_ratio = theirs["cpu_best_us"] / mine["cpu_best_us"]
        medians = (
            f"{theirs['last_median_s'] / mine['last_median_s']:.2f}x, "
            f"{theirs['cpu_median_us'] / mine['cpu_median_us']:.2f}x"
        )
        ratios.append(
            [
                peer.name,
                f"{time_ratio:.2f}x",
                f"{cpu_ratio:.2f}x",
                medians,
                *verdict(min(time_ratio, cpu_ratio), target),
            ]
        )
    title = "permessage-deflate, server_no_context_takeover" if deflate else "compression off"
    header = ["server", "subscribers", "frame bytes", "last has it, best (median) ms"]
    header += ["server CPU µs/msg, best (median)", "publish wall ms (median)"]
    return (
        f"\n**{title}**\n\n"
        + markdown_table([*header, "client CPU ms (median)"], rows)
        + "\n"
        + markdown_table(
            ["Hub vs", "time to last", "server CPU/msg", "medians: time, CPU", "target", "met?"],
            ratios,
        )
    )


# ---- memory ----


def run_memory(setup: Setup) -> tuple[dict[str, Any], list[str]]:
    """Subscribe ``--connections`` connections to 10 topics each; return the growth."""
    running = setup.start(MEMORY)
    try:
        connections = str(setup.settings.connections)
        record = setup.load(
            ["memory", "--port", str(running.port), "--connections", connections], 600
        )
    finally:
        stderr = running.stop()
    if "subscriptions" in record:
        count = record["subscriptions"]
        record["rss_per_subscription"] = (record["rss_after"] - record["rss_before"]) / count
        record["traced_per_subscription"] = record["traced"] / count
    return record, stderr


def memory_table(record: dict[str, Any]) -> str:
    """Return the memory table."""
    if "subscriptions" not in record:
        return f"failed: {record.get('failed')}\n"
    traced, rss = record["traced_per_subscription"], record["rss_per_subscription"]
    growth = (record["rss_after"] - record["rss_before"]) / 2**20
    header = ["subscriptions", "RSS growth", "RSS per subscription", "tracemalloc per subscription"]
    row = [f"{record['subscriptions']:,}", f"{growth:.1f} MiB", f"{rss:.0f} B", f"{traced:.0f} B"]
    # The target is on what the Hub holds (tracemalloc); RSS adds the allocator's slack.
    met = "yes" if traced < 200 else "**no**"
    return markdown_table([*header, "target", "met?"], [[*row, "< 200 B", met]])


# ---- main ----


def nofile(connections: int) -> int:
    """Raise the open files limit to the hard limit; return how many connections fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    fit = want - 100  # the loop, the listening socket, logs and pipes
    if fit < connections:
        print(
            f"warning: the open files limit is {want}: {fit} connections instead of "
            f"{connections} (raise the hard limit: ulimit -Hn)",
            flush=True,
        )
    return min(connections, fit)


def socketify_available() -> str | None:
    """Install socketify if it is missing; return why it cannot be used, or None."""
    try:
        harness.ensure_packages({"socketify": "socketify"})
    except subprocess.CalledProcessError as exc:
        return f"pip install socketify failed ({exc})"
    check = subprocess.run(
        [PY, "-c", "import socketify"], capture_output=True, text=True, check=False
    )
    if check.returncode:
        return "socketify does not import: " + check.stderr.strip().splitlines()[-1][:200]
    return None


def main() -> None:
    """Parse the command line, run the chosen parts, print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 1000 subscribers, 5 publishes"
    )
    parser.add_argument("--only", help="comma-separated parts: chat, fanout, memory")
    parser.add_argument("--rounds", type=int, help="chat rounds, best kept (3; quick: 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per chat round (2)")
    parser.add_argument("--window", type=int, default=32, help="own messages in flight per client")
    parser.add_argument("--connections", type=int, help="fan-out and memory connections (10000)")
    parser.add_argument("--publishes", type=int, help="publishes per fan-out server (20)")
    parser.add_argument("--json", help="where to save the results (default: under /tmp)")
    settings = parser.parse_args()
    settings.warmup = 0.5
    settings.rounds = settings.rounds or (1 if settings.quick else 3)
    settings.duration = settings.duration or (1.0 if settings.quick else 2.0)
    settings.connections = nofile(settings.connections or (1000 if settings.quick else 10_000))
    settings.publishes = settings.publishes or (5 if settings.quick else 20)
    parts = settings.only.split(",") if settings.only else ["chat", "fanout", "memory"]

    installed = harness.ensure_packages(PACKAGES)
    no_socketify = socketify_available() if "chat" in parts else None
    workdir = Path(tempfile.mkdtemp(prefix="rapidws-hub-bench-"))
    load = harness.other_load()
    found_versions = harness.versions(False)
    for name in ("starlette", "uvicorn", "socketify"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found_versions[name] = importlib.metadata.version(name)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {k: v for k, v in vars(settings).items() if k != "json"},
        "machine": harness.machine(),
        "versions": found_versions,
        "installed": installed,
        "other_cores_before": round(load, 3),
        "banners": {},
        "stderr": {},
    }
    print(f"versions: {found_versions}; other processes use {load:.2f} cores", flush=True)
    setup = Setup(settings, *harness.pinning(), workdir, report)
    started = time.monotonic()
    sections, all_notes = [], []
    if no_socketify:
        all_notes.append(f"socketify left out: {no_socketify}")
    if "chat" in parts:
        servers = [*CHAT_SUBJECTS, WS_CHAT, UVICORN] + ([] if no_socketify else [SOCKETIFY])
        chat, stderr = run_chat(servers, setup)
        report["chat"], report["stderr"]["chat"] = chat, stderr
        sections.append(
            f"### Chat: 16 clients in one room, {settings.window} own messages in flight each, "
            "every message to all 16 (sender included)\n\n" + chat_table(chat, servers)
        )
        all_notes += harness.notes("chat", {name: {"": r} for name, r in chat.items()}, stderr)
    if "fanout" in parts:
        fanout: dict[str, dict[str, Any]] = {}
        for deflate in (False, True):
            found, stderr = run_fanout(fanout_servers(deflate), setup)
            fanout.update(found)
            report["stderr"].setdefault("fanout", {}).update(stderr)
            all_notes += harness.notes(
                "fan-out", {name: {"": r} for name, r in found.items()}, stderr
            )
        report["fanout"] = fanout
        sections.append(
            f"### One 1 KiB text to {settings.connections:,} subscribers, "
            f"{settings.publishes} publishes each\n"
            + fanout_table(fanout, False)
            + fanout_table(fanout, True)
        )
    if "memory" in parts:
        record, lines = run_memory(setup)
        report["memory"], report["stderr"]["memory"] = record, lines
        sections.append(
            f"### Memory: {settings.connections:,} connections x 10 topics, one process\n\n"
            + memory_table(record)
        )
        all_notes += harness.notes("memory", {MEMORY.name: {"": record}}, {MEMORY.name: lines})
    report["seconds"] = round(time.monotonic() - started, 1)
    report["other_cores_after"] = round(harness.other_load(), 3)
    described = "{cpus} cores ({cpu}), kernel {kernel}".format(**report["machine"])
    text = (
        f"## rapidws.Hub fan-out, {report['started']}\n\n{described}; servers on core 0 "
        f"(uvloop), load client on core 1. Other processes used "
        f"{report['other_cores_before']:.2f} cores before the run and "
        f"{report['other_cores_after']:.2f} after it.\n"
        f"Versions: {', '.join(f'{k} {v}' for k, v in found_versions.items())}.\n\n"
        + "\n".join(sections)
        + ("\nNotes:\n" + "".join(f"- {line}\n" for line in all_notes) if all_notes else "")
    )
    report["markdown"] = text
    print("\n" + text)
    path = save(report, settings.json)
    print(f"saved {path} and {path.with_suffix('.md')} ({report['seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)


def save(report: dict[str, Any], requested: str | None) -> Path:
    """Write the report as JSON and its markdown beside it; return the JSON's path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(requested or Path(tempfile.gettempdir()) / f"rapidws-hub-bench-{stamp}.json")
    for target, content in (
        (path, json.dumps(report, indent=1)),
        (path.with_suffix(".md"), report["markdown"]),
    ):
        target.write_text(content)
    return path


if __name__ == "__main__":
    main()
