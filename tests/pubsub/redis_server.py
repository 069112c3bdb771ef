"""A real ``redis-server`` for the tests, that they may kill, restart, pause and squeeze.

Debian's ``redis-server`` package (installed by ``.ci/run``); a missing binary
fails the test with the package's name. Each server runs on a free 127.0.0.1
port in its own temporary directory, without persistence (a restart loses
every key, as a crash of a cache-only Redis does).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from ..proxy_servers import free_port, program, running


class RedisServer:
    """One ``redis-server`` process, on a fixed port across restarts."""

    def __init__(self, directory: Path, port: int | None = None, *, cluster: bool = False) -> None:
        self.directory = directory
        self.cluster = cluster
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = program("redis-server", "redis-server")
        self._running: contextlib.ExitStack | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--protected-mode", "no",
            *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
              if self.cluster else []),
        ]  # fmt: skip

    def start(self) -> None:
        stack = contextlib.ExitStack()
        self.process = stack.enter_context(
            running(self.command(), self.port, self.directory / "redis.log")
        )
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def kill(self) -> None:
        """Kill -9: the way a crashed Redis goes (the keys are lost)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A plain blocking client, for the test's own commands."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """Run a Redis server until the block ends."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.resume()  # a paused server cannot stop
        server.stop()


@contextlib.contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """Run a Redis Cluster of ``masters`` masters (no replicas) until the block ends."""
    servers = []
    with contextlib.ExitStack() as stack:
        for index in range(masters):
            path = directory / f"node{index}"
            path.mkdir()
            server = RedisServer(path, _cluster_port(), cluster=True)
            stack.enter_context(_started(server))
            servers.append(server)
        addresses = [f"127.0.0.1:{server.port}" for server in servers]
        cli = program("redis-cli", "redis-server")
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # Ready when every node agrees that all slots are served.
        deadline = time.monotonic() + 60
        while not all(
            server.client().cluster("info").get("cluster_state") == "ok" for server in servers
        ):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis Cluster did not become ready")
            time.sleep(0.1)
        yield servers


@contextlib.contextmanager
def _started(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too, at most 55535."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            port -= 30000
        with socket.socket() as one, socket.socket() as bus:
            try:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a Redis Cluster node")
