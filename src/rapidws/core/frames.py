"""WebSocket frames: opcodes, close codes, close payloads, frame headers.

RFC 6455 section 5.2::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ..exceptions import ProtocolError
from ..speedups.pure import frame_header

__all__ = [
    "Close",
    "CloseCode",
    "Opcode",
    "frame_header",
    "is_valid_close_code",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


# Aliases for the hot path: comparing plain ints is cheaper than enum members.
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never sent: means "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never sent: means "no close frame at all"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never sent


# Codes a close frame may carry: the registered ones that are meant for the
# wire, and the ranges for libraries (3000-3999) and applications (4000-4999).
_SENDABLE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame (RFC 6455 section 7.4)."""
    return code in _SENDABLE or 3000 <= code <= 4999


@dataclasses.dataclass(frozen=True)
class Close:
    """The code and reason of a close frame.

    A close frame without a payload is represented with code 1005 (no status).
    """

    code: int
    reason: str = ""

    def __str__(self) -> str:
        try:
            name = CloseCode(self.code).name.lower().replace("_", " ")
        except ValueError:
            name = "registered" if 3000 <= self.code < 4000 else "private use"
        text = f"{self.code} ({name})"
        return f"{text} {self.reason}" if self.reason else text

    @classmethod
    def parse(cls, payload: bytes) -> Close:
        """Parse the payload of a close frame received from the peer.

        Raises:
            ProtocolError: with code 1002 for a one-byte payload or a code that
                may not be sent, with code 1007 for a reason that is not UTF-8.
        """
        if not payload:
            return cls(1005)  # an int, as for every code parsed: CloseCode.NO_STATUS_RCVD
        if len(payload) == 1:
            raise ProtocolError("close frame with a one-byte payload")
        (code,) = struct.unpack_from("!H", payload)
        if not is_valid_close_code(code):
            raise ProtocolError(f"close frame with invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise ProtocolError("close reason is not valid UTF-8", 1007) from None
        return cls(code, reason)

    def serialize(self) -> bytes:
        """Serialize this close frame's payload (empty for 1005).

        Raises:
            ValueError: for a code that may not be sent or a reason over 123 bytes.
        """
        if self.code == CloseCode.NO_STATUS_RCVD:
            return b""
        if not is_valid_close_code(self.code):
            raise ValueError(f"invalid close code: {self.code}")
        reason = self.reason.encode()
        if len(reason) > 123:
            raise ValueError("close reason is longer than 123 bytes")
        return struct.pack("!H", self.code) + reason
