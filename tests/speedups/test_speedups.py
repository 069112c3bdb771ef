"""Tests for the hot loops of rapidws.speedups, against naive references.

Every test takes the implementation as a parameter, so that a C twin only has
to be added to ``twins.MODULES`` to run the same tests.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rapidws.speedups
import rapidws.speedups.pure

from .twins import MODULES, c_twin

MASK = b"\x37\xfa\x21\x3d"


def reference_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """Mask byte by byte, as RFC 6455 section 5.3 describes it."""
    return bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))


def test_speedups_chooses_an_implementation() -> None:
    chosen = rapidws.speedups.pure if rapidws.speedups.IMPLEMENTATION == "python" else c_twin
    assert chosen is not None
    assert rapidws.speedups.apply_mask is chosen.apply_mask
    assert rapidws.speedups.parse_frame_header is chosen.parse_frame_header
    assert rapidws.speedups.Utf8Validator is chosen.Utf8Validator
    assert rapidws.speedups.read_messages is chosen.read_messages
    assert rapidws.speedups.encode_frame is chosen.encode_frame
    assert rapidws.speedups.append_unmasked is chosen.append_unmasked
    assert rapidws.speedups.MessageBuffer is chosen.MessageBuffer
    forced = os.environ.get("RAPIDWS_SPEEDUPS") == "python"
    assert ("python" if forced or not c_twin else "c") == rapidws.speedups.IMPLEMENTATION


def test_environment_variable_forces_the_pure_twin() -> None:
    code = "import rapidws.speedups as s; print(s.IMPLEMENTATION)"
    env = {**os.environ, "RAPIDWS_SPEEDUPS": "python"}
    output = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "python"


# apply_mask.


def test_apply_mask_rfc_example(impl: ModuleType) -> None:
    assert impl.apply_mask(b"Hello", MASK) == b"\x7f\x9f\x4d\x51\x58"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("offset", range(8))
def test_apply_mask_matches_reference(impl: ModuleType, kind: type, offset: int) -> None:
    rng = random.Random(offset)
    for size in range(301):
        data = rng.randbytes(size)
        mask = rng.randbytes(4)
        result = impl.apply_mask(kind(data), mask, offset)
        assert type(result) is bytes
        assert result == reference_mask(data, mask, offset), size


def test_apply_mask_default_offset(impl: ModuleType) -> None:
    data = bytes(range(100))
    assert impl.apply_mask(data, MASK) == impl.apply_mask(data, MASK, 0)
    assert impl.apply_mask(b"", MASK, 3) == b""


def test_apply_mask_is_an_involution(impl: ModuleType) -> None:
    rng = random.Random(0)
    for size in (0, 1, 3, 4, 5, 127, 4096, 65537):
        data = rng.randbytes(size)
        assert impl.apply_mask(impl.apply_mask(data, MASK), MASK) == data


def test_apply_mask_in_pieces(impl: ModuleType) -> None:
    # The offset is a position within the whole payload.
    data = bytes(range(256)) * 3
    whole = impl.apply_mask(data, MASK)
    for cut in range(len(data) + 1):
        pieces = impl.apply_mask(data[:cut], MASK, 0) + impl.apply_mask(data[cut:], MASK, cut)
        assert pieces == whole, cut


def test_apply_mask_on_slice_of_memoryview(impl: ModuleType) -> None:
    buffer = memoryview(bytes(range(200)))
    assert impl.apply_mask(buffer[7:150], MASK, 7) == reference_mask(bytes(buffer[7:150]), MASK, 7)


# parse_frame_header.

HEADERS = [
    # (header bytes, expected tuple without header_end)
    (b"\x81\x05", (0x81, 0x05, 5, None)),
    (b"\x02\x00", (0x02, 0x00, 0, None)),
    (b"\x82\x7d", (0x82, 0x7D, 125, None)),
    (b"\x82\x7e\x00\x7e", (0x82, 0x7E, 126, None)),
    (b"\x82\x7e\xff\xff", (0x82, 0x7E, 65535, None)),
    (b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", (0x82, 0x7F, 65536, None)),
    (b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x01", (0x82, 0x7F, 2**63 + 1, None)),
    (b"\x81\x85" + MASK, (0x81, 0x85, 5, MASK)),
    (b"\x88\x80" + MASK, (0x88, 0x80, 0, MASK)),
    (b"\x82\xfe\x01\x00" + MASK, (0x82, 0xFE, 256, MASK)),
    (b"\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00" + MASK, (0x82, 0xFF, 2**32, MASK)),
]


@pytest.mark.parametrize(("header", "expected"), HEADERS)
def test_parse_frame_header(impl: ModuleType, header: bytes, expected: tuple[object, ...]) -> None:
    payload = b"payload"
    for kind in (bytes, bytearray):
        assert impl.parse_frame_header(kind(header + payload), 0) == (*expected, len(header))
        # At an offset within a buffer that holds earlier frames.
        buf = kind(b"\x00" * 3 + header + payload)
        assert impl.parse_frame_header(buf, 3) == (*expected, 3 + len(header))


@pytest.mark.parametrize(("header", "expected"), HEADERS)
def test_parse_frame_header_truncated(
    impl: ModuleType, header: bytes, expected: tuple[object, ...]
) -> None:
    for cut in range(len(header)):
        assert impl.parse_frame_header(header[:cut], 0) is None, cut
        assert impl.parse_frame_header(bytearray(b"xy" + header[:cut]), 2) is None, cut


def test_parse_frame_header_returns_a_bytes_mask(impl: ModuleType) -> None:
    result = impl.parse_frame_header(bytearray(b"\x81\x85" + MASK), 0)
    assert type(result[3]) is bytes


# Utf8Validator.


def reference_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_utf8_validator_incremental(impl: ModuleType) -> None:
    validator = impl.Utf8Validator()
    data = "aé€😀".encode()
    assert all(validator.validate(data[i : i + 1]) for i in range(len(data)))
    assert validator.validate(b"", True)


@pytest.mark.parametrize(
    "data",
    [b"ok\xff", b"\xc0", b"\xc1", b"\xe0\x80", b"\xe0\x9f", b"\xed\xa0", b"\xed\xbf",
     b"\xf0\x8f", b"\xf4\x90", b"\xf5", b"\x80", b"\xe2\x82\x41", b"\xf8", b"\xfe"],
)  # fmt: skip
def test_utf8_validator_fails_at_first_bad_byte(impl: ModuleType, data: bytes) -> None:
    # Without waiting for the end of the data (RFC 6455 section 8.1): the bad
    # byte is the last one of each example.
    validator = impl.Utf8Validator()
    assert validator.validate(data[:-1]) or len(data) == 1
    assert not impl.Utf8Validator().validate(data)


@pytest.mark.parametrize(
    "data", [b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\x7f"]
)
def test_utf8_validator_accepts_the_edges(impl: ModuleType, data: bytes) -> None:
    assert impl.Utf8Validator().validate(data, True)


def test_utf8_validator_fails_on_truncated_final(impl: ModuleType) -> None:
    validator = impl.Utf8Validator()
    assert validator.validate(b"\xe2\x82")
    assert not validator.validate(b"", True)
    assert validator.validate(b"ok", True)  # afresh after the failure


def test_utf8_validator_reset(impl: ModuleType) -> None:
    validator = impl.Utf8Validator()
    assert validator.validate(b"\xe2\x82")
    validator.reset()
    assert validator.validate(b"ok", True)


def test_utf8_validator_accepts_buffers(impl: ModuleType) -> None:
    validator = impl.Utf8Validator()
    assert validator.validate(bytearray("é".encode()))
    assert validator.validate(memoryview(b"!"), True)


def test_utf8_validator_long_ascii_then_bad_byte(impl: ModuleType) -> None:
    # Past the eight-byte ASCII fast path, at every alignment.
    for size in range(40):
        assert impl.Utf8Validator().validate(b"a" * size, True)
        assert not impl.Utf8Validator().validate(b"a" * size + b"\xff")


# Differential: both twins on the same random input, in the same random pieces.


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(data=st.binary(max_size=64) | st.text(max_size=32).map(str.encode), cuts=st.data())
def test_twins_agree_on_utf8(data: bytes, cuts: st.DataObject) -> None:
    points = sorted(cuts.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    outcomes = []
    for module in MODULES:
        validator = module.Utf8Validator()
        outcome = []
        for i, piece in enumerate(pieces):
            outcome.append(validator.validate(piece, i == len(pieces) - 1))
            if not outcome[-1]:
                break
        outcomes.append(outcome)
    assert all(outcome == outcomes[0] for outcome in outcomes)
    assert outcomes[0][-1] == reference_utf8(data)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(buf=st.binary(max_size=40), pos=st.integers(0, 45))
def test_twins_agree_on_frame_headers(buf: bytes, pos: int) -> None:
    results = {module.__name__: module.parse_frame_header(buf, pos) for module in MODULES}
    assert len(set(results.values())) == 1, results


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    data=st.binary(max_size=400), mask=st.binary(min_size=4, max_size=4), offset=st.integers(0, 9)
)
def test_twins_agree_on_masks(data: bytes, mask: bytes, offset: int) -> None:
    results = {module.apply_mask(data, mask, offset) for module in MODULES}
    assert results == {reference_mask(data, mask, offset)}


@pytest.mark.parametrize("call", [
    lambda m: m.apply_mask(b"abc", b"\x00\x01\x02"),
    lambda m: m.apply_mask(b"abc", b"\x00" * 4, -1),
    lambda m: m.parse_frame_header(b"\x81\x00", -1),
    lambda m: m.apply_mask("text", b"\x00" * 4),
    lambda m: m.read_messages(b"", -1, True, 10, []),
    lambda m: m.read_messages(b"", 0, True, -1, []),
    lambda m: m.read_messages(b"", 0, True, 1 << 63, []),
    lambda m: m.read_messages(b"", 0, True, 10, ()),
    lambda m: m.read_messages("text", 0, True, 10, []),
    lambda m: m.encode_frame(256, b""),
    lambda m: m.encode_frame(-1, b""),
    lambda m: m.encode_frame(0x82, b"", b"abc"),
    lambda m: m.encode_frame(0x82, 5),
    lambda m: m.append_unmasked(b"", b"abc", 0, 1, None, 0),
    lambda m: m.append_unmasked(bytearray(), b"abc", 2, 1, None, 0),
    lambda m: m.append_unmasked(bytearray(), b"abc", 0, 4, None, 0),
    lambda m: m.append_unmasked(bytearray(), b"abc", -1, 2, None, 0),
    lambda m: m.append_unmasked(bytearray(), b"abc", 0, 2, None, -1),
    lambda m: m.append_unmasked(bytearray(), b"abc", 0, 2, b"abc", 0),
    lambda m: m.append_unmasked(bytearray(), "abc", 0, 2, None, 0),
    lambda m: m.MessageBuffer(-1),
    lambda m: m.MessageBuffer("3"),
    lambda m: m.MessageBuffer(3).append(b"abc", 2, 1, None, 0),
    lambda m: m.MessageBuffer(3).append(b"abc", 0, 3, b"ab", 0),
    lambda m: m.MessageBuffer(3).append("abc", 0, 3, None, 0),
])  # fmt: skip
def test_twins_refuse_the_same_misuse(call: Any) -> None:
    errors = set()
    for module in MODULES:
        with pytest.raises((ValueError, TypeError)) as info:
            call(module)
        errors.add(info.type)
    assert len(errors) == 1
