"""The header-field loops of the handshake, on both twins: the same fields, the same errors."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapidws.exceptions import InvalidRequest, SecurityError
from rapidws.speedups import pure

from .twins import MODULES, finalizer_on_next_collection

START = "GET / HTTP/1.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Long-Name: v\r\n\r\n"


def _parse(
    impl: ModuleType, lines: list[str], max_line: int = -1, max_headers: int = -1, size: int = -1
) -> tuple[list[str], dict[str, Any]]:
    """Parse the head made of ``lines`` (Latin-1) with ``impl.parse_head``; return its fields."""
    head = "\r\n".join(lines).encode("latin-1")
    data = head + b"\r\n\r\n"
    start_line, items, index = impl.parse_head(data, len(head), max_line, max_headers, size)
    assert start_line == lines[0].encode("latin-1")
    return items, index


@pytest.fixture
def tables(impl: ModuleType) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """The twin's shared tables, emptied for the test and restored after it."""
    names, values = impl.HEADER_NAMES, impl.HEADER_VALUES
    saved = dict(names), dict(values)
    names.clear()
    values.clear()
    try:
        yield names, values
    finally:
        names.clear()
        names.update(saved[0])
        values.clear()
        values.update(saved[1])


def test_header_lines_become_fields_and_an_index(impl: ModuleType) -> None:
    lines = [START, "Host: example.com", "X-A:1", "x-a: \t two words \t", "Empty:", "Tab:\tv"]
    items, index = _parse(impl, lines)
    assert items == ["Host", "example.com", "X-A", "1", "x-a", "two words", "Empty", "", "Tab", "v"]
    assert index == {"host": "example.com", "x-a": ["1", "two words"], "empty": "", "tab": "v"}
    assert _parse(impl, [START]) == ([], {})
    assert impl.parse_head(b"\r\n\r\n", 0, -1, -1, -1) == (b"", [], {})


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("No colon", InvalidRequest, "invalid header line: b'No colon'"),
        ("x" * 100, InvalidRequest, f"invalid header line: b'{'x' * 64}'"),
        (" Host: a", InvalidRequest, "invalid header name: ' Host'"),  # obs-fold
        ("Bad Name: a", InvalidRequest, "invalid header name: 'Bad Name'"),
        (": a", InvalidRequest, "invalid header name: ''"),
        ("Host : a", InvalidRequest, "invalid header name: 'Host '"),
        ("H\xe9: a", InvalidRequest, "invalid header name: 'H\xe9'"),
        ("Host: a\x00b", InvalidRequest, "invalid value for header Host"),
        ("Host: a\x7fb", InvalidRequest, "invalid value for header Host"),
        ("Host: a\rb", InvalidRequest, "invalid value for header Host"),
        ("Host: " + "a" * 95, SecurityError, "header line is too long"),
    ],
)
def test_bad_header_lines_are_refused_with_their_status(
    impl: ModuleType, line: str, error: type[InvalidRequest], message: str
) -> None:
    with pytest.raises(error) as caught:
        _parse(impl, [START, "Host: ok", line], 100)
    assert str(caught.value) == message
    assert type(caught.value) is error
    assert caught.value.status == (431 if error is SecurityError else 400)


def test_obs_text_is_a_valid_value_and_the_line_limit_counts_characters(impl: ModuleType) -> None:
    line = "X-Name: caf\xe9 \x80\xff"
    assert _parse(impl, [START, line], len(line)) == (
        ["X-Name", "caf\xe9 \x80\xff"],
        {"x-name": "caf\xe9 \x80\xff"},
    )
    with pytest.raises(SecurityError):
        _parse(impl, [START, line], len(line) - 1)


def test_add_header_checks_names_and_values(impl: ModuleType) -> None:
    items: list[str] = []
    index: dict[str, Any] = {}
    impl.add_header(items, index, "Host", "a")
    impl.add_header(items, None, "Host", "b")  # no index: the fields only
    impl.add_header(items, index, "HOST", "c")
    assert items == ["Host", "a", "Host", "b", "HOST", "c"]
    assert index == {"host": ["a", "c"]}
    for name in ("Bad Name", "", "X:Y", "Host ", "H\u0100"):
        with pytest.raises(ValueError, match="invalid header name"):
            impl.add_header(items, index, name, "v")
    for value in ("a\r\nInjected: yes", "\x00", "\u0100"):
        with pytest.raises(ValueError, match="invalid value for header Host"):
            impl.add_header(items, index, "Host", value)
    wrong: list[tuple[object, object]] = [
        (None, "v"),
        (b"Host", "v"),
        ("Host", None),
        ("Host", b"v"),
    ]
    for bad_name, bad_value in wrong:
        with pytest.raises(TypeError):
            impl.add_header(items, index, bad_name, bad_value)
    assert len(items) == 6


def test_names_are_remembered_up_to_a_bound(
    impl: ModuleType, tables: tuple[dict[str, Any], dict[str, str]]
) -> None:
    names, _ = tables
    long_name = "X-" + "a" * (impl.SHARED_NAME_LENGTH - 1)
    items: list[str] = []
    index: dict[str, Any] = {}
    for name, value in (("Host", "a"), (long_name, "b"), ("HOST", "c")):
        impl.add_header(items, index, name, value)
    assert names == {"Host": ("Host", "host"), "HOST": ("HOST", "host")}  # not the long name
    names.update({f"X-Fill-{i}": (f"X-Fill-{i}", f"x-fill-{i}") for i in range(1021)})
    impl.add_header(items, index, "X-A", "1")
    impl.add_header(items, index, "X-B", "2")  # full
    assert "X-A" in names and "X-B" not in names
    assert len(names) == impl.HEADER_NAMES_MAX
    assert index["x-b"] == "2" and index[long_name.lower()] == "b"
    with pytest.raises(ValueError, match="invalid header name"):
        impl.add_header(items, index, "Bad Name", "v")


def test_values_are_shared_for_some_headers_only_and_up_to_a_bound(
    impl: ModuleType, tables: tuple[dict[str, Any], dict[str, str]]
) -> None:
    _, values = tables

    class Tagged(str):
        __slots__ = ()

    secret = "Bearer " + base64.b64encode(os.urandom(12)).decode()
    key = base64.b64encode(os.urandom(16)).decode()
    long_agent = "a" * (impl.SHARED_VALUE_LENGTH + 1)
    lines = [
        START,
        "Host: example.com",
        f"Authorization: {secret}",
        f"Cookie: {secret}",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Protocol: {secret}",
        f"User-Agent: {long_agent}",
    ]
    first, _ = _parse(impl, lines)
    second, _ = _parse(impl, ["".join(line) for line in lines])
    assert first[1] is second[1]  # the host: one string for both
    assert first[9] == second[9] and first[9] is not second[9]  # the key: never shared
    assert set(values) == {"example.com"}
    impl.add_header([], None, "User-Agent", Tagged("agent/1"))  # a subclass: never shared
    impl.add_header([], None, Tagged("X-Tagged"), "v")
    assert set(values) == {"example.com"} and "X-Tagged" not in impl.HEADER_NAMES
    values.update({f"fill-{i}": f"fill-{i}" for i in range(impl.HEADER_VALUES_MAX - 2)})
    impl.add_header([], None, "Origin", "https://one.example")
    impl.add_header([], None, "Origin", "https://two.example")  # full
    assert "https://one.example" in values and "https://two.example" not in values


def test_the_twins_share_the_same_bounds() -> None:
    for module in MODULES:
        assert module.SHARED_VALUE_NAMES == pure.SHARED_VALUE_NAMES
        for name in (
            "HEADER_NAMES_MAX",
            "HEADER_VALUES_MAX",
            "SHARED_NAME_LENGTH",
            "SHARED_VALUE_LENGTH",
        ):
            assert getattr(module, name) == getattr(pure, name)


def _outcome(
    module: ModuleType, data: bytes, end: int, limits: tuple[float, float, float]
) -> object:
    try:
        return module.parse_head(data, end, *limits)
    except InvalidRequest as exc:
        return type(exc), str(exc), exc.status


# Header-ish text, with the characters that matter to the grammar: separators,
# blanks, control characters and obs-text.
_line = st.text(
    st.sampled_from("Hh-o:s t\t\r\n\x00\x7f\xe9\xff,;=\"'aZ09"), max_size=24
) | st.sampled_from(["Host: a", "host:b", "X: ", " Host: a", "Upgrade: websocket"])
_limit = st.integers(-1, 40)


@settings(derandomize=True, database=None, deadline=None, max_examples=400)
@given(
    lines=st.lists(_line, max_size=6),
    limits=st.tuples(_limit, st.integers(-1, 7), st.integers(-1, 120)),
)
def test_the_twins_agree_on_any_head(lines: list[str], limits: tuple[int, int, int]) -> None:
    head = "\r\n".join([START, *lines]).encode("latin-1")
    data = head + b"\r\n\r\nrest"
    outcomes = [_outcome(module, data, len(head), limits) for module in MODULES]
    assert all(outcome == outcomes[0] for outcome in outcomes)


@pytest.mark.parametrize(
    ("limits", "message", "status"),
    [
        ((-1, -1, len(REQUEST) - 3), "HTTP head is too large", 431),
        ((13, -1, -1), "request line is too long", 414),
        ((-1, 1, -1), "too many header fields", 431),
        ((16, -1, -1), "header line is too long", 431),
    ],
)
def test_a_head_beyond_a_limit_is_refused(
    impl: ModuleType, limits: tuple[int, int, int], message: str, status: int
) -> None:
    end = len(REQUEST) - 4
    assert impl.parse_head(REQUEST, end, 17, 2, len(REQUEST) - 2)[0] == START.encode()
    with pytest.raises(SecurityError) as caught:
        impl.parse_head(REQUEST, end, *limits)
    assert (str(caught.value), caught.value.status) == (message, status)


def test_a_collection_during_add_header_cannot_free_the_value_it_holds(impl: ModuleType) -> None:
    # Making the list for a repeated name may start a collection, whose
    # finalizers may empty the index: the earlier value must stay alive.
    items: list[str] = []
    index: dict[str, Any] = {}
    impl.add_header(items, index, "X-A", "".join(["first-", str(id(items))]))

    def empty() -> None:
        items.clear()
        index.clear()

    with finalizer_on_next_collection(empty):
        impl.add_header(items, index, "X-A", "second")
    # Where (and on 3.13, whether) the collection ran decides what it emptied;
    # what is left is intact.
    assert items in ([], ["X-A", "second"], ["X-A", "first-" + str(id(items)), "X-A", "second"])
    assert index.get("x-a") in (None, ["first-" + str(id(items)), "second"], "second")


def test_any_int_is_a_line_limit(impl: ModuleType) -> None:
    lines = [START, "Host: " + "a" * 100]
    for limit in (10**20, sys.maxsize, -(10**20)):  # beyond any length: no limit
        assert _parse(impl, lines, limit, limit, limit)[0] == ["Host", "a" * 100]


def test_entries_put_in_the_names_table_by_hand_do_no_harm(
    impl: ModuleType, tables: tuple[dict[str, Any], dict[str, str]]
) -> None:
    names, _ = tables
    names["X-Poison"] = ("X-Poison",)  # not a (name, key) pair
    try:
        items: list[str] = []
        impl.add_header(items, None, "X-Poison", "v")
    except ValueError:
        assert impl is pure  # the reference unpacks it; the C twin ignores it
    else:
        assert items == ["X-Poison", "v"]


@pytest.mark.parametrize("limit", [16.0, 16.5, 15.999, -0.5, float("nan"), float("inf"), 1e300])
def test_float_limits_count_as_the_reference_compares_them(limit: float) -> None:
    outcomes = [
        _outcome(module, REQUEST, len(REQUEST) - 4, (limit, limit, limit)) for module in MODULES
    ]
    assert all(outcome == outcomes[0] for outcome in outcomes)


@pytest.mark.parametrize("end", [-1, len(REQUEST) + 1])
def test_an_end_out_of_range_is_refused(impl: ModuleType, end: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        impl.parse_head(REQUEST, end, None, None, None)
