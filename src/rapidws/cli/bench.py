"""``rapidws bench URL``: a load and latency tester for any WebSocket server.

``rapidws bench ws://host/ws -c 100 -d 30s`` runs the echo workload (closed
model) over 100 connections for 30 s; ``--workload rate --rate 100`` sends 100
messages per second per connection whatever the server does (open model) and
measures each latency from the message's intended send time, as wrk2 does
(corrected for coordinated omission). See :mod:`rapidws.cli.loadgen` for the
workloads. ``rapidws bench compare A.json B.json`` compares two ``--json``
reports.

A terminal gets a live display (rich); a pipe gets a line a second on
stderr. The summary goes to stdout. Exit statuses: 0, 1 when a ``--fail-if``
threshold is crossed or no connection opened, 2 for a usage error.

The request, TLS, proxy and compression flags are those of ``rapidws
connect`` (:mod:`rapidws.cli.options`), with compression off by default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from .options import ClientFlags, UsageError, add_client_options, client_options

if TYPE_CHECKING:
    from .loadgen import LoadConfig, ProcessResult, Snapshot
    from .report import Report

__all__ = ["add_bench_command", "parse_seconds", "preflight"]

_INSTALL_HINT = "rapidws bench needs hdrhistogram: pip install 'rapidws[cli]'"
# File descriptors a process needs besides its connections.
_SPARE_FDS = 64
_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_TW_REUSE = "/proc/sys/net/ipv4/tcp_tw_reuse"


def parse_seconds(text: str) -> float:
    """Parse a duration: ``10``, ``10s``, ``500ms``, ``2m``.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    number = text.rstrip("smh")
    unit = text[len(number) :] or "s"
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: e.g. 10s, 500ms, 2m"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: negative")
    return value


def _processes(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid process count {text!r}: N or auto") from None
    if count < 1:
        raise argparse.ArgumentTypeError("--processes must be at least 1")
    return count


def add_bench_command(commands: Any) -> None:
    """Add the ``bench`` command to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "bench",
        help="load and latency test of any WebSocket server",
        description=(
            "Load a WebSocket server and measure its latency and throughput. "
            "'rapidws bench compare A.json B.json' compares two --json reports."
        ),
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL (or 'compare')")
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    load = parser.add_argument_group("load")
    load.add_argument(
        "-w",
        "--workload",
        choices=["echo", "rate", "rpc", "push", "churn", "idle"],
        default="echo",
        help="echo: request/reply, closed model (default); rate: fixed rate, open model, "
        "latency corrected for coordinated omission; rpc: JSON requests matched by id; "
        "push: subscribers time stamped messages ({'ts': unix seconds}) of --publishers; "
        "churn: handshakes; idle: connections held",
    )
    load.add_argument("-c", "--connections", type=int, default=10, help="default: 10")
    load.add_argument(
        "-d", "--duration", type=parse_seconds, default=10.0, help="10s, 2m... (default: 10s)"
    )
    load.add_argument(
        "--warmup", type=parse_seconds, default=0.0, help="leave out the first seconds"
    )
    load.add_argument("-n", "--messages", type=int, help="stop after this many messages")
    load.add_argument("--size", type=int, default=16, help="message size (default: 16)")
    load.add_argument("--text", action="store_true", help="text messages (default: binary)")
    load.add_argument(
        "-r",
        "--rate",
        type=float,
        default=10.0,
        help="messages/s per connection (rate) or per publisher (push); default: 10",
    )
    load.add_argument("--poisson", action="store_true", help="Poisson arrivals, not constant")
    load.add_argument("--pipeline", type=int, default=1, help="rpc requests in flight")
    load.add_argument("--publishers", type=int, default=1, help="push publishers (default: 1)")
    load.add_argument("--ramp-up", type=float, metavar="CONN/S", help="new connections/s")
    load.add_argument(
        "--timeout",
        type=parse_seconds,
        default=10.0,
        help="for a handshake or a reply (default: 10s)",
    )
    load.add_argument(
        "--scenario",
        metavar="FILE.py[:FUNC]",
        help="run FUNC (default: scenario), an async function given each connection",
    )
    load.add_argument(
        "--processes", type=_processes, default=1, metavar="N|auto", help="default: 1"
    )
    load.add_argument(
        "--source", metavar="IP,IP", help="source addresses, taken in turn by connections"
    )
    load.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    # The request, TLS, proxy and compression flags of ``rapidws connect``.
    add_client_options(parser, compression=False)
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the report as JSON")
    out.add_argument("--csv", metavar="FILE", help="write the timeline as CSV")
    out.add_argument(
        "--plot", "--html", metavar="FILE", help="write an HTML report with latency over time"
    )
    out.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="COND",
        help="exit 1 when COND holds: 'p99>50ms', 'errors>0', 'rate<1000'",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``rapidws bench`` with parsed arguments; return the exit status."""
    try:
        from . import report  # noqa: PLC0415 - hdrhistogram is an extra
        from .loadgen import LoadConfig  # noqa: PLC0415
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return 2
    if args.url == "compare":
        return _compare(args.files)
    if args.files:
        print(f"rapidws bench: unexpected arguments: {' '.join(args.files)}", file=sys.stderr)
        return 2
    try:
        thresholds = [report.parse_threshold(text) for text in args.fail_if]
        config = LoadConfig(
            url=args.url,
            workload="scenario" if args.scenario else args.workload,
            connections=args.connections,
            duration=args.duration,
            warmup=args.warmup,
            messages=args.messages,
            size=args.size,
            text=args.text,
            rate=args.rate,
            poisson=args.poisson,
            pipeline=args.pipeline,
            publishers=args.publishers,
            ramp_up=args.ramp_up,
            timeout=args.timeout,
            client=ClientFlags.from_args(args),
            sources=args.source.split(",") if args.source else [],
            scenario=args.scenario,
        )
        _check(config)
        if config.scenario is not None:
            from .loadgen import load_scenario  # noqa: PLC0415

            load_scenario(config.scenario)  # fail now, not in every VU
    except (ValueError, UsageError) as exc:
        print(f"rapidws bench: {exc}", file=sys.stderr)
        return 2
    for warning in preflight(config, args.processes):
        print(f"rapidws bench: {warning}", file=sys.stderr)
    progress = Progress(sys.stdout, sys.stderr, args.processes, config.duration)
    try:
        with progress:
            results = _run_processes(config, args.processes, args.loop, progress.tick)
    except RuntimeError as exc:
        print(f"rapidws bench: {exc}", file=sys.stderr)
        return 1
    result = report.Report(config, results)
    print(result.summary())
    _write_outputs(result, args)
    status = 0
    # Not handshakes: those of the warm-up are dropped; peak_open is not.
    if result.peak_open == 0:
        print("rapidws bench: no connection opened", file=sys.stderr)
        status = 1
    metrics = result.metrics()
    for threshold in thresholds:
        if threshold.crossed(metrics):
            print(f"rapidws bench: threshold crossed: {threshold.text}", file=sys.stderr)
            status = 1
    return status


def _check(config: LoadConfig) -> None:
    # Usage errors, before anything starts.
    from ..core.uri import parse_uri  # noqa: PLC0415
    from ..exceptions import InvalidURI  # noqa: PLC0415

    try:
        parse_uri(config.url)
    except InvalidURI as exc:
        raise ValueError(str(exc)) from None
    for name in ("connections", "size", "rate", "pipeline"):
        if getattr(config, name) <= 0 and not (name == "size" and config.size == 0):
            raise ValueError(f"--{name} must be positive")
    if config.duration <= 0:
        raise ValueError("--duration must be positive")
    # Invalid headers, TLS files or cookie jar (the result is built again in
    # each process: an SSL context does not pickle).
    client_options(config.client, config.url)
    if config.sources and config.client.proxy is not None:
        raise ValueError("--source and --proxy exclude each other")


def _write_outputs(result: Report, args: argparse.Namespace) -> None:
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(result.to_json(), file, indent=1)
    if args.csv:
        result.write_csv(args.csv)
    if args.plot:
        result.write_html(args.plot)


def _compare(files: list[str]) -> int:
    from .report import compare, load_report  # noqa: PLC0415

    if len(files) != 2:
        print("usage: rapidws bench compare A.json B.json", file=sys.stderr)
        return 2
    try:
        first, second = load_report(files[0]), load_report(files[1])
    except (OSError, ValueError) as exc:
        print(f"rapidws bench compare: {exc}", file=sys.stderr)
        return 2
    print(compare(first, second))
    return 0


def preflight(config: LoadConfig, processes: int) -> list[str]:
    """Check the limits that the connections need; return warnings with their fixes.

    The open-files limit is raised up to the hard limit when that suffices.
    """
    warnings = []
    per_process = -(-config.connections // processes) + config.publishers + _SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < per_process:
        if hard == resource.RLIM_INFINITY or hard >= per_process:
            resource.setrlimit(resource.RLIMIT_NOFILE, (per_process, hard))
        else:
            warnings.append(
                f"{per_process} open files are needed per process and the hard limit is "
                f"{hard}: run 'ulimit -n {per_process}' as root, or set '* hard nofile "
                f"{per_process}' in /etc/security/limits.conf"
            )
    with contextlib.suppress(OSError, ValueError):
        with open(_PORT_RANGE) as file:
            low, high = (int(word) for word in file.read().split())
        ports = high - low + 1
        per_source = -(-config.connections // max(1, len(config.sources)))
        if per_source > ports:
            warnings.append(
                f"{per_source} connections per source address and {ports} ephemeral ports "
                f"({low}-{high}): run 'sudo sysctl -w net.ipv4.ip_local_port_range=\"1024 "
                "65535\"' or spread them with --source 127.0.0.2,127.0.0.3,..."
            )
    if config.workload == "churn":
        with contextlib.suppress(OSError, ValueError), open(_TW_REUSE) as file:
            if int(file.read()) == 0:
                warnings.append(
                    "closed connections hold their ports in TIME_WAIT for 60 s: run "
                    "'sudo sysctl -w net.ipv4.tcp_tw_reuse=1'"
                )
    return warnings


def _event_loop(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: PLC0415 - an extra
        except ImportError:
            if name == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def _run_loop(loop_name: str, coroutine: Coroutine[Any, Any, ProcessResult]) -> ProcessResult:
    loop = _event_loop(loop_name)()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        # As asyncio.run() does (its loop_factory needs Python 3.12): the
        # tasks left (the pool of --http2 connections) end before the loop.
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _worker(config: LoadConfig, loop_name: str, channel: Any) -> None:
    # A worker process: its share of the run, its snapshots and its result
    # sent to the parent.
    from .loadgen import generate  # noqa: PLC0415

    try:
        result = _run_loop(loop_name, generate(config, lambda s: channel.put(("tick", s))))
    except Exception as exc:
        channel.put(("error", f"{type(exc).__name__}: {exc}"))
    else:
        channel.put(("done", result))


def _run_processes(
    config: LoadConfig, processes: int, loop_name: str, on_tick: Callable[[Snapshot], None]
) -> list[ProcessResult]:
    """Run the load in this process, or split over worker processes.

    Raises:
        RuntimeError: when a process failed (a name that does not resolve).
    """
    import dataclasses  # noqa: PLC0415

    from .loadgen import generate  # noqa: PLC0415

    shares = [
        dataclasses.replace(
            config,
            connections=config.connections // processes + (i < config.connections % processes),
            messages=None
            if config.messages is None
            else config.messages // processes + (i < config.messages % processes),
            ramp_up=None if config.ramp_up is None else config.ramp_up / processes,
            publishers=config.publishers // processes + (i < config.publishers % processes),
            process=i,
        )
        for i in range(processes)
    ]
    if processes == 1:
        try:
            return [_run_loop(loop_name, generate(config, on_tick))]
        except OSError as exc:
            raise RuntimeError(str(exc)) from None
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    workers = [
        context.Process(target=_worker, args=(share, loop_name, channel), daemon=True)
        for share in shares
    ]
    for worker in workers:
        worker.start()
    results: list[ProcessResult] = []
    failure = None
    deadline = time.monotonic() + config.duration + config.timeout + 30
    try:
        while len(results) < processes and failure is None:
            try:
                kind, value = channel.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                failure = "the worker processes did not finish"
                break
            if kind == "tick":
                on_tick(value)
            elif kind == "done":
                results.append(value)
            else:
                failure = value
    finally:
        for worker in workers:
            if failure is not None:
                worker.terminate()
            worker.join(5)
    if failure is not None:
        raise RuntimeError(failure)
    return results


class Progress:
    """The live display: rich on a terminal, a line a second on ``log`` otherwise."""

    def __init__(self, stdout: TextIO, log: TextIO, processes: int, duration: float) -> None:
        self.stdout = stdout
        self.log = log
        self.processes = processes
        self.duration = duration
        self.pending: dict[int, list[Snapshot]] = {}
        self.previous: dict[str, Any] | None = None
        self.live: Any = None

    def __enter__(self) -> Progress:
        if self.stdout.isatty():
            try:
                from rich.console import Console  # noqa: PLC0415 - an extra
                from rich.live import Live  # noqa: PLC0415
            except ImportError:
                return self
            console = Console(file=self.stdout)
            self.live = Live("starting...", console=console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc_info)

    def tick(self, snapshot: Snapshot) -> None:
        """Take one process's snapshot; show the second once every process sent it."""
        from .report import format_duration, timeline_row  # noqa: PLC0415

        snapshots = self.pending.setdefault(snapshot.second, [])
        snapshots.append(snapshot)
        if len(snapshots) < self.processes:
            return
        del self.pending[snapshot.second]
        row = timeline_row(snapshots, self.previous)
        self.previous = row
        left = max(0.0, self.duration - row["second"])
        line = (
            f"{row['second']:>4} s  {row['received']:>9,} replies/s  p50 "
            f"{format_duration(row['p50']):>8}  p99 {format_duration(row['p99']):>8}  "
            f"errors {row['errors']:,}  open {row['open']:,}  cpu {row['cpu']:.0%}  "
            f"{left:.0f} s left"
        )
        if self.live is not None:
            self.live.update(line)
        else:
            print(line, file=self.log, flush=True)
