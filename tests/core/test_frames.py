"""Tests for rapidws.core.frames: opcodes, close payloads and frame headers."""

from __future__ import annotations

import pytest

from rapidws.core.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    Close,
    CloseCode,
    Opcode,
    frame_header,
    is_valid_close_code,
)
from rapidws.exceptions import ProtocolError
from rapidws.speedups import apply_mask, parse_frame_header

MASK = b"\x37\xfa\x21\x3d"  # the masking key of RFC 6455 section 5.7

VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def serialize(first: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """Build a whole frame the way the protocol does: header, then masked payload."""
    body = payload if mask is None else apply_mask(payload, mask)
    return frame_header(first, len(payload), mask) + body


def assert_frame_data(data: bytes, first: int, payload: bytes, mask: bytes | None) -> None:
    """Check a frame both ways: parsing ``data`` and building it from its parts."""
    first_byte, _second, length, parsed_mask, end = parse_frame_header(data, 0)  # type: ignore[misc]
    assert first_byte == first
    assert length == len(payload)
    assert parsed_mask == mask
    body = data[end:]
    assert (body if mask is None else apply_mask(body, mask)) == payload
    assert serialize(first, payload, mask) == data


def test_opcode_values() -> None:
    assert [int(op) for op in Opcode] == [0x0, 0x1, 0x2, 0x8, 0x9, 0xA]
    assert {Opcode.CONT, Opcode.TEXT, Opcode.BINARY} == DATA_OPCODES
    assert {Opcode.CLOSE, Opcode.PING, Opcode.PONG} == CONTROL_OPCODES


# RFC 6455 section 5.7 examples.


def test_rfc_unmasked_text() -> None:
    assert_frame_data(b"\x81\x05\x48\x65\x6c\x6c\x6f", 0x81, b"Hello", None)


def test_rfc_masked_text() -> None:
    data = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert_frame_data(data, 0x81, b"Hello", MASK)


def test_rfc_fragmented_unmasked_text() -> None:
    assert_frame_data(b"\x01\x03\x48\x65\x6c", 0x01, b"Hel", None)
    assert_frame_data(b"\x80\x02\x6c\x6f", 0x80, b"lo", None)


def test_rfc_unmasked_ping_and_masked_pong() -> None:
    assert_frame_data(b"\x89\x05\x48\x65\x6c\x6c\x6f", 0x89, b"Hello", None)
    data = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert_frame_data(data, 0x8A, b"Hello", MASK)


def test_rfc_256_bytes_binary() -> None:
    payload = bytes(range(256))
    assert_frame_data(b"\x82\x7e\x01\x00" + payload, 0x82, payload, None)


def test_rfc_64_kib_binary() -> None:
    payload = bytes(range(256)) * 256
    header = b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
    assert_frame_data(header + payload, 0x82, payload, None)


# Frame headers.


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**32, b"\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00"),
    ],
)
def test_frame_header_uses_minimal_length_encoding(length: int, header: bytes) -> None:
    assert frame_header(0x82, length, None) == header
    masked = frame_header(0x82, length, MASK)
    assert masked == bytes((header[0], header[1] | 0x80)) + header[2:] + MASK


# Close codes and payloads.


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code(code: int) -> None:
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_code(code: int) -> None:
    assert not is_valid_close_code(code)


def test_close_parse_empty_payload_means_no_status() -> None:
    assert Close.parse(b"") == Close(CloseCode.NO_STATUS_RCVD)


def test_close_parse_code_and_reason() -> None:
    assert Close.parse(b"\x03\xe8") == Close(1000)
    assert Close.parse(b"\x03\xe9bye \xe2\x82\xac") == Close(1001, "bye €")


def test_close_parse_one_byte_payload() -> None:
    with pytest.raises(ProtocolError, match="one-byte payload") as info:
        Close.parse(b"\x03")
    assert info.value.code == 1002


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_close_parse_invalid_code(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        Close.parse(code.to_bytes(2, "big"))
    assert str(info.value) == f"close frame with invalid close code {code}"
    assert info.value.code == 1002


def test_close_parse_invalid_utf8_reason() -> None:
    with pytest.raises(ProtocolError, match="not valid UTF-8") as info:
        Close.parse(b"\x03\xe8\xff")
    assert info.value.code == 1007


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_close_round_trip(code: int) -> None:
    close = Close(code, "reason")
    assert Close.parse(close.serialize()) == close


def test_close_serialize() -> None:
    assert Close(1000).serialize() == b"\x03\xe8"
    assert Close(1001, "bye").serialize() == b"\x03\xe9bye"
    assert Close(CloseCode.NO_STATUS_RCVD).serialize() == b""


def test_close_serialize_invalid_code() -> None:
    with pytest.raises(ValueError, match="invalid close code: 1006"):
        Close(1006).serialize()


def test_close_serialize_reason_limit() -> None:
    assert len(Close(1000, "x" * 123).serialize()) == 125
    with pytest.raises(ValueError, match="longer than 123 bytes"):
        Close(1000, "x" * 124).serialize()
    with pytest.raises(ValueError, match="longer than 123 bytes"):
        Close(1000, "€" * 42).serialize()  # 126 bytes in UTF-8


@pytest.mark.parametrize(
    ("close", "text"),
    [
        (Close(1000), "1000 (normal closure)"),
        (Close(1001, "bye"), "1001 (going away) bye"),
        (Close(1005), "1005 (no status rcvd)"),
        (Close(3000), "3000 (registered)"),
        (Close(4999, "app"), "4999 (private use) app"),
    ],
)
def test_close_str(close: Close, text: str) -> None:
    assert str(close) == text
