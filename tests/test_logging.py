"""rapidws.logging: JSON lines from real connections, and ``serve --log-format``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

import rapidws
import rapidws.logging

from .asyncio.utils import until, uri, wait


@pytest.fixture
def configured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """rapidws's logs as JSON in one buffer, as text in another; undone after."""
    logger = logging.getLogger("rapidws")
    saved = logger.level, logger.propagate
    json_out, text_out = io.StringIO(), io.StringIO()
    handlers = [
        rapidws.logging.configure("json", stream=json_out),
        rapidws.logging.configure("text", stream=text_out),
    ]
    try:
        yield json_out, text_out
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def test_a_record_with_fields_and_an_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info(),
            extra={"connection_id": 7, "peer": ("::1", 8)},
        )  # fmt: skip
    line = rapidws.logging.JSONFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "ERROR"
    assert data["logger"] == "x"
    assert data["message"] == "failed here"
    assert data["connection_id"] == 7
    assert data["peer"] == ["::1", 8]
    assert data["exception"].startswith("Traceback") and "ValueError: bad" in data["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])


async def test_a_connection_end_as_one_json_line(
    configured: tuple[io.StringIO, io.StringIO],
) -> None:
    json_out, text_out = configured

    async def echo(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with rapidws.serve(echo, "127.0.0.1", 0, subprotocols=["chat"]) as server:
        async with rapidws.connect(uri(server, "/room?x=1"), subprotocols=["chat"]) as ws:
            await ws.send("hi")
            assert await wait(ws.recv()) == "hi"
            await ws.close(4001, "done here")
        await until(lambda: "connection_closed" in json_out.getvalue())
    (line,) = json_out.getvalue().splitlines()
    data = json.loads(line)
    assert data["event"] == "connection_closed"
    assert isinstance(data["connection_id"], int)
    assert data["remote_address"].startswith("127.0.0.1:")
    assert data["path"] == "/room"
    assert data["subprotocol"] == "chat"
    assert data["extensions"] == ["permessage-deflate"]
    assert 0 <= data["duration"] < 60
    assert (data["messages_in"], data["messages_out"]) == (1, 1)
    assert (data["bytes_in"], data["bytes_out"]) == (2, 2)
    assert data["wire_bytes_in"] > 2 and data["wire_bytes_out"] > 2
    assert (data["close_code"], data["close_reason"], data["closed_by"]) == (
        4001,
        "done here",
        "client",
    )
    # The same record as text, for a person.
    (text,) = text_out.getvalue().splitlines()
    assert "rapidws.server: connection" in text
    assert "closed: 4001 done here (by client)" in text


@contextlib.asynccontextmanager
async def serve_echo(
    *argv: str, stderr: int = asyncio.subprocess.PIPE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``python -m rapidws serve --echo`` on a free port with ``argv``; stop it with SIGTERM.

    Yields the process, its stderr to read (the first line tells the URL).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rapidws", "serve", "--echo", "--host", "127.0.0.1",
        "--port", "0", *argv,
        stdin=asyncio.subprocess.DEVNULL, stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield process
        process.send_signal(signal.SIGTERM)
        assert await wait(process.wait()) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stderr_match(process: asyncio.subprocess.Process, pattern: str) -> re.Match[str]:
    """Read the process's stderr up to the first line that matches ``pattern``."""
    assert process.stderr is not None
    while True:
        line = (await wait(process.stderr.readline())).decode()
        assert line, "the process ended"
        if match := re.search(pattern, line.strip()):
            return match


LISTENING = r"listening on (ws://127\.0\.0\.1:\d+)$"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_log_format_json() -> None:
    async with serve_echo("--log-format", "json") as process:
        url = (await stderr_match(process, LISTENING))[1]
        async with rapidws.connect(url + "/path") as ws:
            await ws.send("x")
            assert await wait(ws.recv()) == "x"
        data = json.loads((await stderr_match(process, r"^\{.*\}$"))[0])
    assert data["event"] == "connection_closed"
    assert (data["path"], data["close_code"], data["closed_by"]) == ("/path", 1000, "client")
    assert (data["messages_in"], data["messages_out"]) == (1, 1)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")
async def test_serve_logs_text_lines_on_a_terminal() -> None:
    # stderr a pseudo-terminal, no --log-format: a line per connection, for a person.
    import pty  # POSIX only

    controller, terminal = pty.openpty()
    seen = ""

    async def read_until(pattern: str) -> re.Match[str]:
        nonlocal seen
        while not (match := re.search(pattern, seen)):
            chunk = await wait(asyncio.to_thread(os.read, controller, 4096))
            assert chunk, "the process ended"
            seen += chunk.decode()
        return match

    try:
        async with serve_echo(stderr=terminal):
            os.close(terminal)  # the child's copy is the one left
            url = (await read_until(r"listening on (ws://127\.0\.0\.1:\d+)"))[1]
            async with rapidws.connect(url + "/tty") as ws:
                await ws.send("x")
                assert await wait(ws.recv()) == "x"
            line = (await read_until(r"INFO rapidws\.server: connection \d+ closed: [^\r\n]*"))[0]
    finally:
        os.close(controller)
    assert "1000 - (by client)" in line
    assert "1 messages in, 1 out" in line
    assert "{" not in line  # text, not JSON
