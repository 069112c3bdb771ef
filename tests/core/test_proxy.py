"""Proxy URLs, the environment's choice, and the tunnel handshakes, byte for byte."""

from __future__ import annotations

import pytest

from rapidws.core.proxy import (
    HTTPConnect,
    Proxy,
    ProxyHandshake,
    Socks4,
    Socks5,
    parse_proxy,
    proxy_from_environment,
)
from rapidws.core.uri import parse_uri
from rapidws.exceptions import InvalidProxy, ProxyRefused


def feed(handshake: ProxyHandshake, data: bytes, *, split: bool = False) -> None:
    """Feed the proxy's answer whole, or one byte at a time."""
    for chunk in [data[i : i + 1] for i in range(len(data))] if split else [data]:
        handshake.receive_data(chunk)


# URLs.


@pytest.mark.parametrize(
    ("url", "proxy"),
    [
        ("http://proxy:3128", Proxy("http", "proxy", 3128)),
        ("http://proxy", Proxy("http", "proxy", 80)),
        ("proxy.example:8080", Proxy("http", "proxy.example", 8080)),
        ("HTTPS://Proxy/", Proxy("https", "proxy", 443)),
        ("socks5://u:p%40ss@[::1]:1080", Proxy("socks5", "::1", 1080, ("u", "p@ss"))),
        ("socks5h://10.0.0.1", Proxy("socks5h", "10.0.0.1", 1080)),
        ("socks4://proxy:9050", Proxy("socks4", "proxy", 9050)),
        ("socks4a://alice@proxy", Proxy("socks4a", "proxy", 1080, ("alice", ""))),
    ],
)
def test_parse_proxy(url: str, proxy: Proxy) -> None:
    assert parse_proxy(url) == proxy


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://proxy", "the scheme must be one of"),
        ("http://", "has no host"),
        ("http://proxy:99999", "not a valid proxy URL"),
        ("http://proxy/path", "has a path"),
    ],
)
def test_parse_invalid_proxy(url: str, message: str) -> None:
    with pytest.raises(InvalidProxy, match=message):
        parse_proxy(url)


def test_proxy_properties() -> None:
    assert str(parse_proxy("socks5://u:secret@[::1]:1080")) == "socks5://[::1]:1080"
    assert [parse_proxy(f"{s}://p").remote_dns for s in ["socks5", "socks5h", "socks4"]] == [
        False,
        True,
        False,
    ]
    assert parse_proxy("https://p").tls
    assert not parse_proxy("http://p").tls


def test_proxy_makes_its_handshake() -> None:
    assert isinstance(parse_proxy("https://p").handshake("h", 1), HTTPConnect)
    assert isinstance(parse_proxy("socks5h://p").handshake("h", 1), Socks5)
    socks4 = parse_proxy("socks4a://bob@p").handshake("h", 1)
    assert isinstance(socks4, Socks4)
    assert socks4.data_to_send() == b"\x04\x01\x00\x01\x00\x00\x00\x01bob\x00h\x00"


# The environment.

WS, WSS = parse_uri("ws://example.com/"), parse_uri("wss://example.com/")


@pytest.mark.parametrize(
    ("environ", "ws", "wss"),
    [
        ({}, None, None),
        ({"http_proxy": "h"}, "h", None),
        ({"HTTP_PROXY": "H", "HTTPS_PROXY": "S"}, "H", "S"),
        # Lowercase first, as in urllib, requests and httpx.
        ({"http_proxy": "h", "HTTP_PROXY": "H"}, "h", None),
        ({"ALL_PROXY": "a", "https_proxy": "s"}, "a", "s"),
        ({"all_proxy": "a"}, "a", "a"),
        ({"http_proxy": "", "all_proxy": "a"}, "a", "a"),
        # A CGI script: HTTP_PROXY may come from the client (httpoxy).
        ({"REQUEST_METHOD": "GET", "HTTP_PROXY": "H"}, None, None),
        ({"REQUEST_METHOD": "GET", "http_proxy": "h"}, "h", None),
    ],
)
def test_proxy_from_environment(environ: dict[str, str], ws: str | None, wss: str | None) -> None:
    assert proxy_from_environment(WS, environ) == ws
    assert proxy_from_environment(WSS, environ) == wss


@pytest.mark.parametrize(
    ("uri", "no_proxy", "bypassed"),
    [
        ("ws://example.com/", "*", True),
        ("ws://example.com/", "example.com", True),
        ("ws://www.example.com/", "example.com", True),
        ("ws://www.example.com/", ".example.com", True),
        ("ws://www.example.com/", "*.example.com", True),
        ("ws://WWW.Example.COM./", "example.com", True),
        ("ws://notexample.com/", "example.com", False),
        ("ws://example.com/", "other.org, example.com", True),
        ("ws://example.com/", "other.org,,", False),
        ("ws://example.com:8080/", "example.com:8080", True),
        ("ws://example.com/", "example.com:8080", False),
        ("ws://10.1.2.3/", "10.0.0.0/8", True),
        ("ws://11.1.2.3/", "10.0.0.0/8", False),
        ("ws://10.1.2.3/", "10.1.2.3", True),
        ("ws://10.1.2.3:81/", "10.1.2.3:80", False),
        ("ws://[::1]/", "::1", True),
        ("ws://[::1]:8080/", "[::1]:8080", True),
        ("ws://[fd00::5]/", "fd00::/8", True),
        ("ws://example.com/", "10.0.0.0/8", False),
        ("ws://localhost/", "localhost,127.0.0.1", True),
    ],
)
def test_no_proxy(uri: str, no_proxy: str, bypassed: bool) -> None:
    for name in ["no_proxy", "NO_PROXY"]:
        environ = {"all_proxy": "p", name: no_proxy}
        assert (proxy_from_environment(parse_uri(uri), environ) is None) is bypassed


# HTTP CONNECT.


def test_http_connect() -> None:
    handshake = HTTPConnect("example.com", 443, user_info=("user", "pass"), user_agent="ua/1")
    assert handshake.data_to_send() == (
        b"CONNECT example.com:443 HTTP/1.1\r\n"
        b"Host: example.com:443\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"User-Agent: ua/1\r\n"
        b"\r\n"
    )
    assert handshake.data_to_send() == b""
    assert handshake.request.method == "CONNECT"
    feed(handshake, b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n")
    assert not handshake.done
    feed(handshake, b"\r\n")
    assert handshake.done
    handshake.receive_eof()  # harmless once the tunnel is open: the server's business


def test_http_connect_ipv6_without_credentials() -> None:
    handshake = HTTPConnect("::1", 8080)
    assert handshake.data_to_send() == b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
    feed(handshake, b"HTTP/1.0 200\r\n\r\n", split=True)
    assert handshake.done


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="p"\r\n\r\n',
            407,
            "Proxy Authentication Required",
        ),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!", 403, "Forbidden"),
        (b"HTTP/1.1 502\r\n\r\n", 502, ""),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 101, "Switching Protocols"),
    ],
)
def test_http_connect_refused(answer: bytes, status: int, reason: str) -> None:
    handshake = HTTPConnect("example.com", 443)
    with pytest.raises(ProxyRefused) as exc_info:
        feed(handshake, answer)
    assert (exc_info.value.status, exc_info.value.reason) == (status, reason)
    assert str(exc_info.value) == f"HTTP proxy refused the tunnel: {status} {reason}".rstrip()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/2 200\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status line"),
        (b"\x05\xff", "not an HTTP/1.1 message"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "invalid answer from the HTTP proxy"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200, "too many header fields"),
        (b"HTTP/1.1 200 OK\r\n\r\n\x16\x03", "sent data after opening the tunnel"),
    ],
)
def test_http_connect_invalid_answer(answer: bytes, message: str) -> None:
    handshake = HTTPConnect("example.com", 443)
    with pytest.raises(InvalidProxy, match=message) as exc_info:
        feed(handshake, answer)
    assert not isinstance(exc_info.value, ProxyRefused)


def test_data_after_the_tunnel_opened() -> None:
    handshake = HTTPConnect("example.com", 443)
    feed(handshake, b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(InvalidProxy, match="sent data after opening the tunnel"):
        feed(handshake, b"x")


@pytest.mark.parametrize(
    "handshake",
    [HTTPConnect("h", 1), Socks5("h", 1), Socks4("h", 1)],
    ids=["HTTP", "SOCKS5", "SOCKS4"],
)
def test_eof_before_the_tunnel_opened(handshake: ProxyHandshake) -> None:
    with pytest.raises(InvalidProxy, match="proxy closed the connection before opening the tunnel"):
        handshake.receive_eof()


# SOCKS5.


@pytest.mark.parametrize("split", [False, True])
def test_socks5_with_domain_name_and_no_authentication(split: bool) -> None:
    handshake = Socks5("example.com", 443)
    # Version 5, one method: no authentication.
    assert handshake.data_to_send() == b"\x05\x01\x00"
    feed(handshake, b"\x05\x00", split=split)
    # CONNECT, reserved, a domain name of 11 bytes, port 443.
    assert handshake.data_to_send() == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    # Succeeded, bound to 10.0.0.1:4321.
    feed(handshake, b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\xe1", split=split)
    assert handshake.done


def test_socks5_with_user_name_and_password() -> None:
    handshake = Socks5("10.0.0.2", 80, user_info=("alice", "s3cret"))
    assert handshake.data_to_send() == b"\x05\x02\x00\x02"
    feed(handshake, b"\x05\x02")
    # RFC 1929: version 1, user name, password.
    assert handshake.data_to_send() == b"\x01\x05alice\x06s3cret"
    feed(handshake, b"\x01\x00")
    assert handshake.data_to_send() == b"\x05\x01\x00\x01\x0a\x00\x00\x02\x00\x50"
    # Bound to a domain name, and to an IPv6 address: both lengths are read.
    feed(handshake, b"\x05\x00\x00\x03\x04host\x00\x01")
    assert handshake.done

    handshake = Socks5("::1", 80, user_info=("alice", "s3cret"))
    handshake.data_to_send()
    # A proxy may still choose no authentication.
    feed(handshake, b"\x05\x00")
    assert handshake.data_to_send() == b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01\x00\x50"
    feed(handshake, b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x00")
    assert handshake.done


@pytest.mark.parametrize(
    ("user_info", "answers", "status", "reason", "message"),
    [
        (None, [b"\x05\xff"], 0xFF, "no acceptable methods", "may want a user name and password"),
        (("u", "p"), [b"\x05\xff"], 0xFF, "no acceptable methods", "may want another method"),
        (("u", "p"), [b"\x05\x02", b"\x01\x01"], 1, "authentication failed", "user name"),
        (None, [b"\x05\x00", b"\x05\x05"], 5, "connection refused", "connection refused"),
        (None, [b"\x05\x00", b"\x05\x02\x00"], 2, "connection not allowed by ruleset", "ruleset"),
        (None, [b"\x05\x00", b"\x05\x99"], 0x99, "unknown error", "unknown error"),
    ],
)
def test_socks5_refused(
    user_info: tuple[str, str] | None,
    answers: list[bytes],
    status: int,
    reason: str,
    message: str,
) -> None:
    handshake = Socks5("example.com", 443, user_info=user_info)
    with pytest.raises(ProxyRefused, match=message) as exc_info:
        for answer in answers:
            feed(handshake, answer)
    assert (exc_info.value.status, exc_info.value.reason) == (status, reason)


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([b"HTTP/1.1 400 Bad Request\r\n"], "not a SOCKS5 proxy"),
        ([b"\x05\x02"], "chose method 0x02, not offered"),
        ([b"\x05\x00", b"\x04\x00"], "not a SOCKS5 reply"),
        ([b"\x05\x00", b"\x05\x00\x00\x05\x00"], "unknown address type 0x05"),
    ],
)
def test_socks5_invalid_answer(answers: list[bytes], message: str) -> None:
    handshake = Socks5("example.com", 443)
    with pytest.raises(InvalidProxy, match=message):
        for answer in answers:
            feed(handshake, answer)


def test_socks5_limits() -> None:
    with pytest.raises(InvalidProxy, match="host name too long"):
        Socks5("a" * 60 + ".a" * 98, 443)
    for handshake_class in [Socks5, Socks4]:
        with pytest.raises(InvalidProxy, match="invalid host name"):
            handshake_class("a" * 64 + ".example", 443)
    handshake = Socks5("bücher.example", 1)
    handshake.data_to_send()
    feed(handshake, b"\x05\x00")
    assert handshake.data_to_send() == b"\x05\x01\x00\x03\x15xn--bcher-kva.example\x00\x01"
    handshake = Socks5("h", 1, user_info=("u" * 256, "p"))
    with pytest.raises(InvalidProxy, match="255 bytes at most"):
        feed(handshake, b"\x05\x02")


# SOCKS4 and SOCKS4A.


def test_socks4() -> None:
    handshake = Socks4("10.0.0.1", 80, user_id="bob")
    assert handshake.data_to_send() == b"\x04\x01\x00\x50\x0a\x00\x00\x01bob\x00"
    feed(handshake, b"\x00\x5a\x00\x00\x00\x00\x00\x00", split=True)
    assert handshake.done


def test_socks4a() -> None:
    handshake = Socks4("example.com", 443)
    # The address 0.0.0.1, an empty user id, then the host name.
    assert handshake.data_to_send() == b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00"
    feed(handshake, b"\x00\x5a\x01\xbb\x00\x00\x00\x00")
    assert handshake.done


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (b"\x00\x5b", 0x5B, "request rejected or failed"),
        (b"\x00\x5c\x00\x00\x00\x00\x00\x00", 0x5C, "cannot reach the client's identd"),
        (b"\x00\x5d", 0x5D, "identd reports a different user id"),
        (b"\x00\x01", 0x01, "unknown error"),
    ],
)
def test_socks4_refused(answer: bytes, status: int, reason: str) -> None:
    handshake = Socks4("example.com", 443)
    with pytest.raises(ProxyRefused, match="SOCKS4 proxy refused the tunnel") as exc_info:
        feed(handshake, answer)
    assert exc_info.value.status == status
    assert reason in exc_info.value.reason


@pytest.mark.parametrize(
    ("host", "user_id", "message"),
    [
        ("::1", "", "cannot reach the IPv6 address"),
        ("example.com", "a\x00b", "may not contain NUL"),
        ("exa\x00mple.com", "", "may not contain NUL"),
    ],
)
def test_socks4_invalid_request(host: str, user_id: str, message: str) -> None:
    with pytest.raises(InvalidProxy, match=message):
        Socks4(host, 443, user_id=user_id)


def test_socks4_invalid_answer() -> None:
    handshake = Socks4("example.com", 443)
    with pytest.raises(InvalidProxy, match="not a SOCKS4 reply"):
        feed(handshake, b"\x05\x00")
