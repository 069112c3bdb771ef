"""Tests for rapidws.core.stream: messages received as a start, chunks and an end.

Every test feeds bytes to a :class:`~rapidws.core.protocol.Protocol` in
streaming mode and checks the events that come out and the frames written
(a client's close frames masked with the patched key ``MASK``).
"""

from __future__ import annotations

import random
import zlib

import pytest

from rapidws.core import stream
from rapidws.core.extensions.permessage_deflate import PerMessageDeflate
from rapidws.core.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, Close, frame_header
from rapidws.core.protocol import CLOSING, Event, Ping, Protocol
from rapidws.core.stream import STREAM_CHUNK_SIZE, MessageChunk, MessageEnd, MessageStart
from rapidws.exceptions import InvalidState, PayloadTooBig, ProtocolError

from .test_extensions import invert_extension, shift_extension
from .test_protocol import MASK, PEER_MASK, _fixed_mask, frame  # noqa: F401 - a fixture

START_TEXT = MessageStart(text=True)
START_BINARY = MessageStart(text=False)
END = MessageEnd()


# Helpers (frame() and the patched key come from the protocol's tests).


def streaming(*, is_client: bool = True, chunk_size: int = 4, **kwargs: object) -> Protocol:
    """An engine that streams messages in chunks of at most ``chunk_size`` bytes."""
    proto = Protocol(is_client=is_client, **kwargs)  # type: ignore[arg-type]
    proto.streaming = True
    proto.stream_chunk_size = chunk_size
    return proto


def feed(proto: Protocol, *pieces: bytes) -> list[Event]:
    """Feed ``pieces`` one by one; return the events that came out.

    A pause for decoded output (``inflating``) is resumed at once, as a
    consumer that takes every chunk would.
    """
    for piece in pieces:
        proto.receive_data(piece)
    events = proto.events_received()
    while proto.inflating:
        proto.resume_parsing()
        events += proto.events_received()
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def payload_of(events: list[Event]) -> str | bytes:
    """Join the chunks of the one streamed message in ``events``, checking its shape."""
    assert type(events[0]) is MessageStart
    assert events[-1] == END
    chunks = [event.data for event in events[1:-1] if isinstance(event, MessageChunk)]
    empty = "" if events[0].text else b""
    return empty.join(chunks)  # type: ignore[attr-defined, no-any-return]


def assert_failed(proto: Protocol, code: int, reason: str) -> None:
    """Check that ``proto`` failed the connection with ``code`` and ``reason``."""
    assert proto.parser_exc is not None
    assert (proto.parser_exc.code, str(proto.parser_exc)) == (code, reason)
    assert proto.state is CLOSING
    mask = MASK if proto.is_client else None
    out = proto.data_to_send()
    assert out[0] == frame(OP_CLOSE, Close(code, reason).serialize(), mask=mask)
    assert out[1:] == ([] if proto.is_client else [b""])


# Receiving a message as a stream.


def test_client_streams_fragmented_binary_message() -> None:
    proto = streaming()
    data = frame(OP_BINARY, b"abcdef", fin=False) + frame(OP_CONT, b"ghi")
    assert feed(proto, data) == [
        START_BINARY,
        MessageChunk(b"abcd"),
        MessageChunk(b"ef"),
        MessageChunk(b"ghi"),
        END,
    ]


def test_server_streams_masked_frame_in_bounded_chunks() -> None:
    proto = streaming(is_client=False, chunk_size=3)
    data = frame(OP_BINARY, b"0123456789", mask=PEER_MASK)
    assert feed(proto, data) == [
        START_BINARY,
        MessageChunk(b"012"),
        MessageChunk(b"345"),
        MessageChunk(b"678"),
        MessageChunk(b"9"),
        END,
    ]


def test_client_streams_large_frame_piece_by_piece_as_it_arrives() -> None:
    # A peer that announces a large frame and trickles it: each read is a
    # chunk at once, nothing waits for the frame's end.
    proto = streaming(chunk_size=STREAM_CHUNK_SIZE)
    size = 1 << 20
    header = frame_header(0x80 | OP_BINARY, size, None)
    assert feed(proto, header) == []
    assert feed(proto, b"a") == [START_BINARY, MessageChunk(b"a")]
    assert feed(proto, b"bc") == [MessageChunk(b"bc")]
    assert proto.payload_left == size - 3
    assert proto._msg_fill is None  # never filled in place: chunks instead
    assert feed(proto, b"x" * (size - 3)) == [
        *[MessageChunk(b"x" * STREAM_CHUNK_SIZE)] * 15,
        MessageChunk(b"x" * (STREAM_CHUNK_SIZE - 3)),
        END,
    ]


def read_into(proto: Protocol, wire: bytes, sizes: list[int]) -> list[Event]:
    """Write ``wire`` into payload_buffer() views, as recv_into does; return the events."""
    events: list[Event] = []
    done = 0
    for size in sizes:
        view = proto.payload_buffer()
        assert view is not None
        # The rest of the frame, never more; a read's worth (256 KiB) or a
        # chunk, whichever is larger.
        assert len(view) == min(len(wire) - done, max(proto.stream_chunk_size, 256 * 1024))
        view[:size] = wire[done : done + size]
        view.release()
        proto.payload_received(size)
        events += proto.events_received()
        done += size
    return events


@pytest.mark.parametrize("chunk_size", [4096, 1 << 20])
def test_server_reads_streamed_frame_in_place(chunk_size: int) -> None:
    # Each read becomes chunks at once, unmasked out of the engine's read
    # buffer: the same events as parsing the same bytes.
    message = bytes(range(251)) * 4000
    data = frame(OP_BINARY, message, mask=PEER_MASK)
    start = len(data) - len(message) + 10
    proto = streaming(is_client=False, chunk_size=chunk_size)
    assert proto.payload_buffer() is None
    assert feed(proto, data[:start]) == [START_BINARY, MessageChunk(message[:10])]
    rest = data[start:]
    left = len(rest) - 205_004
    sizes = [1, 3, 5000, 200_000, *[256 * 1024] * (left // (256 * 1024)), left % (256 * 1024)]
    events = read_into(proto, rest, sizes)
    assert events[-1] == END
    assert b"".join(event.data for event in events[:-1]) == message[10:]  # type: ignore[union-attr, misc]
    assert all(0 < len(event.data) <= chunk_size for event in events[:-1])  # type: ignore[union-attr]
    assert len(events) - 1 == sum(-(-size // chunk_size) for size in sizes)
    # The frames after it are parsed as usual.
    assert (proto.payload_buffer(), proto._stream_read) == (None, None)
    with pytest.raises(InvalidState, match="payload_buffer"):
        proto.payload_received(0)
    assert feed(proto, frame(OP_TEXT, b"next", mask=PEER_MASK)) == ["next"]


def test_client_reads_streamed_text_in_place_cut_between_code_points() -> None:
    text = "aé€😀" * 20_000  # 200 KB: a read
    encoded = text.encode()
    data = frame(OP_TEXT, encoded[:100], fin=False) + frame(OP_CONT, encoded[100:])
    start = len(data) - len(encoded) + 100 + 3  # into the second frame's payload
    proto = streaming(chunk_size=STREAM_CHUNK_SIZE)
    events = feed(proto, data[:start])
    rest = data[start:]
    events += read_into(proto, rest, [7, 1, 2, len(rest) - 10])
    assert payload_of(events) == text
    assert all(type(event.data) is str for event in events[1:-1])  # type: ignore[union-attr]


def test_streamed_frame_read_in_place_fails_at_its_first_bad_byte() -> None:
    data = frame(OP_TEXT, b"a" * 300_000)
    proto = streaming(chunk_size=STREAM_CHUNK_SIZE)
    feed(proto, data[:1000])
    view = proto.payload_buffer()
    assert view is not None
    view[:2] = b"\xc3\x28"  # a lead byte without its continuation
    proto.payload_received(2)
    assert_failed(proto, 1007, "invalid UTF-8 in text message")
    assert proto.payload_buffer() is None


def test_no_payload_buffer_for_compressed_streams_or_once_closing() -> None:
    proto = streaming(chunk_size=STREAM_CHUNK_SIZE, extensions=[PerMessageDeflate()])
    compressor = zlib.compressobj(wbits=-15)
    noise = random.Random(0).randbytes(300_000)  # deflates to as much
    deflated = compressor.compress(noise) + compressor.flush(zlib.Z_SYNC_FLUSH)
    feed(proto, frame(OP_BINARY, deflated[:-4], rsv=0x40)[:1000])
    assert proto.payload_left > 250_000
    assert proto.payload_buffer() is None  # inflated as the consumer goes
    proto = streaming(chunk_size=STREAM_CHUNK_SIZE)
    feed(proto, frame(OP_BINARY, bytes(300_000))[:1000])
    view = proto.payload_buffer()
    assert view is not None
    with pytest.raises(ValueError, match="more bytes"):
        proto.payload_received(len(view) + 1)
    proto.send_close(1001)  # between a read and its callback: nobody reads on
    assert proto.payload_buffer() is None
    proto.payload_received(len(view))
    assert proto.events_received() == []


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_client_streams_text_cut_between_code_points(split: bool) -> None:
    text = "aé€😀" * 3
    encoded = text.encode()
    data = frame(OP_TEXT, encoded[:5], fin=False) + frame(OP_CONT, encoded[5:])
    proto = streaming(chunk_size=3)
    events = feed(proto, *(bytewise(data) if split else [data]))
    assert payload_of(events) == text
    for event in events[1:-1]:
        assert isinstance(event, MessageChunk)
        assert type(event.data) is str
        assert event.data  # no empty chunk for a code point cut in two


def test_client_streams_empty_and_ping_interleaved_message() -> None:
    proto = streaming()
    data = (
        frame(OP_TEXT, b"", fin=False)
        + frame(OP_PING, b"p")
        + frame(OP_CONT, b"hi", fin=False)
        + frame(OP_CONT, b"")
    )
    assert feed(proto, data) == [START_TEXT, Ping(b"p"), MessageChunk("hi"), END]


def test_client_streams_empty_message() -> None:
    proto = streaming()
    data = frame(OP_BINARY, b"", fin=False) + frame(OP_CONT, b"")
    assert feed(proto, data) == [START_BINARY, END]


def test_small_whole_message_stays_one_event() -> None:
    # One frame of at most a chunk, arriving whole: the fast path, unchanged.
    proto = streaming()
    assert feed(proto, frame(OP_TEXT, b"hi") + frame(OP_BINARY, b"abcd")) == ["hi", b"abcd"]
    assert feed(proto, frame(OP_BINARY, b"abcde")) == [START_BINARY, *_chunks(b"abcd", b"e"), END]


def _chunks(*pieces: bytes) -> list[MessageChunk]:
    return [MessageChunk(piece) for piece in pieces]


def test_streaming_applies_from_the_next_message() -> None:
    proto = Protocol(is_client=True)
    assert feed(proto, frame(OP_BINARY, b"abc", fin=False)) == []
    proto.streaming = True
    proto.stream_chunk_size = 2
    assert feed(proto, frame(OP_CONT, b"def")) == [b"abcdef"]
    assert feed(proto, frame(OP_BINARY, b"xyz", fin=False)) == [START_BINARY, *_chunks(b"xy", b"z")]
    proto.streaming = False
    assert feed(proto, frame(OP_CONT, b"!")) == [MessageChunk(b"!"), END]
    assert feed(proto, frame(OP_BINARY, b"whole")) == [b"whole"]


def test_messages_after_close_sent_are_not_streamed() -> None:
    proto = streaming()
    assert feed(proto, frame(OP_BINARY, b"abc", fin=False)) == [START_BINARY, *_chunks(b"abc")]
    proto.send_close()
    proto.data_to_send()
    assert feed(proto, frame(OP_CONT, b"def"), frame(OP_BINARY, b"ghijkl", fin=False)) == []
    assert feed(proto, frame(OP_CONT, b"m")) == []


def test_settings() -> None:
    proto = Protocol(is_client=True)
    assert (proto.streaming, proto.max_stream_size) == (False, None)
    assert proto.stream_chunk_size == STREAM_CHUNK_SIZE
    proto.max_stream_size = 10
    assert proto.max_stream_size == 10
    with pytest.raises(ValueError, match="max_stream_size must be >= 0 or None"):
        proto.max_stream_size = -1
    with pytest.raises(ValueError, match="stream_chunk_size must be >= 1"):
        proto.stream_chunk_size = 0


# Limits.


def test_max_stream_size_replaces_max_message_size_when_streaming() -> None:
    proto = streaming(max_message_size=4)
    proto.max_stream_size = 8
    data = frame(OP_BINARY, b"abcdef", fin=False) + frame(OP_CONT, b"gh")
    assert payload_of(feed(proto, data)) == b"abcdefgh"
    feed(proto, frame(OP_BINARY, b"abcdef", fin=False), frame(OP_CONT, b"ghi", fin=False))
    assert_failed(proto, 1009, "message of 9 bytes or more exceeds the limit of 8 bytes")
    assert isinstance(proto.parser_exc, PayloadTooBig)


def test_max_stream_size_refuses_large_frame_on_its_header() -> None:
    proto = streaming(is_client=False)
    proto.max_stream_size = 1 << 20
    assert feed(proto, frame_header(0x80 | OP_BINARY, (1 << 20) + 1, PEER_MASK)) == []
    assert_failed(
        proto,
        1009,
        f"message of {(1 << 20) + 1} bytes or more exceeds the limit of {1 << 20} bytes",
    )


def test_max_stream_size_bounds_the_fast_path() -> None:
    # A whole message below the chunk size but above the limit is refused too.
    proto = streaming(chunk_size=16)
    proto.max_stream_size = 2
    feed(proto, frame(OP_BINARY, b"abc"))
    assert_failed(proto, 1009, "message of 3 bytes or more exceeds the limit of 2 bytes")


def test_max_message_size_applies_when_not_streaming() -> None:
    proto = Protocol(is_client=True, max_message_size=4)
    proto.max_stream_size = 100
    feed(proto, frame(OP_BINARY, b"abcde"))
    assert_failed(proto, 1009, "message of 5 bytes or more exceeds the limit of 4 bytes")


# UTF-8.


def test_invalid_utf8_fails_at_first_bad_byte() -> None:
    proto = streaming(chunk_size=64)
    header = frame_header(0x80 | OP_TEXT, 100, None)
    assert feed(proto, header + b"ok") == [START_TEXT, MessageChunk("ok")]
    feed(proto, b"\xc3\x28")  # far from the frame's end
    assert_failed(proto, 1007, "invalid UTF-8 in text message")


def test_surrogate_fails_at_its_second_byte() -> None:
    proto = streaming(chunk_size=64)
    feed(proto, frame_header(0x80 | OP_TEXT, 10, None) + b"\xed")
    assert proto.parser_exc is None
    feed(proto, b"\xa0")
    assert_failed(proto, 1007, "invalid UTF-8 in text message")


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_text_ending_mid_code_point_fails(cut: int) -> None:
    proto = streaming()
    encoded = "a😀".encode()[: 1 + cut]
    events = feed(proto, frame(OP_TEXT, encoded[:1], fin=False) + frame(OP_CONT, encoded[1:]))
    assert events == [START_TEXT, MessageChunk("a")]
    assert_failed(proto, 1007, "invalid UTF-8 in text message: it ends mid-code-point")


def test_decoder_splits_text_at_code_points() -> None:
    decoder = stream.StreamDecoder()
    decoder.start(text=True)
    encoded = "é€😀".encode()
    assert [decoder.data(encoded[i : i + 1]) for i in range(len(encoded))] == [
        "",
        "é",
        "",
        "",
        "€",
        "",
        "",
        "",
        "😀",
    ]
    assert decoder.end() == END
    assert not decoder.active


def test_decoder_refuses_invalid_utf8() -> None:
    decoder = stream.StreamDecoder()
    decoder.start(text=True)
    with pytest.raises(ProtocolError, match="invalid UTF-8") as info:
        decoder.data(b"\xff")
    assert info.value.code == 1007


@pytest.mark.parametrize(
    "chunks",
    [
        [b"ok\xf4\x90"],  # past U+10FFFF, the code point still cut
        [b"ok\xe0\x80"],  # an overlong, cut
        [b"ok\xf5"],  # never a lead byte
        [b"ok\xed", b"\xa0"],  # a surrogate, its second byte in the next chunk
        [b"ok\xe2\x82", b"\x28"],  # the cut code point's end is not a continuation
    ],
)
def test_decoder_refuses_a_bad_cut_code_point_at_once(chunks: list[bytes]) -> None:
    decoder = stream.StreamDecoder()
    decoder.start(text=True)
    for chunk in chunks[:-1]:
        decoder.data(chunk)
    with pytest.raises(ProtocolError, match="invalid UTF-8") as info:
        decoder.data(chunks[-1])
    assert info.value.code == 1007


# Extensions.


def compressed_client(**kwargs: object) -> Protocol:
    """A client engine in streaming mode that inflates what a server compressed."""
    return streaming(extensions=[PerMessageDeflate()], **kwargs)


def deflate_raw(data: bytes) -> bytes:
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
    output = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
    return output[:-4]


def test_compressed_message_inflates_in_bounded_chunks() -> None:
    text = "streamed " * 100
    proto = compressed_client(chunk_size=64)
    events = feed(proto, frame(OP_TEXT, deflate_raw(text.encode()), rsv=0x40))
    assert payload_of(events) == text
    assert all(len(event.data) <= 64 for event in events if isinstance(event, MessageChunk))
    assert len(events) > 10


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_compressed_fragmented_message_streams(split: bool) -> None:
    payload = bytes(range(256)) * 20
    compressed = deflate_raw(payload)
    data = frame(OP_BINARY, compressed[:10], fin=False, rsv=0x40) + frame(OP_CONT, compressed[10:])
    proto = compressed_client(chunk_size=1000)
    assert payload_of(feed(proto, *(bytewise(data) if split else [data]))) == payload
    # The compression context goes on to the next message.
    data = frame(OP_BINARY, deflate_raw(b"next"), rsv=0x40)
    assert payload_of(feed(proto, data)) == b"next"


def test_compressed_stream_inflating_without_bound_fails_at_limit() -> None:
    # A bomb: 10 MiB of zeros in about 10 KiB. Refused after the limit's worth
    # of output, in chunks, never inflated whole.
    proto = compressed_client(chunk_size=STREAM_CHUNK_SIZE)
    proto.max_stream_size = 1 << 20
    events = feed(proto, frame(OP_BINARY, deflate_raw(bytes(10 << 20)), rsv=0x40))
    assert events[0] == START_BINARY
    sizes = [len(event.data) for event in events[1:] if isinstance(event, MessageChunk)]
    assert sizes == [STREAM_CHUNK_SIZE] * 16
    assert_failed(proto, 1009, f"streamed message exceeds the limit of {1 << 20} bytes")


def test_compressed_stream_pauses_until_its_output_is_taken() -> None:
    # Without a limit, a bomb inflates a few chunks at a time: parsing pauses
    # until the consumer asks for more, and what follows waits behind it.
    proto = compressed_client(chunk_size=STREAM_CHUNK_SIZE)
    bomb = frame(OP_BINARY, deflate_raw(bytes(10 << 20)), rsv=0x40)
    proto.receive_data(bomb + frame(OP_TEXT, b"after"))
    batches = [proto.events_received()]
    while proto.inflating:
        proto.resume_parsing()
        batches.append(proto.events_received())
    assert batches[0][0] == START_BINARY
    assert all(len(batch) <= 6 for batch in batches)  # 4 chunks, a start or an end, a message
    assert all(
        len(event.data) <= STREAM_CHUNK_SIZE
        for batch in batches
        for event in batch
        if isinstance(event, MessageChunk)
    )
    events = [event for batch in batches for event in batch]
    assert events[-2:] == [END, "after"]
    assert payload_of(events[:-1]) == bytes(10 << 20)
    assert not proto.parsing_paused


def compressed_fragments(parts: list[bytes]) -> list[bytes]:
    """The frames of one binary message of ``parts``, compressed in one context."""
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = [encoder.compress(part) + encoder.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    wire[-1] = wire[-1][:-4]  # RFC 7692 section 7.2.1: the message's tail is dropped
    last = len(wire) - 1
    return [
        frame(OP_CONT if i else OP_BINARY, data, fin=i == last, rsv=0 if i else 0x40)
        for i, data in enumerate(wire)
    ]


def test_compressed_fragments_pause_as_one_large_frame_does() -> None:
    # Issue 18: ten frames of a few bytes, each inflating to a chunk, in one
    # read. The four chunks before a pause count across frames: a read of
    # many small frames never inflates ahead of the consumer.
    parts = [bytes([i]) * STREAM_CHUNK_SIZE for i in range(10)]
    proto = compressed_client(chunk_size=STREAM_CHUNK_SIZE)
    proto.receive_data(b"".join(compressed_fragments(parts)) + frame(OP_TEXT, b"after"))
    batches = [proto.events_received()]
    while proto.inflating:
        proto.resume_parsing()
        batches.append(proto.events_received())
    assert batches == [
        [START_BINARY, *_chunks(*parts[:4])],
        _chunks(*parts[4:8]),
        [*_chunks(*parts[8:]), END, "after"],
    ]


def test_compressed_fragments_of_separate_reads_do_not_pause() -> None:
    # The budget is per receive_data() call: a consumer that keeps up (the
    # I/O layer reads again only then) never waits for a resume.
    parts = [bytes([i]) * STREAM_CHUNK_SIZE for i in range(10)]
    proto = compressed_client(chunk_size=STREAM_CHUNK_SIZE)
    events: list[Event] = []
    for data in compressed_fragments(parts):
        proto.receive_data(data)
        assert not proto.parsing_paused
        events += proto.events_received()
    assert events == [START_BINARY, *_chunks(*parts), END]


def test_compressed_stream_paused_then_close_sent() -> None:
    proto = compressed_client(chunk_size=STREAM_CHUNK_SIZE)
    proto.receive_data(frame(OP_BINARY, deflate_raw(bytes(1 << 20)), rsv=0x40, fin=False))
    assert proto.inflating
    proto.send_close()
    proto.resume_parsing()
    assert len(proto.events_received()) == 5  # the start and the first chunks only
    assert not proto.inflating
    assert feed(proto, frame(OP_CONT, b"")) == []  # the message ends, unread


def test_compressed_stream_with_invalid_data_fails() -> None:
    proto = compressed_client()
    feed(proto, frame(OP_BINARY, b"\xff\xff\xff", rsv=0x40))
    assert_failed(
        proto,
        1007,
        "invalid compressed data: Error -3 while decompressing data: invalid block type",
    )


def test_uncompressed_message_with_deflate_negotiated() -> None:
    proto = compressed_client()
    data = frame(OP_BINARY, b"abcdef", fin=False) + frame(OP_CONT, b"")
    assert feed(proto, data) == [START_BINARY, *_chunks(b"abcd", b"ef"), END]


def test_extensions_decode_in_turn_last_negotiated_first() -> None:
    # The default decode_stream() of a non-expanding extension, chained.
    invert, shift = invert_extension(), shift_extension()
    proto = streaming(extensions=[invert, shift])
    payload = b"abcdef"
    wire = payload.translate(invert.encode_table).translate(shift.encode_table)
    data = frame(OP_BINARY, wire[:5], fin=False, rsv=0x60) + frame(OP_CONT, wire[5:])
    assert payload_of(feed(proto, data)) == payload
    # Each extension saw FIN on the message's last piece only.
    assert [fin for _, _, fin, _ in invert.decoded] == [False, True]


def test_decode_pieces_without_extensions() -> None:
    assert list(stream.decode_pieces([], b"abc", rsv=0, fin=True, chunk_size=1)) == [b"abc"]


def test_events_repr() -> None:
    assert repr(START_TEXT) == "MessageStart(text=True)"
    assert repr(MessageChunk(b"a")) == "MessageChunk(data=b'a')"
    assert repr(END) == "MessageEnd()"
    assert START_TEXT != START_BINARY
    assert MessageChunk("a") != "a"
