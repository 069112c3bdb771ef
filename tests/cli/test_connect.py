"""``rapidws connect``: wscat and websocat habits, piped and under a pseudo-terminal.

Piped sessions run in-process (``rapidws.cli.main`` with stdin replaced and
stdout captured: neither is a terminal) or in a subprocess with real pipes;
interactive ones run ``python -m rapidws connect`` in a subprocess whose stdin,
stdout and stderr are a pseudo-terminal. The servers run in a thread
(:func:`tests.test_cli.running_server`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trustme

import rapidws
from rapidws.cli.connect import format_message
from rapidws.core.handshake import accept_key
from rapidws.core.headers import Headers

from ..proxy_servers import PASSWORD, USER, microsocks
from ..test_cli import (
    TIMEOUT,
    GatedStdin,
    end_stdin,
    error_line,
    run_cli,
    running_server,
    unused_port,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def binary_stdin(data: bytes) -> io.TextIOWrapper:
    """A stdin with a byte buffer, as the real one has."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def recorder(received: list[rapidws.Data], replies: Sequence[rapidws.Data] = ()) -> object:
    """A handler that records what it receives and sends ``replies`` first."""

    async def handler(ws: rapidws.ServerConnection) -> None:
        for reply in replies:
            await ws.send(reply)
        async for message in ws:
            received.append(message)

    return handler


def run_open(
    handler: object, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run ``connect URL ARGV`` against ``handler``, stdin open throughout, as a pipe may be.

    Returns the exit status, stdout and stderr.
    """
    gate = threading.Event()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", GatedStdin([], gate))
        with running_server(handler) as port:
            status = run_cli(["connect", f"ws://127.0.0.1:{port}/", *argv])
        end_stdin(gate)
    out, err = capsys.readouterr()
    return status, out, err


async def send_then_close(ws: rapidws.ServerConnection, *messages: rapidws.Data) -> None:
    for message in messages:
        await ws.send(message)
    await ws.close()


# Binary messages, NUL-separated records, JSON lines.


def test_format_base64() -> None:
    assert format_message(b"\x00\xff", "base64") == "(binary, 2 bytes) AP8="


def test_binary_lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[rapidws.Data] = []
    monkeypatch.setattr(sys, "stdin", binary_stdin(b"\xff\x00 raw\nsecond\n"))
    with running_server(recorder(received)) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "--binary"]) == 0
    assert received == [b"\xff\x00 raw", b"second"]
    assert "disconnected (code: 1000" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "shown"), [("hex", "00ff10"), ("base64", "AP8Q")])
def test_binary_out(option: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        await send_then_close(ws, b"\x00\xff\x10", "text")

    assert run_open(handler, capsys, "--binary-out", option)[:2] == (0, f"{shown}\ntext\n")


def test_null_separated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[rapidws.Data] = []
    monkeypatch.setattr(sys, "stdin", binary_stdin("one\ntwo\0thré\0".encode()))

    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.send("a\nb")
        async for message in ws:
            received.append(message)
            if len(received) == 2:
                await ws.send("end")

    with running_server(handler) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-0", "-n", "2"]) == 0
    assert received == ["one\ntwo", "thré"]
    assert capsys.readouterr().out == "a\nb\0end\0"


def test_jsonl(capsys: pytest.CaptureFixture[str]) -> None:
    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.ping(b"\x01")
        await ws.pong(b"hb")
        await send_then_close(ws, "hé", b"\xab")

    before = time.time()
    status, out, _ = run_open(handler, capsys, "--jsonl", "-P", "--binary-out", "base64")
    assert status == 0
    events = [json.loads(line) for line in out.splitlines()]
    for event in events:
        assert before <= event.pop("time") <= time.time()
    assert events == [
        {"type": "ping", "size": 1, "data": "AQ==", "encoding": "base64"},
        {"type": "pong", "size": 2, "data": "aGI=", "encoding": "base64"},
        {"type": "text", "size": 3, "data": "hé"},
        {"type": "binary", "size": 1, "data": "qw==", "encoding": "base64"},
        {"type": "close", "code": 1000, "reason": ""},
    ]


def test_show_ping_pong_piped(capsys: pytest.CaptureFixture[str]) -> None:
    # Piped, stdout carries only messages: pings and pongs go to stderr.
    async def handler(ws: rapidws.ServerConnection) -> None:
        await ws.ping(b"p")
        await send_then_close(ws, "m")

    status, out, err = run_open(handler, capsys, "--show-ping-pong")
    assert (status, out) == (0, "m\n")
    assert "ping 70\n" in err


@pytest.mark.parametrize("flag", [[], ["--no-pong"]])
def test_no_pong(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Order, not time: the client's engine writes a pong as it reads the ping,
    # before its close frame (sent once the message behind the ping came);
    # the close fails a ping still waiting.
    answered: list[bool] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        pong = ws.ping(b"p")
        await ws.send("m")
        await ws.wait_closed()
        try:
            await asyncio.wait_for(pong, TIMEOUT)  # answered, or failed by the close
        except rapidws.ConnectionClosed:
            answered.append(False)
        else:
            answered.append(True)

    status, out, _ = run_open(handler, capsys, "-n", "1", *flag)
    assert (status, out) == (0, "m\n")
    assert answered == [not flag]


# -n/--count, --wait, --execute.


def test_count(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def chatty(ws: rapidws.ServerConnection) -> None:
        for n in range(10):
            await ws.send(f"m{n}")
        await ws.wait_closed()

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with running_server(chatty) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-n", "3"]) == 0
    assert capsys.readouterr().out == "m0\nm1\nm2\n"


def test_count_not_reached(capsys: pytest.CaptureFixture[str]) -> None:
    async def once(ws: rapidws.ServerConnection) -> None:
        await ws.send(await ws.recv())
        await ws.wait_closed()

    with running_server(once) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "-x", "a", "-x", "b", "-w", "0.2"]
        assert run_cli(argv) == 1
    out, err = capsys.readouterr()
    assert out == "a\n"
    assert error_line(err) == "rapidws connect: only 1 of 2 replies within 0.2 s"


def test_execute_several(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-x", "a", "-x", "b"]) == 0
    assert capsys.readouterr().out == "a\nb\n"


def test_wait_after_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The input ends at once; --wait keeps the connection for the late reply.
    async def late(ws: rapidws.ServerConnection) -> None:
        message = await ws.recv()
        await asyncio.sleep(0.05)
        await send_then_close(ws, f"late {message}")

    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    with running_server(late) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "--wait", str(TIMEOUT)]) == 0
    assert capsys.readouterr().out == "late hi\n"


# Slash commands.


def test_slash_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[rapidws.Data] = []
    closes: list[tuple[int | None, str | None]] = []

    async def handler(ws: rapidws.ServerConnection) -> None:
        try:
            async for message in ws:
                received.append(message)
        finally:
            closes.append((ws.close_code, ws.close_reason))

    lines = ["/ping abc", "/pong x", "/binary 00 ff", "/binary zz", "//literal", "/nope", "plain"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([*lines, "/close 4001 bye bye"])))
    with running_server(handler) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "--slash"]) == 0
    assert received == [b"\x00\xff", "/literal", "plain"]
    assert closes == [(4001, "bye bye")]
    err = capsys.readouterr().err
    assert "rapidws connect: /binary: non-hexadecimal number" in err
    assert "rapidws connect: unknown command /nope; commands: /ping" in err
    assert "disconnected (code: 4001, reason: 'bye bye')" in err


def test_no_slash_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[rapidws.Data] = []
    done = threading.Event()

    async def handler(ws: rapidws.ServerConnection) -> None:
        received.append(await ws.recv())
        done.set()
        await ws.wait_closed()

    monkeypatch.setattr(sys, "stdin", GatedStdin(["/close 4000\n"], done))
    with running_server(handler) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    assert received == ["/close 4000"]


# Request options: auth, cookies, redirects, proxy, TLS.


def test_auth(capsys: pytest.CaptureFixture[str]) -> None:
    headers: list[Headers] = []

    def record(ws: rapidws.ServerConnection, request: rapidws.Request) -> None:
        headers.append(request.headers)

    with running_server(process_request=record) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "--auth", "ann:s3:cr", "-x", "hi"]
        assert run_cli(argv) == 0
    assert headers[0]["Authorization"] == "Basic " + base64.b64encode(b"ann:s3:cr").decode()


def test_auth_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["connect", "ws://127.0.0.1:1/", "--auth", "nocolon", "-x", "hi"]) == 2
    assert "USER:PASS" in error_line(capsys.readouterr().err)


def test_cookie_jar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cookies: list[str | None] = []

    def record(ws: rapidws.ServerConnection, request: rapidws.Request) -> None:
        cookies.append(request.headers.get("Cookie"))

    def set_cookie(
        ws: rapidws.ServerConnection, request: rapidws.Request, response: rapidws.Response
    ) -> None:
        response.headers["Set-Cookie"] = "session=abc; Max-Age=600"

    jar = tmp_path / "cookies.txt"
    with running_server(process_request=record, process_response=set_cookie) as port:
        url = f"ws://127.0.0.1:{port}/"
        assert run_cli(["connect", url, "--cookie-jar", str(jar), "-x", "1"]) == 0
        assert "session\tabc" in jar.read_text()
        assert run_cli(["connect", url, "--cookie-jar", str(jar), "-x", "2"]) == 0
    assert cookies == [None, "session=abc"]


def test_max_redirects(capsys: pytest.CaptureFixture[str]) -> None:
    def redirect(ws: rapidws.ServerConnection, request: rapidws.Request) -> rapidws.Response | None:
        if request.path == "/old":
            response = rapidws.Response(302, "")
            response.headers["Location"] = "/new"
            return response
        return None

    with running_server(process_request=redirect) as port:
        url = f"ws://127.0.0.1:{port}/old"
        assert run_cli(["connect", url, "-x", "moved"]) == 0
        assert capsys.readouterr().out == "moved\n"
        assert run_cli(["connect", url, "--max-redirects", "0", "-x", "moved"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    error_line(err)


def test_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment names a dead proxy: --no-proxy ignores it, --proxy overrides it.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{unused_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with running_server() as port, microsocks(tmp_path) as proxy:
        url = f"ws://127.0.0.1:{port}/"
        assert run_cli(["connect", url, "-x", "direct"]) == 1
        error_line(capsys.readouterr().err)
        assert run_cli(["connect", url, "--no-proxy", "-x", "direct"]) == 0
        socks = f"socks5://{USER}:{PASSWORD}@127.0.0.1:{proxy}"
        assert run_cli(["connect", url, "--proxy", socks, "-x", "tunnelled"]) == 0
    assert capsys.readouterr().out == "direct\ntunnelled\n"


def test_client_certificate(
    tmp_path: Path,
    ca: trustme.CA,
    server_context: ssl.SSLContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server requires a certificate from the CA: --cert and --key give one.
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("client@example.com")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    with running_server(ssl=server_context) as port:
        url = f"wss://localhost:{port}/"
        tls = ["--ca", str(paths["ca"]), "--cert", str(paths["cert"]), "--key", str(paths["key"])]
        assert run_cli(["connect", url, *tls, "-x", "mutual"]) == 0
        assert run_cli(["connect", url, "--ca", str(paths["ca"]), "-x", "anonymous"]) == 1
    out, err = capsys.readouterr()
    assert out == "mutual\n"
    error_line(err)


# Reconnection.


def test_reconnect(capsys: pytest.CaptureFixture[str]) -> None:
    connections: list[int] = []

    async def restart_once(ws: rapidws.ServerConnection) -> None:
        connections.append(len(connections) + 1)
        await ws.send(f"connection {len(connections)}")
        if len(connections) == 1:
            await ws.close(1012, "service restart")
        await ws.wait_closed()

    with running_server(restart_once) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "--reconnect", "--reconnect-delay", "0.01"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stdin", io.StringIO(""))
            assert run_cli([*argv, "-n", "2"]) == 0
    out, err = capsys.readouterr()
    assert out == "connection 1\nconnection 2\n"
    assert "reconnecting in" in err


# Bad input from the server: one line, a non-zero status.


@contextlib.contextmanager
def raw_server(frames: bytes) -> Iterator[int]:
    """A server that accepts the handshake, sends ``frames``, reads once and hangs up."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    request = conn.recv(65536).decode()
                    key = re.search(r"Sec-WebSocket-Key: *(\S+)", request, re.I)
                    assert key is not None
                    conn.sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                        + accept_key(key[1]).encode()
                        + b"\r\n\r\n"
                        + frames
                    )
                    conn.recv(65536)  # the client's close frame

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(TIMEOUT)


def test_invalid_utf8(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin([], gate))
    with raw_server(b"\x81\x02\xc3\x28") as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "--no-compression"]) == 1
    end_stdin(gate)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith(
        "rapidws connect: the server sent invalid UTF-8 in a text message (closed with 1007"
    )
    assert "Traceback" not in err


def test_message_too_big(capsys: pytest.CaptureFixture[str]) -> None:
    async def huge(ws: rapidws.ServerConnection) -> None:
        await ws.recv()
        await ws.send(b"\x00" * 2000)

    with running_server(huge) as port:
        url = f"ws://127.0.0.1:{port}/"
        assert run_cli(["connect", url, "--max-size", "1000", "-x", "big?"]) == 1
        line = error_line(capsys.readouterr().err)
        assert "too big" in line
        assert "--max-size" in line
        assert "1009" in line
        assert run_cli(["connect", url, "--max-size", "0", "-x", "big?"]) == 0
    assert capsys.readouterr().out == "00" * 2000 + "\n"


def test_abnormal_closure(capsys: pytest.CaptureFixture[str]) -> None:
    async def drop(ws: rapidws.ServerConnection) -> None:
        await ws.send("bye")
        assert ws.transport is not None
        ws.transport.abort()

    status, out, err = run_open(drop, capsys)
    assert (status, out) == (1, "bye\n")
    assert err.splitlines()[-1] == (
        "rapidws connect: connection lost: closed abnormally, without a closing handshake (1006)"
    )


# Real pipes.


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rapidws", *argv]


def test_pipes() -> None:
    # Exit status by close code: 0 for a normal close, 1 for another.
    async def answer(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message.upper())
            if message == "stop":
                await ws.close(4000, "stopped")

    with running_server(answer) as port:
        url = f"ws://127.0.0.1:{port}/"
        result = subprocess.run(
            cli("connect", url, "-n", "2"), input="a\nb\n", capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert (result.returncode, result.stdout) == (0, "A\nB\n"), result.stderr
        result = subprocess.run(
            cli("connect", url, "--wait", str(TIMEOUT)), input="c\nstop\n", capture_output=True,
            text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert (result.returncode, result.stdout) == (1, "C\nSTOP\n"), result.stderr
        assert result.stderr.splitlines()[-1] == (
            "rapidws connect: disconnected (code: 4000, reason: 'stopped')"
        )


# Under a pseudo-terminal.


class Terminal:
    """``rapidws ARGS`` on a pseudo-terminal: type into it, read its screen."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        self.master = master
        environment = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        environment.pop("NO_COLOR", None)
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env={**environment, **(env or {})},
            close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.screen = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str) -> str:
        """Read until the screen (without escape sequences) matches ``pattern``.

        A prompt drawn again after a line (``line\\r\\n>``) means that the
        terminal is back in raw mode: only then may the test type a Ctrl+D,
        which the terminal itself would take as the end of input in between.
        """
        deadline = time.monotonic() + TIMEOUT
        while not re.search(pattern, ANSI.sub("", self.screen)):
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not in {self.screen!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # EIO: the process closed the terminal
                    assert re.search(pattern, ANSI.sub("", self.screen)), self.screen
        return self.screen

    def wait(self) -> int:
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], TIMEOUT)[0]:
                if not (data := os.read(self.master, 65536)):
                    break
                self.screen += data.decode(errors="replace")
        os.close(self.master)
        return self.process.wait(TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)


@contextlib.contextmanager
def terminal(*argv: str, env: dict[str, str] | None = None) -> Iterator[Terminal]:
    term = Terminal(list(argv), env)
    try:
        yield term
    finally:
        term.kill()


def test_interactive_prompt_toolkit() -> None:
    with running_server() as port, terminal(*cli("connect", f"ws://127.0.0.1:{port}/")) as term:
        term.expect(r"connected to .*\n.*>")
        term.type("hello\r")
        screen = term.expect(r"< hello\r\n>")
        assert "\x1b[32m<\x1b[0m hello" in screen  # in colour
        term.type("\x1b[A\r")  # the history's previous line, again
        term.expect(r"< hello[\s\S]*< hello\r\n>")
        term.type("/ping\r")
        term.expect(r"pong received after \d+\.\d+ ms\r\n>")
        term.type("\x04")  # Ctrl+D: the end of the input
        assert term.wait() == 0
        assert "disconnected (code: 1000" in term.screen


def test_interactive_no_color() -> None:
    with (
        running_server() as port,
        terminal(*cli("connect", f"ws://127.0.0.1:{port}/", "--no-color")) as term,
    ):
        term.expect("connected to .*\n.*>")
        term.type("plain\r")
        screen = term.expect(r"< plain\r\n>")
        assert "\x1b[32m" not in screen
        term.type("/close 4002 done\r")
        assert term.wait() == 0


def test_interactive_without_prompt_toolkit() -> None:
    # Without the extra, input() reads the lines (readline edits them).
    code = (
        "import sys; sys.modules['prompt_toolkit'] = None\n"
        "from rapidws.cli import main; sys.exit(main())"
    )
    with running_server() as port:
        argv = [sys.executable, "-c", code, "connect", f"ws://127.0.0.1:{port}/"]
        with terminal(*argv) as term:
            term.expect("connected to .*\n> ")
            term.type("fallback\r")
            term.expect(r"< fallback")
            # Not Ctrl-D: typed while a message is being printed, the terminal
            # may take it before input() waits (a busy machine makes that likely).
            term.type("/close\r")
            assert term.wait() == 0


def test_bad_input_under_terminal() -> None:
    async def drop(ws: rapidws.ServerConnection) -> None:
        assert ws.transport is not None
        ws.transport.abort()

    with running_server(drop) as port, terminal(*cli("connect", f"ws://127.0.0.1:{port}/")) as term:
        assert term.wait() == 1
        assert "closed abnormally" in term.screen
        assert "Traceback" not in term.screen
