"""``rapidws serve --workers N``: one port, restarted when they die, drained on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

import rapidws.sync
from rapidws.cli.workers import reserve_port

from ..conftest import TIMEOUT_FACTOR

TIMEOUT = 20 * TIMEOUT_FACTOR
WORKER = re.compile(r"worker (\d+) \(pid (\d+)\): .* on ws://[\d.]+:(\d+)")


class Supervisor:
    """``rapidws ARGUMENTS`` in a subprocess, its stderr read line by line."""

    def __init__(self, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rapidws", *arguments],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` lines match ``pattern``; return their matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while True:
                matches = [m for line in self.lines if (m := regex.search(line))]
                if len(matches) >= count:
                    return matches
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"no {count} lines like {pattern!r} in {self.lines}")
                self._changed.wait(min(left, 0.2))

    def workers(self, count: int) -> dict[int, int]:
        """The latest pid of each worker index, once ``count`` worker lines were printed."""
        return {int(m[1]): int(m[2]) for m in self.wait_for(WORKER.pattern, count)}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)


@contextlib.contextmanager
def supervisor(*arguments: str) -> Iterator[Supervisor]:
    """``rapidws ARGUMENTS``, killed at the end if it has not stopped."""
    running = Supervisor(*arguments)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def echo(port: int) -> None:
    with rapidws.sync.connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send("ping")
        assert ws.recv(TIMEOUT) == "ping"


def test_workers_share_the_port_are_restarted_and_stop_on_sigterm() -> None:
    with supervisor("serve", "--echo", "--port", "0", "--workers", "2") as running:
        pids = running.workers(2)
        assert sorted(pids) == [0, 1]
        ports = {int(m[3]) for m in running.wait_for(WORKER.pattern, 2)}
        assert len(ports) == 1 and 0 not in ports  # port 0 became one real port
        (port,) = ports
        running.wait_for("no --broker: each worker has its own topics")
        for _ in range(4):
            echo(port)
        # A worker dies: the supervisor starts another in its place.
        os.kill(pids[0], signal.SIGKILL)
        running.wait_for(rf"worker 0 \(pid {pids[0]}\) exited with signal SIGKILL")
        restarted = running.workers(3)
        assert restarted[0] != pids[0] and restarted[1] == pids[1]
        for _ in range(4):
            echo(port)
        assert running.stop() == 0
        running.wait_for("SIGTERM: shutting down", 2)  # each worker drained
        assert not any(alive(pid) for pid in restarted.values())


def test_a_client_connected_to_a_worker_gets_1001_on_sigterm() -> None:
    with supervisor("serve", "--echo", "--port", "0", "--workers", "2") as running:
        port = int(running.wait_for(WORKER.pattern, 2)[0][3])
        with rapidws.sync.connect(f"ws://127.0.0.1:{port}/") as ws:
            running.process.send_signal(signal.SIGTERM)
            with pytest.raises(rapidws.ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert running.process.wait(TIMEOUT) == 0


def test_reserve_port_keeps_the_port_for_listeners_with_so_reuseport() -> None:
    reserved, port = reserve_port("127.0.0.1", 0)
    with reserved:
        assert port > 0
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with listener:
            listener.bind(("127.0.0.1", port))
            listener.listen()
        stranger = socket.socket()  # without SO_REUSEPORT: refused
        with stranger, pytest.raises(OSError):
            stranger.bind(("127.0.0.1", port))


def test_workers_must_be_a_positive_number() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rapidws", "serve", "--echo", "--workers", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert "not a positive count: '0'" in result.stderr


def test_workers_stop_when_the_supervisor_is_killed() -> None:
    with supervisor("serve", "--echo", "--port", "0", "--workers", "2") as running:
        pids = running.workers(2)
        running.process.kill()  # SIGKILL: no chance to stop them itself
        running.process.wait()
        deadline = time.monotonic() + TIMEOUT
        while any(alive(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.05)
