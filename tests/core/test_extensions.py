"""Tests for rapidws.core.extensions.base and how the engine applies extensions.

The fakes below are small real extensions, shared with the handshake tests:
``x-invert`` maps each payload byte b to 255 - b and owns RSV1, ``x-shift``
adds 1 to each byte and owns RSV2. Both work on any piece of a payload, so a
message can be decoded as it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rapidws.core.extensions import ClientExtensionFactory, Extension, ServerExtensionFactory
from rapidws.core.frames import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, frame_header
from rapidws.core.headers import ExtensionParameter
from rapidws.core.protocol import Ping, Protocol
from rapidws.exceptions import InvalidHandshake, ProtocolError

INVERT = bytes(255 - b for b in range(256))
SHIFT = bytes((b + 1) % 256 for b in range(256))
UNSHIFT = bytes((b - 1) % 256 for b in range(256))


class ByteMapExtension(Extension):
    """An extension that maps every payload byte through a table."""

    def __init__(self, name: str, rsv_bits: int, encode_table: bytes, decode_table: bytes) -> None:
        self.name = name
        self.rsv_bits = rsv_bits
        self.encode_table = encode_table
        self.decode_table = decode_table
        #: The arguments of each decode() call.
        self.decoded: list[tuple[bytes, int, bool, int | None]] = []
        #: An error for decode() to raise.
        self.error: ProtocolError | None = None

    def decode(self, data: bytes, *, rsv: int, fin: bool, max_size: int | None) -> bytes:
        self.decoded.append((data, rsv, fin, max_size))
        if self.error is not None:
            raise self.error
        if not rsv & self.rsv_bits:
            return data  # the message did not go through this extension
        return data.translate(self.decode_table)

    def encode(self, data: bytes, *, first: bool, fin: bool, compress: bool) -> tuple[int, bytes]:
        return (self.rsv_bits if first else 0), data.translate(self.encode_table)


def invert_extension() -> ByteMapExtension:
    return ByteMapExtension("x-invert", 0x40, INVERT, INVERT)


def shift_extension() -> ByteMapExtension:
    return ByteMapExtension("x-shift", 0x20, SHIFT, UNSHIFT)


class InvertClientFactory(ClientExtensionFactory):
    """Offers ``x-invert`` with the given parameters."""

    name = "x-invert"

    def __init__(self, params: Sequence[ExtensionParameter] = ()) -> None:
        self.params = list(params)

    def offer(self) -> list[ExtensionParameter]:
        return self.params

    def accept(self, params: Sequence[ExtensionParameter]) -> Extension:
        if any(param not in self.params for param in params):
            raise InvalidHandshake(f"x-invert parameters {params} were not offered")
        return invert_extension()


class InvertServerFactory(ServerExtensionFactory):
    """Accepts ``x-invert`` offers whose parameters it supports, in the client's order."""

    name = "x-invert"

    def __init__(self, supported: Sequence[str] = ()) -> None:
        self.supported = set(supported)
        #: The offers it was asked to answer.
        self.offers: list[list[ExtensionParameter]] = []

    def negotiate(
        self, params: Sequence[ExtensionParameter]
    ) -> tuple[list[ExtensionParameter], Extension] | None:
        self.offers.append(list(params))
        if any(name == "broken" for name, _ in params):
            raise InvalidHandshake("malformed x-invert offer")
        if any(name not in self.supported for name, _ in params):
            return None  # decline this offer; the next one may do
        return list(params), invert_extension()


class ShiftServerFactory(ServerExtensionFactory):
    """Accepts every ``x-shift`` offer."""

    name = "x-shift"

    def negotiate(
        self, params: Sequence[ExtensionParameter]
    ) -> tuple[list[ExtensionParameter], Extension] | None:
        return [], shift_extension()


class ShiftClientFactory(ClientExtensionFactory):
    """Offers ``x-shift``."""

    name = "x-shift"

    def offer(self) -> list[ExtensionParameter]:
        return []

    def accept(self, params: Sequence[ExtensionParameter]) -> Extension:
        return shift_extension()


def unmasked(first: int, payload: bytes) -> bytes:
    """A frame as a server sends it."""
    return frame_header(first, len(payload), None) + payload


def test_interfaces_are_abstract() -> None:
    for cls in (Extension, ClientExtensionFactory, ServerExtensionFactory):
        with pytest.raises(TypeError):
            cls()  # type: ignore[abstract]


def test_sends_message_with_rsv1_on_first_frame_only() -> None:
    proto = Protocol(is_client=False, extensions=[invert_extension()])
    proto.send_text("Hello")
    proto.send_binary(b"ab", fin=False)
    proto.send_continuation(b"c", fin=True)
    assert proto.data_to_send() == [
        unmasked(0xC1, b"Hello".translate(INVERT)),
        unmasked(0x42, b"ab".translate(INVERT)),
        unmasked(0x80, b"c".translate(INVERT)),
    ]


def test_control_frames_skip_extensions() -> None:
    proto = Protocol(is_client=True, extensions=[invert_extension()])
    assert proto._allowed_rsv == 0x40
    proto.receive_data(unmasked(0x89, b"ping"))
    assert proto.events_received() == [Ping(b"ping")]


def test_receives_message_with_rsv1() -> None:
    extension = invert_extension()
    proto = Protocol(is_client=True, extensions=[extension], max_message_size=100)
    proto.receive_data(unmasked(0xC1, "café".encode().translate(INVERT)))
    assert proto.events_received() == ["café"]
    assert extension.decoded == [("café".encode().translate(INVERT), 0x40, True, 100)]


def test_receives_fragmented_message_decoded_piece_by_piece() -> None:
    extension = invert_extension()
    proto = Protocol(is_client=True, extensions=[extension], max_message_size=100)
    first = unmasked(0x40 | OP_BINARY, b"0123456789".translate(INVERT))
    last = unmasked(0x80 | OP_CONT, b"abc".translate(INVERT))
    proto.receive_data(first + last[:3])
    proto.receive_data(last[3:])
    assert proto.events_received() == [b"0123456789abc"]
    # Every piece is decoded with the first frame's RSV bits and the room left.
    assert [(rsv, fin, max_size) for _, rsv, fin, max_size in extension.decoded] == [
        (0x40, False, 100),
        (0x40, False, 90),
        (0x40, True, 89),
    ]


def test_receives_message_without_rsv1_untouched() -> None:
    # RSV1 is what says that a message went through the extension.
    extension = invert_extension()
    proto = Protocol(is_client=True, extensions=[extension], max_message_size=None)
    proto.receive_data(unmasked(0x80 | OP_TEXT, b"plain"))
    assert proto.events_received() == ["plain"]
    assert extension.decoded == []


def test_extensions_decode_in_reverse_order() -> None:
    sender = Protocol(is_client=False, extensions=[invert_extension(), shift_extension()])
    sender.send_binary(b"\x00\x7f\xff")
    data = b"".join(sender.data_to_send())
    assert data == unmasked(0xE2, b"\x00\x7f\xff".translate(INVERT).translate(SHIFT))
    receiver = Protocol(is_client=True, extensions=[invert_extension(), shift_extension()])
    receiver.receive_data(data)
    assert receiver.events_received() == [b"\x00\x7f\xff"]


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (0x20 | OP_BINARY, "RSV bits set without an extension that defines them"),
        (0x10 | OP_TEXT, "RSV bits set without an extension that defines them"),
    ],
)
def test_receives_rsv_bits_no_extension_owns(first: int, message: str) -> None:
    proto = Protocol(is_client=True, extensions=[invert_extension()])
    proto.receive_data(unmasked(0x80 | first, b"x"))
    assert str(proto.parser_exc) == message


def test_receives_rsv1_on_continuation_frame() -> None:
    proto = Protocol(is_client=True, extensions=[invert_extension()])
    proto.receive_data(unmasked(0x40 | OP_TEXT, b"a".translate(INVERT)))
    proto.receive_data(unmasked(0xC0 | OP_CONT, b"b".translate(INVERT)))
    assert str(proto.parser_exc) == "RSV bits set on a continuation frame"
    assert proto.events_received() == []


def test_receives_rsv1_on_control_frame() -> None:
    proto = Protocol(is_client=True, extensions=[invert_extension()])
    proto.receive_data(unmasked(0xC0 | OP_PING, b""))
    assert str(proto.parser_exc) == "RSV bits set on a control frame"


def test_extension_fails_to_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rapidws.core.protocol.generate_mask", lambda: bytes(4))
    extension = invert_extension()
    extension.error = ProtocolError("corrupt data", 1007)
    proto = Protocol(is_client=True, extensions=[extension])
    proto.receive_data(unmasked(0xC1, b"xyz") + unmasked(0x81, b"never parsed"))
    assert proto.parser_exc is extension.error
    assert proto.events_received() == []
    assert proto.data_to_send() == [b"\x88\x8e" + bytes(4) + b"\x03\xefcorrupt data"]


def test_decode_stream_defaults_to_decode() -> None:
    extension = invert_extension()
    data = b"abc".translate(INVERT)
    assert list(extension.decode_stream(data, rsv=0x40, fin=True, chunk_size=1)) == [b"abc"]
    assert extension.decoded == [(data, 0x40, True, None)]
