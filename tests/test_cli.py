"""Tests of the ``rapidws`` command line: ``--version``, ``connect`` and ``serve``.

``connect`` runs in-process with :func:`rapidws.cli.main`, against servers that
run in a background thread with their own event loop (``main()`` calls
``asyncio.run`` itself). ``serve`` blocks until a signal, so it runs in a
subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws
import rapidws.cli
from rapidws.cli.connect import format_message
from rapidws.cli.serve import echo

from .conftest import TIMEOUT_FACTOR

# Every wait in this module is bounded by this many seconds.
TIMEOUT = 10 * TIMEOUT_FACTOR

needs_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# Helpers.


def run_cli(argv: Sequence[str]) -> int:
    """Run ``rapidws`` in-process; return its exit status, from a return or a SystemExit."""
    try:
        return rapidws.cli.main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


@contextlib.contextmanager
def running_server(handler: Callable[..., Any] = echo, **kwargs: Any) -> Iterator[int]:
    """Run ``rapidws.serve(handler, "127.0.0.1", 0, **kwargs)`` in a thread; yield its port."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        try:
            async with rapidws.serve(handler, "127.0.0.1", 0, **kwargs) as server:
                state["port"] = server.port
                state["loop"] = asyncio.get_running_loop()
                state["stop"] = stop = asyncio.Event()
                started.set()
                await asyncio.wait_for(stop.wait(), 6 * TIMEOUT)
        except BaseException as exc:
            state["error"] = exc
            raise
        finally:
            started.set()

    def run() -> None:
        with contextlib.suppress(BaseException):
            asyncio.run(main())

    thread = threading.Thread(target=run, name="test-server", daemon=True)
    thread.start()
    assert started.wait(TIMEOUT), "the server did not start"
    if "error" in state:
        raise state["error"]
    try:
        yield state["port"]
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the server did not stop"


def unused_port() -> int:
    """Return a port of 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_line(err: str, prefix: str = "rapidws connect: ") -> str:
    """Check that ``err`` is a single error line, with no traceback; return it."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


class GatedStdin:
    """A stdin whose end comes only once ``gate`` is set (or after TIMEOUT).

    At the end of its input, ``connect`` closes the connection at once; with a
    plain :class:`io.StringIO`, the echo server may see the close frame before
    it replied to the last lines, so the test waits for the replies first.
    """

    def __init__(self, lines: Sequence[str], gate: threading.Event) -> None:
        self.lines = lines
        self.gate = gate

    def __iter__(self) -> Iterator[str]:
        yield from self.lines
        self.gate.wait(TIMEOUT)


def end_stdin(gate: threading.Event) -> None:
    """Let a :class:`GatedStdin` end, and wait until connect's reader thread is done."""
    gate.set()
    for thread in threading.enumerate():
        if thread.name == "rapidws-stdin":
            thread.join(TIMEOUT)
            assert not thread.is_alive()


def counting_echo(count: int, done: threading.Event) -> Callable[..., Any]:
    """An echo handler that sets ``done`` once it replied to ``count`` messages."""

    async def handler(ws: rapidws.ServerConnection) -> None:
        replied = 0
        async for message in ws:
            await ws.send(message)
            replied += 1
            if replied == count:
                done.set()

    return handler


async def silent(ws: rapidws.ServerConnection) -> None:
    """A handler that never replies."""
    await ws.wait_closed()


# --version.


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        rapidws.cli.main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out == f"rapidws {rapidws.__version__}\n"


@pytest.mark.parametrize("module", ["rapidws", "rapidws.cli"])
def test_python_m_version(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"rapidws {rapidws.__version__}\n"


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([]) == 2
    assert "usage: rapidws" in capsys.readouterr().err


def test_bad_wait(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["connect", "ws://127.0.0.1:1/", "--wait", "soon"]) == 2
    assert "--wait" in capsys.readouterr().err


# format_message.


def test_format_text() -> None:
    assert format_message("café") == "café"


def test_format_binary() -> None:
    assert format_message(b"\x00\x01\xff") == "(binary, 3 bytes) 00 01 ff"


# connect: interactive session.


def test_connect_lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["hello\n", "café ☕\n", "\n", "last line without newline"]
    done = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin(lines, done))
    with running_server(counting_echo(len(lines), done)) as port:
        url = f"ws://127.0.0.1:{port}/"
        assert run_cli(["connect", url]) == 0
    out, err = capsys.readouterr()
    assert out == "hello\ncafé ☕\n\nlast line without newline\n"
    assert f"connected to {url}" in err
    assert "disconnected (code: 1000" in err
    assert "Traceback" not in err


def test_connect_crlf_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    done = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin(["one\r\n", "two\r\n"], done))
    with running_server(counting_echo(2, done)) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    assert capsys.readouterr().out == "one\ntwo\n"


def test_connect_empty_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "disconnected (code: 1000, reason: '')" in err


def test_connect_stringio_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With input that ends at once, replies may be lost (see GatedStdin) but
    # the session still ends with a normal closing handshake.
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\nb\nc\n"))
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    out, err = capsys.readouterr()
    assert out in ("", "a\n", "a\nb\n", "a\nb\nc\n")
    assert "disconnected (code: 1000" in err


def test_connect_server_closes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def greet_and_close(ws: rapidws.ServerConnection) -> None:
        await ws.send("welcome")
        await ws.close(1001, "going away")

    gate = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin([], gate))
    with running_server(greet_and_close) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    end_stdin(gate)
    out, err = capsys.readouterr()
    assert out == "welcome\n"
    assert "disconnected (code: 1001, reason: 'going away')" in err


def test_connect_server_closes_with_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(ws: rapidws.ServerConnection) -> None:
        await ws.close(4000, "go away")

    gate = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin([], gate))
    with running_server(refuse) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 1
    end_stdin(gate)
    assert "disconnected (code: 4000, reason: 'go away')" in capsys.readouterr().err


def test_stdin_outlives_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server closes first; stdin goes on after main() returned: the reader
    # thread must not fail on the closed loop.
    async def close_at_once(ws: rapidws.ServerConnection) -> None:
        await ws.close()

    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    gate = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin(["late\n"], gate))
    with running_server(close_at_once) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    end_stdin(gate)
    assert errors == []


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(lambda: io.StringIO("\udcff\n"), id="surrogate"),
        pytest.param(
            lambda: io.TextIOWrapper(io.BytesIO(b"\xff\n"), encoding="utf-8"), id="undecodable"
        ),
    ],
)
def test_connect_invalid_stdin(
    stdin: Callable[[], io.TextIOBase],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", stdin())
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert "rapidws connect: cannot send standard input" in err
    assert "disconnected (code: 1000" in err


def test_connect_binary_reply(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    done = threading.Event()

    async def encode(ws: rapidws.ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, str)
            await ws.send(message.encode())
            done.set()

    monkeypatch.setattr(sys, "stdin", GatedStdin(["hé\n"], done))
    with running_server(encode) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/"]) == 0
    assert capsys.readouterr().out == "68c3a9\n"


# connect --execute.


def test_execute(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "--execute", "ping me"]) == 0
    out, err = capsys.readouterr()
    assert out == "ping me\n"
    assert "Traceback" not in err


def test_execute_short_option(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server() as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/path?q=1", "-x", ""]) == 0
    assert capsys.readouterr().out == "\n"


def test_execute_binary_reply(capsys: pytest.CaptureFixture[str]) -> None:
    async def binary(ws: rapidws.ServerConnection) -> None:
        await ws.recv()
        await ws.send(b"\x00\x01\xfe\xff")
        await ws.wait_closed()

    with running_server(binary) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-x", "give me bytes"]) == 0
    assert capsys.readouterr().out == "0001feff\n"


def test_execute_no_reply(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(silent) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "--execute", "hello?", "--wait", "0.2"]
        assert run_cli(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = error_line(err)
    assert "0.2" in line
    assert "reply" in line


def test_execute_server_closes_without_reply(capsys: pytest.CaptureFixture[str]) -> None:
    async def hang_up(ws: rapidws.ServerConnection) -> None:
        await ws.recv()
        await ws.close(1011, "oops")

    with running_server(hang_up) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-x", "hi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "1011" in error_line(err)


# connect: request headers.


def test_headers_subprotocol_origin(capsys: pytest.CaptureFixture[str]) -> None:
    requests: list[rapidws.Request] = []
    subprotocols: list[str | None] = []

    def record(ws: rapidws.ServerConnection, request: rapidws.Request) -> None:
        requests.append(request)

    async def handler(ws: rapidws.ServerConnection) -> None:
        subprotocols.append(ws.subprotocol)
        await echo(ws)

    argv = [
        "--header", "Authorization: Bearer x",
        "-H", "X-Empty:",
        "-H", "X-Colons:  a:b:c ",
        "--subprotocol", "chat",
        "--origin", "https://example.com",
        "--execute", "hi",
    ]  # fmt: skip
    with running_server(handler, process_request=record, subprotocols=["chat"]) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", *argv]) == 0
    assert capsys.readouterr().out == "hi\n"
    [request] = requests
    assert request.headers["Authorization"] == "Bearer x"
    assert request.headers["X-Empty"] == ""
    assert request.headers["X-Colons"] == "a:b:c"
    assert request.headers["Sec-WebSocket-Protocol"] == "chat"
    assert request.headers["Origin"] == "https://example.com"
    assert subprotocols == ["chat"]


def test_several_subprotocols() -> None:
    requests: list[rapidws.Request] = []
    subprotocols: list[str | None] = []

    def record(ws: rapidws.ServerConnection, request: rapidws.Request) -> None:
        requests.append(request)

    async def handler(ws: rapidws.ServerConnection) -> None:
        subprotocols.append(ws.subprotocol)
        await echo(ws)

    with running_server(handler, process_request=record, subprotocols=["v2"]) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "-s", "v1", "-s", "v2", "-x", "hi"]
        assert run_cli(argv) == 0
    assert requests[0].headers["Sec-WebSocket-Protocol"] == "v1, v2"
    assert subprotocols == ["v2"]


@pytest.mark.parametrize(
    "header",
    [
        "NoColon",
        ": value",
        "  : value",
        "Bad Name: value",
        "X-Injected: a\r\nEvil: b",
        "X-Newline: a\nb",
        "X-Euro: €",
    ],
)
def test_invalid_header(header: str, capsys: pytest.CaptureFixture[str]) -> None:
    # No server: the header is refused before connecting.
    assert run_cli(["connect", f"ws://127.0.0.1:{unused_port()}/", "-H", header, "-x", "hi"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid header" in error_line(err)


# connect: failures.


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{unused_port()}/"
    assert run_cli(["connect", url, "-x", "hi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    error_line(err)


def test_connection_refused_interactive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("never sent\n"))
    assert run_cli(["connect", f"ws://127.0.0.1:{unused_port()}/"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    error_line(err)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/", "https://example.com/", "127.0.0.1:1"])
def test_not_a_websocket_url(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["connect", url, "-x", "hi"]) == 1
    line = error_line(capsys.readouterr().err)
    assert "ws or wss" in line


def test_forbidden(capsys: pytest.CaptureFixture[str]) -> None:
    def forbid(ws: rapidws.ServerConnection, request: rapidws.Request) -> rapidws.Response:
        return rapidws.Response(403, "no\n")

    with running_server(process_request=forbid) as port:
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-x", "hi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "403" in error_line(err)


def test_forbidden_interactive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    with running_server(origins=["https://good.example"]) as port:
        argv = ["connect", f"ws://127.0.0.1:{port}/", "--origin", "https://evil.example"]
        assert run_cli(argv) == 1
    assert "403" in error_line(capsys.readouterr().err)


def test_not_a_websocket_server(capsys: pytest.CaptureFixture[str]) -> None:
    # A TCP server that answers with garbage, then closes.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def answer() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    conn.recv(4096)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        assert run_cli(["connect", f"ws://127.0.0.1:{port}/", "-x", "hi"]) == 1
        thread.join(TIMEOUT)
    out, err = capsys.readouterr()
    assert out == ""
    error_line(err)


# connect: TLS.


def test_wss_untrusted(capsys: pytest.CaptureFixture[str], server_context: ssl.SSLContext) -> None:
    with running_server(ssl=server_context) as port:
        assert run_cli(["connect", f"wss://127.0.0.1:{port}/", "-x", "hi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = error_line(err)
    assert "not trusted" in line
    assert "--insecure" in line


@pytest.mark.parametrize("option", ["--insecure", "-k"])
@pytest.mark.parametrize("scheme", ["wss", "WSS"])
def test_wss_insecure(
    option: str, scheme: str, capsys: pytest.CaptureFixture[str], server_context: ssl.SSLContext
) -> None:
    with running_server(ssl=server_context) as port:
        assert run_cli(["connect", f"{scheme}://127.0.0.1:{port}/", option, "-x", "hi"]) == 0
    assert capsys.readouterr().out == "hi\n"


def test_wss_insecure_interactive(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server_context: ssl.SSLContext,
) -> None:
    done = threading.Event()
    monkeypatch.setattr(sys, "stdin", GatedStdin(["secret\n"], done))
    with running_server(counting_echo(1, done), ssl=server_context) as port:
        assert run_cli(["connect", f"wss://localhost:{port}/", "--insecure"]) == 0
    out, err = capsys.readouterr()
    assert out == "secret\n"
    assert "disconnected (code: 1000" in err


def test_wss_trusted_by_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ca: trustme.CA,
    server_context: ssl.SSLContext,
) -> None:
    # Without --insecure, the certificate is checked against the default trust
    # store, which OpenSSL lets SSL_CERT_FILE replace.
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with running_server(ssl=server_context) as port:
        assert run_cli(["connect", f"wss://127.0.0.1:{port}/", "-x", "verified"]) == 0
    assert capsys.readouterr().out == "verified\n"
    # A certificate from the trusted CA for another name is refused.
    other_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(other_context)
    with running_server(ssl=other_context) as port:
        assert run_cli(["connect", f"wss://127.0.0.1:{port}/", "-x", "hi"]) == 1
        assert run_cli(["connect", f"wss://127.0.0.1:{port}/", "-k", "-x", "hi"]) == 0
    out, err = capsys.readouterr()
    assert out == "hi\n"
    assert "--insecure" in error_line(err)


def test_wss_url_to_plain_server(capsys: pytest.CaptureFixture[str]) -> None:
    # The server drops the TLS client hello when its open timeout runs out.
    with running_server(open_timeout=0.2) as port:
        assert run_cli(["connect", f"wss://127.0.0.1:{port}/", "-k", "-x", "hi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    error_line(err)


# serve: usage errors (in-process; they return before serving).


def test_serve_without_echo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "--port", "0"]) == 2
    assert "--echo" in error_line(capsys.readouterr().err, "rapidws serve: ")


@pytest.mark.parametrize("option", ["--tls-cert", "--tls-key"])
def test_serve_tls_half(option: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "file.pem"
    path.write_text("")
    assert run_cli(["serve", "--echo", "--port", "0", option, str(path)]) == 2
    line = error_line(capsys.readouterr().err, "rapidws serve: ")
    assert "--tls-cert" in line
    assert "--tls-key" in line


def test_serve_bad_certificate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    argv = ["serve", "--echo", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(cert)]
    assert run_cli(argv) == 1
    assert "certificate" in error_line(capsys.readouterr().err, "rapidws serve: ")


def test_serve_missing_certificate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    argv = ["serve", "--echo", "--port", "0", "--tls-cert", missing, "--tls-key", missing]
    assert run_cli(argv) == 1
    error_line(capsys.readouterr().err, "rapidws serve: ")


def test_serve_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert run_cli(["serve", "--echo", "--host", "127.0.0.1", "--port", str(port)]) == 1
    error_line(capsys.readouterr().err, "rapidws serve: ")


# serve: in a subprocess.
#
# These tests are synchronous and run their client on asyncio's default loop
# with asyncio.run(), as the CLI itself does.


def run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 6 * TIMEOUT))


@contextlib.asynccontextmanager
async def serve_process(
    *options: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Run ``python -m rapidws serve --echo --port 0 *options``; yield (process, url)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rapidws", "serve", "--echo",
        "--host", "127.0.0.1", "--port", "0", *options,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 3 * TIMEOUT)
        match = re.search(r"listening on (wss?://127\.0\.0\.1:\d+)$", line.decode().strip())
        assert match is not None, line
        yield process, match[1]
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT)


async def stop_process(process: asyncio.subprocess.Process, signum: int) -> str:
    """Send ``signum``; check the process exits with 0; return the rest of its stderr."""
    process.send_signal(signum)
    assert process.stderr is not None
    err = await asyncio.wait_for(process.stderr.read(), TIMEOUT)
    assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, err
    return err.decode()


@needs_signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_echo(signum: int) -> None:
    async def main() -> None:
        async with serve_process() as (process, url):
            assert url.startswith("ws://")
            ws = await rapidws.connect(url + "/any/path?x=1", open_timeout=TIMEOUT)
            try:
                await ws.send("hello ☕")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello ☕"
                await ws.send(b"\x00\xff")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xff"
                await ws.send(bytearray(b"ba"))
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"ba"
                await ws.send(["frag", "mented"])
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "fragmented"
                err = await stop_process(process, signum)
                with pytest.raises(rapidws.ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == 1001
            finally:
                await asyncio.wait_for(ws.close(), TIMEOUT)
        assert "shutting down" in err
        assert "Traceback" not in err

    run_async(main())


@needs_signals
def test_serve_stop_at_once() -> None:
    # The server handles signals as soon as it says that it listens.
    async def main() -> None:
        async with serve_process() as (process, _):
            err = await stop_process(process, signal.SIGTERM)
        assert "shutting down" in err
        assert "Traceback" not in err

    run_async(main())


@needs_signals
def test_serve_max_size() -> None:
    async def main() -> None:
        async with serve_process("--max-size", "10") as (process, url):
            async with rapidws.connect(url, open_timeout=TIMEOUT) as ws:
                await ws.send(b"x" * 10)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"x" * 10
                await ws.send(b"x" * 11)
                with pytest.raises(rapidws.ConnectionClosedError) as raised:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert raised.value.code == 1009
            assert ws.close_code == 1009
            # The server goes on serving other connections.
            async with rapidws.connect(url, open_timeout=TIMEOUT) as ws:
                await ws.send("0123456789")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "0123456789"
            await stop_process(process, signal.SIGTERM)

    run_async(main())


@needs_signals
def test_serve_max_size_zero_is_unlimited() -> None:
    big = b"x" * (2**21)

    async def main() -> None:
        async with serve_process("--max-size", "0") as (process, url):
            async with rapidws.connect(url, open_timeout=TIMEOUT, max_size=None) as ws:
                await ws.send(big)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == big
            await stop_process(process, signal.SIGTERM)

    run_async(main())


@needs_signals
def test_serve_tls(tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert) -> None:
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(b"".join(pem.bytes() for pem in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    options = ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]

    async def main() -> None:
        async with serve_process(*options) as (process, url):
            assert url.startswith("wss://127.0.0.1:")
            async with rapidws.connect(url, ssl=context, open_timeout=TIMEOUT) as ws:
                await ws.send("over TLS")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "over TLS"
                await ws.send(b"\x01")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x01"
            port = url.rsplit(":", 1)[1]
            async with rapidws.connect(f"wss://localhost:{port}", ssl=context) as ws:
                await ws.send("by name")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "by name"
            # A client without the CA refuses the certificate.
            with pytest.raises(ssl.SSLCertVerificationError):
                await rapidws.connect(url, open_timeout=TIMEOUT)
            await stop_process(process, signal.SIGTERM)

    run_async(main())


@pytest.mark.parametrize("flag", [[], ["--no-compression"]])
def test_connect_offers_compression_unless_told_not_to(
    flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str | None] = []

    def record(connection: object, request: rapidws.Request) -> None:
        seen.append(request.headers.get("Sec-WebSocket-Extensions"))

    with running_server(process_request=record) as port:
        assert run_cli(["connect", *flag, "-x", "hi", f"ws://127.0.0.1:{port}/"]) == 0
    assert capsys.readouterr().out == "hi\n"
    assert seen == (["permessage-deflate; client_max_window_bits"] if not flag else [None])


# serve MODULE:APP: loading the app (in-process; errors return before serving).

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the test a copy of sys.path: ``serve`` may put the current directory on it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make ``tmp_path`` the current directory, not on sys.path: ``serve`` must add it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source)
    importlib.invalidate_caches()


def test_serve_app_and_echo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "tests.cli_apps:app", "--echo", "--port", "0"]) == 2
    line = error_line(capsys.readouterr().err, "rapidws serve: ")
    assert "not both" in line


@pytest.mark.parametrize("argv", [["--factory"], ["--factory", "--echo"]])
def test_serve_factory_without_app(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", *argv, "--port", "0"]) == 2
    assert "--factory" in error_line(capsys.readouterr().err, "rapidws serve: ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tests.cli_apps"], "expected MODULE:APP"),
        ([":app"], "expected MODULE:APP"),
        (["tests.cli_apps:"], "expected MODULE:APP"),
        (["tests.no_such_module:app"], "no module named 'tests.no_such_module'"),
        (["no_such_package.sub:app"], "no module named 'no_such_package.sub'"),
        (["tests.cli_apps:missing"], "module 'tests.cli_apps' has no attribute 'missing'"),
        (["tests.cli_apps:holder.missing"], "has no attribute 'holder.missing'"),
        (["tests.cli_apps:not_an_app"], "tests.cli_apps:not_an_app is not a rapidws.App but int"),
        (["tests.cli_apps:factory"], "but function; pass --factory if it returns one"),
        (["tests.cli_apps:App"], "but the class App; pass --factory"),
        (["tests.cli_apps:app", "--factory"], "is an App, not a factory: drop --factory"),
        (["tests.cli_apps:not_an_app", "--factory"], "is not callable but int"),
        (
            ["tests.cli_apps:not_an_app_factory", "--factory"],
            "the factory tests.cli_apps:not_an_app_factory returned int, not a rapidws.App",
        ),
        (
            ["tests.cli_apps:failing_factory", "--factory"],
            "the factory tests.cli_apps:failing_factory raised RuntimeError: no configuration",
        ),
    ],
)
def test_serve_app_load_error(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], own_sys_path: None
) -> None:
    assert run_cli(["serve", *argv, "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in error_line(err, "rapidws serve: ")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # An import inside the module fails: not "no module named 'broken'".
        (
            "import no_such_dependency_42\n",
            "cannot import module 'broken': "
            "ModuleNotFoundError: No module named 'no_such_dependency_42'",
        ),
        ("raise ValueError('bad\\nsetting')\n", "cannot import module 'broken': ValueError: bad"),
        ("app = (\n", "cannot import module 'broken': SyntaxError: "),
    ],
)
def test_serve_app_import_fails(
    source: str, expected: str, app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_module(app_dir, "broken", source)
    assert run_cli(["serve", "broken:app", "--port", "0"]) == 2
    assert expected in error_line(capsys.readouterr().err, "rapidws serve: ")


def test_serve_app_from_current_directory(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in the current directory: the error is about the object, not the module.
    write_module(app_dir, "in_cwd", "app = 'an app?'\n")
    assert run_cli(["serve", "in_cwd:app", "--port", "0"]) == 2
    assert "in_cwd:app is not a rapidws.App but str" in error_line(
        capsys.readouterr().err, "rapidws serve: "
    )


def test_load_app(app_dir: Path) -> None:
    from rapidws.cli.serve import load_app

    write_module(
        app_dir,
        "my_service",
        "import types\n"
        "import rapidws\n"
        "app = rapidws.App()\n"
        "deep = types.SimpleNamespace(inner=types.SimpleNamespace(app=app))\n"
        "def create():\n"
        "    return rapidws.App()\n",
    )
    app = load_app("my_service:app")
    module = importlib.import_module("my_service")
    assert app is module.app
    assert load_app("my_service:deep.inner.app") is module.app
    made = load_app("my_service:create", factory=True)
    assert isinstance(made, rapidws.App)
    assert made is not module.app


def test_serve_startup_fails(capsys: pytest.CaptureFixture[str], own_sys_path: None) -> None:
    assert run_cli(["serve", "tests.cli_apps:failing", "--port", "0"]) == 1
    line = error_line(capsys.readouterr().err, "rapidws serve: ")
    assert "failed to start" in line
    assert "RuntimeError: no database" in line


def test_serve_app_port_in_use(capsys: pytest.CaptureFixture[str], own_sys_path: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = ["serve", "tests.cli_apps:app", "--host", "127.0.0.1", "--port", str(port)]
        assert run_cli(argv) == 1
    line = error_line(capsys.readouterr().err, "rapidws serve: ")
    assert "failed to start" not in line


def test_serve_root_not_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_cli(["serve", "--echo", "--port", "0", "--root", str(tmp_path / "nowhere")]) == 2
    assert "--root" in error_line(capsys.readouterr().err, "rapidws serve: ")


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_serve_bad_drain(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "--echo", "--port", "0", "--drain", value]) == 2
    assert "--drain" in capsys.readouterr().err


# serve MODULE:APP: in a subprocess, with real sockets and signals.


@contextlib.asynccontextmanager
async def app_process(
    *argv: str, marker: Path | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """Run ``python -m rapidws serve *argv`` on a free port from the repository; yield it and
    its port. The app's hooks write to ``marker``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if marker is not None:
        env["RAPIDWS_TEST_MARKER"] = str(marker)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rapidws", "serve", *argv, "--host", "127.0.0.1", "--port", "0",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 3 * TIMEOUT)).decode()
        match = re.fullmatch(
            rf"rapidws: serving {re.escape(argv[0])} on ws://127\.0\.0\.1:(\d+)\n", line
        )
        assert match is not None, line
        yield process, int(match[1])
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port``; return the status and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def wait_for_status(port: int, path: str, status: int) -> bytes:
    """Poll ``path`` until it answers ``status`` (for up to TIMEOUT); return the body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        got, body = await asyncio.to_thread(http_get, port, path)
        if got == status:
            return body
        assert loop.time() < deadline, f"{path} still answers {got}, not {status}"
        await asyncio.sleep(0.02)


@needs_signals
@pytest.mark.parametrize(
    ("argv", "greeting", "code"),
    [
        (["tests.cli_apps:app"], "hello", 1001),
        (["tests.cli_apps:holder.app", "--restart"], "hello", 1012),
        (["tests.cli_apps:factory", "--factory"], "bonjour", 1001),
    ],
)
def test_serve_app(argv: list[str], greeting: str, code: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def main() -> None:
        async with app_process(*argv, marker=marker) as (process, port):
            assert await asyncio.to_thread(http_get, port, "/hello") == (
                200,
                f'{{"greeting":"{greeting}"}}'.encode(),
            )
            assert await asyncio.to_thread(http_get, port, "/ready") == (200, b"ready\n")
            assert (await asyncio.to_thread(http_get, port, "/ws/ann"))[0] == 426
            assert (await asyncio.to_thread(http_get, port, "/nowhere"))[0] == 404
            ws = await rapidws.connect(f"ws://127.0.0.1:{port}/ws/ann", open_timeout=TIMEOUT)
            try:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"{greeting} ann: hi"
                err = await stop_process(process, signal.SIGTERM)
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == code
            finally:
                await asyncio.wait_for(ws.close(), TIMEOUT)
        assert err == f"rapidws: SIGTERM: shutting down: closing connections with {code}\n"
        assert marker.read_text().splitlines() == ["startup", "shutdown"]

    run_async(main())


@needs_signals
def test_serve_app_drain(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    drain = 2 * TIMEOUT_FACTOR

    async def main() -> None:
        loop = asyncio.get_running_loop()
        options = ["--drain", str(drain)]
        async with app_process("tests.cli_apps:app", *options, marker=marker) as (process, port):
            url = f"ws://127.0.0.1:{port}/ws/"
            async with rapidws.connect(url + "bob", open_timeout=TIMEOUT) as ws:
                process.send_signal(signal.SIGTERM)
                signalled = loop.time()
                # Draining: readiness and new handshakes answer 503, other
                # routes and open connections go on.
                body = await wait_for_status(port, "/ready", 503)
                assert b"shutting down" in body
                with pytest.raises(rapidws.InvalidStatus) as raised:
                    await rapidws.connect(url + "eve", open_timeout=TIMEOUT)
                assert raised.value.response.status == 503
                assert (await asyncio.to_thread(http_get, port, "/hello"))[0] == 200
                await ws.send("still there?")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello bob: still there?"
                # Then the connection closes with 1001 and the process exits.
                assert process.stderr is not None
                err = await asyncio.wait_for(process.stderr.read(), drain + TIMEOUT)
                assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, err
                assert loop.time() - signalled > drain * 0.75  # it did wait
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == 1001
        assert "draining for" in err.decode()
        assert "Traceback" not in err.decode()
        assert marker.read_text().splitlines() == ["startup", "shutdown"]

    run_async(main())


@needs_signals
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_serve_app_second_signal_ends_drain(second: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def main() -> None:
        # A drain far longer than the test may take: the second signal ends it.
        options = ["--drain", "600", "--restart"]
        async with (
            app_process("tests.cli_apps:app", *options, marker=marker) as (process, port),
            rapidws.connect(f"ws://127.0.0.1:{port}/ws/cy", open_timeout=TIMEOUT) as ws,
        ):
            process.send_signal(signal.SIGTERM)
            await wait_for_status(port, "/ready", 503)
            err = await stop_process(process, second)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1012
        assert "Traceback" not in err
        assert marker.read_text().splitlines() == ["startup", "shutdown"]

    run_async(main())


@needs_signals
def test_serve_app_root(tmp_path: Path) -> None:
    root = tmp_path / "public"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "js" / "app.js").write_text("connect();\n")
    (root / ".env").write_text("SECRET=1\n")

    async def main() -> None:
        async with app_process("tests.cli_apps:app", "--root", str(root)) as (process, port):
            # The files, at "/", beside the app's routes, which come first.
            assert await asyncio.to_thread(http_get, port, "/") == (200, b"<h1>home</h1>\n")
            assert await asyncio.to_thread(http_get, port, "/js/app.js") == (200, b"connect();\n")
            assert (await asyncio.to_thread(http_get, port, "/.env"))[0] == 404
            assert (await asyncio.to_thread(http_get, port, "/missing.css"))[0] == 404
            assert await asyncio.to_thread(http_get, port, "/hello") == (
                200,
                b'{"greeting":"hello"}',
            )
            async with rapidws.connect(f"ws://127.0.0.1:{port}/ws/dan", open_timeout=TIMEOUT) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello dan: hi"
            await stop_process(process, signal.SIGTERM)

    run_async(main())


@needs_signals
def test_serve_echo_root(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>echo</h1>\n")

    async def main() -> None:
        async with serve_process("--root", str(tmp_path)) as (process, url):
            port = int(url.rsplit(":", 1)[1])
            assert await asyncio.to_thread(http_get, port, "/") == (200, b"<h1>echo</h1>\n")
            for path in ("", "/", "/any/path"):
                async with rapidws.connect(url + path, open_timeout=TIMEOUT) as ws:
                    await ws.send(path)
                    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == path
            await stop_process(process, signal.SIGTERM)

    run_async(main())


@needs_signals
def test_serve_shutdown_fails() -> None:
    async def main() -> None:
        async with app_process("tests.cli_apps:failing_shutdown") as (process, _):
            process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            err = (await asyncio.wait_for(process.stderr.read(), TIMEOUT)).decode()
            assert await asyncio.wait_for(process.wait(), TIMEOUT) == 1, err
        assert "Traceback" not in err
        assert err.splitlines()[-1] == (
            "rapidws serve: a shutdown hook failed: RuntimeError: cannot flush"
        )

    run_async(main())
