"""Large messages that arrive in pieces: one copy into place, and no memory up front."""

from __future__ import annotations

import array

import pytest

from rapidws.core.frames import OP_BINARY, OP_CLOSE, OP_TEXT, Close
from rapidws.core.protocol import CLOSING, Protocol

from .test_protocol import SIDES, feed, incoming, make

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


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
def test_filled_in_place_once_half_arrived(side: str) -> None:
    proto = make(side)
    data = incoming(proto, OP_BINARY, PAYLOAD)
    header = len(data) - len(PAYLOAD)
    half = header + len(PAYLOAD) // 2
    assert feed(proto, data[: half - 1]) == []
    assert proto._msg_fill is None
    assert feed(proto, data[half - 1 : half + 10]) == []
    assert proto._msg_fill is not None
    assert proto._msg_fill.filled == len(PAYLOAD) // 2 + 10
    assert feed(proto, data[half + 10 :]) == [PAYLOAD]


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
