"""Tests for rapidws.core.headers: the Headers multi-map and the header grammars."""

from __future__ import annotations

import base64
import os
import random

import pytest

from rapidws.core.headers import (
    ExtensionHeader,
    Headers,
    is_token,
    parse_extensions,
    parse_token_list,
    serialize_extensions,
)
from rapidws.exceptions import InvalidHandshake

# Headers.


def test_headers_are_case_insensitive() -> None:
    headers = Headers({"Content-Type": "text/plain"})
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "text/plain"
    assert "content-TYPE" in headers
    assert "Content-Length" not in headers
    assert 42 not in headers


def test_headers_repeated_names() -> None:
    headers = Headers([("Connection", "keep-alive"), ("Via", "1.1 a"), ("connection", "Upgrade")])
    assert headers["Connection"] == "keep-alive, Upgrade"
    assert headers.get_all("CONNECTION") == ["keep-alive", "Upgrade"]
    assert headers.get_all("Missing") == []
    assert len(headers) == 3
    assert list(headers) == ["Connection", "Via", "connection"]


def test_headers_missing_name() -> None:
    headers = Headers()
    with pytest.raises(KeyError):
        headers["Host"]
    assert headers.get("Host") is None
    assert headers.get("Host", "default") == "default"


def test_headers_setitem_replaces_every_value() -> None:
    headers = Headers([("X-A", "1"), ("Via", "v"), ("x-a", "2")])
    headers["X-A"] = "3"
    assert headers.items() == [("Via", "v"), ("X-A", "3")]


def test_headers_add_and_update() -> None:
    headers = Headers()
    headers.add("X-A", "1")
    headers.update({"X-A": "2"})
    headers.update([("X-B", "3")])
    headers.update(Headers({"X-A": "4"}))
    assert headers.get_all("x-a") == ["1", "2", "4"]
    assert headers["X-B"] == "3"


def test_headers_delete() -> None:
    headers = Headers([("X-A", "1"), ("Via", "v"), ("x-a", "2")])
    del headers["X-a"]
    assert headers.items() == [("Via", "v")]
    del headers["Missing"]  # no error
    assert len(headers) == 1


def test_headers_items_is_a_copy() -> None:
    headers = Headers({"X-A": "1"})
    headers.items().append(("X-B", "2"))
    assert len(headers) == 1


def test_headers_lookups_ignore_case_whatever_the_spelling_added() -> None:
    headers = Headers([("sec-websocket-KEY", "k1"), ("Host", "h")])
    headers.add("SEC-WebSocket-Key", "k2")
    for name in ("Sec-WebSocket-Key", "sec-websocket-key", "SEC-WEBSOCKET-KEY"):
        assert name in headers
        assert headers[name] == headers.get(name) == "k1, k2"
        assert headers.get_all(name) == ["k1", "k2"]
    assert list(headers) == ["sec-websocket-KEY", "Host", "SEC-WebSocket-Key"]


def test_headers_replace_and_delete_keep_lookups_in_step() -> None:
    headers = Headers([("A", "1"), ("B", "2"), ("a", "3"), ("C", "4")])
    headers["a"] = "5"
    assert headers.get_all("A") == ["5"]
    assert headers.items() == [("B", "2"), ("C", "4"), ("a", "5")]
    del headers["B"]
    assert "b" not in headers
    assert headers.get("B") is None
    assert headers.get_all("b") == []
    headers.add("b", "6")
    assert headers["B"] == "6"
    assert headers.items() == [("C", "4"), ("a", "5"), ("b", "6")]


def test_headers_get_all_is_a_copy() -> None:
    headers = Headers({"X-A": "1"})
    headers.get_all("x-a").append("2")
    assert headers["X-A"] == "1"


def test_headers_copy_is_independent() -> None:
    original = Headers([("X-A", "1"), ("X-B", "2")])
    copy = Headers(original)
    copy.add("x-a", "3")
    del copy["X-B"]
    assert original.items() == [("X-A", "1"), ("X-B", "2")]
    assert original.get_all("X-A") == ["1"]
    assert "X-B" in original
    assert copy.items() == [("X-A", "1"), ("x-a", "3")]


def test_headers_update_with_itself_doubles_every_field() -> None:
    headers = Headers([("X-A", "1"), ("X-B", "2")])
    headers.update(headers)
    assert headers.items() == [("X-A", "1"), ("X-B", "2"), ("X-A", "1"), ("X-B", "2")]
    assert headers["x-a"] == "1, 1"


def test_headers_lookups_match_a_scan_of_the_fields() -> None:
    # Random edits, checked after each one against a plain list of pairs.
    rng = random.Random(6455)
    names = ["Host", "host", "HOST", "Via", "via", "X-A", "x-a"]
    headers = Headers()
    model: list[tuple[str, str]] = []
    for step in range(500):
        name, value = rng.choice(names), str(step)
        action = rng.randrange(5)
        if action == 4:
            # The index is dropped and rebuilt; a compacted copy merges too.
            headers.compact()
            if rng.random() < 0.5:
                other = Headers({name: value})
                other.compact()
                headers.update(other)
                model.append((name, value))
            continue
        if action == 0:
            headers[name] = value
            model = [(n, v) for n, v in model if n.lower() != name.lower()] + [(name, value)]
        elif action == 1:
            del headers[name]
            model = [(n, v) for n, v in model if n.lower() != name.lower()]
        elif action == 2:
            headers.update([(name, value)] if rng.random() < 0.5 else Headers({name: value}))
            model.append((name, value))
        else:
            headers.add(name, value)
            model.append((name, value))
        assert headers.items() == model
        for probe in names:
            values = [v for n, v in model if n.lower() == probe.lower()]
            assert headers.get_all(probe) == values
            assert (probe in headers) == bool(values)
            assert headers.get(probe) == (", ".join(values) if values else None)


def test_headers_share_names_and_values_across_objects() -> None:
    # A server keeps every connection's handshake: repeated names and values
    # are one string each, but not the values unique to a handshake.
    key = base64.b64encode(os.urandom(16)).decode()  # never seen before
    first, second = (
        Headers([("".join(["Ho", "st"]), "".join(["exam", "ple.com"])), ("Sec-WebSocket-Key", k)])
        for k in ("".join(key), "".join(list(key)))
    )
    (name1, value1), (_, key1) = first.items()
    (name2, value2), (_, key2) = second.items()
    assert name1 is name2 and value1 is value2
    assert key1 == key2 and key1 is not key2


def test_headers_equality() -> None:
    assert Headers({"Host": "a"}) == Headers({"host": "a"})
    assert Headers({"Host": "a"}) != Headers({"Host": "A"})
    assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])
    assert Headers() != {}
    with pytest.raises(TypeError):
        hash(Headers())


def test_headers_repr_and_serialize() -> None:
    headers = Headers([("Host", "example.com"), ("X-Name", "café")])
    assert repr(headers) == "Headers([('Host', 'example.com'), ('X-Name', 'café')])"
    assert headers.serialize() == b"Host: example.com\r\nX-Name: caf\xe9\r\n"
    assert Headers().serialize() == b""


# Tokens.


@pytest.mark.parametrize("value", ["websocket", "Upgrade", "x-foo_bar.1", "!#$%&'*+-.^_`|~"])
def test_is_token(value: str) -> None:
    assert is_token(value)


@pytest.mark.parametrize("value", ["", "a b", "a,b", "a;b", '"a"', "a=b", "a/b", "é"])
def test_is_not_token(value: str) -> None:
    assert not is_token(value)


def test_parse_token_list() -> None:
    assert parse_token_list(["keep-alive, Upgrade"]) == ["keep-alive", "Upgrade"]
    assert parse_token_list(["keep-alive, Upgrade"], lower=True) == ["keep-alive", "upgrade"]
    assert parse_token_list([" a ,\t, b,", "c"]) == ["a", "b", "c"]
    assert parse_token_list(["websocket/13, h2c"]) == ["websocket/13", "h2c"]
    assert parse_token_list([]) == []
    assert parse_token_list([""]) == []


@pytest.mark.parametrize("value", ["a b", "chat, [x]", "a/b/c", "/13", "websocket/"])
def test_parse_token_list_invalid(value: str) -> None:
    with pytest.raises(InvalidHandshake, match="invalid token"):
        parse_token_list([value])


# Sec-WebSocket-Extensions.


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        ([], []),
        ([""], []),
        (["foo"], [("foo", [])]),
        (["foo, bar"], [("foo", []), ("bar", [])]),
        (["foo", "bar"], [("foo", []), ("bar", [])]),
        (["foo,"], [("foo", [])]),
        (
            ["permessage-deflate; client_max_window_bits, x-foo; a=1"],
            [("permessage-deflate", [("client_max_window_bits", None)]), ("x-foo", [("a", "1")])],
        ),
        (["foo;a;b=2"], [("foo", [("a", None), ("b", "2")])]),
        (["  foo \t; a = 1 ;b  ,  bar  "], [("foo", [("a", "1"), ("b", None)]), ("bar", [])]),
        (['foo; a="10"'], [("foo", [("a", "10")])]),
        (['foo; a="x\\y"'], [("foo", [("a", "xy")])]),
        (['foo; a="1", bar'], [("foo", [("a", "1")]), ("bar", [])]),
    ],
)
def test_parse_extensions(values: list[str], parsed: list[ExtensionHeader]) -> None:
    assert parse_extensions(values) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",foo", "expected a token at position 0 of ',foo'"),
        ("foo,,bar", "expected a token at position 4 of 'foo,,bar'"),
        ("foo;", "expected a token at position 4 of 'foo;'"),
        ("foo; a=", "expected a token at position 7 of 'foo; a='"),
        ("foo bar", "invalid extension header 'foo bar'"),
        ("foo; a=1 2", "invalid extension header 'foo; a=1 2'"),
        ('foo; a="1', "unterminated quoted string in 'foo; a=\"1'"),
        ('foo; a="1 2"', "invalid quoted parameter value in 'foo; a=\"1 2\"'"),
        ('foo; a=""', "invalid quoted parameter value in 'foo; a=\"\"'"),
        ('"foo"', "expected a token at position 0 of '\"foo\"'"),
        ("foo; a==1", "expected a token at position 7 of 'foo; a==1'"),
    ],
)
def test_parse_extensions_malformed(value: str, message: str) -> None:
    with pytest.raises(InvalidHandshake) as info:
        parse_extensions([value])
    assert str(info.value) == message


def test_serialize_extensions() -> None:
    extensions: list[ExtensionHeader] = [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
    ]
    value = serialize_extensions(extensions)
    assert value == ("permessage-deflate; client_max_window_bits; server_max_window_bits=10, x-foo")
    assert parse_extensions([value]) == extensions
    assert serialize_extensions([]) == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Test", "a\r\nInjected: yes"), ("X-Test", "a\nb"), ("X-Test", "nul\x00"),
     ("X-Test", "euro €"), ("Bad Name", "v"), ("", "v"), ("X:Y", "v")],
)  # fmt: skip
def test_headers_refuse_invalid_fields(name: str, value: str) -> None:
    headers = Headers()
    with pytest.raises(ValueError):
        headers.add(name, value)
    with pytest.raises(ValueError):
        headers[name] = value
    assert len(headers) == 0


def test_headers_accept_latin1_and_tabs() -> None:
    headers = Headers([("X-Test", "caf\xe9\tok")])
    assert headers["x-test"] == "caf\xe9\tok"


def test_parse_extensions_results_are_the_callers_own() -> None:
    # Offers are parsed once per distinct value; each caller still gets lists
    # it may change.
    value = "permessage-deflate; client_max_window_bits, x-foo; a=1"
    first = parse_extensions([value])
    first[0][1].append(("changed", None))
    first.append(("x-extra", []))
    assert parse_extensions([value]) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("x-foo", [("a", "1")]),
    ]
    long_value = "x-long; " + "; ".join(f"p{i}={i}" for i in range(60))  # not kept
    assert len(parse_extensions([long_value])[0][1]) == 60
    for _ in range(2):  # errors are raised every time, never kept
        with pytest.raises(InvalidHandshake):
            parse_extensions(["permessage-deflate; =1"])
