"""Tests for read_messages() and encode_frame(), on both twins, byte for byte."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .twins import MODULES

MASK = b"\x37\xfa\x21\x3d"
NO_LIMIT = (1 << 63) - 1


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = MASK
) -> bytes:
    """A frame built by hand from RFC 6455 section 5.2, independent of the code under test."""
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 65536:
        header = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        header = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read(impl: ModuleType, buf: bytes | bytearray, pos: int = 0, **kw: Any) -> tuple[int, list]:
    events: list[Any] = []
    masked = kw.get("masked", True)
    end = impl.read_messages(buf, pos, masked, kw.get("limit", NO_LIMIT), events)
    return end, events


# read_messages()


def test_reads_rfc_example(impl: ModuleType) -> None:
    # RFC 6455 section 5.7: a single-frame masked text message, "Hello".
    buf = bytes.fromhex("818537fa213d7f9f4d5158")
    assert read(impl, buf) == (11, ["Hello"])
    assert read(impl, bytes.fromhex("810548656c6c6f"), masked=False) == (7, ["Hello"])


@pytest.mark.parametrize("size", [0, 1, 7, 8, 125, 126, 511, 512, 513, 65535, 65536, 70001])
@pytest.mark.parametrize("masked", [True, False])
def test_reads_every_length_encoding(impl: ModuleType, size: int, masked: bool) -> None:
    binary = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    text = ("é" * size)[: size // 2] + "a" * (size % 2)
    mask = MASK if masked else None
    buf = frame(0x2, binary, mask=mask) + frame(0x1, text.encode(), mask=mask)
    end, events = read(impl, buf, masked=masked)
    assert end == len(buf)
    assert events == [binary, text]
    assert [type(event) for event in events] == [bytes, str]


def test_reads_from_an_offset_and_a_bytearray(impl: ModuleType) -> None:
    buf = bytearray(b"junk" + frame(0x2, b"abc") + frame(0x1, b"de"))
    assert read(impl, buf, 4) == (len(buf), [b"abc", "de"])


@pytest.mark.parametrize(
    "stop",
    [
        frame(0x2, b"part", fin=False),  # a fragment
        frame(0x0, b"more"),  # a continuation
        frame(0x2, b"deflated", rsv=0x40),  # RSV1: for an extension
        frame(0x1, b"x", rsv=0x10),
        frame(0x9, b"ping"),  # control frames
        frame(0x8, b"\x03\xe8"),
        frame(0xA, b""),
        frame(0x3, b"reserved"),
        frame(0x2, b"unmasked", mask=None),  # the wrong MASK bit
        frame(0x1, b"\xff\xfe"),  # invalid UTF-8: the general parser fails it
        frame(0x1, b"ok" * 300 + b"\xed\xa0\x80"),  # a surrogate, past the scratch buffer
        frame(0x2, b"x" * 11),  # over the limit of 10
    ],
)
def test_stops_at_the_first_frame_it_does_not_take(impl: ModuleType, stop: bytes) -> None:
    before = frame(0x2, b"first") + frame(0x1, b"second")
    after = frame(0x2, b"never read")
    buf = before + stop + after
    assert read(impl, buf, limit=10) == (len(before), [b"first", "second"])


@pytest.mark.parametrize("size", [5, 300, 70000])
def test_stops_at_a_frame_cut_anywhere(impl: ModuleType, size: int) -> None:
    whole = frame(0x1, b"x" * size)
    for cut in [*range(len(whole) - size + 2), len(whole) - 1]:
        assert read(impl, b"\x82\x80" + MASK + whole[:cut]) == (6, [b""])


def test_limit_is_inclusive(impl: ModuleType) -> None:
    assert read(impl, frame(0x2, b"x" * 10), limit=10) == (16, [b"x" * 10])
    assert read(impl, frame(0x2, b""), limit=0) == (6, [b""])


def test_stops_at_a_length_with_the_most_significant_bit(impl: ModuleType) -> None:
    buf = b"\x82\xff" + b"\x80" + bytes(7) + MASK
    assert read(impl, buf) == (0, [])


def test_past_the_end_reads_nothing(impl: ModuleType) -> None:
    assert read(impl, b"\x82\x00", 5) == (5, [])


# encode_frame()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70001])
@pytest.mark.parametrize("mask", [None, MASK])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_encode_frame_matches_the_rfc(
    impl: ModuleType, size: int, mask: bytes | None, kind: type
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    encoded = impl.encode_frame(0x82, kind(payload), mask)
    assert type(encoded) is bytes
    assert encoded == frame(0x2, payload, mask=mask)


def test_encode_frame_rfc_example(impl: ModuleType) -> None:
    assert impl.encode_frame(0x81, b"Hello", MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert impl.encode_frame(0x89, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert impl.encode_frame(0x01, b"Hel") == bytes.fromhex("010348656c")


@pytest.mark.parametrize(
    "text",
    ["", "Hello", "x" * 126, "caf\u00e9", "\u20ac" * 30000, "\U0001f600 ok", "a\x00b"],
    ids=["empty", "ascii", "ascii-126", "latin1", "bmp-90k", "astral", "nul"],
)
@pytest.mark.parametrize("mask", [None, MASK])
def test_encode_frame_encodes_text_to_utf8(impl: ModuleType, text: str, mask: bytes | None) -> None:
    # ASCII is framed from the string's own storage in C; the rest is encoded.
    assert impl.encode_frame(0x81, text, mask) == frame(0x1, text.encode(), mask=mask)

    class Text(str):
        pass

    assert impl.encode_frame(0x81, Text(text), mask) == frame(0x1, text.encode(), mask=mask)


def test_encode_frame_refuses_lone_surrogates_as_str_encode_does(impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError):
        impl.encode_frame(0x81, "a\ud800b")


# append_unmasked()


@pytest.mark.parametrize("mask", [None, MASK])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_append_unmasked_in_pieces(impl: ModuleType, mask: bytes | None, kind: type) -> None:
    payload = bytes(range(256)) * 40 + b"tail"
    sent = frame(0x2, payload, mask=mask)[-len(payload) :]
    src = kind(b"xx" + sent + b"yy")
    dst = bytearray(b"head")
    # Pieces at every alignment of the masking key, an empty one among them.
    for start, stop in [(0, 1), (1, 1), (1, 6), (6, 4000), (4000, len(payload))]:
        impl.append_unmasked(dst, src, 2 + start, 2 + stop, mask, start)
    assert dst == b"head" + payload


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(
    src=st.binary(max_size=100),
    cuts=st.lists(st.integers(0, 100), min_size=2, max_size=2).map(sorted),
    mask=st.sampled_from([None, MASK]),
    offset=st.integers(0, 9),
)
def test_twins_agree_on_appends(
    src: bytes, cuts: list[int], mask: bytes | None, offset: int
) -> None:
    start, stop = (min(cut, len(src)) for cut in cuts)
    results = set()
    for module in MODULES:
        dst = bytearray(b"h")
        module.append_unmasked(dst, src, start, stop, mask, offset)
        results.add(bytes(dst))
    expected = (
        src[start:stop]
        if mask is None
        else bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(src[start:stop]))
    )
    assert results == {b"h" + expected}


# MessageBuffer


@pytest.mark.parametrize("mask", [None, MASK])
def test_message_buffer_fills_in_pieces(impl: ModuleType, mask: bytes | None) -> None:
    payload = bytes(range(256)) * 40 + b"tail"
    sent = frame(0x2, payload, mask=mask)[-len(payload) :]
    buffer = impl.MessageBuffer(len(payload))
    assert buffer.filled == 0
    for start, stop in [(0, 1), (1, 1), (1, 6), (6, 4000), (4000, len(payload))]:
        buffer.append(bytearray(b"x" + sent[start:stop]), 1, 1 + stop - start, mask, start)
        assert buffer.filled == stop
    message = buffer.finish()
    assert type(message) is bytes
    assert message == payload
    with pytest.raises(ValueError, match="finished already"):
        buffer.finish()
    with pytest.raises(ValueError, match="finished already"):
        buffer.append(b"", 0, 0, None, 0)


def test_message_buffer_of_nothing(impl: ModuleType) -> None:
    assert impl.MessageBuffer(0).finish() == b""


def test_message_buffer_refuses_too_much_and_too_little(impl: ModuleType) -> None:
    buffer = impl.MessageBuffer(4)
    buffer.append(b"abc", 0, 3, None, 0)
    with pytest.raises(ValueError, match="not complete"):
        buffer.finish()
    with pytest.raises(ValueError, match="more bytes than"):
        buffer.append(b"de", 0, 2, None, 0)
    buffer.append(b"de", 1, 2, None, 0)
    assert buffer.finish() == b"abce"


@pytest.mark.parametrize("mask", [None, MASK])
def test_message_buffer_takes_reads_into_its_view(impl: ModuleType, mask: bytes | None) -> None:
    payload = bytes(range(256)) * 40 + b"tail"
    sent = frame(0x2, payload, mask=mask)[-len(payload) :]
    buffer = impl.MessageBuffer(len(payload))
    buffer.append(sent, 0, 5, mask, 0)
    pos = 5
    for want, got in [(1, 1), (100, 37), (4000, 4000), (len(payload) - 4043, len(payload) - 4043)]:
        view = buffer.reserve(want)
        assert len(view) == want and not view.readonly
        view[:got] = sent[pos : pos + got]  # as recv_into() would
        buffer.commit(got, mask, pos)
        view.release()
        pos += got
        assert buffer.filled == pos
    message = buffer.finish()
    assert type(message) is bytes
    assert message == payload
    with pytest.raises(ValueError, match="finished already"):
        buffer.reserve(1)
    with pytest.raises(ValueError, match="finished already"):
        buffer.commit(0, None, 0)


def test_message_buffer_reserve_and_commit_check_their_bounds(impl: ModuleType) -> None:
    buffer = impl.MessageBuffer(4)
    for n, match in [(0, "0 < n"), (5, "0 < n"), (-1, ">= 0")]:
        with pytest.raises(ValueError, match=match):
            buffer.reserve(n)
    with pytest.raises(ValueError, match="more bytes than reserve"):
        buffer.commit(1, None, 0)  # nothing reserved
    view = buffer.reserve(2)
    view[:] = b"ab"
    with pytest.raises(ValueError, match="more bytes than reserve"):
        buffer.commit(3, None, 0)
    with pytest.raises(ValueError, match="4 bytes"):
        buffer.commit(2, b"abc", 0)
    view.release()
    buffer.commit(2, None, 0)
    with pytest.raises(ValueError, match="more bytes than reserve"):
        buffer.commit(1, None, 0)  # a commit closes the window
    buffer.reserve(2)
    buffer.append(b"cd", 0, 2, None, 0)  # and so does an append
    with pytest.raises(ValueError, match="more bytes than reserve"):
        buffer.commit(1, None, 0)
    assert buffer.finish() == b"abcd"


def test_message_buffer_view_outlives_the_buffer(impl: ModuleType) -> None:
    # The view keeps what it points into alive, whatever happens to the rest.
    buffer = impl.MessageBuffer(3)
    view = buffer.reserve(3)
    del buffer
    view[:] = b"xyz"
    assert bytes(view) == b"xyz"


# Differential: random streams of frames, good and bad, in both twins.

frames = st.builds(
    frame,
    opcode=st.sampled_from([0x0, 0x1, 0x1, 0x2, 0x2, 0x2, 0x3, 0x8, 0x9]),
    payload=st.binary(max_size=140) | st.text(max_size=40).map(str.encode),
    fin=st.booleans() | st.just(True),
    rsv=st.sampled_from([0, 0, 0, 0x40, 0x10]),
    mask=st.sampled_from([MASK, MASK, None, b"\x00\x00\x00\x00"]),
)


@settings(derandomize=True, database=None, deadline=None, max_examples=400)
@given(
    stream=st.lists(frames, max_size=6).map(b"".join),
    junk=st.binary(max_size=4),
    cut=st.integers(0, 10_000),
    pos=st.integers(0, 12),
    masked=st.booleans(),
    limit=st.sampled_from([0, 5, 125, 126, NO_LIMIT]),
)
def test_twins_agree_on_streams(
    stream: bytes, junk: bytes, cut: int, *, pos: int, masked: bool, limit: int
) -> None:
    buf = (stream + junk)[: cut % (len(stream) + len(junk) + 1)]
    results = []
    for module in MODULES:
        events: list[Any] = []
        end = module.read_messages(buf, pos, masked, limit, events)
        results.append((end, [(type(event), event) for event in events]))
    assert all(result == results[0] for result in results)


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(
    payload=st.binary(max_size=300), mask=st.sampled_from([None, MASK]), first=st.integers(0, 255)
)
def test_twins_agree_on_encoding(payload: bytes, mask: bytes | None, first: int) -> None:
    assert {module.encode_frame(first, payload, mask) for module in MODULES} == {
        bytes((first,)) + frame(0, payload, mask=mask)[1:]
    }
