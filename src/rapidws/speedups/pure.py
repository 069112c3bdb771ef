"""The pure-Python hot loops, the reference that a C accelerator must match.

Each function avoids per-byte Python loops: masking works on the payload as one
big integer, UTF-8 validation is CPython's incremental decoder, and the frame
header parser reads a few bytes by index. :func:`frame_header` has no C twin:
the C :func:`encode_frame` builds its header inline.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

from . import pure_connection
from .pure_connection import DIRECT_READ_MIN, ConnectionCore
from .pure_handshake import accept_key, parse_request_line, serialize_head
from .pure_http import (
    HEADER_NAMES,
    HEADER_NAMES_MAX,
    HEADER_VALUES,
    HEADER_VALUES_MAX,
    SHARED_NAME_LENGTH,
    SHARED_VALUE_LENGTH,
    SHARED_VALUE_NAMES,
    add_header,
    parse_head,
)

__all__ = [
    "DIRECT_READ_MIN",
    "HEADER_NAMES",
    "HEADER_NAMES_MAX",
    "HEADER_VALUES",
    "HEADER_VALUES_MAX",
    "JOIN_LIMIT",
    "SHARED_NAME_LENGTH",
    "SHARED_VALUE_LENGTH",
    "SHARED_VALUE_NAMES",
    "ConnectionCore",
    "MessageBuffer",
    "ProtocolCore",
    "Utf8Validator",
    "accept_key",
    "add_header",
    "append_unmasked",
    "apply_mask",
    "encode_frame",
    "frame_header",
    "parse_frame_header",
    "parse_head",
    "parse_request_line",
    "read_messages",
    "serialize_head",
    "set_open_state",
]

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


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    # A memoryview of wider items (array("I")) counts items: view its bytes,
    # as the C twin's buffer access does.
    if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1):
        return data.cast("B")
    return data


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
    data = _as_bytes(data)
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


def append_unmasked(  # noqa: PLR0917 - positional, as its C twin
    dst: bytearray,
    src: bytes | bytearray | memoryview,
    start: int,
    end: int,
    mask: bytes | None,
    offset: int,
) -> None:
    """Append ``src[start:end]``, unmasked, to ``dst``.

    The payload of a message that arrives in pieces goes from the receive
    buffer into the message's buffer; the C twin copies it once.

    Args:
        dst: the message's buffer.
        src: the receive buffer.
        start: where the piece starts in ``src``.
        end: where it ends; ``start <= end <= len(src)``.
        mask: the frame's masking key, or ``None`` for an unmasked frame.
        offset: the position of ``src[start]`` within the frame's payload.
    """
    if not isinstance(dst, bytearray):
        raise TypeError("dst must be a bytearray")
    if min(start, end, offset) < 0:
        raise ValueError("start, end and offset must be >= 0")
    with memoryview(_as_bytes(src)) as view:
        if end > len(view) or start > end:
            raise ValueError("need start <= end <= len(src)")
        if mask is not None and len(mask) != 4:
            raise ValueError("mask must contain 4 bytes")
        dst += view[start:end] if mask is None else apply_mask(view[start:end], mask, offset)


class MessageBuffer:
    """A binary message of known size, filled in pieces as its payload arrives.

    ``append()`` unmasks a piece into place and ``finish()`` returns the whole
    message. ``reserve()`` and ``commit()`` let a socket read payload straight
    into the message (``recv_into``), which is unmasked there. The C twin
    fills a ``bytes`` object directly, which saves the copy that
    ``bytes(bytearray)`` costs here; its ``reserve()`` views that object.

    Args:
        size: the message's size, in bytes.
    """

    __slots__ = ("_data", "_size", "_window")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self._size = size
        self._data: bytearray | None = bytearray()
        self._window: bytearray | None = None

    @property
    def filled(self) -> int:
        """How many bytes are in."""
        return self._size if self._data is None else len(self._data)

    def append(
        self,
        src: bytes | bytearray | memoryview,
        start: int,
        end: int,
        mask: bytes | None,
        offset: int,
    ) -> None:
        """Unmask ``src[start:end]`` into place, as :func:`append_unmasked` does.

        Raises:
            ValueError: past the message's size, or after :meth:`finish`.
        """
        data = self._open()
        if 0 <= start <= end and end - start > self._size - len(data):
            raise ValueError("more bytes than the message's size")
        append_unmasked(data, src, start, end, mask, offset)
        self._window = None

    def reserve(self, n: int) -> memoryview:
        """Return a writable view for the next ``n`` bytes of (masked) payload.

        Raises:
            ValueError: unless ``0 < n <=`` the bytes still missing, or after
                :meth:`finish`.
        """
        data = self._open()
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0 or n > self._size - len(data):
            raise ValueError("need 0 < n <= the bytes still missing")
        self._window = bytearray(n)
        return memoryview(self._window)

    def commit(self, nbytes: int, mask: bytes | None, offset: int) -> None:
        """Take the first ``nbytes`` written into the view :meth:`reserve` returned.

        They are unmasked in place with ``mask`` from ``offset`` on (``None``:
        taken as they are).

        Raises:
            ValueError: past the reserved bytes, or after :meth:`finish`.
        """
        data = self._open()
        if nbytes < 0 or offset < 0:
            raise ValueError("nbytes and offset must be >= 0")
        window = self._window or b""
        if nbytes > len(window):
            raise ValueError("more bytes than reserve() opened")
        append_unmasked(data, window, 0, nbytes, mask, offset)
        self._window = None

    def finish(self) -> bytes:
        """Return the whole message.

        Raises:
            ValueError: when bytes are missing, or after an earlier call.
        """
        data = self._open()
        if len(data) != self._size:
            raise ValueError("the message is not complete")
        self._data = self._window = None
        return bytes(data)

    def _open(self) -> bytearray:
        if self._data is None:
            raise ValueError("the message was finished already")
        return self._data


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


def read_messages(
    buf: bytes | bytearray, pos: int, masked: bool, limit: int, events: list[Any]
) -> int:
    """Read the messages that fit in one frame each, from ``buf[pos]`` on.

    The receive loop's common case. Every frame that is a whole message by
    itself (FIN set, RSV bits clear, text or binary, masked when ``masked``
    and not otherwise, a payload of at most ``limit`` bytes and all of it in
    ``buf``, valid UTF-8 when text) is unmasked and appended to ``events``, as
    ``str`` for text and ``bytes`` for binary. Scanning stops at the first
    frame that is not so, or not whole, and returns its offset: the caller's
    general parser judges it.

    Args:
        buf: the receive buffer.
        pos: the offset of the first frame.
        masked: whether frames must be masked (on the server side).
        limit: the largest payload to read here, in ``range(2**63)``.
        events: the list the messages are appended to.
    """
    if pos < 0:
        raise ValueError("pos must be >= 0")
    if not 0 <= limit < 1 << 63:
        raise ValueError("limit must be in range(2**63)")
    if not isinstance(events, list):
        raise TypeError("events must be a list")
    masked = bool(masked)
    while True:
        header = parse_frame_header(buf, pos)
        if header is None:
            return pos
        first, _second, length, mask, start = header
        opcode = first & 0x0F
        end = start + length
        if (
            first & 0xF0 != 0x80
            or opcode not in (1, 2)
            or (mask is not None) is not masked
            or length > limit
            or end > len(buf)
        ):
            return pos
        payload = bytes(buf[start:end])
        if mask is not None:
            payload = apply_mask(payload, mask)
        if opcode == 1:
            try:
                events.append(payload.decode())
            except UnicodeDecodeError:
                return pos  # the general parser fails the connection with 1007
        else:
            events.append(payload)
        pos = end


def _read_close(data: bytes, pos: int, masked: bool) -> tuple[int, str, bytes] | None:
    """Read a valid close frame at ``data[pos]``: ``(code, reason, payload)``, or ``None``.

    Valid: whole, FIN set, RSV clear, masked when ``masked``, a code that may
    be sent (as :func:`rapidws.core.frames.is_valid_close_code` has it) and a
    UTF-8 reason; 1005 without a payload. Anything else is for the general
    parser to judge.
    """
    header = parse_frame_header(data, pos)
    if header is None:
        return None
    first, second, length, mask, start = header
    # The length in its short form only, as the C twin reads it.
    if first != 0x88 or (mask is not None) is not masked or second & 0x7F != length:
        return None
    if length > 125 or length == 1:
        return None
    if start + length > len(data):
        return None
    payload = bytes(data[start : start + length])
    if mask is not None:
        payload = apply_mask(payload, mask)
    if not payload:
        return 1005, "", payload
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return None
    try:
        return code, payload[2:].decode(), payload
    except UnicodeDecodeError:
        return None


_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def frame_header(first: int, length: int, mask: bytes | None) -> bytes:
    """Build a frame header with the minimal length encoding (RFC 6455 section 5.2).

    Args:
        first: the first byte: FIN, RSV1-3 and the opcode.
        length: the payload length.
        mask: the 4-byte masking key, or ``None`` for an unmasked frame.
    """
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = _PACK_16(first, mask_bit | 126, length)
    else:
        header = _PACK_64(first, mask_bit | 127, length)
    return header + mask if mask is not None else header


def encode_frame(
    first: int, payload: str | bytes | bytearray | memoryview, mask: bytes | None = None
) -> bytes:
    """Build a whole frame: its header and its payload, masked with ``mask`` if given.

    Args:
        first: the first byte: FIN, RSV1-3 and the opcode.
        payload: the payload, unmasked; a ``str`` is encoded to UTF-8.
        mask: the 4-byte masking key, or ``None`` for an unmasked frame.
    """
    if not 0 <= first <= 255:
        raise ValueError("first must be in range(256)")
    payload = payload.encode() if isinstance(payload, str) else _as_bytes(payload)
    if mask is None:
        return frame_header(first, len(payload), None) + payload
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    return frame_header(first, len(payload), mask) + apply_mask(payload, mask)


#: Whole messages up to this size are framed into one object with their
#: header; larger payloads are written after their header, not copied.
JOIN_LIMIT = 4096

_OPEN: object = None  # set_open_state()


def set_open_state(state: object) -> None:
    """Tell :class:`ProtocolCore` and :class:`ConnectionCore` which state object means OPEN."""
    global _OPEN  # one value, set once by the engine
    _OPEN = pure_connection._OPEN = state


class ProtocolCore:
    """The engine's per-message fields and methods; subclassed by ``Protocol``.

    What is not the common case goes on in the subclass's ``_receive_more()``
    and ``_send_message_more()``.
    """

    __slots__ = (
        "_buf",
        "_events",
        "_frame_left",
        "_masked",
        "_msg_opcode",
        "_out",
        "_read_limit",
        "_send_direct",
        "eof_sent",
        "parsing_paused",
        "state",
    )

    #: The state of the connection: CONNECTING, OPEN, CLOSING or CLOSED.
    state: Any
    #: Whether parsing stopped before a protocol error or the peer's close frame.
    parsing_paused: bool
    #: Whether the engine asked for the TCP connection to be half-closed.
    eof_sent: bool
    _buf: bytearray
    _events: list[Any]
    _out: list[bytes]
    _frame_left: int
    _read_limit: int
    _msg_opcode: int
    _masked: bool
    _send_direct: bool

    @property
    def payload_left(self) -> int:
        """How many bytes of the current data frame's payload are still to come."""
        return self._frame_left

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the network."""
        pos = 0
        if (
            self.state is _OPEN
            and not self._buf
            and not self.parsing_paused
            and not self._frame_left
            and not self._msg_opcode
        ):
            # The common case, in one call: messages that fit one frame each.
            pos = read_messages(data, 0, self._masked, self._read_limit, self._events)
            if pos == len(data):
                return
            if not self._events:
                # The peer's close frame, with no message before it to answer
                # first: the common end of a connection.
                close = _read_close(data, pos, self._masked)
                if close is not None:
                    self._close_frame(*close)
                    return
        self._receive_more(data, pos)

    def events_received(self) -> list[Any]:
        """Return the events produced since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write since the last call; ``b""`` means half-close."""
        out, self._out = self._out, []
        return out

    def send_message(
        self, data: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        """Send a whole message: ``str`` as text, bytes-like as binary.

        With ``compress=False`` a negotiated compression skips this message.

        Raises:
            InvalidState: when the connection is not open, or while a
                fragmented message is being sent.
            TypeError: for anything else than ``str`` or bytes-like.
        """
        if self._send_direct and self.state is _OPEN:
            # The common case, at once: a server's small message.
            kind = type(data)
            if (kind is bytes or kind is str) and len(data) <= JOIN_LIMIT:
                self._out.append(encode_frame(0x82 if kind is bytes else 0x81, data))
                return
        self._send_message_more(data, compress=compress)

    def _close_frame(self, code: int, reason: str, payload: bytes) -> None:
        """Take a valid close frame found where messages are read (in the subclass)."""
        raise NotImplementedError

    def _receive_more(self, data: bytes, pos: int) -> None:
        raise NotImplementedError

    def _send_message_more(
        self, data: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        raise NotImplementedError
