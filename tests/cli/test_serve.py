"""``rapidws serve``: the reference servers (--echo, --broadcast, --exec) and their knobs.

The behaviours run in the test's loop, through :func:`rapidws.cli.serve.reference_app`
(timers on the virtual clock); the flags run ``python -m rapidws serve`` in a
subprocess. Loading and serving MODULE:APP is tested in tests/test_cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator

import pytest

import rapidws
from rapidws.cli.serve import Reference, reference_app

from ..test_cli import TIMEOUT, error_line, run_cli

needs_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@contextlib.asynccontextmanager
async def serving(reference: Reference) -> AsyncIterator[str]:
    """Serve ``reference`` on a free port; yield its URL."""
    async with reference_app(reference).serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}/any/path"


def python(source: str) -> tuple[str, ...]:
    return (sys.executable, "-c", source)


# Echo knobs, on the virtual clock.


@pytest.mark.virtual_clock
async def test_delay() -> None:
    loop = asyncio.get_running_loop()
    async with serving(Reference(delay=0.5)) as url, rapidws.connect(url) as ws:
        sent = loop.time()
        await ws.send("late")
        assert await ws.recv() == "late"
        assert 0.5 <= loop.time() - sent < 0.6


@pytest.mark.virtual_clock
async def test_jitter() -> None:
    # Each answer comes after delay + up to jitter; the answers do not wait for each other.
    loop = asyncio.get_running_loop()
    async with serving(Reference(delay=0.1, jitter=0.2)) as url, rapidws.connect(url) as ws:
        sent = loop.time()
        for n in range(20):
            await ws.send(str(n))
        replies = [await ws.recv() for _ in range(20)]
        assert sorted(replies, key=int) == [str(n) for n in range(20)]
        assert 0.1 <= loop.time() - sent < 0.4


@pytest.mark.virtual_clock
async def test_push() -> None:
    loop = asyncio.get_running_loop()
    async with serving(Reference(push=10)) as url, rapidws.connect(url) as ws:
        start = loop.time()
        messages = [json.loads(await ws.recv()) for _ in range(5)]
        assert [message["seq"] for message in messages] == [1, 2, 3, 4, 5]
        assert all(isinstance(message["time"], float) for message in messages)
        # The first at once, then one every 0.1 s.
        assert 0.4 <= loop.time() - start < 0.5
        # Echo goes on beside the pushes.
        await ws.send("still echoing")
        while (reply := await ws.recv()) != "still echoing":
            assert json.loads(reply)["seq"] > 5


# Closing.


async def test_close_after() -> None:
    reference = Reference(close_after=2, close_code=4000, close_reason="enough")
    async with serving(reference) as url, rapidws.connect(url) as ws:
        for message in ("a", "b", "c"):
            await ws.send(message)
        assert [await ws.recv(), await ws.recv()] == ["a", "b"]
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (4000, "enough")


async def test_close_abruptly() -> None:
    reference = Reference(close_after=1, close_abruptly=True)
    async with serving(reference) as url, rapidws.connect(url) as ws:
        await ws.send("last")
        assert await ws.recv() == "last"
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1006


# Broadcast.


async def test_broadcast() -> None:
    async with (
        serving(Reference(mode="broadcast")) as url,
        rapidws.connect(url) as first,
        rapidws.connect(url) as second,
    ):
        # A message from each reaches both: once the first answer came back,
        # both are subscribed.
        await first.send("ready?")
        assert await first.recv() == "ready?"
        assert await second.recv() == "ready?"
        await second.send(b"\x00binary")
        assert await first.recv() == b"\x00binary"
        assert await second.recv() == b"\x00binary"


@pytest.mark.virtual_clock
async def test_broadcast_push() -> None:
    # Published once: every subscriber sees the same sequence numbers.
    async with (
        serving(Reference(mode="broadcast", push=20)) as url,
        rapidws.connect(url) as first,
        rapidws.connect(url) as second,
    ):
        await first.send("sync")
        while await first.recv() != "sync":
            pass
        while await second.recv() != "sync":
            pass
        seen = [json.loads(await ws.recv())["seq"] for ws in (first, second)]
        assert seen[0] == seen[1]


# Exec.

UPPER = """
import sys
for line in sys.stdin:
    if line == "bytes\\n":
        sys.stdout.buffer.write(b"\\xff\\xfe\\n")
    else:
        sys.stdout.write(line.upper())
    sys.stdout.flush()
"""


async def test_exec_lines() -> None:
    reference = Reference(mode="exec", command=python(UPPER))
    async with serving(reference) as url, rapidws.connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "HELLO"
        await ws.send(b"binary in")
        assert await ws.recv() == "BINARY IN"
        await ws.send("bytes")  # output that is not UTF-8: a binary message
        assert await ws.recv() == b"\xff\xfe"


async def test_exec_message_framing() -> None:
    copy = "import os\nwhile data := os.read(0, 65536):\n    os.write(1, data)\n"
    reference = Reference(mode="exec", command=python(copy), framing="message")
    async with serving(reference) as url, rapidws.connect(url) as ws:
        await ws.send(b"\x00\x01 no newline")
        assert await ws.recv() == b"\x00\x01 no newline"


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [(0, 1000, ""), (3, 1011, "the command exited with status 3")],
)
async def test_exec_exit_closes(status: int, code: int, reason: str) -> None:
    command = python(f"import sys; print('bye'); sys.exit({status})")
    async with serving(Reference(mode="exec", command=command)) as url:
        async with rapidws.connect(url) as ws:
            assert await ws.recv() == "bye"
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (code, reason)


async def test_exec_killed_when_connection_ends() -> None:
    # The command never ends by itself; it tells its pid.
    command = python("import os, sys, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)")
    async with serving(Reference(mode="exec", command=command)) as url:
        async with rapidws.connect(url) as ws:
            pid = int(await ws.recv())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while process_exists(pid):
            assert loop.time() < deadline, f"process {pid} still runs"
            await asyncio.sleep(0.01)


def process_exists(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it was killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# The flags.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--echo", "--broadcast"], "--echo or --broadcast, not both"),
        (["tests.cli_apps:app", "--exec", "cat"], "not both"),
        (["--delay", "1"], "nothing to serve"),
        (["--exec", "cat", "--push", "5"], "--push goes with --echo or --broadcast"),
        (["--echo", "--close-code", "4000"], "go with --close-after"),
        (["--exec", "no-such-command-here"], "no such command"),
        (["--echo", "--ca", "ca.pem"], "--ca needs --cert"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "--port", "0", *argv]) == 2
    assert message in error_line(capsys.readouterr().err, "rapidws serve: ")


@pytest.mark.parametrize(
    "argv",
    [["--close-code", "1005"], ["--push", "0"], ["--delay", "-1"], ["--close-after", "0"]],
)
def test_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "--echo", "--port", "0", *argv]) == 2
    assert argv[0] in capsys.readouterr().err


@contextlib.asynccontextmanager
async def serve_cli(*argv: str) -> AsyncIterator[str]:
    """Run ``python -m rapidws serve --port 0 ARGV``; yield its URL; stop it with SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rapidws", "serve", "--host", "127.0.0.1", "--port", "0", *argv,
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), TIMEOUT)).decode()
        match = re.search(r"listening on (ws://127\.0\.0\.1:\d+)$", line.strip())
        assert match is not None, line
        yield match[1]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@needs_signals
async def test_serve_broadcast_with_knobs() -> None:
    async with (
        serve_cli("--broadcast", "--delay", "0.01", "--close-after", "2") as url,
        rapidws.connect(url) as first,
        rapidws.connect(url) as second,
    ):
        await first.send("one")
        assert await first.recv() == "one"
        assert await second.recv() == "one"
        await first.send("two")
        assert await second.recv() == "two"
        # Taken, or the close frame behind it waits (see Connection._events_done).
        assert await first.recv() == "two"
        await asyncio.wait_for(first.wait_closed(), TIMEOUT)
        assert first.close_code == 1000


@needs_signals
async def test_serve_exec() -> None:
    async with (
        serve_cli("--exec", f"{sys.executable} -c '{UPPER}'") as url,
        rapidws.connect(url) as ws,
    ):
        await ws.send("shell words")
        assert await ws.recv() == "SHELL WORDS"


@needs_signals
async def test_serve_no_pong() -> None:
    # Order, not time: a pong would come back before the echo of a message sent
    # after the ping.
    async with (
        serve_cli("--echo", "--no-pong") as url,
        rapidws.connect(url, ping_interval=None) as ws,
    ):
        pong = ws.ping(b"p")
        await ws.send("after the ping")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after the ping"
        assert not pong.done()
        pong.cancel()


@needs_signals
async def test_serve_http2() -> None:
    # h2c with prior knowledge: two WebSockets as streams of one connection,
    # at most --http2-max-streams at once.
    async with (
        serve_cli("--echo", "--http2", "--http2-max-streams", "2") as url,
        rapidws.connect(url, http2=True, proxy=None) as first,
        rapidws.connect(url, http2=True, proxy=None) as second,
        rapidws.connect(url, http2=True, proxy=None) as third,
    ):
        ids = [ws.transport.get_extra_info("http2_stream_id") for ws in (first, second)]
        assert ids == [1, 3]
        assert ws_peer(first) == ws_peer(second) != ws_peer(third)  # a second connection
        await second.send("over HTTP/2")
        assert await second.recv() == "over HTTP/2"


def ws_peer(ws: rapidws.ClientConnection) -> object:
    """The local address of the TCP connection under ``ws``."""
    return ws.transport.get_extra_info("sockname")
