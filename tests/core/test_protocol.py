"""Tests for rapidws.core.protocol: the engine after the opening handshake.

Every test feeds bytes and checks bytes: the events that come out, the frames
written (client frames masked with the patched key ``MASK``), ``parser_exc``
and the ``b""`` half-close that only the server sends.
"""

from __future__ import annotations

import array
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapidws.core.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    frame_header,
)
from rapidws.core.protocol import (
    CLOSED,
    CLOSING,
    CONNECTING,
    OPEN,
    Event,
    Ping,
    Pong,
    Protocol,
    State,
    generate_mask,
)
from rapidws.exceptions import InvalidState, PayloadTooBig, ProtocolError
from rapidws.speedups import apply_mask

MASK = b"\x37\xfa\x21\x3d"  # our masking key: the one of RFC 6455 section 5.7
PEER_MASK = b"\x12\x34\x56\x78"  # the key of frames that a client peer sends us

SIDES = ["server", "client"]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000]
RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]

# Property tests explore the same examples on every run.
deterministic = settings(derandomize=True, database=None, deadline=None)


@pytest.fixture(autouse=True)
def _fixed_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rapidws.core.protocol.generate_mask", lambda: MASK)


# Helpers.


def make(side: str, **kwargs: object) -> Protocol:
    """Return an open engine for ``side`` ("server" or "client")."""
    return Protocol(is_client=side == "client", **kwargs)  # type: ignore[arg-type]


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """Build a frame; masked when ``mask`` is given."""
    first = (0x80 if fin else 0) | rsv | opcode
    body = payload if mask is None else apply_mask(payload, mask)
    return frame_header(first, len(payload), mask) + body


def incoming(proto: Protocol, opcode: int, payload: bytes = b"", **kwargs: object) -> bytes:
    """Build a frame as ``proto``'s peer sends it: masked when the peer is a client."""
    mask = None if proto.is_client else PEER_MASK
    return frame(opcode, payload, mask=mask, **kwargs)  # type: ignore[arg-type]


def incoming_header(proto: Protocol, opcode: int, length: int, *, fin: bool = True) -> bytes:
    """Build only the header of a frame from ``proto``'s peer."""
    mask = None if proto.is_client else PEER_MASK
    return frame_header((0x80 if fin else 0) | opcode, length, mask)


def outgoing(proto: Protocol, opcode: int, payload: bytes = b"", **kwargs: object) -> bytes:
    """Build a frame as ``proto`` sends it: masked with ``MASK`` on the client side."""
    mask = MASK if proto.is_client else None
    return frame(opcode, payload, mask=mask, **kwargs)  # type: ignore[arg-type]


def close_frame(proto: Protocol, code: int, reason: str = "") -> bytes:
    """Build the close frame that ``proto`` sends."""
    return outgoing(proto, OP_CLOSE, Close(code, reason).serialize())


def feed(proto: Protocol, *chunks: bytes) -> list[Event]:
    """Feed ``chunks`` one by one; return the events that came out."""
    for chunk in chunks:
        proto.receive_data(chunk)
    return proto.events_received()


def eof_if_server(proto: Protocol) -> list[bytes]:
    """The half-close that follows a closing frame on the server side only."""
    return [] if proto.is_client else [b""]


def assert_failed(proto: Protocol, code: int, exc_type: type[ProtocolError], message: str) -> None:
    """Check that ``proto`` failed the connection with ``code`` and ignores what follows."""
    assert type(proto.parser_exc) is exc_type
    assert str(proto.parser_exc) == message
    assert proto.parser_exc.code == code
    assert proto.data_to_send() == [close_frame(proto, code, message), *eof_if_server(proto)]
    assert proto.close_sent == Close(code, message)
    assert proto.state is CLOSING
    assert proto.close_expected()
    # RFC 6455 section 7.1.7: nothing the peer sends afterwards is processed.
    assert feed(proto, incoming(proto, OP_TEXT, b"ignored"), incoming(proto, OP_PING)) == []
    assert proto.data_to_send() == []


# RFC 6455 section 5.7 examples, received and sent.

HELLO_MASKED = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
PONG_MASKED = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
BINARY_256 = bytes(range(256))
BINARY_64K = bytes(range(256)) * 256
FRAME_256 = b"\x82\x7e\x01\x00" + BINARY_256
FRAME_64K = b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + BINARY_64K

# (receiving side, bytes, events, bytes that the receiver writes in return)
RFC_RECEIVED = [
    pytest.param("client", b"\x81\x05\x48\x65\x6c\x6c\x6f", ["Hello"], [], id="unmasked-text"),
    pytest.param("server", HELLO_MASKED, ["Hello"], [], id="masked-text"),
    pytest.param(
        "client", b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f", ["Hello"], [], id="fragmented-text"
    ),
    pytest.param(
        "client", b"\x89\x05\x48\x65\x6c\x6c\x6f", [Ping(b"Hello")], [PONG_MASKED], id="ping"
    ),
    pytest.param("server", PONG_MASKED, [Pong(b"Hello")], [], id="masked-pong"),
    pytest.param("client", FRAME_256, [BINARY_256], [], id="binary-256"),
    pytest.param("client", FRAME_64K, [BINARY_64K], [], id="binary-64k"),
]


@pytest.mark.parametrize(("side", "data", "events", "output"), RFC_RECEIVED)
def test_receives_rfc_example(
    side: str, data: bytes, events: list[Event], output: list[bytes]
) -> None:
    proto = make(side)
    received = feed(proto, data)
    assert received == events
    assert [type(event) for event in received] == [type(event) for event in events]
    assert proto.data_to_send() == output
    assert proto.parser_exc is None


@pytest.mark.parametrize(("side", "data", "events", "output"), RFC_RECEIVED)
def test_receives_rfc_example_split_at_every_offset(
    side: str, data: bytes, events: list[Event], output: list[bytes]
) -> None:
    for offset in range(len(data) + 1):
        proto = make(side)
        assert feed(proto, data[:offset], data[offset:]) == events, offset
        assert proto.data_to_send() == output


@pytest.mark.parametrize(("side", "data", "events", "output"), RFC_RECEIVED)
def test_receives_rfc_example_byte_by_byte(
    side: str, data: bytes, events: list[Event], output: list[bytes]
) -> None:
    proto = make(side)
    assert feed(proto, *(data[i : i + 1] for i in range(len(data)))) == events
    assert proto.data_to_send() == output


RFC_SENT: list[tuple[str, Callable[[Protocol], None], bytes]] = [
    ("server", lambda p: p.send_text("Hello"), b"\x81\x05\x48\x65\x6c\x6c\x6f"),
    ("client", lambda p: p.send_text("Hello"), HELLO_MASKED),
    (
        "server",
        lambda p: (p.send_text("Hel", fin=False), p.send_continuation("lo", fin=True)),
        b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f",
    ),
    ("server", lambda p: p.send_ping(b"Hello"), b"\x89\x05\x48\x65\x6c\x6c\x6f"),
    ("client", lambda p: p.send_pong(b"Hello"), PONG_MASKED),
    ("server", lambda p: p.send_binary(BINARY_256), FRAME_256),
    ("server", lambda p: p.send_binary(BINARY_64K), FRAME_64K),
]


@pytest.mark.parametrize(
    ("side", "send", "data"),
    RFC_SENT,
    ids=["unmasked-text", "masked-text", "fragmented-text", "ping", "masked-pong", "256", "64k"],
)
def test_sends_rfc_example(side: str, send: Callable[[Protocol], None], data: bytes) -> None:
    proto = make(side)
    send(proto)
    assert b"".join(proto.data_to_send()) == data


# Any valid stream, in any chunks, gives the same events.

masks = st.binary(min_size=4, max_size=4)


@st.composite
def client_stream(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """Frames that a client may send, and the events they give on the server."""
    frames: list[bytes] = []
    events: list[Event] = []

    def control() -> None:
        opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
        payload = draw(st.binary(max_size=125))
        frames.append(frame(opcode, payload, mask=draw(masks)))
        events.append(Ping(payload) if opcode == OP_PING else Pong(payload))

    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "control"]))
        if kind == "control":
            control()
            continue
        message: str | bytes
        if kind == "text":
            message = draw(st.text(max_size=40))
            data, opcode = message.encode(), OP_TEXT
        else:
            message = draw(st.binary(max_size=300))
            data, opcode = message, OP_BINARY
        # Cutting text bytes anywhere splits code points across fragments.
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for index, piece in enumerate(pieces):
            fin = index == len(pieces) - 1
            first_opcode = opcode if index == 0 else OP_CONT
            frames.append(frame(first_opcode, piece, fin=fin, mask=draw(masks)))
            if not fin and draw(st.booleans()):
                control()  # control frames may come between fragments
        events.append(message)
    return b"".join(frames), events


@deterministic
@given(client_stream(), st.data())
def test_server_receives_any_valid_stream_in_any_chunks(
    stream: tuple[bytes, list[Event]], data: st.DataObject
) -> None:
    raw, events = stream
    whole = make("server")
    assert feed(whole, raw) == events
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    split = make("server")
    received = feed(split, *chunks)
    assert received == events
    assert [type(e) for e in received] == [type(e) for e in events]
    assert b"".join(split.data_to_send()) == b"".join(whole.data_to_send())
    assert split.parser_exc is None


@pytest.mark.parametrize("side", SIDES)
@deterministic
@given(raw=st.binary(max_size=300), data=st.data())
def test_receives_arbitrary_bytes_in_any_chunks(side: str, raw: bytes, data: st.DataObject) -> None:
    # Garbage never raises, and is judged the same however it is split.
    def run(chunks: list[bytes]) -> tuple[object, ...]:
        proto = make(side, max_message_size=200)
        events = feed(proto, *chunks)
        if proto.parsing_paused:
            proto.resume_parsing()
            events += proto.events_received()
        return events, proto.data_to_send(), repr(proto.parser_exc), proto.state

    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert run(chunks) == run([raw])


# Failing the connection.

FailCase = tuple[Callable[[Protocol], bytes], int, str]

FAILURES: dict[str, FailCase] = {
    "rsv1-without-extension": (
        lambda p: incoming(p, OP_TEXT, b"x", rsv=0x40),
        1002,
        "RSV bits set without an extension that defines them",
    ),
    "rsv2-without-extension": (
        lambda p: incoming(p, OP_BINARY, b"x", rsv=0x20),
        1002,
        "RSV bits set without an extension that defines them",
    ),
    "rsv3-without-extension": (
        lambda p: incoming(p, OP_BINARY, b"x", rsv=0x10),
        1002,
        "RSV bits set without an extension that defines them",
    ),
    "rsv-on-control-frame": (
        lambda p: incoming(p, OP_PING, b"x", rsv=0x40),
        1002,
        "RSV bits set on a control frame",
    ),
    "rsv-on-continuation": (
        lambda p: incoming(p, OP_TEXT, b"a", fin=False) + incoming(p, OP_CONT, b"b", rsv=0x40),
        1002,
        "RSV bits set on a continuation frame",
    ),
    "fragmented-control-frame": (
        lambda p: incoming(p, OP_PING, b"x", fin=False),
        1002,
        "fragmented control frame",
    ),
    "control-frame-too-long": (
        lambda p: incoming_header(p, OP_PING, 126),  # decided on the header alone
        1002,
        "control frame payload is longer than 125 bytes",
    ),
    "64-bit-length-msb-set": (
        lambda p: incoming_header(p, OP_BINARY, 2**63),
        1002,
        "payload length with the most significant bit set",
    ),
    "continuation-without-start": (
        lambda p: incoming(p, OP_CONT, b"x"),
        1002,
        "continuation frame without a message to continue",
    ),
    "new-message-inside-fragmented-message": (
        lambda p: incoming(p, OP_TEXT, b"a", fin=False) + incoming(p, OP_BINARY, b"b"),
        1002,
        "new data frame before the fragmented message ended",
    ),
    "invalid-utf8": (
        lambda p: incoming(p, OP_TEXT, b"caf\xe9!"),
        1007,
        "invalid UTF-8 in text message",
    ),
    "truncated-utf8": (
        lambda p: incoming(p, OP_TEXT, b"\xe2\x82"),
        1007,
        "invalid UTF-8 in text message",
    ),
    "invalid-utf8-in-last-fragment": (
        lambda p: incoming(p, OP_TEXT, b"ok", fin=False) + incoming(p, OP_CONT, b"\xff"),
        1007,
        "invalid UTF-8 in text message",
    ),
    "truncated-utf8-at-empty-last-fragment": (
        lambda p: incoming(p, OP_TEXT, b"\xe2\x82", fin=False) + incoming(p, OP_CONT),
        1007,
        "invalid UTF-8 in text message",
    ),
    "close-frame-one-byte": (
        lambda p: incoming(p, OP_CLOSE, b"\x03"),
        1002,
        "close frame with a one-byte payload",
    ),
    "close-reason-invalid-utf8": (
        lambda p: incoming(p, OP_CLOSE, b"\x03\xe8\xff"),
        1007,
        "close reason is not valid UTF-8",
    ),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("build", "code", "message"), FAILURES.values(), ids=FAILURES.keys())
def test_receives_invalid_frame(
    side: str, build: Callable[[Protocol], bytes], code: int, message: str
) -> None:
    proto = make(side)
    assert feed(proto, build(proto)) == []
    assert_failed(proto, code, ProtocolError, message)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("build", "code", "message"), FAILURES.values(), ids=FAILURES.keys())
def test_receives_invalid_frame_split_at_every_offset(
    side: str, build: Callable[[Protocol], bytes], code: int, message: str
) -> None:
    data = build(make(side))
    for offset in range(len(data) + 1):
        proto = make(side)
        assert feed(proto, data[:offset], data[offset:]) == []
        assert_failed(proto, code, ProtocolError, message)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
def test_receives_reserved_opcode(side: str, opcode: int) -> None:
    proto = make(side)
    assert feed(proto, incoming(proto, opcode, b"x")) == []
    assert_failed(proto, 1002, ProtocolError, f"reserved opcode {opcode:#x}")


def test_server_receives_unmasked_frame() -> None:
    proto = make("server")
    assert feed(proto, b"\x81\x05Hello") == []
    assert_failed(proto, 1002, ProtocolError, "unmasked frame from the client")


def test_client_receives_masked_frame() -> None:
    proto = make("client")
    assert feed(proto, HELLO_MASKED) == []
    assert_failed(proto, 1002, ProtocolError, "masked frame from the server")


@pytest.mark.parametrize("side", SIDES)
def test_receives_invalid_utf8_in_first_fragment(side: str) -> None:
    # The rest of the message never arrives: the bad byte is enough.
    proto = make(side)
    assert feed(proto, incoming(proto, OP_TEXT, b"abc\xff", fin=False)) == []
    assert_failed(proto, 1007, ProtocolError, "invalid UTF-8 in text message")


@pytest.mark.parametrize("side", SIDES)
def test_receives_invalid_utf8_in_first_chunk_of_large_frame(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_TEXT, b"abc\xff" + b"x" * 10_000)
    assert feed(proto, data[:20]) == []
    assert_failed(proto, 1007, ProtocolError, "invalid UTF-8 in text message")


@pytest.mark.parametrize("side", SIDES)
def test_receives_code_point_split_across_fragments(side: str) -> None:
    proto = make(side)
    euro = "€".encode()
    first = incoming(proto, OP_TEXT, b"price: " + euro[:2], fin=False)
    last = incoming(proto, OP_CONT, euro[2:] + b"5")
    assert feed(proto, first) == []
    assert feed(proto, last) == ["price: €5"]
    assert proto.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_receives_code_point_split_across_reads(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_TEXT, "€uro".encode())
    end = len(data) - 4  # inside the euro sign
    assert feed(proto, data[:end]) == []
    assert feed(proto, data[end:]) == ["€uro"]


@pytest.mark.parametrize("side", SIDES)
def test_receives_message_over_max_message_size(side: str) -> None:
    proto = make(side, max_message_size=10)
    # Only the header arrives: the limit is enforced before the payload.
    assert feed(proto, incoming_header(proto, OP_BINARY, 11)) == []
    message = "message of 11 bytes or more exceeds the limit of 10 bytes"
    exc = proto.parser_exc
    assert isinstance(exc, PayloadTooBig)
    assert (exc.size, exc.limit) == (11, 10)
    assert_failed(proto, 1009, PayloadTooBig, message)


@pytest.mark.parametrize("side", SIDES)
def test_receives_fragmented_message_over_max_message_size(side: str) -> None:
    proto = make(side, max_message_size=10)
    assert feed(proto, incoming(proto, OP_TEXT, b"123456", fin=False)) == []
    assert feed(proto, incoming_header(proto, OP_CONT, 5)) == []
    message = "message of 11 bytes or more exceeds the limit of 10 bytes"
    assert_failed(proto, 1009, PayloadTooBig, message)


@pytest.mark.parametrize("side", SIDES)
def test_receives_frame_over_max_frame_size(side: str) -> None:
    proto = make(side, max_frame_size=5)
    assert feed(proto, incoming(proto, OP_TEXT, b"12345", fin=False)) == []
    assert feed(proto, incoming_header(proto, OP_CONT, 6)) == []
    exc = proto.parser_exc
    assert isinstance(exc, PayloadTooBig)
    assert (exc.size, exc.limit) == (6, 5)
    assert_failed(proto, 1009, PayloadTooBig, "frame of 6 bytes exceeds the limit of 5 bytes")


@pytest.mark.parametrize("side", SIDES)
def test_receives_messages_at_max_message_size(side: str) -> None:
    proto = make(side, max_message_size=10)
    data = incoming(proto, OP_BINARY, b"0123456789")
    fragmented = incoming(proto, OP_TEXT, b"01234", fin=False) + incoming(proto, OP_CONT, b"56789")
    # The limit is per message, and control frames do not count.
    ping = incoming(proto, OP_PING, b"x" * 50)
    assert feed(proto, data, fragmented, ping) == [b"0123456789", "0123456789", Ping(b"x" * 50)]
    assert proto.parser_exc is None


@pytest.mark.parametrize("side", SIDES)
def test_receives_large_message_without_limit(side: str) -> None:
    proto = make(side, max_message_size=None)
    payload = b"x" * (2**20 + 1)
    assert feed(proto, incoming(proto, OP_BINARY, payload)) == [payload]


@pytest.mark.parametrize("side", SIDES)
def test_defers_failure_after_complete_message(side: str) -> None:
    # Messages that precede a protocol error reach the application first.
    proto = make(side)
    data = incoming(proto, OP_TEXT, b"first") + incoming(proto, OP_CONT, b"x")
    assert feed(proto, data) == ["first"]
    assert proto.parsing_paused
    assert proto.data_to_send() == []
    # More data is held back, unparsed, until the application resumes.
    assert feed(proto, incoming(proto, OP_TEXT, b"held")) == []
    proto.resume_parsing()
    assert not proto.parsing_paused
    assert proto.events_received() == []
    assert_failed(proto, 1002, ProtocolError, "continuation frame without a message to continue")


@pytest.mark.parametrize("side", SIDES)
def test_does_not_defer_failure_after_control_frame(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_PONG, b"p") + incoming(proto, OP_CONT, b"x")
    assert feed(proto, data) == [Pong(b"p")]
    assert not proto.parsing_paused
    assert_failed(proto, 1002, ProtocolError, "continuation frame without a message to continue")


def test_failure_reason_is_truncated_to_123_bytes() -> None:
    proto = make("server")
    proto._fail_with(ProtocolError("é" * 100))  # 200 bytes in UTF-8
    reason = "é" * 61  # 122 bytes: the 123rd byte would cut a character
    assert proto.data_to_send() == [close_frame(proto, 1002, reason), b""]


# Receiving messages.


@pytest.mark.parametrize("side", SIDES)
def test_receives_text_and_binary(side: str) -> None:
    proto = make(side)
    events = feed(
        proto,
        incoming(proto, OP_TEXT, "café".encode()),
        incoming(proto, OP_BINARY, b"\x00\xff"),
        incoming(proto, OP_TEXT),
        incoming(proto, OP_BINARY),
    )
    assert events == ["café", b"\x00\xff", "", b""]
    assert [type(event) for event in events] == [str, bytes, str, bytes]


@pytest.mark.parametrize("side", SIDES)
def test_receives_fragmented_binary_with_empty_fragments(side: str) -> None:
    proto = make(side)
    events = feed(
        proto,
        incoming(proto, OP_BINARY, b"", fin=False),
        incoming(proto, OP_CONT, b"ab", fin=False),
        incoming(proto, OP_CONT, b"", fin=False),
        incoming(proto, OP_CONT, b"c"),
        incoming(proto, OP_TEXT, b"", fin=False),
        incoming(proto, OP_CONT, b""),
    )
    assert events == [b"abc", ""]
    assert type(events[0]) is bytes


@pytest.mark.parametrize("side", SIDES)
def test_receives_large_frame_in_pieces(side: str) -> None:
    proto = make(side)
    payload = bytes(range(256)) * 40
    data = incoming(proto, OP_BINARY, payload)
    events = feed(proto, *(data[i : i + 1000] for i in range(0, len(data), 1000)))
    assert events == [payload]
    assert type(events[0]) is bytes


@pytest.mark.parametrize("side", SIDES)
def test_receives_ping_and_answers_with_pong(side: str) -> None:
    proto = make(side)
    events = feed(proto, incoming(proto, OP_PING, b"are you there?"))
    assert events == [Ping(b"are you there?")]
    assert type(events[0]) is Ping
    assert proto.data_to_send() == [outgoing(proto, OP_PONG, b"are you there?")]


@pytest.mark.parametrize("side", SIDES)
def test_receives_pong(side: str) -> None:
    proto = make(side)
    events = feed(proto, incoming(proto, OP_PONG, b"heartbeat"))
    assert events == [Pong(b"heartbeat")]
    assert type(events[0]) is Pong
    assert proto.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_receives_ping_between_fragments(side: str) -> None:
    proto = make(side)
    events = feed(
        proto,
        incoming(proto, OP_TEXT, b"Hel", fin=False),
        incoming(proto, OP_PING, b"1"),
        incoming(proto, OP_CONT, b"lo"),
    )
    assert events == [Ping(b"1"), "Hello"]
    assert proto.data_to_send() == [outgoing(proto, OP_PONG, b"1")]


@pytest.mark.parametrize("side", SIDES)
def test_receives_control_frame_in_pieces(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_PING, b"0123456789")
    assert feed(proto, data[:-3]) == []
    assert proto.data_to_send() == []
    assert feed(proto, data[-3:]) == [Ping(b"0123456789")]


# Closing handshake.


@pytest.mark.parametrize("side", SIDES)
def test_receives_close_and_echoes_it(side: str) -> None:
    proto = make(side)
    assert feed(proto, incoming(proto, OP_CLOSE, Close(1001, "bye").serialize())) == [
        Close(1001, "bye")
    ]
    assert proto.data_to_send() == [close_frame(proto, 1001, "bye"), *eof_if_server(proto)]
    assert proto.close_rcvd == Close(1001, "bye")
    assert proto.close_sent == Close(1001, "bye")
    assert proto.close_rcvd_then_sent is True
    assert proto.state is CLOSING
    assert proto.close_expected()


@pytest.mark.parametrize("side", SIDES)
def test_receives_close_without_payload(side: str) -> None:
    proto = make(side)
    assert feed(proto, incoming(proto, OP_CLOSE)) == [Close(1005)]
    # The echo has no payload either.
    assert proto.data_to_send() == [outgoing(proto, OP_CLOSE), *eof_if_server(proto)]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("payload", [b"", Close(1001, "bye \u00e9").serialize()])
def test_receives_close_whole_or_in_pieces_alike(side: str, payload: bytes) -> None:
    # Whole, the engine's core reads it; in pieces, the general parser.
    whole, pieces = make(side), make(side)
    data = incoming(whole, OP_CLOSE, payload)
    events = feed(whole, data), feed(pieces, *(data[i : i + 1] for i in range(len(data))))
    assert events[0] == events[1] == [whole.close_rcvd] == [pieces.close_rcvd]
    assert [type(close.code) for close in (whole.close_rcvd, pieces.close_rcvd)] == [int, int]
    assert whole.data_to_send() == pieces.data_to_send()
    assert (whole.state, whole.close_sent) == (pieces.state, pieces.close_sent)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_receives_close_with_valid_code(side: str, code: int) -> None:
    proto = make(side)
    assert feed(proto, incoming(proto, OP_CLOSE, Close(code, "x").serialize())) == [
        Close(code, "x")
    ]
    assert proto.data_to_send() == [close_frame(proto, code, "x"), *eof_if_server(proto)]
    assert proto.parser_exc is None


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_receives_close_with_invalid_code(side: str, code: int) -> None:
    proto = make(side)
    assert feed(proto, incoming(proto, OP_CLOSE, code.to_bytes(2, "big"))) == []
    assert proto.close_rcvd is None
    assert_failed(proto, 1002, ProtocolError, f"close frame with invalid close code {code}")


@pytest.mark.parametrize("side", SIDES)
def test_ignores_frames_after_close(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_CLOSE, Close(1000).serialize()) + incoming(proto, OP_TEXT, b"late")
    assert feed(proto, data) == [Close(1000)]
    proto.data_to_send()
    assert feed(proto, incoming(proto, OP_PING)) == []
    assert proto.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_sends_close_then_receives_close(side: str) -> None:
    proto = make(side)
    proto.send_close(1000, "done")
    assert proto.data_to_send() == [close_frame(proto, 1000, "done")]
    assert proto.state is CLOSING
    assert proto.close_expected()
    assert feed(proto, incoming(proto, OP_CLOSE, Close(1000, "ok").serialize())) == [
        Close(1000, "ok")
    ]
    # Only the server ends the TCP connection (RFC 6455 section 7.1.1).
    assert proto.data_to_send() == eof_if_server(proto)
    assert proto.close_sent == Close(1000, "done")
    assert proto.close_rcvd == Close(1000, "ok")
    assert proto.close_rcvd_then_sent is False


@pytest.mark.parametrize("side", SIDES)
def test_drops_messages_after_sending_close(side: str) -> None:
    # The peer may not have seen our close frame yet: its frames are still
    # parsed (and judged), but its messages are dropped, unassembled, since
    # nobody reads after closing; its pings get no pong.
    proto = make(side, max_message_size=10)
    proto.send_close()
    proto.data_to_send()
    late = incoming(proto, OP_TEXT, b"la", fin=False) + incoming(proto, OP_CONT, b"te")
    events = feed(proto, late, incoming(proto, OP_PING, b"p"))
    assert events == [Ping(b"p")]
    assert proto._msg_buf is None
    assert proto.data_to_send() == []
    # Limits still hold.
    proto.receive_data(frame_header(0x82, 11, None if proto.is_client else PEER_MASK))
    assert isinstance(proto.parser_exc, PayloadTooBig)


@pytest.mark.parametrize("side", SIDES)
def test_sends_close_only_once(side: str) -> None:
    proto = make(side)
    proto.send_close()
    with pytest.raises(InvalidState, match="cannot send a close frame: connection is CLOSING"):
        proto.send_close()
    assert proto.data_to_send() == [close_frame(proto, 1000)]


@pytest.mark.parametrize("side", SIDES)
def test_sends_close_after_receiving_close(side: str) -> None:
    proto = make(side)
    feed(proto, incoming(proto, OP_CLOSE, Close(1000).serialize()))
    with pytest.raises(InvalidState):
        proto.send_close()


@pytest.mark.parametrize("side", SIDES)
def test_sends_close_without_code(side: str) -> None:
    proto = make(side)
    proto.send_close(1005)
    assert proto.data_to_send() == [outgoing(proto, OP_CLOSE)]


@pytest.mark.parametrize("side", SIDES)
def test_sends_close_with_invalid_code_or_reason(side: str) -> None:
    proto = make(side)
    with pytest.raises(ValueError, match="invalid close code"):
        proto.send_close(1006)
    with pytest.raises(ValueError, match="longer than 123 bytes"):
        proto.send_close(1000, "x" * 124)
    assert proto.data_to_send() == []
    assert proto.state is OPEN


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "send",
    [
        lambda p: p.send_text("x"),
        lambda p: p.send_binary(b"x"),
        lambda p: p.send_ping(),
        lambda p: p.send_pong(),
        lambda p: p.send_continuation(b"x", fin=True),
        lambda p: p.send_message("x", compress=False),
        lambda p: p.send_message(b"x"),
    ],
    ids=["text", "binary", "ping", "pong", "continuation", "message-text", "message-binary"],
)
def test_sends_after_close(side: str, send: Callable[[Protocol], None]) -> None:
    proto = make(side)
    proto.send_close()
    with pytest.raises(InvalidState):
        send(proto)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("message", "opcode", "payload"),
    [
        ("Hello", OP_TEXT, b"Hello"),
        ("€" * 2000, OP_TEXT, "€".encode() * 2000),  # 6000 bytes: past the join limit
        ("x" * 5000, OP_TEXT, b"x" * 5000),
        (b"", OP_BINARY, b""),
        (b"\x00\xff", OP_BINARY, b"\x00\xff"),
        (bytearray(b"ab"), OP_BINARY, b"ab"),
        (memoryview(b"abc")[1:], OP_BINARY, b"bc"),
        (memoryview(array.array("I", [1, 2])), OP_BINARY, array.array("I", [1, 2]).tobytes()),
        (BINARY_64K, OP_BINARY, BINARY_64K),
    ],
    ids=["text", "text-wide", "text-long", "empty", "binary", "bytearray", "view", "wide", "64k"],
)
def test_send_message_frames_by_type(
    side: str, message: str | bytes | bytearray | memoryview, opcode: int, payload: bytes
) -> None:
    proto = make(side)
    proto.send_message(message)
    assert b"".join(proto.data_to_send()) == outgoing(proto, opcode, payload)


@pytest.mark.parametrize("side", SIDES)
def test_send_message_refuses_other_types_and_interleaving(side: str) -> None:
    proto = make(side)
    for message in (5, None, ["x"]):
        with pytest.raises(TypeError, match=f"cannot send {type(message).__name__}"):
            proto.send_message(message)  # type: ignore[arg-type]
    proto.send_text("a", fin=False)
    with pytest.raises(InvalidState, match="finish it first"):
        proto.send_message("b")
    proto.send_continuation("c", fin=True)
    proto.send_message(b"d")  # the shortcut is back once the fragments end
    out = proto.data_to_send()
    assert out[-1] == outgoing(proto, OP_BINARY, b"d")


@pytest.mark.parametrize("side", SIDES)
def test_receive_eof(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_TEXT, b"Hello")
    assert feed(proto, data[:3]) == []
    proto.receive_eof()
    assert proto.state is CLOSED
    assert proto.close_expected()
    # Nothing is written, and later calls are ignored.
    assert proto.data_to_send() == []
    assert feed(proto, data[3:]) == []
    proto.receive_eof()
    assert proto.events_received() == []
    assert proto.data_to_send() == []
    with pytest.raises(InvalidState, match="connection is CLOSED"):
        proto.send_close()
    with pytest.raises(InvalidState, match="connection is CLOSED"):
        proto.send_text("x")


@pytest.mark.parametrize("side", SIDES)
def test_receive_eof_after_closing_handshake(side: str) -> None:
    proto = make(side)
    proto.send_close()
    feed(proto, incoming(proto, OP_CLOSE, Close(1000).serialize()))
    proto.receive_eof()
    assert proto.state is CLOSED
    assert proto.close_rcvd == proto.close_sent == Close(1000)


@pytest.mark.parametrize("side", SIDES)
def test_fail(side: str) -> None:
    proto = make(side)
    proto.fail(1011, "internal error")
    assert proto.data_to_send() == [
        close_frame(proto, 1011, "internal error"),
        *eof_if_server(proto),
    ]
    assert proto.state is CLOSING
    assert proto.parser_exc is None
    # A second failure sends nothing more.
    proto.fail(1002)
    assert proto.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_fail_after_sending_close(side: str) -> None:
    proto = make(side)
    proto.send_close()
    proto.data_to_send()
    proto.fail(1002)
    assert proto.data_to_send() == eof_if_server(proto)
    assert proto.close_sent == Close(1000)


@pytest.mark.parametrize("side", SIDES)
def test_fail_after_eof(side: str) -> None:
    proto = make(side)
    proto.receive_eof()
    proto.fail(1002)
    assert proto.data_to_send() == eof_if_server(proto)
    assert proto.state is CLOSED


def test_fail_after_receiving_close_without_answering() -> None:
    # Not reachable from received frames, which are echoed at once; an I/O
    # layer could still set the state this way.
    proto = make("server")
    proto.close_rcvd = Close(1000)
    proto.fail(1002, "gone")
    assert proto.close_rcvd_then_sent is True
    assert proto.data_to_send() == [close_frame(proto, 1002, "gone"), b""]


def test_server_sends_eof_once() -> None:
    proto = make("server")
    proto.send_eof()
    proto.send_eof()
    assert proto.data_to_send() == [b""]
    assert proto.eof_sent
    assert proto.close_expected()


def test_close_expected_while_open() -> None:
    assert not make("server").close_expected()
    assert not make("client").close_expected()


# Sending messages.


@pytest.mark.parametrize("side", SIDES)
def test_sends_text_and_binary(side: str) -> None:
    proto = make(side)
    proto.send_text("café")
    proto.send_text("café".encode())
    proto.send_binary(bytearray(b"\x00\xff"))
    proto.send_binary(memoryview(b"\x01\x02"))
    text = outgoing(proto, OP_TEXT, "café".encode())
    assert proto.data_to_send() == [
        text,
        text,
        outgoing(proto, OP_BINARY, b"\x00\xff"),
        outgoing(proto, OP_BINARY, b"\x01\x02"),
    ]


def test_client_sends_masked_frame() -> None:
    proto = make("client")
    proto.send_binary(b"\x00" * 4)
    # A zero payload shows the mask itself.
    assert proto.data_to_send() == [b"\x82\x84" + MASK + MASK]


@pytest.mark.parametrize("side", SIDES)
def test_sends_fragmented_text(side: str) -> None:
    proto = make(side)
    proto.send_text("a", fin=False)
    proto.send_continuation("b", fin=False)
    proto.send_continuation(b"c", fin=True)
    out = proto.data_to_send()
    assert [chunk[0] for chunk in out] == [0x01, 0x00, 0x80]
    assert out == [
        outgoing(proto, OP_TEXT, b"a", fin=False),
        outgoing(proto, OP_CONT, b"b", fin=False),
        outgoing(proto, OP_CONT, b"c"),
    ]


@pytest.mark.parametrize("side", SIDES)
def test_sends_fragmented_binary_then_another_message(side: str) -> None:
    proto = make(side)
    proto.send_binary(b"a", fin=False)
    proto.send_continuation(bytearray(b"b"), fin=True)
    proto.send_text("next")
    out = proto.data_to_send()
    assert [chunk[0] for chunk in out] == [0x02, 0x80, 0x81]
    assert out[-1] == outgoing(proto, OP_TEXT, b"next")


@pytest.mark.parametrize("side", SIDES)
def test_sends_continuation_without_start(side: str) -> None:
    proto = make(side)
    with pytest.raises(InvalidState, match="no fragmented message is being sent"):
        proto.send_continuation(b"x", fin=True)
    proto.send_text("done")
    with pytest.raises(InvalidState, match="no fragmented message is being sent"):
        proto.send_continuation(b"x", fin=True)


@pytest.mark.parametrize("side", SIDES)
def test_sends_new_message_during_fragmented_message(side: str) -> None:
    proto = make(side)
    proto.send_text("a", fin=False)
    with pytest.raises(InvalidState, match="a fragmented message is being sent"):
        proto.send_text("b")
    with pytest.raises(InvalidState, match="a fragmented message is being sent"):
        proto.send_binary(b"b")
    # Control frames may still be sent between fragments.
    proto.send_ping(b"p")
    proto.send_continuation("c", fin=True)
    assert [chunk[0] for chunk in proto.data_to_send()] == [0x01, 0x89, 0x80]


@pytest.mark.parametrize("side", SIDES)
def test_sends_control_frame_over_125_bytes(side: str) -> None:
    proto = make(side)
    proto.send_ping(b"x" * 125)
    proto.send_pong(b"x" * 125)
    with pytest.raises(ValueError, match="limited to 125 bytes"):
        proto.send_ping(b"x" * 126)
    with pytest.raises(ValueError, match="limited to 125 bytes"):
        proto.send_pong(b"x" * 126)
    assert len(proto.data_to_send()) == 2


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("length", "header"),
    [
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_sends_minimal_length_encoding(side: str, length: int, header: bytes) -> None:
    proto = make(side)
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    proto.send_binary(payload)
    data = b"".join(proto.data_to_send())
    if side == "client":
        header = bytes((header[0], header[1] | 0x80)) + header[2:] + MASK
    assert data[: len(header)] == header
    assert data == outgoing(proto, OP_BINARY, payload)


def test_server_sends_large_frame_in_two_writes() -> None:
    # Past 4 KiB the payload is not copied into the header's buffer.
    proto = make("server")
    proto.send_binary(bytearray(5000))
    proto.send_binary(bytes(4096))
    out = proto.data_to_send()
    assert len(out) == 3
    assert [type(chunk) for chunk in out] == [bytes, bytes, bytes]
    assert out[0] + out[1] == outgoing(proto, OP_BINARY, bytes(5000))
    assert out[2] == outgoing(proto, OP_BINARY, bytes(4096))


def test_client_sends_large_frame_in_one_write() -> None:
    # Masking copies the payload anyway: it goes straight into the frame.
    proto = make("client")
    proto.send_binary(bytearray(70000))
    out = proto.data_to_send()
    assert len(out) == 1
    assert type(out[0]) is bytes
    assert out[0] == outgoing(proto, OP_BINARY, bytes(70000))


# Before the handshake, and the public names.


def test_connecting_engine_refuses_data_and_sending() -> None:
    proto = Protocol(is_client=False, state=CONNECTING)
    with pytest.raises(InvalidState, match="no opening handshake"):
        proto.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(InvalidState, match="cannot send a message: connection is CONNECTING"):
        proto.send_text("x")
    with pytest.raises(InvalidState, match="cannot send a control frame"):
        proto.send_ping()
    with pytest.raises(InvalidState, match="cannot send a close frame"):
        proto.send_close()
    assert not proto.close_expected()


def test_state_values() -> None:
    assert [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED] == [0, 1, 2, 3]
    assert tuple(State) == (CONNECTING, OPEN, CLOSING, CLOSED)


def test_ping_and_pong_are_bytes() -> None:
    assert Ping(b"x") == b"x"
    assert isinstance(Pong(b"x"), bytes)
    assert type(Ping(b"x")) is not type(Pong(b"x"))


def test_generate_mask() -> None:
    # The real function, imported before the fixture patched the module.
    masks = {generate_mask() for _ in range(10)}
    assert all(len(mask) == 4 for mask in masks)
    assert len(masks) > 1


@pytest.mark.parametrize("side", SIDES)
def test_defers_close_frame_after_complete_message(side: str) -> None:
    # The application may answer messages that came just before the peer's close.
    proto = make(side)
    data = incoming(proto, OP_TEXT, b"question") + incoming(
        proto, OP_CLOSE, Close(1000, "").serialize()
    )
    assert feed(proto, data) == ["question"]
    assert proto.parsing_paused
    assert proto.state is OPEN
    proto.send_text("answer")
    proto.resume_parsing()
    assert proto.events_received() == [Close(1000, "")]
    assert proto.data_to_send() == [
        outgoing(proto, OP_TEXT, b"answer"),
        close_frame(proto, 1000),
        *eof_if_server(proto),
    ]


@pytest.mark.parametrize("side", SIDES)
def test_does_not_defer_close_frame_after_sending_close(side: str) -> None:
    proto = make(side)
    proto.send_close(1001)
    proto.data_to_send()
    data = incoming(proto, OP_TEXT, b"late") + incoming(proto, OP_CLOSE, Close(1001).serialize())
    assert feed(proto, data) == [Close(1001)]
    assert not proto.parsing_paused


@pytest.mark.parametrize("side", SIDES)
def test_auto_pong_off_leaves_pings_unanswered(side: str) -> None:
    # A testing knob that breaks RFC 6455 section 5.5.2 on purpose: the ping
    # is still an event, and no pong goes out.
    proto = make(side, auto_pong=False)
    assert feed(proto, incoming(proto, OP_PING, b"are you there?")) == [Ping(b"are you there?")]
    assert proto.data_to_send() == []
    # Messages and unsolicited pongs are unaffected.
    proto.send_pong(b"beat")
    assert proto.data_to_send() == [outgoing(proto, OP_PONG, b"beat")]
    proto.auto_pong = True
    assert feed(proto, incoming(proto, OP_PING, b"now")) == [Ping(b"now")]
    assert proto.data_to_send() == [outgoing(proto, OP_PONG, b"now")]
