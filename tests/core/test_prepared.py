"""PreparedMessage: frames built once per wire form, byte for byte."""

from __future__ import annotations

import zlib

import pytest

from rapidws.core import PreparedMessage, Protocol
from rapidws.core.extensions.permessage_deflate import PerMessageDeflate
from rapidws.core.prepared import wire_form
from rapidws.exceptions import InvalidState


def server(*extensions: PerMessageDeflate) -> Protocol:
    return Protocol(is_client=False, extensions=extensions)


def deflate(*, takeover: bool = False, bits: int = 15, threshold: int = 32) -> PerMessageDeflate:
    return PerMessageDeflate(
        local_no_context_takeover=not takeover, local_max_window_bits=bits, threshold=threshold
    )


def inflate(frame: bytes, bits: int = 15) -> bytes:
    # The payload of an unmasked frame under 64 KiB, inflated (RFC 7692 section 7.2.2).
    payload = frame[2:] if frame[1] < 126 else frame[4:]
    return zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")


def test_text_is_encoded_once_and_framed_as_rfc_6455_section_5_7() -> None:
    message = PreparedMessage("Hello")
    protocol = server()
    protocol.send_prepared(message)
    # RFC 6455 section 5.7: a single-frame unmasked text message.
    assert protocol.data_to_send() == [b"\x81\x05Hello"]
    assert message.payload == b"Hello" and len(message) == 5


def test_the_same_bytes_object_goes_to_every_plain_connection() -> None:
    message = PreparedMessage(b"\x00" * 300)
    first, second = server(), server()
    first.send_prepared(message)
    second.send_prepared(message)
    [one], [two] = first.data_to_send(), second.data_to_send()
    assert one is two
    assert one[:4] == b"\x82\x7e\x01\x2c"  # 16-bit extended length (section 5.2)


def test_connections_without_context_takeover_share_one_compressed_frame() -> None:
    message = PreparedMessage("spam " * 100)
    first, second = server(deflate()), server(deflate())
    first.send_prepared(message)
    second.send_prepared(message)
    [one], [two] = first.data_to_send(), second.data_to_send()
    assert one is two
    assert one[0] == 0xC1  # FIN, RSV1 (RFC 7692 section 6), text
    assert inflate(one) == b"spam " * 100


def test_each_window_size_gets_its_own_compressed_frame() -> None:
    message = PreparedMessage("eggs " * 100)
    wide, narrow = server(deflate(bits=15)), server(deflate(bits=9))
    wide.send_prepared(message)
    narrow.send_prepared(message)
    [one], [two] = wide.data_to_send(), narrow.data_to_send()
    assert one is not two
    assert inflate(one, 15) == inflate(two, 9) == b"eggs " * 100
    assert wire_form(wide.extensions) != wire_form(narrow.extensions)


def test_a_message_under_the_threshold_shares_the_plain_frame() -> None:
    message = PreparedMessage("hi")
    plain, compressed = server(), server(deflate(threshold=32))
    plain.send_prepared(message)
    compressed.send_prepared(message)
    [one], [two] = plain.data_to_send(), compressed.data_to_send()
    assert one is two
    assert one == b"\x81\x02hi"


def test_compress_false_sends_the_plain_frame_to_compressing_connections() -> None:
    message = PreparedMessage("x" * 200, compress=False)
    protocol = server(deflate())
    protocol.send_prepared(message)
    [frame] = protocol.data_to_send()
    assert frame[0] == 0x81 and frame[4:] == b"x" * 200


def test_context_takeover_connections_compress_themselves_and_keep_their_context() -> None:
    message = PreparedMessage("ham " * 50)
    protocol = server(deflate(takeover=True))
    assert wire_form(protocol.extensions) is None
    protocol.send_prepared(message)
    protocol.send_prepared(message)
    first, second = protocol.data_to_send()
    # The second copy refers back to the first through the shared context.
    assert len(second) < len(first)
    decoder = zlib.decompressobj(-15)
    for frame in (first, second):
        assert frame[0] == 0xC1
        assert decoder.decompress(frame[2:] + b"\x00\x00\xff\xff") == b"ham " * 50


def test_clients_mask_each_prepared_message_themselves() -> None:
    protocol = Protocol(is_client=True)
    message = PreparedMessage("Hello")
    protocol.send_prepared(message)
    protocol.send_prepared(message)
    one, two = protocol.data_to_send()
    assert one[:2] == two[:2] == b"\x81\x85"  # masked (RFC 6455 section 5.3)
    mask, data = one[2:6], one[6:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(data)) == b"Hello"


def test_a_prepared_message_is_refused_when_not_open_or_while_fragmenting() -> None:
    protocol = server()
    protocol.send_text("part", fin=False)
    with pytest.raises(InvalidState, match="fragmented"):
        protocol.send_prepared(PreparedMessage("x"))
    protocol.send_continuation("end", fin=True)
    protocol.send_close()
    with pytest.raises(InvalidState, match="CLOSING"):
        protocol.send_prepared(PreparedMessage("x"))


def test_send_message_takes_a_prepared_message() -> None:
    protocol = server()
    protocol.send_message(PreparedMessage(b"\x01\x02"))
    assert protocol.data_to_send() == [b"\x82\x02\x01\x02"]


def test_from_payload_takes_wire_parts_and_refuses_other_opcodes() -> None:
    message = PreparedMessage.from_payload(1, "é".encode())
    assert message.frame((), ()) == b"\x81\x02\xc3\xa9"
    with pytest.raises(ValueError, match="opcode 9"):
        PreparedMessage.from_payload(9, b"")
    with pytest.raises(TypeError, match="send str or bytes"):
        PreparedMessage(42)  # type: ignore[arg-type]
    assert "text 2 bytes, 1 forms" in repr(message)
