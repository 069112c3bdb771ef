"""Connections through real proxies (tests/proxy_servers.py), and through hostile ones.

The matrix: HTTP CONNECT, HTTPS, SOCKS5 and SOCKS4A proxies, each to ws://
and wss:// (certificates checked against the tests' CA), on asyncio and on
uvloop. Then refusals, the environment variables, and raw proxies that answer
garbage, hang up or never answer.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws
from rapidws import InvalidProxy, ProxyRefused

from ..proxy_servers import PASSWORD, USER, free_port, microsocks, ssh_socks, stunnel, tinyproxy
from .utils import TIMEOUT, RawPeer, echo, raw_server, wait

# Module-scoped: starting sshd and four proxies per test would dominate the run.


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxies")


@pytest.fixture(scope="module")
def http_proxy(proxy_dir: Path) -> Iterator[int]:
    with tinyproxy(proxy_dir) as port:
        yield port


@pytest.fixture(scope="module")
def https_proxy(proxy_dir: Path, http_proxy: int, server_cert: trustme.LeafCert) -> Iterator[int]:
    with stunnel(proxy_dir, server_cert, http_proxy) as port:
        yield port


@pytest.fixture(scope="module")
def socks5_proxy(proxy_dir: Path) -> Iterator[int]:
    with microsocks(proxy_dir) as port:
        yield port


@pytest.fixture(scope="module")
def socks4_proxy(proxy_dir: Path) -> Iterator[int]:
    with ssh_socks(proxy_dir) as port:
        yield port


PROXIES = {
    "http": ("http_proxy", f"http://{USER}:{PASSWORD}@127.0.0.1:{{port}}"),
    "https": ("https_proxy", f"https://{USER}:{PASSWORD}@localhost:{{port}}"),
    "socks5h": ("socks5_proxy", f"socks5h://{USER}:{PASSWORD}@127.0.0.1:{{port}}"),
    "socks5": ("socks5_proxy", f"socks5://{USER}:{PASSWORD}@127.0.0.1:{{port}}"),
    "socks4a": ("socks4_proxy", "socks4a://127.0.0.1:{port}"),
    "socks4": ("socks4_proxy", "socks4://127.0.0.1:{port}"),
}


def tls_in_tls_unsupported(kind: str, secure: bool) -> bool:
    # asyncio's start_tls() works over a TLS transport from Python 3.11 on.
    loop = asyncio.get_running_loop()
    return kind == "https" and secure and sys.version_info < (3, 11) and "uvloop" not in repr(loop)


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("kind", list(PROXIES))
async def test_echo_through_proxy(
    request: pytest.FixtureRequest,
    kind: str,
    secure: bool,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    fixture, template = PROXIES[kind]
    proxy_port = request.getfixturevalue(fixture)
    proxy = template.format(port=proxy_port)
    options: dict[str, Any] = {"proxy": proxy, "proxy_ssl": client_context}
    if secure:
        options["ssl"] = client_context
    scheme = "wss" if secure else "ws"
    async with rapidws.serve(
        echo, "127.0.0.1", 0, ssl=server_context if secure else None
    ) as server:
        # "localhost": the proxy resolves it, except for socks5:// and socks4://.
        uri = f"{scheme}://localhost:{server.port}/path"
        if tls_in_tls_unsupported(kind, secure):
            with pytest.raises(InvalidProxy, match=r"needs Python 3\.11 or uvloop"):
                await wait(rapidws.connect(uri, **options))
            return
        async with rapidws.connect(uri, **options) as ws:
            assert ws.transport is not None
            # The TCP connection goes to the proxy.
            assert ws.transport.get_extra_info("peername")[1] == proxy_port
            if secure:
                ssl_object = ws.transport.get_extra_info("ssl_object")
                assert ssl_object.server_hostname == "localhost"
                assert ssl_object.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")
            for message in ["text", b"\x00" * 100_000]:
                await ws.send(message)
                assert await wait(ws.recv()) == message
        assert ws.close_code == 1000


async def test_certificates_are_checked(
    http_proxy: int, https_proxy: int, server_context: ssl.SSLContext
) -> None:
    # The default trust store does not know the tests' CA: neither the
    # server's certificate, through the tunnel, nor the HTTPS proxy's.
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        for uri, proxy in [
            (f"wss://localhost:{server.port}/", f"http://{USER}:{PASSWORD}@127.0.0.1:{http_proxy}"),
            (
                f"ws://localhost:{server.port}/",
                f"https://{USER}:{PASSWORD}@localhost:{https_proxy}",
            ),
        ]:
            with pytest.raises(ssl.SSLCertVerificationError):
                await wait(rapidws.connect(uri, proxy=proxy))


# Refusals: typed, with the proxy's status and reason.


async def test_http_proxy_refuses_wrong_credentials(http_proxy: int) -> None:
    # tinyproxy asks for credentials with 407, and refuses wrong ones with 401.
    refusals = [("", 407, "Proxy Authentication Required"), (f"{USER}:wrong@", 401, "Unauthorized")]
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        for credentials, status, reason in refusals:
            with pytest.raises(ProxyRefused) as exc_info:
                await wait(
                    rapidws.connect(
                        f"ws://127.0.0.1:{server.port}/",
                        proxy=f"http://{credentials}127.0.0.1:{http_proxy}",
                    )
                )
            assert (exc_info.value.status, exc_info.value.reason) == (status, reason)
            assert f"{status} {reason}" in str(exc_info.value)


async def test_http_proxy_cannot_reach_the_server(http_proxy: int) -> None:
    with pytest.raises(ProxyRefused) as exc_info:
        await wait(
            rapidws.connect(
                f"ws://127.0.0.1:{free_port()}/",
                proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{http_proxy}",
            )
        )
    assert 500 <= exc_info.value.status < 600


async def test_socks5_proxy_refuses_missing_or_wrong_credentials(socks5_proxy: int) -> None:
    with pytest.raises(ProxyRefused) as exc_info:
        await wait(
            rapidws.connect("ws://localhost:1/", proxy=f"socks5h://127.0.0.1:{socks5_proxy}")
        )
    assert (exc_info.value.status, exc_info.value.reason) == (0xFF, "no acceptable methods")
    assert "user name and password" in str(exc_info.value)

    with pytest.raises(ProxyRefused) as exc_info:
        await wait(
            rapidws.connect(
                "ws://localhost:1/", proxy=f"socks5h://{USER}:wrong@127.0.0.1:{socks5_proxy}"
            )
        )
    assert exc_info.value.reason == "authentication failed"


async def test_socks5_proxy_cannot_reach_the_server(socks5_proxy: int) -> None:
    with pytest.raises(ProxyRefused) as exc_info:
        await wait(
            rapidws.connect(
                f"ws://127.0.0.1:{free_port()}/",
                proxy=f"socks5://{USER}:{PASSWORD}@127.0.0.1:{socks5_proxy}",
            )
        )
    assert (exc_info.value.status, exc_info.value.reason) == (0x05, "connection refused")


async def test_socks4a_proxy_cannot_reach_the_server(socks4_proxy: int) -> None:
    # OpenSSH hangs up rather than answer 0x5B: still a typed error.
    with pytest.raises(InvalidProxy, match="SOCKS4 proxy closed the connection"):
        await wait(
            rapidws.connect(
                f"ws://localhost:{free_port()}/", proxy=f"socks4a://127.0.0.1:{socks4_proxy}"
            )
        )


# The environment.


async def test_proxy_from_environment(
    http_proxy: int, monkeypatch: pytest.MonkeyPatch, client_context: ssl.SSLContext
) -> None:
    proxy = f"http://{USER}:{PASSWORD}@127.0.0.1:{http_proxy}"
    for name in ["https_proxy", "http_proxy", "all_proxy", "no_proxy"]:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        uri = f"ws://localhost:{server.port}/"
        async with rapidws.connect(uri) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername")[1] == http_proxy
        # proxy=None: direct.
        async with rapidws.connect(uri, proxy=None) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername")[1] == server.port
        # NO_PROXY: direct.
        monkeypatch.setenv("NO_PROXY", "example.com, localhost")
        async with rapidws.connect(uri) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername")[1] == server.port


async def test_https_proxy_from_environment_for_wss(
    http_proxy: int,
    monkeypatch: pytest.MonkeyPatch,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    for name in ["https_proxy", "http_proxy", "all_proxy", "no_proxy"]:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("https_proxy", f"http://{USER}:{PASSWORD}@127.0.0.1:{http_proxy}")
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        uri = f"wss://localhost:{server.port}/"
        async with rapidws.connect(uri, ssl=client_context) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername")[1] == http_proxy
        # https_proxy is not for ws://.
        async with (
            rapidws.serve(echo, "127.0.0.1", 0) as plain,
            rapidws.connect(f"ws://localhost:{plain.port}/") as ws,
        ):
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername")[1] == plain.port


async def test_invalid_proxy_url_fails_at_once() -> None:
    with pytest.raises(InvalidProxy, match="scheme"):
        rapidws.connect("ws://localhost/", proxy="ftp://proxy")


# Hostile proxies: every failure is typed and bounded.


@pytest.mark.parametrize(
    ("scheme", "answer", "message"),
    [
        ("http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "invalid status line"),
        ("http", b"\x16\x03\x01\x00\x05hello", "not an HTTP/1.1 message"),
        ("http", b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "too many header"),
        ("http", b"HTTP/1.1 200 OK\r\nX: " + b"y" * 10_000, "line is too long"),
        ("http", b"HTTP/1.1 200 OK\r\n" + (b"X: " + b"y" * 8000 + b"\r\n") * 5, "too large"),
        ("http", b"HTTP/1.1 200 OK\r\n\r\nunasked", "data after opening the tunnel"),
        ("socks5h", b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a SOCKS5 proxy"),
        ("socks5h", b"\x05\x00\x05\x00\x00\x07\x00", "unknown address type"),
        ("socks4a", b"\x05\x00\x00\x00\x00\x00\x00\x00", "not a SOCKS4 reply"),
    ],
)
async def test_proxy_answering_garbage(scheme: str, answer: bytes, message: str) -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.reader.read(1)
        peer.send(answer)
        await peer.read_eof()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidProxy, match=message) as exc_info:
            await wait(rapidws.connect("ws://localhost/", proxy=f"{scheme}://127.0.0.1:{port}"))
        assert not isinstance(exc_info.value, ProxyRefused)


@pytest.mark.parametrize(
    ("scheme", "partial"),
    [
        ("http", b""),
        ("http", b"HTTP/1.1 200 Connection est"),
        ("socks5h", b"\x05"),
        ("socks5h", b"\x05\x00\x05\x00\x00\x01\x7f\x00"),
        ("socks4a", b"\x00\x5a\x00"),
    ],
)
async def test_proxy_closing_mid_handshake(scheme: str, partial: bytes) -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.reader.read(1)
        peer.send(partial)
        peer.writer.close()

    async with raw_server(handler) as port:
        with pytest.raises(InvalidProxy, match="proxy closed the connection before"):
            await wait(rapidws.connect("ws://localhost/", proxy=f"{scheme}://127.0.0.1:{port}"))


@pytest.mark.virtual_clock
async def test_proxy_that_never_answers_is_bounded_by_open_timeout() -> None:
    async def handler(peer: RawPeer) -> None:
        await peer.read_eof(timeout=2 * TIMEOUT)

    async with raw_server(handler) as port:
        loop = asyncio.get_running_loop()
        for scheme in ["http", "socks5h", "socks4a"]:
            start = loop.time()
            with pytest.raises(TimeoutError):
                await rapidws.connect(
                    "ws://localhost/", proxy=f"{scheme}://127.0.0.1:{port}", open_timeout=0.5
                )
            assert loop.time() - start == pytest.approx(0.5)
