"""bench/redis_node.py, its peers, bench/redis_load.py and redis_publish.py keep what
bench/redis_bench.py needs, against a real redis-server."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from .pubsub.redis_server import RedisServer, redis_server
from .test_bench_app import free_port

BENCH = Path(__file__).parents[1] / "bench"
# A short run: what matters is that every message arrives, not how fast.
SHORT = ("--warmup", "0.05", "--duration", "0.2")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@contextlib.contextmanager
def nodes(
    script: str, count: int, url: str, *options: str, exits: tuple[int, ...] = (0,)
) -> Iterator[list[subprocess.Popen[str]]]:
    """Run ``count`` server processes on Redis at ``url``, started together; yield them.

    Each one's port is in its ``args``, after ``--port``.
    """
    ports = [free_port() for _ in range(count)]
    servers = [
        subprocess.Popen(
            [sys.executable, str(BENCH / script), "--port", str(port), "--redis", url, *options],
            stdout=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    try:
        for server in servers:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("ready")
        yield servers
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        assert [server.wait(10) in exits for server in servers] == [True] * count


def result(script: str, *args: str) -> dict[str, Any]:
    """Run a bench script; return its result line."""
    command = [sys.executable, str(BENCH / script), *args]
    output = subprocess.check_output(command, text=True, timeout=30)
    kind, _, found = output.splitlines()[-1].partition(" ")
    assert kind == "result", output
    return cast(dict[str, Any], json.loads(found))


def load(
    mode: str, protocol: str, servers: list[subprocess.Popen[str]], *options: str
) -> dict[str, Any]:
    """Run bench/redis_load.py against ``servers``."""
    ports_option = ",".join(str(server.args[3]) for server in servers)
    return result(
        "redis_load.py", mode, "--protocol", protocol, "--ports", ports_option, *SHORT, *options
    )


SYSTEMS = [("redis_node.py", "rapidws", ("--mode", "tasks", "--loop", "asyncio"), ("peak", "rate"))]
if sys.version_info >= (3, 11):
    # The peers run under uvicorn, which the test extra installs on Python 3.11 and later
    # only: below, no test rather than a skipped one.
    SYSTEMS += [
        ("peers/socketio_redis_server.py", "socketio", ("--loop", "uvloop"), ("rate",)),
        ("peers/channels_redis_server.py", "channels", ("--loop", "asyncio"), ("rate",)),
    ]


@pytest.mark.parametrize(("script", "protocol", "options", "modes"), SYSTEMS)
def test_every_subscriber_on_both_processes_receives_every_message(
    redis: RedisServer,
    script: str,
    protocol: str,
    options: tuple[str, ...],
    modes: tuple[str, ...],
) -> None:
    # uvicorn raises the SIGTERM it caught again once it has shut down.
    exits = (0,) if protocol == "rapidws" else (0, -signal.SIGTERM)
    with nodes(script, 2, redis.url, *options, exits=exits) as servers:
        found = {
            mode: load(
                mode, protocol, servers, "--subscribers", "6", "--window", "8", "--rate", "100"
            )
            for mode in modes
        }
    for record in found.values():
        assert record["subscribers"] == 6
        assert record["lost"] == 0  # each subscriber, on either process, had every message
        assert record["delivered"] > 0
    # Latencies were sampled from the stamps the messages carry.
    rate = found["rate"]
    assert rate["samples"] > 0
    assert 0 < rate["p50_ms"] <= rate["p99_ms"] <= rate["max_ms"]


def test_nodes_without_subscribers_receive_nothing_of_the_topic(redis: RedisServer) -> None:
    with nodes("redis_node.py", 4, redis.url, "--loop", "asyncio") as servers:
        pids = ",".join(str(server.pid) for server in servers)
        found = load(
            "interest", "rapidws", servers, "--subscribers", "3", "--rate", "100",
            "--server-pids", pids, "--redis-port", str(redis.port),
        )  # fmt: skip
    published = found["published_measured"]
    assert published > 0 and found["lost"] == 0
    received = found["redis_bytes"]
    # Node 0 gets each message (64 bytes and more) once; node 1 only Redis's
    # 4-byte replies to its PUBLISHes (a few more if some were sent before);
    # nodes 2 and 3 nothing at all.
    assert received[0] >= published * 64
    assert received[1] < published * 16
    assert received[2:] == [0, 0]


def test_publish_rates_are_measured_for_every_way(redis: RedisServer) -> None:
    found = result(
        "redis_publish.py", "--redis", redis.url, "--batches", "10", "--warmup", "0.05",
        "--duration", "0.1",
    )  # fmt: skip
    ways = found["10"]
    assert set(ways) == {"plain", "kept", "redis-py", "redis-py packed", "floor"}
    assert all(way["publishes_per_s"] > 0 for way in ways.values())
