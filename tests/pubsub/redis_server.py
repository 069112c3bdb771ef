"""A real ``redis-server`` for the tests, that they may kill, restart, pause and squeeze.

Debian's ``redis-server`` package (installed by ``.ci/run``); a missing binary
fails the test with the package's name. Each server runs on a free 127.0.0.1
port in its own temporary directory, without persistence (a restart loses
every key, as a crash of a cache-only Redis does).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from ..proxy_servers import free_port, program, running


class RedisServer:
    """One ``redis-server`` process, on a fixed port across restarts."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
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
