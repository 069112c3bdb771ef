"""Tests of ``rapidws bench``: the command in-process, under a pty, piped, and merged.

The servers run on a background thread with their own loop (``main()``
calls ``asyncio.run`` itself); every run is bounded by a short duration.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rapidws
import rapidws.cli
from rapidws.cli.bench import parse_seconds, preflight
from rapidws.cli.loadgen import LoadConfig

from ..conftest import TIMEOUT_FACTOR

TIMEOUT = 20 * TIMEOUT_FACTOR


class Echo(rapidws.Callbacks):
    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        connection.send_nowait(message)


# The handshake requests of the module's server, to check the flags sent.
REQUESTS: list[rapidws.Request] = []


def record(connection: rapidws.ServerConnection, request: rapidws.Request) -> None:
    REQUESTS.append(request)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    ready = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Future[None]] = []

    async def main() -> None:
        async with rapidws.serve(
            Echo(),
            "127.0.0.1",
            0,
            compression=None,
            subprotocols=["chat"],
            process_request=record,
            http2=True,
        ) as server:
            port.append(server.sockets[0].getsockname()[1])
            stop.append(asyncio.get_running_loop().create_future())
            ready.set()
            await stop[0]

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert ready.wait(TIMEOUT)
    yield f"ws://127.0.0.1:{port[0]}/"
    loop = stop[0].get_loop()
    loop.call_soon_threadsafe(stop[0].set_result, None)
    thread.join(TIMEOUT)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_summary_and_exports(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = {ext: str(tmp_path / f"run.{ext}") for ext in ("json", "csv", "html")}
    status = rapidws.cli.main(
        [
            "bench",
            url,
            "-c",
            "2",
            "-d",
            "1.2",
            "--loop",
            "asyncio",
            "--json",
            paths["json"],
            "--csv",
            paths["csv"],
            "--plot",
            paths["html"],
            "--fail-if",
            "errors>0",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "errors     none" in out and "latency" in out
    assert "1 s" in err  # a progress line a second when not on a terminal
    report = json.loads(Path(paths["json"]).read_text())
    assert report["received"] > 0 and report["errors"] == {}
    assert report["latency_ms"]["latency"]["count"] == report["received"]
    with open(paths["csv"]) as file:
        assert int(next(csv.DictReader(file))["received"]) > 0
    assert "<svg" in Path(paths["html"]).read_text()
    assert rapidws.cli.main(["bench", "compare", paths["json"], paths["json"]]) == 0
    assert "+0.0%" in capsys.readouterr().out


def test_fail_if_threshold(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = rapidws.cli.main(["bench", url, "-n", "20", "--fail-if", "p50>0us"])
    assert status == 1
    assert "threshold crossed: p50>0us" in capsys.readouterr().err


def test_refused_is_counted_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    status = rapidws.cli.main(
        ["bench", f"ws://127.0.0.1:{unused_port()}/", "-d", "0.3", "--fail-if", "errors>0"]
    )
    out, err = capsys.readouterr()
    assert status == 1
    assert "refused" in out and "Traceback" not in out + err
    assert "no connection opened" in err


def test_connections_opened_during_warmup_count(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Opened during the warm-up, the connections are not "no connection opened".
    argv = ["bench", url, "-w", "idle", "-c", "2", "--warmup", "0.3", "-d", "0.6"]
    status = rapidws.cli.main([*argv, "--loop", "asyncio"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "2 connections (peak)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "ws://127.0.0.1:1/", "--fail-if", "p98>1ms"],
        ["bench", "http://127.0.0.1:1/"],
        ["bench", "ws://127.0.0.1:1/", "extra"],
        ["bench", "compare", "only-one.json"],
        ["bench", "ws://127.0.0.1:1/", "--scenario", "/nonexistent.py"],
        ["bench", "ws://127.0.0.1:1/", "-c", "0"],
        ["bench", "ws://127.0.0.1:1/", "-H", "no colon"],
        ["bench", "wss://127.0.0.1:1/", "--ca", "/nonexistent.pem"],
        ["bench", "ws://127.0.0.1:1/", "--source", "127.0.0.1", "--proxy", "socks5://h:1"],
    ],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert rapidws.cli.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_parse_seconds() -> None:
    assert parse_seconds("500ms") == 0.5
    assert parse_seconds("2m") == 120
    assert parse_seconds("3") == 3
    with pytest.raises(Exception, match="invalid duration"):
        parse_seconds("soon")


def test_preflight_gives_the_commands() -> None:
    warnings = preflight(LoadConfig("ws://x/", connections=10_000_000, workload="churn"), 1)
    text = "\n".join(warnings)
    assert "ulimit -n" in text
    assert "ip_local_port_range" in text


def test_processes_merge(url: str, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    status = rapidws.cli.main(
        ["bench", url, "-c", "2", "-n", "100", "-d", "5", "--processes", "2", "--json", str(path)]
    )
    assert status == 0
    report = json.loads(path.read_text())
    assert report["processes"] == 2
    assert report["received"] == 100
    assert report["latency_ms"]["latency"]["count"] == 100


def test_connect_flags_in_worker_processes(url: str) -> None:
    # The flags of `rapidws connect`, wscat's short names included, reach the
    # server from each worker process (which builds its own client options).
    REQUESTS.clear()
    argv = ["bench", url, "-c", "2", "-n", "10", "-d", "5", "--processes", "2"]
    flags = ["-H", "X-Run: 7", "-s", "chat", "-o", "http://o.example", "--no-proxy"]
    assert rapidws.cli.main([*argv, *flags]) == 0
    assert len(REQUESTS) == 2
    for request in REQUESTS:
        assert request.headers["X-Run"] == "7"
        assert request.headers["Sec-WebSocket-Protocol"] == "chat"
        assert request.headers["Origin"] == "http://o.example"


def test_http2(url: str) -> None:
    # --http2: the connections are streams of a shared HTTP/2 connection (h2c).
    REQUESTS.clear()
    argv = ["bench", url, "-c", "3", "-n", "30", "-d", "5", "--http2", "--no-proxy"]
    assert rapidws.cli.main(argv) == 0
    assert [request.version for request in REQUESTS] == [(2, 0)] * 3


def run_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "rapidws", "bench", url, "-c", "2", "-d", "1.5", *args]


def test_piped(url: str) -> None:
    done = subprocess.run(
        run_command(url), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0
    assert "\x1b[" not in done.stdout + done.stderr
    assert "replies/s" in done.stderr and "errors     none" in done.stdout


def test_terminal(url: str) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        run_command(url), stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(TIMEOUT) == 0
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # rich's live display
    assert "errors     none" in text and "Traceback" not in text
