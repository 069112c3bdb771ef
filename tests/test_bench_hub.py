"""bench/hub_server.py, its peers and bench/hub_load.py keep what bench/hub_bench.py needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .test_bench_app import running

BENCH = Path(__file__).parents[1] / "bench"


def load(*args: str) -> dict[str, Any]:
    """Run bench/hub_load.py; return its result line."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "hub_load.py"), *args, "--settle", "0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    last = done.stdout.splitlines()[-1]
    assert last.startswith("result "), done.stderr
    result: dict[str, Any] = json.loads(last.removeprefix("result "))
    return result


@pytest.mark.parametrize(
    ("script", "mode", "loop"),
    [
        ("hub_server.py", "chat-iterator", "asyncio"),
        ("hub_server.py", "chat-inline", "uvloop"),
        ("hub_server.py", "chat-inline", "asyncio"),
        ("peers/websockets_hub_server.py", "chat", "asyncio"),
    ],
)
def test_chat_delivers_every_message_to_the_whole_room(script: str, mode: str, loop: str) -> None:
    with running(BENCH / script, "--mode", mode, "--loop", loop) as port:
        result = load(
            "chat",
            *("--port", str(port), "--clients", "4"),
            *("--warmup", "0.1", "--duration", "0.3"),
        )
    # Every frame was the expected one, and messages kept flowing.
    assert result["errors"] == 0
    assert result["delivered"] > 0


@pytest.mark.parametrize(
    ("script", "mode", "deflate"),
    [
        ("hub_server.py", "fanout-hub", False),
        ("hub_server.py", "fanout-hub", True),
        ("hub_server.py", "fanout-sendloop", True),
        ("peers/websockets_hub_server.py", "fanout-broadcast", True),
        ("peers/websockets_hub_server.py", "fanout-sendloop", False),
        ("hub_server.py", "fanout-floor", False),
    ],
)
def test_fanout_reaches_every_subscriber_once_per_publish(
    script: str, mode: str, deflate: bool
) -> None:
    options = ["--mode", mode, "--loop", "asyncio", *(["--deflate"] if deflate else [])]
    with running(BENCH / script, *options) as port:
        args = ["fanout", "--port", str(port), "--connections", "30", "--publishes", "3"]
        result = load(*args, *(["--deflate"] if deflate else []))
    assert result["errors"] == 0
    assert result["compressed"] is deflate  # 1 KiB of text compresses
    assert [p["sent"] for p in result["publishes"]] == [30, 30, 30]
    assert all(p["server_cpu_s"] >= 0 and p["last_s"] > 0 for p in result["publishes"])


def test_memory_mode_subscribes_every_connection_to_ten_topics() -> None:
    with running(BENCH / "hub_server.py", "--mode", "memory") as port:
        result = load("memory", "--port", str(port), "--connections", "40")
    assert result["subscriptions"] == 400
    assert result["traced"] > 0
    assert result["rss_after"] >= result["rss_before"] > 0
