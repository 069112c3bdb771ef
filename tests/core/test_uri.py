"""Tests for rapidws.core.uri: WebSocket URIs."""

from __future__ import annotations

import pytest

from rapidws.core.uri import WebSocketURI, parse_uri
from rapidws.exceptions import InvalidURI


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("ws://example.com", WebSocketURI(False, "example.com", 80, "/")),
        ("ws://example.com/", WebSocketURI(False, "example.com", 80, "/")),
        ("wss://example.com", WebSocketURI(True, "example.com", 443, "/")),
        ("ws://example.com:8080/chat", WebSocketURI(False, "example.com", 8080, "/chat")),
        ("wss://example.com:80/", WebSocketURI(True, "example.com", 80, "/")),
        ("ws://example.com/a/b?x=1&y=2", WebSocketURI(False, "example.com", 80, "/a/b?x=1&y=2")),
        ("ws://example.com?x=1", WebSocketURI(False, "example.com", 80, "/?x=1")),
        ("ws://EXAMPLE.com/Path", WebSocketURI(False, "example.com", 80, "/Path")),
        (
            "ws://user:secret@example.com/",
            WebSocketURI(False, "example.com", 80, "/", ("user", "secret")),
        ),
        ("ws://127.0.0.1:9000", WebSocketURI(False, "127.0.0.1", 9000, "/")),
        ("ws://example.com:0/", WebSocketURI(False, "example.com", 0, "/")),  # not 80
        ("ws://[::1]/", WebSocketURI(False, "::1", 80, "/")),
        ("wss://[2001:db8::1]:8443/x", WebSocketURI(True, "2001:db8::1", 8443, "/x")),
    ],
)
def test_parse_uri(uri: str, parsed: WebSocketURI) -> None:
    assert parse_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "host_header"),
    [
        ("ws://example.com", "example.com"),
        ("ws://example.com:443", "example.com:443"),
        ("wss://example.com:443", "example.com"),
        ("wss://example.com:8443", "example.com:8443"),
        ("ws://[::1]", "[::1]"),
        ("ws://[::1]:8080", "[::1]:8080"),
    ],
)
def test_host_header(uri: str, host_header: str) -> None:
    assert parse_uri(uri).host_header == host_header


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/", "is not a WebSocket URI"),
        ("https://example.com/", "is not a WebSocket URI"),
        ("example.com", "is not a WebSocket URI"),
        ("ws:///chat", "has no host"),
        ("ws://:8080/", "has no host"),
        ("ws://example.com/#frag", "has a fragment"),
        ("ws://example.com:port/", "is not a valid URI"),
        ("ws://example.com:99999/", "is not a valid URI"),
        ("ws://[::1/", "is not a valid URI"),
    ],
)
def test_parse_invalid_uri(uri: str, message: str) -> None:
    with pytest.raises(InvalidURI, match=message):
        parse_uri(uri)


def test_parse_uri_encodes_what_the_request_line_cannot_hold() -> None:
    uri = parse_uri("ws://host/a b/caf\u00e9?q=x y&r=%20")
    assert uri.resource == "/a%20b/caf%C3%A9?q=x%20y&r=%20"


def test_parse_uri_keeps_user_info_for_basic_auth() -> None:
    uri = parse_uri("wss://al%40ice:s%3Acret@host/")
    assert uri.user_info == ("al@ice", "s:cret")
    assert parse_uri("ws://host/").user_info is None
