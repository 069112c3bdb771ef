"""Large messages that arrive in pieces: one copy into place, and no memory up front."""

from __future__ import annotations

import array

import pytest

from rapidws.core.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, Close
from rapidws.core.protocol import CLOSING, Protocol
from rapidws.exceptions import InvalidState

from .test_protocol import SIDES, feed, incoming, make

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
BIG = bytes(range(256)) * 8192  # 2 MiB


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("size", [1, 7, 1000, 65536])
def test_binary_frame_in_pieces(side: str, size: int) -> None:
    proto = make(side)
    data = incoming(proto, OP_BINARY, PAYLOAD) + incoming(proto, OP_TEXT, b"next")
    assert feed(proto, *pieces(data, size)) == [PAYLOAD, "next"]
    assert proto._msg_fill is None
    assert proto._msg_buf is None


@pytest.mark.parametrize("side", SIDES)
def test_a_header_alone_does_not_allocate_its_announced_size(side: str) -> None:
    proto = make(side, max_message_size=64 * 1024 * 1024)
    data = incoming(proto, OP_BINARY, bytes(64 * 1024 * 1024))
    feed(proto, data[:4096])
    # Only what arrived is held, not the 64 MiB that the header announces.
    assert proto._msg_fill is None
    assert proto._msg_buf is not None
    assert len(proto._msg_buf) < 4096


@pytest.mark.parametrize("side", SIDES)
def test_filled_in_place_once_a_quarter_arrived(side: str) -> None:
    proto = make(side, max_message_size=None)
    data = incoming(proto, OP_BINARY, BIG)
    header = len(data) - len(BIG)
    quarter = header + len(BIG) // 4
    assert feed(proto, data[: quarter - 1]) == []
    assert proto._msg_fill is None
    assert feed(proto, data[quarter - 1 : quarter + 10]) == []
    assert proto._msg_fill is not None
    assert proto._msg_fill.filled == len(BIG) // 4 + 10
    assert feed(proto, data[quarter + 10 :]) == [BIG]


@pytest.mark.parametrize("side", SIDES)
def test_a_large_first_read_goes_in_place_at_once(side: str) -> None:
    proto = make(side, max_message_size=None)
    data = incoming(proto, OP_BINARY, BIG)
    header = len(data) - len(BIG)
    assert feed(proto, data[: header + len(BIG) // 4]) == []
    assert proto._msg_buf is None
    assert proto._msg_fill is not None
    assert proto._msg_fill.filled == len(BIG) // 4


@pytest.mark.parametrize("side", SIDES)
def test_up_to_a_mebibyte_goes_in_place_once_64_kib_arrived(side: str) -> None:
    # At most 16 times what the peer sent; growing a buffer first would cost
    # copies, and a heap that grows and shrinks with every large message.
    for size, in_place in [(1 << 20, True), ((1 << 20) + 1, False)]:
        proto = make(side, max_message_size=None)
        data = incoming(proto, OP_BINARY, bytes(size))
        header = len(data) - size
        assert feed(proto, data[: header + 65535]) == []
        assert proto._msg_fill is None
        assert proto.payload_buffer_size() == 0
        assert feed(proto, data[header + 65535 : header + 65536]) == []
        assert (proto._msg_fill is not None) is in_place


# payload_buffer(): reading a large frame's payload straight into the message.


def read_into(proto: Protocol, wire: bytes, sizes: list[int]) -> int:
    """Write ``wire`` into payload_buffer() views, ``sizes`` bytes at a time, as recv_into does."""
    done = 0
    for size in sizes:
        view = proto.payload_buffer()
        assert view is not None
        # The rest of the frame, never more, and 256 KiB at most: each read
        # is unmasked while it is in the CPU cache.
        assert len(view) == min(len(wire) - done, 256 * 1024)
        view[:size] = wire[done : done + size]
        view.release()
        proto.payload_received(size)
        done += size
    return done


@pytest.mark.parametrize("side", SIDES)
def test_payload_read_straight_into_the_message(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_BINARY, PAYLOAD)
    start = len(data) - len(PAYLOAD) + 30_000
    assert proto.payload_buffer() is None
    assert feed(proto, data[:start]) == []
    rest = data[start:]
    assert read_into(proto, rest, [1, 3, 5000, 20_000, len(rest) - 25_004]) == len(rest)
    assert proto.payload_buffer() is None
    assert proto.events_received() == [PAYLOAD]
    assert proto._msg_fill is None
    # The frames after it are parsed as usual.
    assert feed(proto, incoming(proto, OP_TEXT, b"next")) == ["next"]


@pytest.mark.parametrize("side", SIDES)
def test_a_large_payload_read_in_place_256_kib_at_a_time(side: str) -> None:
    proto = make(side, max_message_size=None)
    data = incoming(proto, OP_BINARY, BIG)
    start = len(data) - len(BIG) // 4 * 3
    assert feed(proto, data[:start]) == []
    rest = data[start:]
    sizes = [256 * 1024] * (len(rest) // (256 * 1024) - 1) + [256 * 1024 - 1, 1]
    assert sum(sizes) == len(rest)
    assert read_into(proto, rest, sizes) == len(rest)
    assert proto.events_received() == [BIG]


@pytest.mark.parametrize("side", SIDES)
def test_no_payload_buffer_unless_a_binary_frame_fills_in_place(side: str) -> None:
    proto = make(side)
    assert proto.payload_buffer() is None
    text = incoming(proto, OP_TEXT, b"a" * 100_000)
    feed(proto, text[:60_000])
    assert proto.payload_buffer() is None  # text is validated and decoded
    assert feed(proto, text[60_000:]) == ["a" * 100_000]
    fragment = incoming(proto, OP_BINARY, PAYLOAD, fin=False)
    feed(proto, fragment[:60_000])
    assert proto.payload_buffer() is None  # a fragmented message grows
    assert feed(proto, fragment[60_000:], incoming(proto, OP_CONT, b"")) == [PAYLOAD]
    with pytest.raises(InvalidState, match="payload_buffer"):
        proto.payload_received(0)


def test_no_payload_buffer_once_closing_or_paused() -> None:
    proto = make("server")
    data = incoming(proto, OP_BINARY, PAYLOAD)
    feed(proto, data[:50_000])
    proto.parsing_paused = True
    assert (proto.payload_buffer(), proto.payload_buffer_size()) == (None, 0)
    proto.parsing_paused = False
    assert proto.payload_buffer_size() == len(data) - 50_000
    assert proto.payload_buffer() is not None
    proto.send_close(1001)
    assert (proto.payload_buffer(), proto.payload_buffer_size()) == (None, 0)


def test_message_read_into_is_dropped_if_we_closed_meanwhile() -> None:
    proto = make("server")
    data = incoming(proto, OP_BINARY, PAYLOAD)
    start = len(data) - len(PAYLOAD) + 30_000
    feed(proto, data[:start])
    view = proto.payload_buffer()
    assert view is not None
    proto.send_close(1001)  # between the read and its callback
    view[:] = data[start:]
    proto.payload_received(len(view))
    assert proto.events_received() == []
    assert proto._msg_fill is None


def test_text_frames_are_validated_as_they_arrive_not_filled_in_place() -> None:
    proto = make("server")
    text = "é" * 50_000
    data = incoming(proto, OP_TEXT, text.encode())
    assert feed(proto, *pieces(data, 999)) == [text]
    bad = incoming(proto, OP_TEXT, b"a" * 50_000 + b"\xff" + b"a" * 50_000)
    feed(proto, bad[:40_000])
    assert proto._msg_fill is None
    feed(proto, bad[40_000:50_020])
    assert proto.close_sent is not None
    assert proto.close_sent.code == 1007


def test_message_being_filled_is_dropped_after_our_close_frame() -> None:
    proto = make("server")
    data = incoming(proto, OP_BINARY, PAYLOAD)
    cut = len(data) * 3 // 4
    feed(proto, data[:cut])
    assert proto._msg_fill is not None
    proto.send_close(1001)
    events = feed(proto, data[cut:], incoming(proto, OP_CLOSE, b"\x03\xe9"))
    assert events == [Close(1001, "")]
    assert proto.state is not None and proto.state >= CLOSING


def test_oversized_frame_fails_before_any_fill() -> None:
    proto = Protocol(is_client=False, max_message_size=50_000)
    assert feed(proto, incoming(proto, OP_BINARY, PAYLOAD)[:20]) == []
    assert proto.close_sent is not None
    assert proto.close_sent.code == 1009
    assert proto._msg_fill is None


@pytest.mark.parametrize("attribute", ["max_message_size", "max_frame_size"])
def test_limits_changed_after_construction_apply_to_every_frame(attribute: str) -> None:
    proto = make("server")
    setattr(proto, attribute, 1000)
    feed(proto, incoming(proto, OP_BINARY, bytes(1001)))
    assert proto.close_sent is not None
    assert proto.close_sent.code == 1009


def test_huge_limits_are_no_limits() -> None:
    proto = Protocol(is_client=False, max_message_size=1 << 64, max_frame_size=1 << 70)
    assert feed(proto, incoming(proto, OP_TEXT, b"hi")) == ["hi"]


@pytest.mark.parametrize("attribute", ["max_message_size", "max_frame_size"])
def test_negative_limits_are_refused(attribute: str) -> None:
    with pytest.raises(ValueError, match=attribute):
        Protocol(is_client=False, **{attribute: -1})  # type: ignore[arg-type]


@pytest.mark.parametrize("side", SIDES)
def test_memoryviews_of_wide_items_are_sent_as_their_bytes(side: str) -> None:
    words = array.array("I", range(5000))
    proto, peer = make(side), make("client" if side == "server" else "server")
    proto.send_binary(memoryview(words))
    proto.send_binary(memoryview(words)[::2])  # not contiguous
    proto.send_binary(memoryview(words)[:10])  # small: framed in one piece
    assert feed(peer, *proto.data_to_send()) == [
        words.tobytes(),
        words[::2].tobytes(),
        words[:10].tobytes(),
    ]
