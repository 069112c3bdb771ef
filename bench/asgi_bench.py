"""rapidws.asgi under uvicorn against uvicorn's own WebSocket backends, as ratios, in one run.

    python bench/asgi_bench.py [--quick] [--rounds N] [--duration S] [--json PATH]

The same Starlette echo endpoint (conformance/asgi_app.py's ``app``: each
``websocket.receive`` sent back as it came) under uvicorn with ``--ws
websockets-sansio``, ``websockets``, ``wsproto`` and
``rapidws.asgi:UvicornProtocol``, all on uvloop with httptools, each server one
process pinned to core 0, the load client (bench/loadclient.c) on core 1. The
bare rapidws iterator echo (bench/server.py, no ASGI) is the reference of
what the ASGI layer costs. bench/run.py's machinery runs it (imported, not
copied): load client build, rounds with the servers interleaved, the
machine-speed probe before each measurement, the best round kept.

Cases: echo 16 B over 1 and 100 connections, handshakes (50 concurrent),
echo 1 MiB over 1 connection, memory per idle connection (5,000; 1,000 with
``--quick``). Targets (issue 16): rapidws at least 1.5x the fastest uvicorn
backend on the 100-connection echo and on handshakes, and the least memory per
idle connection.

``--serve WS --port P --loop L`` is the server side (what the harness starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from run import (
    BENCH,
    MIB,
    PEERS,
    Bench,
    Case,
    Running,
    Server,
    build_client,
    ensure_packages,
    machine,
    notes,
    number,
    other_load,
    pinning,
    raise_nofile,
    run_loop,
    versions,
)

PY = sys.executable
PACKAGES = {
    "uvloop": "uvloop",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "websockets": "websockets",
    "wsproto": "wsproto",
}
# uvicorn's --ws names, and rapidws's class by its import string.
BACKENDS = {
    "uvicorn websockets-sansio": "websockets-sansio",
    "uvicorn websockets": "websockets",
    "uvicorn wsproto": "wsproto",
    "uvicorn rapidws": "rapidws.asgi:UvicornProtocol",
}
RAPIDWS = "uvicorn rapidws"
BARE = "rapidws bare iterator"
LOOP = "uvloop"


def all_servers() -> list[Server]:
    """Return the uvicorn backends, then the bare rapidws iterator echo."""
    found = [
        Server(name, (PY, str(BENCH / "asgi_bench.py"), "--serve", ws))
        for name, ws in BACKENDS.items()
    ]
    found.append(Server(BARE, (PY, str(BENCH / "server.py"), "--api", "iterator")))
    return found


def all_cases(idle: int) -> list[Case]:
    """Return the cases of issue 16, in the order of the table's rows."""
    return [
        Case("echo 1 conn 16 B", "echo", 1, 16),
        Case("echo 100 conns 16 B", "echo", 100, 16),
        Case("handshakes 50 concurrent", "handshake", 50, unit="hs/s"),
        Case("echo 1 conn 1 MiB", "echo", 1, MIB),
        Case(f"idle memory, {idle} conns", "idle", idle, unit="KiB/conn"),
    ]


# ---- the server side ----


async def serve(ws: str, port: int) -> None:
    """Serve the Autobahn echo app under uvicorn with ``ws``; print the ready line."""
    import starlette  # noqa: PLC0415 - the server process only
    import uvicorn  # noqa: PLC0415

    sys.path.insert(0, str(BENCH.parent / "conformance"))
    from asgi_app import app  # noqa: PLC0415

    config = uvicorn.Config(
        app,
        http="httptools",
        ws=ws,
        # What the load client sends: 1 MiB messages, no compression offered;
        # keepalive at uvicorn's default, for every backend alike.
        ws_max_size=16 * MIB,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    # Listening before uvicorn starts: what connects early waits in the
    # backlog (4,096: 100 handshakes at a time for the idle case).
    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    print(
        f"ready pid={os.getpid()} uvicorn={uvicorn.__version__} "
        f"starlette={starlette.__version__} ws={ws}",
        flush=True,
    )
    await uvicorn.Server(config).serve(sockets=[sock])


def run_server(ws: str, port: int, loop: str) -> None:
    """Run :func:`serve` on ``loop`` until uvicorn's signal handlers stop it."""
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.run(serve(ws, port))
    else:
        asyncio.run(serve(ws, port))


# ---- the table ----


def ratio(results: dict, case: Case, name: str, other: str) -> str:
    """``name``'s value over ``other``'s, for ``case``; memory: lower is better."""
    a = results.get(name, {}).get(case.name, {}).get("value")
    b = results.get(other, {}).get(case.name, {}).get("value")
    if not a or not b:
        return "—"
    return f"{a / b:.2f}x"


def fastest_backend(results: dict, case: Case) -> str | None:
    """Return the best uvicorn backend but rapidws on ``case`` (rate: highest; memory: least)."""
    found = [
        (record["value"], name)
        for name in BACKENDS
        if name != RAPIDWS
        and (record := results.get(name, {}).get(case.name))
        and record.get("value") is not None
    ]
    if not found:
        return None
    return (max(found) if case.higher_is_better else min(found))[1]


def table(results: dict, cases_: list[Case]) -> str:
    """Return the markdown table: each server's figure, rapidws vs the best backend and bare."""
    names = [*BACKENDS, BARE]
    out = [
        "| case | " + " | ".join(names) + " | rapidws / best uvicorn backend | "
        "rapidws / bare iterator |\n",
        "|---|" + "---:|" * (len(names) + 2) + "\n",
    ]
    for case in cases_:
        cells = []
        for name in names:
            record = results.get(name, {}).get(case.name) or {}
            value = record.get("value")
            text = number(value) if value is not None else "failed"
            if record.get("errors"):
                text += f" ! {record['errors']} errors"
            cells.append(text)
        best = fastest_backend(results, case)
        versus = f"{ratio(results, case, RAPIDWS, best)} ({best})" if best else "—"
        out.append(
            f"| {case.name} ({case.unit}) | " + " | ".join(cells) + f" | {versus} | "
            f"{ratio(results, case, RAPIDWS, BARE)} |\n"
        )
    return "".join(out)


def verdicts(results: dict, cases_: list[Case]) -> list[str]:
    """Return the issue's targets, met or not."""
    lines = []
    for case in cases_:
        best = fastest_backend(results, case)
        mine = results.get(RAPIDWS, {}).get(case.name, {}).get("value")
        theirs = results.get(best or "", {}).get(case.name, {}).get("value")
        if not mine or not theirs:
            continue
        if case.mode == "idle":
            met = mine < theirs
            lines.append(f"least memory per idle connection: {'met' if met else 'NOT met'}")
        elif case.name in ("echo 100 conns 16 B", "handshakes 50 concurrent"):
            met = mine >= 1.5 * theirs
            lines.append(f"{case.name} >= 1.5x {best}: {'met' if met else 'NOT met'}")
    return lines


# ---- main ----


def main() -> None:
    """Parse the command line; serve (``--serve``) or run every server through every case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per case, 1000 idle conns")
    parser.add_argument("--duration", type=float, help="measured seconds per case, all rounds")
    parser.add_argument("--rounds", type=int, help="rounds per case, best kept (3; quick: 1)")
    parser.add_argument("--json", help="where to save the results (default: under /tmp)")
    parser.add_argument("--serve", metavar="WS", help="run the server with uvicorn's --ws WS")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=LOOP)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.loop)
        return

    warmup, duration, hold, idle = (0.5, 1.5, 1.5, 1000) if args.quick else (0.5, 6.0, 3.0, 5000)
    duration = args.duration or duration
    rounds = args.rounds or (1 if args.quick else 3)
    raise_nofile()  # 5,000 idle connections, in the servers and the client
    installed = ensure_packages(PACKAGES)
    workdir = Path(tempfile.mkdtemp(prefix="rapidws-asgi-bench-"))
    client = build_client(workdir)
    server_prefix, client_prefix = pinning()
    bench = Bench(
        client, client_prefix, server_prefix, warmup=warmup, duration=duration / rounds, hold=hold
    )
    cases_ = all_cases(idle)

    load = other_load()
    found_versions = versions(False)
    for name in ("starlette", "uvicorn", "httptools", "wsproto"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found_versions[name] = importlib.metadata.version(name)
    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {"warmup_s": warmup, "duration_s": duration, "rounds": rounds, "idle": idle},
        "machine": machine(),
        "versions": found_versions,
        "installed": installed,
        "other_cores_before": round(load, 3),
        "banners": {},
    }
    print(f"versions: {found_versions}", flush=True)
    probe = Server("probe", (PY, str(PEERS / "raw_tcp_server.py")), raw=True)
    bench.probe_server = Running(probe, LOOP, server_prefix, workdir)
    try:
        for _ in range(3):  # the machine's speed before the first case, for the 80% rule
            bench.probe()
        results, stderr = run_loop(
            LOOP,
            all_servers=all_servers(),
            all_cases=cases_,
            bench=bench,
            rounds=rounds,
            prefix=server_prefix,
            workdir=workdir,
            report=report,
            reuse={},
        )
    finally:
        bench.probe_server.stop()
    report["results"] = results
    report["other_cores_after"] = round(other_load(), 3)
    text = (
        f"## rapidws.asgi under uvicorn vs uvicorn's backends, {report['started']}\n\n"
        f"{report['machine']['cpus']} cores, servers on core 0 ({LOOP}, httptools), load "
        f"client on core 1; {rounds} round(s) of {warmup:g} s warm-up + "
        f"{duration / rounds:g} s per case, best round kept. Other load: "
        f"{report['other_cores_before']:.2f} cores before, "
        f"{report['other_cores_after']:.2f} after.\n\n"
        + table(results, cases_)
        + "\n"
        + "".join(f"- {line}\n" for line in verdicts(results, cases_))
        + "".join(f"- note: {line}\n" for line in notes(LOOP, results, stderr))
    )
    print("\n" + text, flush=True)
    path = Path(
        args.json or Path(tempfile.gettempdir()) / f"rapidws-asgi-bench-{int(time.time())}.json"
    )
    path.write_text(json.dumps({**report, "markdown": text}, indent=1, default=str))
    path.with_suffix(".md").write_text(text)
    print(f"saved {path} and {path.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    main()
