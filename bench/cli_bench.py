"""``rapidws bench`` as a load generator, beside bench/loadclient.c (C) and Artillery.

    python bench/cli_bench.py [--quick] [--rounds N] [--duration S] [--warmup S]
                              [--rates R,R] [--no-artillery] [--wait-quiet S] [--json PATH]

Issue 15 asks that ``rapidws bench`` not be the bottleneck: against the same
rapidws echo server (bench/server.py, callback API, uvloop), pinned to core 0,
with each load generator pinned to core 1:

- **echo**, closed model, 100 connections, 16-byte messages: messages/s of
  ``rapidws bench --processes 1`` must be >= 50% of the C load client's and
  >= 3x Artillery's (its WebSocket engine);
- **fixed rate**, open model, 100 connections at each of ``--rates`` messages/s
  per connection, 32-byte messages: the latency percentiles of ``rapidws
  bench -w rate`` (corrected for coordinated omission) must agree with those of
  ``loadclient -m rate`` within 10%.

The fixed-rate cases also run bench/python_rate_floor.py, the least a message
can cost a Python generator: where it misses the band, so would any.

The generators run one after the other in rounds (the order rotates each
round); each cell keeps the median of its rounds, and a round during which
other processes used more than a quarter of a core is flagged. Artillery is
``npm install``-ed into /tmp/rapidws-bench-artillery when missing (not in CI).
See bench/README.md ("Load generators") for how each one is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from run import (
    BENCH,
    Running,
    Server,
    build_client,
    children_cpu,
    client_result,
    ensure_packages,
    machine,
    number,
    other_load,
    pinning,
    process_cpu,
    raise_nofile,
    system_busy,
    versions,
    wait_quiet,
)

ARTILLERY_DIR = Path(tempfile.gettempdir()) / "rapidws-bench-artillery"
ARTILLERY = ARTILLERY_DIR / "node_modules" / ".bin" / "artillery"
CONNECTIONS = 100
ECHO_SIZE = 16
RATE_SIZE = 32  # room for either generator's stamp (16 and 24 bytes)
PERCENTILES = ("p50", "p90", "p99")
NOISY = 0.25  # cores used by other processes during a measurement
# bench/python_rate_floor.py: no generator, the least a message costs in Python.
PYTHON_FLOOR = "Python floor"
SERVER = Server("rapidws callback", (sys.executable, str(BENCH / "server.py"), "--api", "callback"))

# Artillery's echo: a JSON text of 16 bytes, its echo matched on a field. The
# loop's whileTrue hook counts the replies in a window of Artillery's own
# clock (as the other generators do after their warm-up) and ends the loop.
ARTILLERY_SCRIPT = """\
config:
  target: "ws://127.0.0.1:{port}/"
  processor: "./processor.js"
  phases:
    - duration: 1
      arrivalCount: {connections}
scenarios:
  - engine: ws
    flow:
      - loop:
          - send:
              payload: '{{"m":"abcdefgh"}}'
              match:
                json: "$.m"
                value: "abcdefgh"
        whileTrue: counted
"""
ARTILLERY_PROCESSOR = """\
'use strict';
// Counts the echoes between start and end (ms after the first one), then ends every loop.
const fs = require('fs');
const { threadId } = require('worker_threads');
const startAfter = Number(process.env.CLI_BENCH_START_MS);
const endAfter = Number(process.env.CLI_BENCH_END_MS);
let first = 0, counted = 0, written = false;
function counted_(context, next) {
  const t = Date.now();
  if (!first) first = t;
  if (t < first + startAfter) return next(true);
  if (t < first + endAfter) {
    counted++;
    return next(true);
  }
  if (!written) {
    written = true;
    const result = { count: counted, seconds: (endAfter - startAfter) / 1000 };
    const path = `${process.env.CLI_BENCH_OUT}.${process.pid}.${threadId}`;
    fs.writeFileSync(path, JSON.stringify(result));
  }
  return next(false);
}
module.exports = { counted: counted_ };
"""


def ensure_artillery() -> tuple[bool, str]:
    """Install Artillery into ARTILLERY_DIR when it is missing; return (usable, note)."""
    if ARTILLERY.exists():
        return True, f"artillery from {ARTILLERY_DIR}"
    if not shutil.which("node") or not shutil.which("npm"):
        return False, "artillery skipped: node or npm not found"
    ARTILLERY_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing artillery into {ARTILLERY_DIR} with npm", flush=True)
    # Artillery depends on Playwright (for its browser engine): no browser download.
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    command = ["npm", "install", "--no-save", "--no-audit", "--no-fund"]
    try:
        subprocess.run(
            [*command, "--prefix", str(ARTILLERY_DIR), "artillery"],
            check=True,
            timeout=900,
            capture_output=True,
            env=env,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return False, f"artillery skipped: npm install artillery failed ({exc})"
    return ARTILLERY.exists(), f"artillery installed into {ARTILLERY_DIR}"


def artillery_version() -> str:
    """Return the installed Artillery's version."""
    package = ARTILLERY_DIR / "node_modules" / "artillery" / "package.json"
    return str(json.loads(package.read_text())["version"])


@dataclass(frozen=True)
class Generators:
    """Runs each load generator pinned (``prefix``) against one server."""

    loadclient: Path
    prefix: list[str]
    workdir: Path
    warmup: float
    duration: float

    def timed(self, command: list[str], server: Running, env: dict | None = None) -> dict:
        """Run ``command`` pinned; return its output and the CPU use of everyone meanwhile."""
        busy0, kids0, server0 = system_busy(), children_cpu(), process_cpu(server.pid)
        t0 = time.monotonic()
        done = subprocess.run(
            [*self.prefix, *command],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=self.warmup + self.duration + 120,
        )
        elapsed = time.monotonic() - t0
        client = children_cpu() - kids0
        served = process_cpu(server.pid) - server0
        other = system_busy() - busy0 - client - served
        return {
            "exit": done.returncode,
            "stdout": done.stdout,
            "stderr": done.stderr.strip()[-500:],
            "client_cpu_pct": round(100 * client / elapsed, 1),
            "server_cpu_pct": round(100 * served / elapsed, 1),
            "other_cores": round(max(other, 0.0) / elapsed, 3),
        }

    def c_client(self, server: Running, mode: str, rate: float | None = None) -> dict:
        """bench/loadclient.c: echo, or fixed rate with ``rate`` msg/s per connection."""
        size = ECHO_SIZE if rate is None else RATE_SIZE
        args = ["-m", mode, "-c", str(CONNECTIONS), "-s", str(size), "-P", str(server.port)]
        args += ["-w", str(self.warmup), "-d", str(self.duration), "-p", str(server.pid)]
        if rate is not None:
            args += ["-r", str(rate)]
        return self.result(self.timed([str(self.loadclient), *args], server), rate)

    def python_floor(self, server: Running, rate: float) -> dict:
        """bench/python_rate_floor.py: the least Python per message, at ``rate`` msg/s per conn."""
        args = ["-P", str(server.port), "-c", str(CONNECTIONS), "-r", str(rate)]
        args += ["-s", str(RATE_SIZE), "-w", str(self.warmup), "-d", str(self.duration)]
        command = [sys.executable, str(BENCH / "python_rate_floor.py"), *args]
        return self.result(self.timed(command, server), rate)

    @staticmethod
    def result(record: dict, rate: float | None) -> dict:
        """Fill ``record`` from the ``result {json}`` line of loadclient's output format."""
        result = client_result(record.pop("stdout"))
        if result is None:
            return {**record, "failed": record["stderr"] or "no result"}
        record.update(rate=result["rate"], errors=result["errors"], count=result["count"])
        # Milliseconds, as rapidws bench reports them.
        for key in (*PERCENTILES, "p999", "max"):
            record[key] = result[f"{key}_us"] / 1e3
        if rate is not None:
            record["late_p99"] = result["late_p99_us"] / 1e3
        return record

    def rapidws_bench(self, server: Running, rate: float | None = None) -> dict:
        """Run ``rapidws bench --processes 1``: echo, or ``-w rate`` at ``rate`` msg/s per conn."""
        report = self.workdir / "rapidws-bench.json"
        report.unlink(missing_ok=True)
        command = [sys.executable, "-m", "rapidws", "bench", f"ws://127.0.0.1:{server.port}/"]
        command += ["-c", str(CONNECTIONS), "--processes", "1", "--loop", "uvloop"]
        command += ["--warmup", f"{self.warmup}s", "-d", f"{self.warmup + self.duration}s"]
        command += ["--json", str(report)]
        if rate is None:
            command += ["--size", str(ECHO_SIZE)]
        else:
            command += ["-w", "rate", "-r", str(rate), "--size", str(RATE_SIZE)]
        record = self.timed(command, server)
        del record["stdout"]
        if not report.exists():
            return {**record, "failed": record["stderr"] or "no report"}
        found = json.loads(report.read_text())
        latency = found["latency_ms"].get("latency", {})
        record.update(
            rate=found["rate"],
            count=found["received"],
            errors=sum(found["errors"].values()),
            generator_cpu=found["generator"]["cpu"],
            loop_lag_p99=found["generator"]["loop_lag_p99_ms"],
            p999=latency.get("p99.9"),
            max=latency.get("max"),
            **{key: latency.get(key) for key in PERCENTILES},
        )
        if rate is not None:
            uncorrected = found["latency_ms"].get("uncorrected", {})
            record["uncorrected"] = {key: uncorrected.get(key) for key in PERCENTILES}
            record["late_p99"] = found["latency_ms"].get("send_lag", {}).get("p99")
        return record

    def artillery(self, server: Running) -> dict:
        """Artillery's WebSocket engine: echo in a loop on each of 100 virtual users."""
        directory = self.workdir / "artillery"
        directory.mkdir(exist_ok=True)
        script = directory / "script.yml"
        script.write_text(ARTILLERY_SCRIPT.format(port=server.port, connections=CONNECTIONS))
        (directory / "processor.js").write_text(ARTILLERY_PROCESSOR)
        out = directory / "count"
        for old in directory.glob("count.*"):
            old.unlink()
        # The window starts after the 1 s arrival phase and the warm-up.
        start = 1000 * (1 + self.warmup)
        env = {
            **os.environ,
            "CLI_BENCH_START_MS": str(round(start)),
            "CLI_BENCH_END_MS": str(round(start + 1000 * self.duration)),
            "CLI_BENCH_OUT": str(out),
            "ARTILLERY_DISABLE_TELEMETRY": "true",  # no request to its telemetry service
        }
        summary = directory / "report.json"
        command = [str(ARTILLERY), "run", "--quiet", "--output", str(summary), str(script)]
        record = self.timed(command, server, env)
        del record["stdout"]
        counts = [json.loads(path.read_text()) for path in directory.glob("count.*")]
        if not counts:
            return {**record, "failed": record["stderr"] or "no count"}
        count = sum(c["count"] for c in counts)
        record.update(count=count, rate=count / counts[0]["seconds"], workers=len(counts))
        if summary.exists():
            aggregate = json.loads(summary.read_text()).get("aggregate", {})
            counters = aggregate.get("counters", {})
            record["errors"] = sum(v for k, v in counters.items() if k.startswith("errors."))
            record["artillery_received"] = counters.get("websocket.messages_received")
            record["artillery_receive_rate"] = aggregate.get("rates", {}).get(
                "websocket.receive_rate"
            )
        return record


def summarize(records: list[dict]) -> dict:
    """Return the median of the rounds for every figure, the rounds, and their noise."""
    usable = [r for r in records if not r.get("failed")]
    found: dict = {"rounds": records}
    if not usable:
        found["failed"] = records[-1].get("failed") if records else "not run"
        return found
    for key in ("rate", *PERCENTILES, "p999", "max", "late_p99", "client_cpu_pct"):
        values = [r[key] for r in usable if r.get(key) is not None]
        if values:
            found[key] = median(values)
    uncorrected = [r["uncorrected"] for r in usable if r.get("uncorrected")]
    if uncorrected:
        found["uncorrected"] = {k: median(u[k] for u in uncorrected) for k in PERCENTILES}
    rates = [r["rate"] for r in usable if r.get("rate")]
    found["spread"] = max(rates) / min(rates) if rates and min(rates) > 0 else None
    found["noisy_rounds"] = sum(r.get("other_cores", 0) > NOISY for r in records)
    found["errors"] = sum(r.get("errors") or 0 for r in records)
    found["server_cpu_pct"] = median(r["server_cpu_pct"] for r in usable)
    return found


def flags(found: dict) -> str:
    """Return the marks: `!` errors, `*` rounds with other load, `~` rounds > 25% apart."""
    text = " !" if found.get("errors") else ""
    text += " *" if found.get("noisy_rounds") else ""
    return text + (" ~" if (found.get("spread") or 1) > 1.25 else "")


def relative(value: float | None, reference: float | None) -> str:
    """Return the signed relative difference in percent, or a dash."""
    if value is None or not reference:
        return "—"
    return f"{100 * (value - reference) / reference:+.0f}%"


def echo_table(echo: dict) -> tuple[str, dict]:
    """Return the echo table (messages/s of each generator, the two target ratios), figures."""
    c, ours, art = echo.get("C"), echo.get("rapidws bench"), echo.get("artillery")
    figures: dict = {}
    rows = ["| generator | msg/s (median) | generator CPU % | server CPU % | rounds |"]
    rows.append("|---|---:|---:|---:|---|")
    for name, found in echo.items():
        if found.get("failed"):
            rows.append(f"| {name} | failed: {found['failed'][:80]} | | | |")
            continue
        rounds = ", ".join(number(r["rate"]) for r in found["rounds"] if r.get("rate"))
        rows.append(
            f"| {name} | {number(found['rate'])}{flags(found)} | {found['client_cpu_pct']:.0f} "
            f"| {found['server_cpu_pct']:.0f} | {rounds} |"
        )
    lines = ["\n".join(rows), ""]
    if ours and c and ours.get("rate") and c.get("rate"):
        figures["vs_c"] = ours["rate"] / c["rate"]
        met = "met" if figures["vs_c"] >= 0.5 else "**not met**"
        lines.append(f"rapidws bench / C: {figures['vs_c']:.2f}x (target ≥ 0.50x: {met})")
    if ours and art and ours.get("rate") and art.get("rate"):
        figures["vs_artillery"] = ours["rate"] / art["rate"]
        met = "met" if figures["vs_artillery"] >= 3 else "**not met**"
        lines.append(
            f"rapidws bench / Artillery: {figures['vs_artillery']:.2f}x (target ≥ 3x: {met})"
        )
    return "\n".join(lines) + "\n", figures


def rotated(names: list[str], index: int) -> list[str]:
    """Return ``names`` in round ``index``'s order: each round starts one further on."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


def versus(found: dict, c: dict) -> tuple[dict[str, str], bool]:
    """Return a generator's percentiles relative to the C client's; whether all are within 10%."""
    diffs = {k: relative(found.get(k), c.get(k)) for k in PERCENTILES}
    within = all(
        abs(found[k] - c[k]) <= 0.1 * c[k] for k in PERCENTILES if c.get(k) and found.get(k)
    )
    return diffs, within


def rate_table(rates: dict) -> tuple[str, dict]:
    """Return the fixed-rate table (percentiles, their relative differences) and figures."""
    rows = [
        "| rate | generator | msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | sender late p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    figures: dict = {}
    for label, pair in rates.items():
        c, ours = pair.get("C", {}), pair.get("rapidws bench", {})
        for name, found in pair.items():
            if found.get("failed"):
                rows.append(f"| {label} | {name} | failed: {found['failed'][:80]} | | | | | |")
                continue
            cells = [f"{found.get(k, 0):.3f}" for k in (*PERCENTILES, "p999", "late_p99")]
            rows.append(
                f"| {label} | {name} | {number(found['rate'])}{flags(found)} | "
                + " | ".join(cells)
                + " |"
            )
        if c.get("rate") and ours.get("rate"):
            diffs, within = versus(ours, c)
            raw = {k: relative(ours.get("uncorrected", {}).get(k), c.get(k)) for k in PERCENTILES}
            figures[label] = {"corrected": diffs, "uncorrected": raw, "within_10pct": within}
            rows.append(
                f"| {label} | rapidws vs C | | "
                + " | ".join(diffs.values())
                + f" | | {'within 10%' if within else '**not within 10%**'} |"
            )
            rows.append(
                f"| {label} | (rapidws uncorrected vs C) | | " + " | ".join(raw.values()) + " | | |"
            )
        floor = pair.get(PYTHON_FLOOR, {})
        if c.get("rate") and floor.get("rate"):
            diffs, within = versus(floor, c)
            figures.setdefault(label, {})["floor_within_10pct"] = within
            rows.append(
                f"| {label} | {PYTHON_FLOOR} vs C | | "
                + " | ".join(diffs.values())
                + f" | | {'within 10%' if within else 'not within 10%'} |"
            )
    return "\n".join(rows) + "\n", figures


def main() -> None:
    """Parse the command line, run the rounds, print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s + 2 s")
    parser.add_argument("--rounds", type=int, help="rounds per cell, median kept (3; quick: 1)")
    parser.add_argument("--warmup", type=float, help="seconds left out first (1; quick: 0.5)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (4; quick: 2)")
    parser.add_argument(
        "--rates", default="50,200", help="msg/s per connection of the fixed-rate cases"
    )
    parser.add_argument("--no-artillery", action="store_true", help="leave Artillery out")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S")
    parser.add_argument("--json", help="where to save the results (default: under /tmp)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else 0.5 if args.quick else 1.0
    duration = args.duration or (2.0 if args.quick else 4.0)
    rates = [float(r) for r in args.rates.split(",")]

    raise_nofile()
    ensure_packages({"uvloop": "uvloop", "hdrh": "hdrhistogram"})
    artillery, artillery_note = (False, "left out") if args.no_artillery else ensure_artillery()
    print(artillery_note, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="rapidws-cli-bench-"))
    server_prefix, client_prefix = pinning()
    generators = Generators(build_client(workdir), client_prefix, workdir, warmup, duration)
    load_before = wait_quiet(args.wait_quiet)
    found_versions = versions(False)
    if artillery:
        found_versions["artillery"] = artillery_version()
        found_versions["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    echo_runs: dict[str, object] = {"C": lambda s: generators.c_client(s, "echo")}
    echo_runs["rapidws bench"] = generators.rapidws_bench
    if artillery:
        echo_runs["artillery"] = generators.artillery
    per_echo: dict[str, list[dict]] = {name: [] for name in echo_runs}
    rate_runs: dict[str, object] = {
        "C": lambda s, r: generators.c_client(s, "rate", r),
        "rapidws bench": generators.rapidws_bench,
        PYTHON_FLOOR: generators.python_floor,
    }
    per_rate: dict[str, dict[str, list[dict]]] = {
        f"{CONNECTIONS} x {r:g}/s": {name: [] for name in rate_runs} for r in rates
    }
    started = time.monotonic()
    server = Running(SERVER, "uvloop", server_prefix, workdir)
    try:
        for index in range(rounds):
            for name in rotated(list(echo_runs), index):
                record = echo_runs[name](server)  # type: ignore[operator]
                per_echo[name].append(record)
                shown = number(record["rate"]) if record.get("rate") else record.get("failed")
                print(f"  round {index + 1}  echo  {name:14} {shown} msg/s", flush=True)
            for rate, (label, pair) in zip(rates, per_rate.items(), strict=True):
                for name in rotated(list(pair), index):
                    record = rate_runs[name](server, rate)  # type: ignore[operator]
                    pair[name].append(record)
                    shown = (
                        f"p50 {record['p50']:.3f} ms p99 {record['p99']:.3f} ms"
                        if record.get("p50") is not None
                        else record.get("failed")
                    )
                    print(f"  round {index + 1}  {label}  {name:14} {shown}", flush=True)
            if not server.alive():
                raise RuntimeError("the server died: see its log in " + str(workdir))
    finally:
        server_log = server.stop()

    echo = {name: summarize(records) for name, records in per_echo.items()}
    rate_found = {
        label: {name: summarize(records) for name, records in pair.items()}
        for label, pair in per_rate.items()
    }
    echo_text, echo_figures = echo_table(echo)
    rate_text, rate_figures = rate_table(rate_found)
    load_after = other_load()
    text = textwrap.dedent(f"""\
        ## rapidws bench vs C load client vs Artillery, {time.strftime("%Y-%m-%d %H:%M:%S")}

        {machine()["cpus"]} cores; server bench/server.py (callback, uvloop) on core 0, each
        generator on core 1; {rounds} round(s) of {warmup:g} s warm-up + {duration:g} s, median
        kept. Other load: {load_before:.2f} cores before, {load_after:.2f} after. `!` errors,
        `*` some round had other processes using > {NOISY} cores, `~` rounds > 25% apart.
        Versions: {", ".join(f"{k} {v}" for k, v in found_versions.items())}.

        ### Echo, {CONNECTIONS} connections, {ECHO_SIZE} B, closed model

        """)
    text += echo_text
    text += (
        f"\n### Fixed rate, {CONNECTIONS} connections, {RATE_SIZE} B, latency from the "
        "intended send time\n\n" + rate_text
    )
    print()
    print(text)
    report = {
        "settings": {"rounds": rounds, "warmup_s": warmup, "duration_s": duration},
        "machine": machine(),
        "versions": found_versions,
        "other_cores_before": load_before,
        "other_cores_after": load_after,
        "echo": echo,
        "rate": rate_found,
        "figures": {"echo": echo_figures, "rate": rate_figures},
        "server_log": server_log[-20:],
        "seconds": round(time.monotonic() - started, 1),
        "markdown": text,
    }
    default = f"rapidws-cli-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path = Path(args.json or Path(tempfile.gettempdir()) / default)
    markdown = path.with_suffix(".md")
    for target, content in ((path, json.dumps(report, indent=1)), (markdown, text)):
        target.write_text(content)
    print(f"saved {path} and {markdown} ({report['seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
