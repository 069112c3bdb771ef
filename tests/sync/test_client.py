"""The sync client against real asyncio servers: opening, messages, pings, closing, options."""

from __future__ import annotations

import asyncio
import gc
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws
import rapidws.asyncio.client
import rapidws.sync
from rapidws import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidProxy,
    InvalidStatus,
    InvalidURI,
    ProxyRefused,
    State,
)
from rapidws.sync.connection import threaded

from ..proxy_servers import PASSWORD, USER, stunnel, tinyproxy
from .utils import TIMEOUT, ServerThread, closes_first_with, echo, loop_threads, until

# Each test runs with the loop thread on asyncio's loop and on uvloop's.
pytestmark = pytest.mark.usefixtures("sync_loop")


def test_send_recv_text_and_binary() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        assert isinstance(ws, rapidws.sync.ClientConnection)
        assert ws.state is State.OPEN
        ws.send("text")
        assert ws.recv(timeout=TIMEOUT) == "text"
        ws.send(b"\x00binary")
        assert ws.recv(timeout=TIMEOUT) == b"\x00binary"
        ws.send(bytearray(b"ba"))
        assert ws.recv(timeout=TIMEOUT) == b"ba"
        assert ws.remote_address[1] == server.port
        assert ws.local_address[0] == "127.0.0.1"
        assert ws.response is not None and ws.response.status == 101
        assert ws.close_code is None
    assert ws.state is State.CLOSED  # type: ignore[comparison-overlap]  # mypy narrowed it
    assert ws.close_code == 1000


def test_iteration_ends_on_normal_close() -> None:
    async def three(ws: Any) -> None:
        for i in range(3):
            await ws.send(f"m{i}")
        await ws.close(1000, "done")

    with ServerThread(three) as server, rapidws.sync.connect(server.uri) as ws:
        assert list(ws) == ["m0", "m1", "m2"]
        assert (ws.close_code, ws.close_reason) == (1000, "done")
        # Once closed, the same exception as the asyncio client's.
        with pytest.raises(ConnectionClosedOK):
            ws.recv()


def test_iteration_raises_on_abnormal_close() -> None:
    async def fail(ws: Any) -> None:
        await ws.send("before")
        await ws.close(1011, "broken")

    with ServerThread(fail) as server, rapidws.sync.connect(server.uri) as ws:
        received = []
        with pytest.raises(ConnectionClosedError) as info:
            for message in ws:
                received.append(message)
        assert received == ["before"]
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        assert ws.close_code == 1011


def test_json() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        ws.send_json({"a": [1, 2]})
        assert ws.recv_json(timeout=TIMEOUT) == {"a": [1, 2]}


def test_ping_returns_round_trip_time() -> None:
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        rtt = ws.ping()
        assert 0 < rtt < TIMEOUT
        assert ws.latency == rtt
        assert 0 < ws.ping(b"payload", timeout=TIMEOUT) < TIMEOUT
        ws.pong(b"unsolicited")  # the peer ignores it; the connection goes on
        ws.send("still open")
        assert ws.recv(timeout=TIMEOUT) == "still open"


def test_close_with_code_and_reason() -> None:
    seen: list[tuple[int | None, str | None]] = []

    async def record(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        finally:  # 4000 is not a normal closure: the iteration raises
            seen.append((ws.close_code, ws.close_reason))

    with ServerThread(record) as server:
        ws = rapidws.sync.connect(server.uri)
        ws.close(4000, "bye")
        assert (ws.close_code, ws.close_reason) == (4000, "bye")
        ws.close()  # again: nothing more
        until(lambda: bool(seen))
    assert seen == [(4000, "bye")]
    # 4000 is not a normal closure (1000, 1001): as the asyncio client says.
    with pytest.raises(ConnectionClosedError):
        ws.send("after close")
    with pytest.raises(ConnectionClosedError):
        ws.ping()


def test_refused_handshake_raises_invalid_status_and_leaves_no_thread() -> None:
    def refuse(connection: Any, request: Any) -> rapidws.Response:
        return rapidws.Response(403, "go away\n")

    with ServerThread(echo, process_request=refuse) as server:
        before = set(threading.enumerate())
        with pytest.raises(InvalidStatus) as info:
            rapidws.sync.connect(server.uri)
        assert info.value.response is not None
        assert info.value.response.status == 403
        assert info.value.response.body == b"go away\n"
        assert set(threading.enumerate()) == before


def test_invalid_uri_raises_before_any_thread() -> None:
    with pytest.raises(InvalidURI):
        rapidws.sync.connect("http://127.0.0.1/")
    assert not loop_threads()


def test_open_timeout() -> None:
    # A TCP server that never answers the handshake.
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError):
            rapidws.sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2)


def test_options_pass_through() -> None:
    async def report(ws: Any) -> None:
        assert ws.request is not None
        await ws.send(ws.request.headers.get("X-Token", ""))
        await ws.send(ws.subprotocol or "")
        async for message in ws:
            await ws.send(message)

    with (
        ServerThread(report, subprotocols=["chat"]) as server,
        rapidws.sync.connect(
            server.uri,
            subprotocols=["chat"],
            additional_headers={"X-Token": "s3cret"},
            compression=None,
            max_size=1000,
            ping_interval=None,
        ) as ws,
    ):
        assert ws.subprotocol == "chat"
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.recv(timeout=TIMEOUT) == "s3cret"
        assert ws.recv(timeout=TIMEOUT) == "chat"
        ws.send("x" * 2000)  # echoed back, over the client's max_size
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.sent is not None and info.value.sent.code == 1009


def test_wss(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    with ServerThread(echo, secure=True, ssl=server_context) as server:
        with rapidws.sync.connect(server.uri, ssl=client_context) as ws:
            ws.send("secure")
            assert ws.recv(timeout=TIMEOUT) == "secure"
        # Certificate checks are on: the system's trust store does not know the test CA.
        with pytest.raises(ssl.SSLCertVerificationError):
            rapidws.sync.connect(server.uri)


def test_no_threads_left_after_close() -> None:
    with ServerThread(echo) as server:
        before = set(threading.enumerate())
        # A host name, resolved in the loop's executor thread: it goes too.
        uris = [server.uri, server.uri.replace("127.0.0.1", "localhost")]
        connections = [rapidws.sync.connect(uri) for uri in uris * 3]
        assert len(loop_threads()) == 1  # one loop thread for all of them
        for ws in connections:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == "hi"
        for ws in connections:
            ws.close()
        assert set(threading.enumerate()) == before
        # And again: a fresh loop thread starts, and ends.
        with rapidws.sync.connect(server.uri) as ws:
            ws.send("again")
            assert ws.recv(timeout=TIMEOUT) == "again"
        assert set(threading.enumerate()) == before


def test_connection_dropped_without_close_releases_the_loop() -> None:
    closed = threading.Event()

    async def wait_end(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        finally:  # dropped, not closed: 1006, the iteration raises
            closed.set()

    with ServerThread(wait_end) as server:
        ws = rapidws.sync.connect(server.uri)
        (thread,) = loop_threads()
        del ws
        gc.collect()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert closed.wait(TIMEOUT)


def test_works_inside_a_running_event_loop() -> None:
    # A Jupyter kernel's cell runs in a thread whose event loop is running.
    with ServerThread(echo) as server:

        async def cell() -> object:
            with rapidws.sync.connect(server.uri) as ws:
                ws.send("from a loop")
                reply = ws.recv(timeout=TIMEOUT)
                assert 0 < ws.ping(timeout=TIMEOUT) < TIMEOUT
            return reply

        assert asyncio.run(asyncio.wait_for(cell(), TIMEOUT)) == "from a loop"


def test_use_from_the_loop_thread_raises_instead_of_deadlocking() -> None:
    # Code running on the private loop (a future callback) must use the
    # asyncio connection: a blocking call there would wait for itself.
    with ServerThread(echo) as server, rapidws.sync.connect(server.uri) as ws:
        outcome: list[BaseException] = []
        done = threading.Event()

        def on_loop() -> None:
            try:
                ws.send("from the loop")
            except BaseException as exc:
                outcome.append(exc)
            done.set()

        ws._lease.loop.call_soon_threadsafe(on_loop)
        assert done.wait(TIMEOUT)
        (exc,) = outcome
        assert isinstance(exc, RuntimeError) and "own event loop thread" in str(exc)
        ws.send("still usable")
        assert ws.recv(timeout=TIMEOUT) == "still usable"


# Reconnection: for ws in connections(uri, reconnect=...).


def test_connections_reconnect_after_a_retryable_close() -> None:
    calls: list[tuple[int, float, int]] = []

    def on_reconnect(attempt: int, delay: float, cause: BaseException) -> None:
        assert isinstance(cause, rapidws.ConnectionClosed)
        calls.append((attempt, delay, cause.code))

    policy = rapidws.Backoff(initial=0.05)
    with ServerThread(closes_first_with(1012)) as server:
        seen = []
        for ws in rapidws.sync.connections(server.uri, reconnect=policy, on_reconnect=on_reconnect):
            seen.append(ws)
            try:
                ws.send("hello")
                assert ws.recv(timeout=TIMEOUT) == "hello"
            except ConnectionClosedError:
                continue
        # The second connection, left open by the body, was closed normally.
        assert len(seen) == 2 and seen[1].close_code == 1000
        assert seen[0].close_code == 1012
        [(attempt, delay, code)] = calls
        assert attempt == 1 and 0 <= delay < 0.05 and code == 1012
    assert not loop_threads()


def test_connections_without_reconnect_yield_one() -> None:
    with ServerThread(closes_first_with(1012)) as server:
        seen = []
        for ws in rapidws.sync.connections(server.uri):
            seen.append(ws)
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=TIMEOUT)
        assert len(seen) == 1


def test_connections_raise_at_once_on_a_close_not_worth_retrying() -> None:
    with ServerThread(closes_first_with(1008)) as server:
        with pytest.raises(ConnectionClosedError) as info:
            for ws in rapidws.sync.connections(server.uri, reconnect=True):
                try:
                    ws.recv(timeout=TIMEOUT)
                except ConnectionClosedError:
                    continue
        assert info.value.code == 1008 and info.value.reason == "first"
    assert not loop_threads()


def test_connections_raise_at_once_on_a_403() -> None:
    def process_request(ws: Any, request: Any) -> rapidws.Response:
        return rapidws.Response(403, "no\n")

    with ServerThread(echo, process_request=process_request) as server:
        with pytest.raises(InvalidStatus) as info:
            for _ in rapidws.sync.connections(server.uri, reconnect=True):
                raise AssertionError("connected")
        assert info.value.response.status == 403
    assert not loop_threads()


def test_connections_give_up_after_max_attempts() -> None:
    with ServerThread(echo) as server:
        url = server.uri
    attempts: list[int] = []
    policy = rapidws.Backoff(initial=0.01, max_attempts=2)
    with pytest.raises(ConnectionRefusedError):
        for _ in rapidws.sync.connections(
            url, reconnect=policy, on_reconnect=lambda n, d, c: attempts.append(n)
        ):
            raise AssertionError("connected")
    assert attempts == [1, 2]
    assert not loop_threads()


def test_connections_break_leaves_the_connection_open() -> None:
    with ServerThread(echo) as server:
        connections = rapidws.sync.connections(server.uri, reconnect=True)
        ws = next(connections)
        del connections  # what a break does: the iteration ends, not the connection
        assert ws.state is State.OPEN
        ws.send("after break")
        assert ws.recv(timeout=TIMEOUT) == "after break"
        ws.close()
    assert not loop_threads()


def test_connections_invalid_uri_raises_before_any_thread() -> None:
    with pytest.raises(InvalidURI):
        rapidws.sync.connections("http://example.com/")
    assert not loop_threads()


def test_wss_through_proxies(
    tmp_path: Path,
    server_cert: trustme.LeafCert,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    sync_loop: str,
) -> None:
    # The asyncio client's proxy option, reached through the same arguments.
    with (
        tinyproxy(tmp_path) as http_port,
        stunnel(tmp_path, server_cert, http_port) as https_port,
        ServerThread(echo, secure=True, ssl=server_context) as server,
    ):
        uri = f"wss://localhost:{server.port}/"
        options = {"ssl": client_context, "proxy_ssl": client_context}
        https_proxy = f"https://{USER}:{PASSWORD}@localhost:{https_port}"
        proxies = [(f"http://{USER}:{PASSWORD}@127.0.0.1:{http_port}", http_port)]
        if sys.version_info >= (3, 11) or sync_loop == "uvloop":
            proxies.append((https_proxy, https_port))
        else:  # TLS in TLS: asyncio's start_tls() cannot before 3.11
            with pytest.raises(InvalidProxy, match=r"needs Python 3\.11"):
                rapidws.sync.connect(uri, proxy=https_proxy, **options)
        for proxy, port in proxies:
            with rapidws.sync.connect(uri, proxy=proxy, **options) as ws:
                assert ws.remote_address[1] == port
                ws.send("tunneled")
                assert ws.recv(timeout=TIMEOUT) == "tunneled"
        with pytest.raises(ProxyRefused) as exc_info:
            rapidws.sync.connect(uri, proxy=f"http://127.0.0.1:{http_port}", ssl=client_context)
        assert exc_info.value.status == 407


def test_a_create_connection_subclass_is_kept() -> None:
    # The sync layer adds its hand-offs to the class given, not instead of it.
    class Counting(rapidws.asyncio.client.ClientConnection):
        received = 0

        def _message_received(self, message: Any) -> None:
            Counting.received += 1
            super()._message_received(message)

    with (
        ServerThread(echo) as server,
        rapidws.sync.connect(server.uri, create_connection=Counting) as ws,
    ):
        assert isinstance(ws._connection, Counting)
        ws.send("counted")
        assert ws.recv(timeout=TIMEOUT) == "counted"
        assert Counting.received == 1
    assert threaded(Counting) is threaded(Counting)


def test_http2_streams_share_one_connection_and_close() -> None:
    # While they share the loop thread, the sync connections to one origin
    # are streams of one HTTP/2 connection (h2c): the server sees one peer,
    # one HTTP/2 connection and a stream each.
    seen: list[tuple[Any, int, Any]] = []

    async def handler(ws: Any) -> None:
        transport = ws.transport
        seen.append((ws.remote_address, transport.get_extra_info("http2_stream_id"), transport))
        await echo(ws)

    with ServerThread(handler, http2=True) as server:
        sockets = [rapidws.sync.connect(server.uri, http2=True, proxy=None) for _ in range(3)]
        for n, ws in enumerate(sockets):
            assert ws.response is not None and ws.response.status == 200
            ws.send(f"m{n}")
            assert ws.recv(timeout=TIMEOUT) == f"m{n}"
        assert len({peer for peer, _, _ in seen}) == 1
        assert sorted(stream for _, stream, _ in seen) == [1, 3, 5]
        (connection,) = {transport._connection for _, _, transport in seen}
        # Closing one ends its stream only.
        sockets[0].close()
        assert sockets[0].close_code == 1000
        sockets[1].send("still open")
        assert sockets[1].recv(timeout=TIMEOUT) == "still open"
        assert not connection.transport.is_closing()
        # The last close ends the loop thread, and the HTTP/2 connection with it.
        for ws in sockets[1:]:
            ws.close()
            assert ws.close_code == 1000
        assert not loop_threads()
        until(connection.transport.is_closing)
