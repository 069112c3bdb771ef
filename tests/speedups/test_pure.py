"""Tests for the hot loops of rapidws.speedups, against naive references.

Every test takes the implementation as a parameter, so that a C twin only has
to be added to ``IMPLEMENTATIONS`` to run the same tests.
"""

from __future__ import annotations

import random
from types import ModuleType

import pytest

import rapidws.speedups
import rapidws.speedups.pure

IMPLEMENTATIONS = [pytest.param(rapidws.speedups.pure, id="pure")]

MASK = b"\x37\xfa\x21\x3d"


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


def reference_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """Mask byte by byte, as RFC 6455 section 5.3 describes it."""
    return bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))


def test_speedups_chooses_an_implementation() -> None:
    assert rapidws.speedups.IMPLEMENTATION == "python"
    assert rapidws.speedups.apply_mask is rapidws.speedups.pure.apply_mask
    assert rapidws.speedups.parse_frame_header is rapidws.speedups.pure.parse_frame_header
    assert rapidws.speedups.Utf8Decoder is rapidws.speedups.pure.Utf8Decoder


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


# Utf8Decoder.


def test_utf8_decoder_incremental(impl: ModuleType) -> None:
    decoder = impl.Utf8Decoder()
    data = "aé€😀".encode()
    pieces = [decoder.decode(data[i : i + 1], False) for i in range(len(data))]
    assert pieces == ["a", "", "é", "", "", "€", "", "", "", "😀"]
    assert decoder.decode(b"", True) == ""


def test_utf8_decoder_fails_at_first_bad_byte(impl: ModuleType) -> None:
    # Without waiting for the end of the data (RFC 6455 section 8.1).
    for data in (b"ok\xff", b"\xc0", b"\xe0\x80", b"\xf4\x90", b"\xf5", b"\x80"):
        with pytest.raises(UnicodeDecodeError):
            impl.Utf8Decoder().decode(data, False)


def test_utf8_decoder_fails_on_truncated_final(impl: ModuleType) -> None:
    decoder = impl.Utf8Decoder()
    assert decoder.decode(b"\xe2\x82", False) == ""
    with pytest.raises(UnicodeDecodeError, match="unexpected end of data"):
        decoder.decode(b"", True)


def test_utf8_decoder_reset(impl: ModuleType) -> None:
    decoder = impl.Utf8Decoder()
    assert decoder.decode(b"\xe2\x82", False) == ""
    decoder.reset()
    assert decoder.decode(b"ok", True) == "ok"


def test_utf8_decoder_accepts_buffers(impl: ModuleType) -> None:
    decoder = impl.Utf8Decoder()
    assert decoder.decode(bytearray("é".encode()), False) == "é"
    assert decoder.decode(memoryview(b"!"), True) == "!"
