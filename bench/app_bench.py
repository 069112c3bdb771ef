"""The framework against the bare engine: rapidws.App routes versus rapidws.serve(), as ratios.

    python bench/app_bench.py [--quick] [--loop uvloop|asyncio|both] [--rounds N]
                              [--duration S] [--only CASE,CASE] [--wait-quiet S]
                              [--json PATH]

Each server is its own process pinned to core 0, the load client pinned to
core 1; the cases run in rounds, servers interleaved, each measurement right
after a machine-speed probe, with bench/run.py's machinery (imported, not
copied): its servers, load client build, rounds, probes and best-round choice.

- handshakes, 50 concurrent, to ``/ws/echo/lobby``: bench/server.py's
  Callbacks echo under bare ``rapidws.serve()`` versus the same class on the
  second-to-last dynamic route of an App with 50 WebSocket routes and one
  interceptor (bench/app_server.py), and of one with 200 routes;
- callback echo, 100 connections, 16 B and 1 KiB: the same two servers;
- endpoint echo, 100 connections, 16 B: the App's ``Endpoint`` class
  (``on_message`` awaits ``ws.send``) versus the iterator echo of
  bench/server.py;
- ``GET /healthz`` on 50 kept-alive connections, driven by ``wrk`` (pinned to
  core 1): the App versus uvicorn + Starlette (bench/peers/starlette_server.py).

Prints a markdown table of ratios (App / baseline) with each target, and saves
it with every raw number as JSON under /tmp. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from run import (
    BENCH,
    KIB,
    PEERS,
    Bench,
    Case,
    Running,
    Server,
    best_of,
    build_client,
    cell,
    children_cpu,
    ensure_packages,
    machine,
    notes,
    number,
    other_load,
    pinning,
    process_cpu,
    raise_nofile,
    run_loop,
    system_busy,
    versions,
    wait_quiet,
)

# What this runner needs beyond the rapidws install: module name -> pip name.
PACKAGES = {
    "uvloop": "uvloop",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
}
ECHO_PATH = "/ws/echo/lobby"  # matches bench/app_server.py's ECHO_TEMPLATE
ENDPOINT_PATH = "/ws/endpoint/lobby"  # matches its ENDPOINT_TEMPLATE
HEALTH_PATH = "/healthz"
HTTP_CONNECTIONS = 50

PY = sys.executable
BARE_CALLBACK = Server("rapidws bare callback", (PY, str(BENCH / "server.py"), "--api", "callback"))
BARE_ITERATOR = Server("rapidws bare iterator", (PY, str(BENCH / "server.py"), "--api", "iterator"))
APP_50 = Server("rapidws App 50 routes", (PY, str(BENCH / "app_server.py"), "--routes", "50"))
APP_200 = Server("rapidws App 200 routes", (PY, str(BENCH / "app_server.py"), "--routes", "200"))
STARLETTE = Server("uvicorn+Starlette", (PY, str(PEERS / "starlette_server.py")))


@dataclass(frozen=True)
class PathCase(Case):
    """A load client case sent to one request path (``loadclient -u``)."""

    path: str = "/"


class PathBench(Bench):
    """run.py's Bench, with the case's request path added to the load client's arguments.

    run.py always lets the client ask for ``/``; this subclass is the minimum
    needed to ask for a routed path, on every server alike.
    """

    path = "/"

    def measure(self, case: Case, running: Running) -> dict:
        """Measure ``case`` on ``running`` with the case's path."""
        self.path = getattr(case, "path", "/")
        return super().measure(case, running)

    def run_client(
        self, args: list[str], on_line: object = None, *, same_core: bool = False
    ) -> tuple[dict, dict]:
        """Run the load client, asking for ``self.path`` (not for raw TCP: the probe)."""
        if "-R" not in args:
            args = [*args, "-u", self.path]
        return super().run_client(args, on_line, same_core=same_core)


HANDSHAKES = PathCase("handshakes 50 concurrent", "handshake", 50, unit="hs/s", path=ECHO_PATH)
ECHO_16 = PathCase("callback echo 100 conns 16 B", "echo", 100, 16, path=ECHO_PATH)
ECHO_1K = PathCase("callback echo 100 conns 1 KiB", "echo", 100, KIB, path=ECHO_PATH)
ENDPOINT_16 = PathCase("endpoint echo 100 conns 16 B", "echo", 100, 16, path=ENDPOINT_PATH)
HTTP = Case(f"GET {HEALTH_PATH} {HTTP_CONNECTIONS} keep-alive conns", "http", unit="req/s")


@dataclass(frozen=True)
class Group:
    """Servers measured together, interleaved, through the same cases."""

    servers: tuple[Server, ...]
    cases: tuple[Case, ...]


GROUPS = (
    Group((BARE_CALLBACK, APP_50, APP_200), (HANDSHAKES,)),
    Group((BARE_CALLBACK, APP_50), (ECHO_16, ECHO_1K)),
    Group((BARE_ITERATOR, APP_50), (ENDPOINT_16,)),
    Group((STARLETTE, APP_50), (HTTP,)),
)


@dataclass(frozen=True)
class Row:
    """One line of the table: a case, the baseline and the App compared, the target."""

    label: str
    case: Case
    baseline: Server
    subject: Server
    target: float | None


ROWS = (
    Row("handshakes 50 concurrent, App 50 routes", HANDSHAKES, BARE_CALLBACK, APP_50, 0.9),
    Row("handshakes 50 concurrent, App 200 routes", HANDSHAKES, BARE_CALLBACK, APP_200, 0.9),
    Row("callback echo 100 conns 16 B, routed", ECHO_16, BARE_CALLBACK, APP_50, 0.95),
    Row("callback echo 100 conns 1 KiB, routed", ECHO_1K, BARE_CALLBACK, APP_50, 0.95),
    Row("Endpoint echo vs iterator, 100 conns 16 B", ENDPOINT_16, BARE_ITERATOR, APP_50, 0.9),
    Row(
        f"GET {HEALTH_PATH}, {HTTP_CONNECTIONS} conns: vs uvicorn+Starlette",
        HTTP,
        STARLETTE,
        APP_50,
        None,
    ),
)


# ---- the HTTP case: wrk instead of the load client ----


def parse_wrk(output: str) -> dict:
    """Return the request rate, count and errors that ``wrk`` printed."""
    found: dict = {}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", output):
        found["rate"] = float(match.group(1))
    if match := re.search(r"(\d+) requests in ([\d.]+)(m?s)", output):
        found["count"] = int(match.group(1))
        found["seconds"] = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(match.group(1))
        found["non_2xx"] = int(match.group(1))
    if match := re.search(r"Socket errors: (.*)", output):
        found["socket_errors"] = match.group(1).strip()
        errors += sum(int(n) for n in re.findall(r"\d+", match.group(1)))
    found["errors"] = errors
    return found


def measure_http(bench: Bench, wrk: str, running: Running, warmup: int, seconds: int) -> dict:
    """Drive ``GET /healthz`` with wrk, pinned as the load client is; return a record.

    A ``warmup``-second wrk run comes first and is not counted (wrk counts whole
    seconds only). CPU is accounted as run.py's ``Bench.run_client`` does.
    """
    url = f"http://127.0.0.1:{running.port}{HEALTH_PATH}"
    command = [*bench.prefix, wrk, "-t1", f"-c{HTTP_CONNECTIONS}"]
    if warmup > 0:
        subprocess.run(
            [*command, f"-d{warmup}s", url], capture_output=True, check=False, timeout=60
        )
    busy0, kids0, server0, t0 = (
        system_busy(),
        children_cpu(),
        process_cpu(running.pid),
        time.monotonic(),
    )
    done = subprocess.run(
        [*command, f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    elapsed = time.monotonic() - t0
    server_cpu = process_cpu(running.pid) - server0 if running.alive() else 0.0
    client_cpu = children_cpu() - kids0
    other = system_busy() - busy0 - client_cpu - server_cpu
    record = {
        **parse_wrk(done.stdout),
        "exit": done.returncode,
        "stderr": done.stderr.strip()[-500:],
        "other_cores": round(max(other, 0.0) / elapsed, 3),
        "server_cpu_s": server_cpu,
        "server_cpu_pct": 100 * server_cpu / elapsed,
        "client_cpu_pct": 100 * client_cpu / elapsed,
    }
    if not record.get("rate") or not record.get("count"):
        record["failed"] = record["stderr"] or done.stdout.strip()[-300:] or "no result"
        return record
    record["value"] = record["rate"]
    record["cpu_us_per_op"] = 1e6 * server_cpu / record["count"]
    if record["errors"]:
        record["error_kinds"] = {
            "non_2xx": record.get("non_2xx", 0),
            "socket": record.get("socket_errors", ""),
        }
        record["first_error"] = f"wrk: {record['error_kinds']}"
    return record


def run_http(
    loop: str,
    group: Group,
    *,
    bench: Bench,
    wrk: str,
    rounds: int,
    warmup: int,
    seconds: int,
    prefix: list[str],
    workdir: Path,
    report: dict,
) -> tuple[dict, dict]:
    """run.py's ``run_loop`` for the wrk case: servers interleaved in rounds, each probed."""
    servers_ = list(group.servers)
    case = group.cases[0]
    per_round: dict = {s.name: [] for s in servers_}
    stderr: dict = {}
    pool: dict[str, Running] = {}
    try:
        for server in servers_:
            pool[server.name] = Running(server, loop, prefix, workdir)
            report["banners"][f"{loop} {server.name}"] = pool[server.name].banner
        for index in range(rounds):
            shift = index % len(servers_)
            for server in servers_[shift:] + servers_[:shift]:
                running = pool[server.name]
                if not running.alive():
                    per_round[server.name].append({"failed": "server died"})
                    continue
                probe = bench.probe()
                record = measure_http(bench, wrk, running, warmup, seconds)
                record["probe"] = probe
                per_round[server.name].append(record)
                shown = number(record["value"]) if "value" in record else record.get("failed")
                print(
                    f"  {loop:7} round {index + 1}  {server.name:24} {case.name:36} "
                    f"{shown} {case.unit}",
                    flush=True,
                )
                time.sleep(0.2)
    finally:
        for name, running in pool.items():
            stderr[name] = running.stop()
    fast = max(bench.probes, default=None)
    results = {name: {case.name: best_of(records, fast)} for name, records in per_round.items()}
    return results, stderr


# ---- the table ----


def compare(row: Row, results: dict) -> dict:
    """Return the figures of one row: values, ratio of best rounds, per-round ratios."""
    base = results.get(row.baseline.name, {}).get(row.case.name) or {}
    subject = results.get(row.subject.name, {}).get(row.case.name) or {}
    found: dict = {"label": row.label, "target": row.target}
    if base.get("value") and subject.get("value"):
        found["ratio"] = subject["value"] / base["value"]
        # Round i of both ran one right after the other: the paired ratios.
        paired = [
            s / b
            for s, b in zip(subject.get("rounds", []), base.get("rounds", []), strict=False)
            if s and b
        ]
        found["round_ratios"] = [round(r, 3) for r in paired]
        if base.get("cpu_us_per_op") and subject.get("cpu_us_per_op"):
            found["cpu_ratio"] = subject["cpu_us_per_op"] / base["cpu_us_per_op"]
        if row.target is not None:
            found["met"] = found["ratio"] >= row.target
            if len(paired) >= 2:
                found["paired_median"] = median(paired)
                found["paired_met"] = found["paired_median"] >= row.target
    return found


def table(loop: str, results: dict, rows: tuple[Row, ...]) -> tuple[str, list[dict]]:
    """Return the markdown table of one loop and its rows' figures."""
    out = [
        f"### {loop}\n\n",
        "| case | rapidws bare (or peer) | rapidws App | ratio | per-round ratios "
        "| server µs/op bare → App | target | met? |\n",
        "|---|---:|---:|---:|---:|---:|---:|:---:|\n",
    ]
    figures = []
    for row in rows:
        base = results.get(row.baseline.name, {}).get(row.case.name)
        subject = results.get(row.subject.name, {}).get(row.case.name)
        found = compare(row, results)
        figures.append(found)
        ratio = f"{found['ratio']:.2f}x" if "ratio" in found else "—"
        paired = ", ".join(f"{r:.2f}" for r in found.get("round_ratios", []))
        if len(found.get("round_ratios", [])) > 1:
            paired += f" (median {median(found['round_ratios']):.2f})"
        cpu = "—"
        if base and subject and base.get("cpu_us_per_op") and subject.get("cpu_us_per_op"):
            cpu = f"{base['cpu_us_per_op']:.1f} → {subject['cpu_us_per_op']:.1f}"
        target = f"≥ {row.target:.2f}x" if row.target is not None else "none"
        met = "—" if "met" not in found else ("yes" if found["met"] else "**no**")
        if found.get("paired_met", found.get("met")) != found.get("met"):
            met += " (paired: " + ("yes" if found["paired_met"] else "no") + ")"
        unit = row.case.unit
        base_text = cell(base, "value", None) if base else "—"
        if row.baseline is STARLETTE:
            base_text = f"{row.baseline.name}: {base_text}"
        out.append(
            f"| {row.label} ({unit}) | {base_text} | {cell(subject, 'value', None)} | {ratio} "
            f"| {paired or '—'} | {cpu} | {target} | {met} |\n"
        )
    return "".join(out), figures


# ---- main ----


def main() -> None:
    """Parse the command line, run every group on each loop, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s + 1.5 s per case")
    parser.add_argument("--loop", choices=["uvloop", "asyncio", "both"], default="uvloop")
    parser.add_argument("--duration", type=float, help="measured seconds per case, all rounds (6)")
    parser.add_argument("--rounds", type=int, help="rounds per case, best kept (5; quick: 1)")
    parser.add_argument("--only", help="comma-separated substrings of case names to run")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for other processes to stop using CPU",
    )
    parser.add_argument("--json", help="where to save the results (default: under /tmp)")
    args = parser.parse_args()

    warmup, duration = (0.5, 1.5) if args.quick else (0.5, 6.0)
    duration = args.duration or duration
    rounds = args.rounds or (1 if args.quick else 5)
    loops = ["uvloop", "asyncio"] if args.loop == "both" else [args.loop]
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "wrk not found: the GET /healthz case is skipped. Install it "
            "(Debian/Ubuntu: apt-get install -y wrk) to measure it.",
            flush=True,
        )
    wanted = [w.strip() for w in args.only.split(",")] if args.only else [""]
    groups = [
        Group(g.servers, cases)
        for g in GROUPS
        if (cases := tuple(c for c in g.cases if any(w in c.name for w in wanted)))
        and (wrk or cases[0].mode != "http")
    ]
    chosen = {c for g in groups for c in g.cases}
    rows = tuple(r for r in ROWS if r.case in chosen)
    http_seconds = max(1, round(duration / rounds))  # wrk counts whole seconds

    raise_nofile()
    installed = ensure_packages(PACKAGES)
    workdir = Path(tempfile.mkdtemp(prefix="rapidws-app-bench-"))
    client = build_client(workdir)
    server_prefix, client_prefix = pinning()
    bench = PathBench(
        client, client_prefix, server_prefix, warmup=warmup, duration=duration / rounds, hold=0.0
    )

    load = wait_quiet(args.wait_quiet)

    found_versions = versions(False)
    for name in ("starlette", "uvicorn", "httptools"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found_versions[name] = importlib.metadata.version(name)
    if wrk:
        found_versions["wrk"] = (
            subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
            .stdout.split(" [")[0]
            .removeprefix("wrk ")
        )
    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {
            "warmup_s": warmup,
            "duration_s": duration,
            "rounds": rounds,
            "http_seconds_per_round": http_seconds,
            "loops": loops,
            "quick": args.quick,
        },
        "machine": machine(),
        "versions": found_versions,
        "installed": installed,
        "other_cores_before": round(load, 3),
        "results": {},
        "rows": {},
        "banners": {},
        "stderr": {},
    }
    print(f"versions: {found_versions}", flush=True)
    started = time.monotonic()
    probe = Server("probe", (PY, str(PEERS / "raw_tcp_server.py")), raw=True)
    bench.probe_server = Running(probe, "uvloop", server_prefix, workdir)
    for _ in range(3):  # the machine's speed before the first case, for the 80% rule
        bench.probe()
    markdown, all_notes = [], []
    try:
        for loop in loops:
            results: dict = {}
            stderr: dict = {}
            for group in groups:
                if group.cases[0].mode == "http":
                    assert wrk is not None
                    found, errs = run_http(
                        loop,
                        group,
                        bench=bench,
                        wrk=wrk,
                        rounds=rounds,
                        warmup=1,
                        seconds=http_seconds,
                        prefix=server_prefix,
                        workdir=workdir,
                        report=report,
                    )
                else:
                    found, errs = run_loop(
                        loop,
                        all_servers=list(group.servers),
                        all_cases=list(group.cases),
                        bench=bench,
                        rounds=rounds,
                        prefix=server_prefix,
                        workdir=workdir,
                        report=report,
                        reuse={},
                    )
                for name, per_case in found.items():
                    results.setdefault(name, {}).update(per_case)
                for name, lines in errs.items():
                    stderr.setdefault(name, []).extend(lines)
            report["results"][loop] = results
            report["stderr"][loop] = stderr
            text, figures = table(loop, results, rows)
            report["rows"][loop] = figures
            markdown.append(text)
            all_notes += notes(loop, results, stderr)
    finally:
        bench.probe_server.stop()

    report["probes"] = [round(p) for p in bench.probes]
    probes = sorted(bench.probes)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["other_cores_after"] = round(other_load(), 3)
    other_max = max(
        (
            record.get("other_cores", 0)
            for per_loop in report["results"].values()
            for per_case in per_loop.values()
            for record in per_case.values()
        ),
        default=0,
    )
    probe_text = (
        f"min {probes[0]:,.0f}, median {probes[len(probes) // 2]:,.0f}, max {probes[-1]:,.0f} "
        f"msg/s over {len(probes)} probes"
        if probes
        else "none"
    )
    text = (
        f"## rapidws App vs bare engine, {report['started']}\n\n"
        f"{report['machine']['cpus']} cores ({report['machine']['cpu']}), kernel "
        f"{report['machine']['kernel']}; servers on core 0, load client / wrk on core 1; "
        f"{rounds} round(s) of {warmup:g} s warm-up + {duration / rounds:g} s per case "
        f"(wrk: 1 s + {http_seconds} s), servers interleaved, best round kept (among those "
        "whose probe reached 80% of the fastest). Other load: "
        f"{report['other_cores_before']:.2f} cores before, {report['other_cores_after']:.2f} "
        f"after, at most {other_max:.2f} during a measurement.\n"
        f"Versions: {', '.join(f'{k} {v}' for k, v in found_versions.items())}.\n"
        f"Machine speed probe (raw TCP echo, 100 conns, 16 B): {probe_text}.\n"
        "Ratio: App / baseline of the best rounds; per-round ratios: the two measured one "
        "right after the other in each round. `!` errors, `*` other processes used > 0.25 "
        "cores, `~` rounds differ by > 25%, `s` no round at full machine speed.\n\n"
        + "\n".join(markdown)
        + ("\nNotes:\n" + "".join(f"- {line}\n" for line in all_notes) if all_notes else "")
    )
    report["markdown"] = text
    print()
    print(text)
    path = (
        Path(args.json)
        if args.json
        else Path(tempfile.gettempdir())
        / f"rapidws-app-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.write_text(json.dumps(report, indent=1))
    path.with_suffix(".md").write_text(text)
    print(f"saved {path} and {path.with_suffix('.md')} ({report['seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
