"""The handshake's string work on both twins: request line, accept key, head serialization."""

from __future__ import annotations

import base64
import hashlib
import inspect
import os
import subprocess
import sys
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapidws.exceptions import InvalidRequest

from .twins import MODULES, c_twin, finalizer_on_next_collection


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"GET /chat?room=1 HTTP/1.1", ("GET", "/chat?room=1", (1, 1))),
        (b"HEAD / HTTP/1.0", ("HEAD", "/", (1, 0))),
        (b"GET ws://h:1/a HTTP/1.1", ("GET", "ws://h:1/a", (1, 1))),
        (b"GET HTTPS://h HTTP/1.1", ("GET", "HTTPS://h", (1, 1))),
        (b"GET WsS://h?x HTTP/1.1", ("GET", "WsS://h?x", (1, 1))),
        (b"M-1! /~ HTTP/1.9", ("M-1!", "/~", (1, 9))),
    ],
)
def test_request_lines_are_parsed(impl: ModuleType, line: bytes, expected: tuple[object]) -> None:
    assert impl.parse_request_line(line) == expected


@pytest.mark.parametrize(
    ("line", "message", "status"),
    [
        (b"GET /", "invalid request line: b'GET /'", 400),
        (b"GET  / HTTP/1.1", "invalid request line: b'GET  / HTTP/1.1'", 400),
        (b"GET / HTTP/1.1 ", "invalid request line: b'GET / HTTP/1.1 '", 400),
        (b" / HTTP/1.1", "invalid request line: b' / HTTP/1.1'", 400),
        (b"G(T / HTTP/1.1", "invalid request line: b'G(T / HTTP/1.1'", 400),
        (b"G\xe9T / HTTP/1.1", "invalid request line: b'G\\xe9T / HTTP/1.1'", 400),
        (b"GET / HTTP/11", "invalid request line: b'GET / HTTP/11'", 400),
        (b"GET / http/1.1", "invalid request line: b'GET / http/1.1'", 400),
        (b"GET / HTTP/1.x", "invalid request line: b'GET / HTTP/1.x'", 400),
        (b"GET /" + b"a" * 200 + b" H x", f"invalid request line: {b'GET /' + b'a' * 95!r}", 400),
        (b"GET / HTTP/2.0", "HTTP/2.0 is not supported", 505),
        (b"GET / HTTP/0.9", "HTTP/0.9 is not supported", 505),
        (b"GET /\x7f HTTP/1.1", "invalid request target", 400),
        (b"GET /\xe9 HTTP/1.1", "invalid request target", 400),
        (b"GET /\t HTTP/1.1", "invalid request target", 400),
        (b"GET * HTTP/1.1", "invalid request target '*'", 400),
        (b"GET ftp://h/ HTTP/1.1", "invalid request target 'ftp://h/'", 400),
        (b"GET ws:// HTTP/1.1", "invalid request target 'ws://'", 400),
        (b"GET ws:///a HTTP/1.1", "invalid request target 'ws:///a'", 400),
        (b"GET x" + b"a" * 150 + b" HTTP/1.1", f"invalid request target {'x' + 'a' * 99!r}", 400),
    ],
)
def test_bad_request_lines_are_refused(
    impl: ModuleType, line: bytes, message: str, status: int
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        impl.parse_request_line(line)
    assert (str(caught.value), caught.value.status) == (message, status)


def _outcome(module: ModuleType, line: bytes) -> object:
    try:
        return module.parse_request_line(line)
    except InvalidRequest as exc:
        return str(exc), exc.status


@settings(derandomize=True, database=None, deadline=None, max_examples=500)
@given(
    line=st.lists(
        st.sampled_from([b"GET", b" ", b"/", b"HTTP/1.1", b"HTTP/", b"1", b".", b"ws://", b"h",
                         b"wss", b":", b"?", b"#", b"\x00", b"\x7f", b"\xe9", b"(", b"HtTpS"]),
        max_size=8,
    ).map(b"".join)
)  # fmt: skip
def test_the_twins_agree_on_any_request_line(line: bytes) -> None:
    outcomes = [_outcome(module, line) for module in MODULES]
    assert all(outcome == outcomes[0] for outcome in outcomes)


def test_accept_keys_match_rfc_6455_and_sha1(impl: ModuleType) -> None:
    # RFC 6455 section 1.3.
    assert impl.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    # Lengths around SHA-1's 64-byte blocks and its 56-byte padding boundary.
    for size in [0, 1, 19, 20, 21, 27, 28, 29, 55, 56, 63, 64, 65, 100, 1000]:
        key = base64.b64encode(os.urandom(size)).decode()[:size] + "\xe9"
        expected = base64.b64encode(hashlib.sha1(key.encode() + guid).digest()).decode()
        assert impl.accept_key(key) == expected
    with pytest.raises(UnicodeEncodeError):
        impl.accept_key("\ud800")
    with pytest.raises(TypeError):
        impl.accept_key(b"key")


def test_the_portable_sha1_rounds_agree_too() -> None:
    # Where the CPU has SHA instructions, the C twin uses them: check the
    # portable rounds as well, in a process that is told not to.
    if c_twin is None:
        pytest.skip("no C twin to check")
    script = (
        "import base64, hashlib, os\n"
        "from rapidws.speedups import _c\n"
        "guid = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'\n"
        "for size in range(200):\n"
        "    key = os.urandom(size).hex()[:size]\n"
        "    digest = hashlib.sha1(key.encode() + guid).digest()\n"
        "    assert _c.accept_key(key) == base64.b64encode(digest).decode(), size\n"
    )
    env = dict(os.environ, RAPIDWS_NO_SHA_NI="1")
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


def test_heads_are_serialized(impl: ModuleType) -> None:
    items = ["Upgrade", "websocket", "X-Obs", "caf\xe9", "Empty", ""]
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nX-Obs: caf\xe9\r\nEmpty: \r\n\r\n"
    )
    assert impl.serialize_head("HTTP/1.1 101 Switching Protocols", items, b"") == head
    assert impl.serialize_head("GET / HTTP/1.1", [], b"body") == b"GET / HTTP/1.1\r\n\r\nbody"
    assert impl.serialize_head("X", [], bytearray(b"b")) == b"X\r\n\r\nb"


@pytest.mark.parametrize(
    "args",
    [
        ("HTTP/1.1 200 \u0100", [], b""),
        ("HTTP/1.1 200 OK", ["X", "\U0001f600"], b""),
        ("HTTP/1.1 200 OK", ["X"], b""),
        ("HTTP/1.1 200 OK", [], "not bytes"),
        ("HTTP/1.1 200 OK", [b"X", b"y"], b""),
    ],
)
def test_heads_out_of_the_common_case_are_serialized_alike(args: tuple[object, ...]) -> None:
    def outcome(module: ModuleType) -> object:
        try:
            return module.serialize_head(*args)
        except (UnicodeEncodeError, ValueError, TypeError) as exc:
            return type(exc), str(exc)

    outcomes = [outcome(module) for module in MODULES]
    assert all(result == outcomes[0] for result in outcomes)


def test_str_subclasses_are_written_as_the_reference_formats_them(impl: ModuleType) -> None:
    class Loud(str):
        __slots__ = ()

        def __format__(self, spec: str) -> str:
            return self.upper()

    assert impl.serialize_head("X", [Loud("a"), "b"], b"") == b"X\r\nA: b\r\n\r\n"


def test_the_functions_take_positional_arguments_only(impl: ModuleType) -> None:
    parameters = inspect.signature(impl.accept_key).parameters.values()
    assert [(p.name, p.kind) for p in parameters] == [("key", inspect.Parameter.POSITIONAL_ONLY)]
    with pytest.raises(TypeError):
        impl.accept_key(key="dGhlIHNhbXBsZSBub25jZQ==")


def test_fields_changed_by_a_collection_during_serialization_are_caught(
    impl: ModuleType,
) -> None:
    # Allocating the result may start a collection whose finalizers change
    # the fields: the head is then never written from stale sizes.
    items = ["X-A", "v" * 1000]

    def change() -> None:
        items[1] = "w" * 2000

    with finalizer_on_next_collection(change):
        try:
            head = impl.serialize_head("X", items, b"")
        except RuntimeError:
            return  # the C twin noticed
    assert head in (
        b"X\r\nX-A: " + b"v" * 1000 + b"\r\n\r\n",
        b"X\r\nX-A: " + b"w" * 2000 + b"\r\n\r\n",
    )
