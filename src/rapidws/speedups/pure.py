"""The pure-Python hot loops, the reference that a C accelerator must match.

Each function avoids per-byte Python loops: masking works on the payload as one
big integer, UTF-8 validation is CPython's incremental decoder, and the frame
header parser reads a few bytes by index.
"""

from __future__ import annotations

import codecs

__all__ = ["Utf8Validator", "apply_mask", "parse_frame_header"]

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class Utf8Validator:
    """Validate UTF-8 incrementally (RFC 3629), failing at the first bad byte.

    So an invalid text message is caught as soon as its bad byte arrives, even
    mid-frame (RFC 6455 section 8.1). ``validate(data, final)`` returns whether
    the stream is valid so far (and, when ``final``, ends on a whole code
    point); after a failure or a final piece, the validator starts afresh.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        # CPython's incremental decoder is the validator: it raises at the
        # first byte that cannot start or continue a sequence.
        self._decoder = _Utf8Decoder()

    def validate(self, data: bytes | bytearray | memoryview, final: bool = False) -> bool:
        """Validate the next piece of the stream."""
        decoder = self._decoder
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError:
            decoder.reset()
            return False
        pending = decoder.getstate()[0]
        # The one sequence CPython judges late: a surrogate (ED A0-BF), which
        # it refuses only at the third byte. Refuse it at the second.
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] > 0x9F:
            decoder.reset()
            return False
        return True

    def reset(self) -> None:
        """Forget any partial code point."""
        self._decoder.reset()


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (RFC 6455 section 5.3).

    Args:
        data: the payload, or a part of it.
        mask: the masking key, exactly 4 bytes.
        offset: the position of ``data[0]`` within the whole payload, so that a
            payload can be unmasked in pieces as it arrives.

    Returns:
        The masked (or unmasked: the operation is its own inverse) bytes.
    """
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    size = len(data)
    if size == 0:
        return b""
    if offset & 3:
        shift = offset & 3
        mask = mask[shift:] + mask[:shift]
    # One XOR of two big integers instead of a loop over the bytes.
    repeated = mask * ((size >> 2) + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated[:size], "little")
    return value.to_bytes(size, "little")


def parse_frame_header(
    buf: bytes | bytearray, pos: int
) -> tuple[int, int, int, bytes | None, int] | None:
    """Parse the frame header that starts at ``buf[pos]`` (RFC 6455 section 5.2).

    The header is parsed, never judged: the caller decides what is allowed.

    Args:
        buf: the receive buffer.
        pos: the offset of the header's first byte.

    Returns:
        ``None`` when the buffer does not hold the whole header yet, else a tuple
        ``(first_byte, second_byte, payload_length, mask, header_end)``: the byte
        with FIN, RSV and opcode; the byte with MASK and the 7-bit length; the
        payload length (the 64-bit form's most significant bit kept, so that the
        caller can refuse it); the 4-byte masking key or ``None``; the offset
        just past the header.
    """
    if pos < 0:
        raise ValueError("pos must be >= 0")
    available = len(buf) - pos
    if available < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    length = second & 0x7F
    end = pos + 2
    if length == 126:
        if available < 4:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        end = pos + 4
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        end = pos + 10
    if second & 0x80:
        if len(buf) < end + 4:
            return None
        return first, second, length, bytes(buf[end : end + 4]), end + 4
    return first, second, length, None, end
