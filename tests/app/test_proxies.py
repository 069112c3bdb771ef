"""Behind a reverse proxy: Forwarded / X-Forwarded-* parsing, trusted peers, a real nginx in front.

The nginx tests start Debian's ``nginx`` binary as a child process on free
ports of 127.0.0.1, terminating TLS (a ``trustme`` certificate) and proxying
to an App. The client connects from 127.0.0.2, so that its address differs
from the proxy's (127.0.0.1, the only trusted one). Without nginx they skip,
except on CI (``CI`` set), where they fail: ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import trustme

import rapidws
from rapidws import App, ConnectionClosed, Request
from rapidws.app.application import RouteSettings
from rapidws.app.proxies import (
    TrustedProxies,
    connection_of,
    parse_forwarded,
    parse_node,
    parse_x_forwarded_for,
)
from rapidws.asyncio.server import Server, ServerConnection
from rapidws.core.headers import Headers

from ..asyncio.utils import TIMEOUT, TIMEOUT_FACTOR, wait

# Parsing: RFC 7239.


def test_parse_forwarded_rfc7239_examples() -> None:
    # RFC 7239 sections 4 and 7.1.
    assert parse_forwarded('for="_gazonk"') == [{"for": "_gazonk"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [
        {"for": "[2001:db8:cafe::17]:4711"}
    ]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert parse_forwarded("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]


def test_parse_forwarded_quoting_case_and_lists() -> None:
    assert parse_forwarded(r'for="_a\"b\\c";PROTO=https') == [{"for": '_a"b\\c', "proto": "https"}]
    # Quoted commas and semicolons stay in their value.
    assert parse_forwarded('host="a,b;c";for=_x') == [{"host": "a,b;c", "for": "_x"}]
    # Empty elements and pairs are allowed; whitespace around separators tolerated.
    assert parse_forwarded(" , for=_a;; proto=http ,, ") == [{"for": "_a", "proto": "http"}]
    assert parse_forwarded("") == []


@pytest.mark.parametrize(
    "value",
    [
        "for=[2001:db8::1]",  # ":" and "[" are no token characters: quote them
        "for=192.0.2.60:4711",
        'for="192.0.2.60',  # unterminated
        "for=_a;for=_b",  # a parameter twice in an element
        "for=_a proto=http",
        "for = _a",
        "=_a",
        "for=",
        "for=_a;\x00",
    ],
)
def test_parse_forwarded_refuses_malformed_values(value: str) -> None:
    with pytest.raises(ValueError):
        parse_forwarded(value)


@pytest.mark.parametrize(
    ("value", "node"),
    [
        ("192.0.2.60", ("192.0.2.60", 0)),
        ("192.0.2.60:4711", ("192.0.2.60", 4711)),
        ("[2001:db8:cafe::17]", ("2001:db8:cafe::17", 0)),
        ("[2001:DB8:CAFE:0::17]:4711", ("2001:db8:cafe::17", 4711)),
        ("unknown", ("unknown", 0)),
        ("UNKNOWN:_port", ("unknown", 0)),
        ("_hidden", ("_hidden", 0)),
        ("_SEVKISEK:_p1", ("_SEVKISEK", 0)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
    ],
)
def test_parse_node(value: str, node: tuple[str, int]) -> None:
    assert parse_node(value) == node


@pytest.mark.parametrize(
    "value",
    [
        "2001:db8::1",  # RFC 7239 section 6: IPv6 in brackets
        "[192.0.2.60]",
        "[2001:db8::1",
        "[2001:db8::1]4711",
        "192.0.2.60:65536",
        "192.0.2.60:",
        "192.0.2.60:-1",
        "192.0.2.256",
        "_",
        "hostname",
        "",
    ],
)
def test_parse_node_refuses_what_is_no_node(value: str) -> None:
    with pytest.raises(ValueError):
        parse_node(value)


def test_parse_x_forwarded_for_entries() -> None:
    assert parse_x_forwarded_for(" 203.0.113.195 ") == ("203.0.113.195", 0)
    assert parse_x_forwarded_for("203.0.113.195:41237") == ("203.0.113.195", 41237)
    assert parse_x_forwarded_for("2001:db8:85a3::8a2e:370:7334") == (
        "2001:db8:85a3::8a2e:370:7334",
        0,
    )
    assert parse_x_forwarded_for("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_x_forwarded_for("unknown") == ("unknown", 0)
    for bad in ["", "_hidden", "example.com", "1.2.3.4:x", "[_x]", "_x.y:80", "1.2.3"]:
        with pytest.raises(ValueError):
            parse_x_forwarded_for(bad)


# Trusted proxies.


def test_trusted_proxies_take_addresses_and_networks() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", ip_network("fd00::/8")])
    for host in ["127.0.0.1", "10.1.2.3", "::1", "fd12::1", "::ffff:10.0.0.7"]:
        assert proxies.trusts(host), host
    for host in ["127.0.0.2", "11.0.0.1", "::2", "unknown", "_hidden", "", None, "x"]:
        assert not proxies.trusts(host), host
    assert proxies
    assert not TrustedProxies([])
    assert not TrustedProxies(iter([]))


def test_trusted_proxies_refuse_bad_entries() -> None:
    with pytest.raises(TypeError):
        TrustedProxies("127.0.0.1")
    with pytest.raises(ValueError, match="host bits"):
        TrustedProxies(["10.0.0.1/8"])
    with pytest.raises(ValueError, match="'\\*'"):
        TrustedProxies(["*"])
    with pytest.raises(ValueError):
        App(trusted_proxies=["localhost"])


PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])


def resolve(*headers: tuple[str, str]) -> tuple[Any, Any]:
    return PROXIES.resolve(Headers(list(headers)))


def test_resolve_x_forwarded_for_takes_the_first_untrusted_hop_from_the_right() -> None:
    assert resolve() == (None, None)
    assert resolve(("X-Forwarded-For", "203.0.113.7")) == (("203.0.113.7", 0), None)
    # The client prepended a forged hop: it is left of the real one, never read.
    assert resolve(("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.2")) == (
        ("203.0.113.7", 0),
        None,
    )
    # Nor is a malformed one there: the client cannot make us fall back to the peer.
    assert resolve(("X-Forwarded-For", "<script>, 203.0.113.7")) == (("203.0.113.7", 0), None)
    # Several field lines are one list; empty elements are skipped.
    assert resolve(
        ("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "203.0.113.7, ,10.0.0.2")
    ) == (("203.0.113.7", 0), None)
    # All trusted: the leftmost.
    assert resolve(("X-Forwarded-For", "10.0.0.3, 10.0.0.2")) == (("10.0.0.3", 0), None)
    assert resolve(("X-Forwarded-For", "[2001:db8::1]:443, ::1")) == (("2001:db8::1", 443), None)
    # What a trusted proxy wrote is malformed: the header is ignored.
    assert resolve(("X-Forwarded-For", "203.0.113.7, bogus")) == (None, None)
    assert resolve(("X-Forwarded-For", " , ")) == (None, None)
    # "unknown" is a hop that is no trusted proxy: the client is unknown.
    assert resolve(("X-Forwarded-For", "6.6.6.6, unknown")) == (("unknown", 0), None)


def test_resolve_x_forwarded_proto() -> None:
    assert resolve(("X-Forwarded-Proto", "https")) == (None, "wss")
    assert resolve(("X-Forwarded-Proto", "HTTP")) == (None, "ws")
    assert resolve(("X-Forwarded-Proto", "wss")) == (None, "wss")
    assert resolve(("X-Forwarded-Proto", "gopher")) == (None, None)
    # Aligned with X-Forwarded-For from the right.
    both = ("X-Forwarded-For", "203.0.113.7, 10.0.0.2")
    assert resolve(both, ("X-Forwarded-Proto", "https, http")) == (("203.0.113.7", 0), "wss")
    assert resolve(both, ("X-Forwarded-Proto", "http, https")) == (("203.0.113.7", 0), "ws")
    # Fewer entries: the first, set by the edge proxy.
    assert resolve(both, ("X-Forwarded-Proto", "https")) == (("203.0.113.7", 0), "wss")
    # No X-Forwarded-For: the last entry.
    assert resolve(("X-Forwarded-Proto", "http, https")) == (None, "wss")


def test_resolve_forwarded() -> None:
    assert resolve(("Forwarded", 'for="203.0.113.7:4711";proto=https')) == (
        ("203.0.113.7", 4711),
        "wss",
    )
    # From the right, skipping trusted proxies; proto from the client's element.
    assert resolve(
        ("Forwarded", "for=6.6.6.6;proto=http, for=203.0.113.7;proto=https"),
        ("Forwarded", 'for="[::1]";proto=http'),
    ) == (("203.0.113.7", 0), "wss")
    assert resolve(("Forwarded", 'for="[2001:db8::1]:80"')) == (("2001:db8::1", 80), None)
    assert resolve(("Forwarded", "for=_hidden;proto=https, for=10.0.0.2")) == (
        ("_hidden", 0),
        "wss",
    )
    # An element without "for": its sender is unknown.
    assert resolve(("Forwarded", "proto=https")) == (("unknown", 0), "wss")
    # A client's line left of the proxies' is never parsed, even malformed.
    assert resolve(
        ("Forwarded", 'for="unterminated'), ("Forwarded", "for=203.0.113.7;proto=https")
    ) == (("203.0.113.7", 0), "wss")


def test_forwarded_wins_over_x_forwarded_and_malformed_means_ignored() -> None:
    xff = ("X-Forwarded-For", "198.51.100.1")
    xfp = ("X-Forwarded-Proto", "https")
    assert resolve(("Forwarded", "for=203.0.113.7"), xff, xfp) == (("203.0.113.7", 0), None)
    # A proxy that writes Forwarded may pass a client's X-Forwarded-For on:
    # a malformed Forwarded does not fall back to it.
    for bad in ["for=[::1]", "for=203.0.113.7:80", 'for="1.2.3.4', "for=a;for=b", ","]:
        assert resolve(("Forwarded", bad), xff, xfp) == (None, None), bad
    # Malformed where a trusted proxy wrote it.
    assert resolve(("Forwarded", "for=_x, for=bogus")) == (None, None)
    assert resolve(("Forwarded", 'for="[::1]:99999"')) == (None, None)


def test_connection_of_outside_an_app() -> None:
    with pytest.raises(LookupError):
        connection_of(Request("GET", "/", Headers()))


# Over real sockets, without a proxy: the peer decides whether headers count.


@asynccontextmanager
async def served(app: App, **options: Any) -> AsyncIterator[Server]:
    async with app.serve("127.0.0.1", 0, **options) as server:
        yield server


def who_app(**options: Any) -> App:
    """An App telling each client what it resolved: on /ws (WebSocket) and /who (HTTP)."""
    app = App(**options)

    def describe(ws: ServerConnection) -> dict[str, Any]:
        return {
            "client": list(ws.client_address[:2]),
            "scheme": ws.scheme,
            "peer": list(ws.remote_address[:2]),
        }

    @app.websocket("/ws")
    async def who(ws: ServerConnection) -> None:
        await ws.send_json(describe(ws))
        async for message in ws:
            await ws.send(message)

    @app.get("/who")
    def http_who(request: Request) -> dict[str, Any]:
        return describe(connection_of(request))

    @app.websocket("/quiet", settings=RouteSettings(ping_interval=None))
    async def quiet(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    return app


def http_json(
    port: int,
    requests: list[list[tuple[str, str]]],
    *,
    path: str = "/who",
    context: ssl.SSLContext | None = None,
    source: str = "127.0.0.1",
) -> list[Any]:
    """GET ``path`` once per header list, on one kept-alive connection (in a thread)."""
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0)
        )
    else:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0), context=context
        )
    results = []
    try:
        for headers in requests:
            connection.request("GET", path, headers=dict(headers))
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body)
            results.append(json.loads(body))
    finally:
        connection.close()
    return results


async def test_a_trusted_peer_sets_client_address_and_scheme_per_request() -> None:
    async with served(who_app(trusted_proxies=["127.0.0.1"])) as server:
        forged = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
        async with rapidws.connect(
            f"ws://127.0.0.1:{server.port}/ws", additional_headers=forged
        ) as ws:
            assert await wait(ws.recv_json()) == {
                "client": ["203.0.113.7", 0],
                "scheme": "wss",
                "peer": ["127.0.0.1", ws.local_address[1]],
            }
        # One kept-alive connection, three requests (a proxy may mix clients on
        # one upstream connection): each is resolved anew, and a request
        # without the headers gets the socket's values back.
        first, second, third = await asyncio.to_thread(
            http_json,
            server.port,
            [forged, [("Forwarded", 'for="[2001:db8::1]:4711";proto=http')], []],
        )
    assert first["client"] == ["203.0.113.7", 0] and first["scheme"] == "wss"
    assert second["client"] == ["2001:db8::1", 4711] and second["scheme"] == "ws"
    assert third["client"] == third["peer"] and third["scheme"] == "ws"


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8", "::1"]])
async def test_a_peer_that_is_no_trusted_proxy_cannot_forge_its_address(
    trusted: list[str],
) -> None:
    forged = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=203.0.113.8;proto=https"),
    ]
    async with served(who_app(trusted_proxies=trusted)) as server:
        async with rapidws.connect(
            f"ws://127.0.0.1:{server.port}/ws", additional_headers=forged
        ) as ws:
            seen = await wait(ws.recv_json())
        (http_seen,) = await asyncio.to_thread(http_json, server.port, [forged])
    for result in (seen, http_seen):
        assert result["client"] == result["peer"]
        assert result["client"][0] == "127.0.0.1"
        assert result["scheme"] == "ws"


async def test_scheme_is_wss_on_a_tls_socket_and_may_be_set(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    app = App()

    @app.websocket("/")
    async def handler(ws: ServerConnection) -> None:
        seen = [ws.scheme, list(ws.client_address[:2])]
        ws.scheme = "ws"
        ws.client_address = ("192.0.2.1", 0)
        seen += [ws.scheme, ws.client_address]
        ws.scheme = ws.client_address = None  # the defaults again
        seen += [ws.scheme, ws.client_address == ws.remote_address]
        await ws.send_json(seen)

    async with (
        served(app, ssl=server_context) as server,
        rapidws.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context) as ws,
    ):
        port = ws.local_address[1]  # before the server closes (gone after on 3.10)
        assert await wait(ws.recv_json()) == [
            "wss",
            ["127.0.0.1", port],
            "ws",
            ["192.0.2.1", 0],
            "wss",
            True,
        ]


# A real nginx in front.

CLIENT_HOST = "127.0.0.2"  # the client's source address: not the proxy's

NGINX_CONF = """\
{user}
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    # As in docs/deployment.md.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    map $remote_addr $forwarded_addr {{
        ~:      "[$remote_addr]";
        default "$remote_addr";
    }}
    upstream rapidws {{
        server 127.0.0.1:{upstream};
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;

        # X-Forwarded-For and X-Forwarded-Proto; a client's Forwarded dropped.
        location / {{
            proxy_pass http://rapidws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded "";
            proxy_read_timeout {read_timeout};
        }}
        # RFC 7239 Forwarded, with the client's port; X-Forwarded-For dropped.
        location /rfc7239/ {{
            proxy_pass http://rapidws/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header Forwarded "for=\\"$forwarded_addr:$remote_port\\";proto=$scheme";
            proxy_set_header X-Forwarded-For "";
            proxy_read_timeout {read_timeout};
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def nginx_binary() -> str:
    """The nginx executable: Debian's /usr/sbin/nginx is off a normal user's PATH."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is required on CI (.ci/run: apt-get install -y nginx)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return path


@pytest.fixture
def client_host() -> str:
    """A second loopback address for the client (all of 127.0.0.0/8 is on Linux's lo)."""
    with socket.socket() as sock:
        try:
            sock.bind((CLIENT_HOST, 0))
        except OSError:  # pragma: no cover - macOS has only 127.0.0.1
            pytest.skip(f"cannot bind {CLIENT_HOST}")
    return CLIENT_HOST


@contextlib.contextmanager
def running_nginx(
    binary: str, tmp: Path, cert: trustme.LeafCert, upstream: int, *, read_timeout: str = "60s"
) -> Iterator[int]:
    """Run nginx with NGINX_CONF in ``tmp`` until the block ends; yield its TLS port."""
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(tmp / "cert.pem"), append=True)
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    port = free_port()
    # As root, nginx's workers run as the "user" directive's account (nobody,
    # by default, in the group "nobody" that Debian does not have): keep them
    # root, in this throwaway process on 127.0.0.1. Unprivileged, it is unneeded.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(
        user=user, tmp=tmp, upstream=upstream, port=port, read_timeout=read_timeout
    )
    (tmp / "nginx.conf").write_text(conf)
    log = (tmp / "stderr.log").open("wb")
    command = [binary, "-e", "stderr", "-p", f"{tmp}/", "-c", str(tmp / "nginx.conf")]
    command += ["-g", f"daemon off; pid {tmp}/nginx.pid;"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        for _ in range(int(100 * TIMEOUT_FACTOR)):
            if process.poll() is not None:
                pytest.fail(f"nginx exited with {process.returncode}:\n{read_log(tmp)}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"nginx did not listen on {port}:\n{read_log(tmp)}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        log.close()


def read_log(tmp: Path) -> str:
    return (tmp / "stderr.log").read_text(errors="replace")


@asynccontextmanager
async def connect_from(host: str, port: int, path: str, **options: Any) -> AsyncIterator[Any]:
    """``rapidws.connect()`` to 127.0.0.1:port from the source address ``host``."""
    sock = socket.socket()
    sock.bind((host, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    scheme = "wss" if "ssl" in options else "ws"
    uri = f"{scheme}://127.0.0.1:{port}{path}"
    async with rapidws.connect(uri, sock=sock, **options) as ws:
        yield ws


FORGED = [
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=203.0.113.8;proto=https"),
]


async def test_nginx_terminates_tls_and_the_app_sees_the_client(
    nginx_binary: str,
    client_host: str,
    tmp_path: Path,
    server_cert: trustme.LeafCert,
    client_context: ssl.SSLContext,
) -> None:
    app = who_app(trusted_proxies=["127.0.0.1"])
    async with served(app) as server:
        with running_nginx(nginx_binary, tmp_path, server_cert, server.port) as port:
            # X-Forwarded-For: nginx appends the real address to the forged
            # one, and drops the forged Forwarded.
            async with connect_from(
                client_host, port, "/ws", ssl=client_context, additional_headers=FORGED
            ) as ws:
                assert ws.remote_address[:2] == ("127.0.0.1", port)
                seen = await wait(ws.recv_json())
                assert seen["client"] == [client_host, 0]  # $remote_addr has no port
                assert seen["scheme"] == "wss"
                assert seen["peer"][0] == "127.0.0.1"
                for message in ["hello", b"\x00" * 70000, "é" * 1000]:
                    await ws.send(message)
                    assert await wait(ws.recv()) == message

            # RFC 7239 Forwarded, with the port.
            async with connect_from(
                client_host, port, "/rfc7239/ws", ssl=client_context, additional_headers=FORGED
            ) as ws:
                seen = await wait(ws.recv_json())
                assert seen["client"] == [client_host, ws.local_address[1]]
                assert seen["scheme"] == "wss"

            # Plain HTTP through nginx: /healthz-style routes, and connection_of().
            http_seen, rfc_seen = [
                (
                    await asyncio.to_thread(
                        http_json,
                        port,
                        [FORGED],
                        path=path,
                        context=client_context,
                        source=client_host,
                    )
                )[0]
                for path in ["/who", "/rfc7239/who"]
            ]
            assert http_seen["client"] == [client_host, 0]
            assert rfc_seen["client"][0] == client_host and rfc_seen["client"][1] > 0
            assert http_seen["scheme"] == rfc_seen["scheme"] == "wss"

        # The same App, reached directly by a client that is no trusted proxy:
        # its forged headers are not believed.
        async with connect_from(client_host, server.port, "/ws", additional_headers=FORGED) as ws:
            seen = await wait(ws.recv_json())
            assert seen["client"] == seen["peer"] == [client_host, ws.local_address[1]]
            assert seen["scheme"] == "ws"


def test_nginx_keeps_an_idle_connection_that_rapidws_pings(
    nginx_binary: str,
    client_host: str,
    tmp_path: Path,
    server_cert: trustme.LeafCert,
    client_context: ssl.SSLContext,
) -> None:
    """proxy_read_timeout (2 s here) closes a silent connection, not a pinged one.

    One event loop only (nginx's timer does not care), in about 3 s. Only lower
    bounds on time are asserted.
    """

    async def scenario() -> None:
        app = who_app(trusted_proxies=["127.0.0.1"])
        # /ws is pinged every 0.5 s; /quiet is not (RouteSettings(ping_interval=None)).
        async with served(app, ping_interval=0.5, ping_timeout=5) as server:
            with running_nginx(
                nginx_binary, tmp_path, server_cert, server.port, read_timeout="2s"
            ) as port:
                options: dict[str, Any] = dict(ssl=client_context, ping_interval=None)
                async with contextlib.AsyncExitStack() as stack:
                    pinged = await stack.enter_async_context(
                        connect_from(client_host, port, "/ws", **options)
                    )
                    quiet = await stack.enter_async_context(
                        connect_from(client_host, port, "/quiet", **options)
                    )
                    await idle(pinged, quiet)

    async def idle(pinged: Any, quiet: Any) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await wait(pinged.recv_json()))["scheme"] == "wss"
        # nginx closes the silent one after proxy_read_timeout...
        await wait(quiet.wait_closed(), 10 * TIMEOUT_FACTOR)
        assert loop.time() - start >= 1.5
        with pytest.raises(ConnectionClosed):
            await quiet.send("too late")
        # ...and keeps the pinged one past it.
        await asyncio.sleep(1.0)
        await pinged.send("still here")
        assert await wait(pinged.recv()) == "still here"

    asyncio.run(scenario())
