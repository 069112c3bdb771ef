"""Tests for rapidws.core.extensions.permessage_deflate (RFC 7692).

The examples of RFC 7692 section 7.2.3 are checked byte for byte, on the
receiving side (a client engine reading the server frames of the RFC) and on
the sending side (a server engine whose frames are unmasked). Negotiation is
checked in tables, then through the handshake engines; messages go through
pairs of engines connected in memory; the last tests throw deflate bombs.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapidws.core.client import ClientProtocol
from rapidws.core.extensions.permessage_deflate import (
    ClientPerMessageDeflate,
    PerMessageDeflate,
    ServerPerMessageDeflate,
    with_compression,
)
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
from rapidws.core.headers import ExtensionParameter
from rapidws.core.http11 import Request, Response
from rapidws.core.protocol import CLOSING, OPEN, Event, Ping, Pong, Protocol
from rapidws.core.server import ServerProtocol
from rapidws.core.uri import parse_uri
from rapidws.exceptions import (
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    PayloadTooBig,
    ProtocolError,
)
from rapidws.speedups import apply_mask, parse_frame_header

MASK = b"\x37\xfa\x21\x3d"  # our masking key: the one of RFC 6455 section 5.7
PEER_MASK = b"\x12\x34\x56\x78"  # the key of frames that a client peer sends us
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
RSV1 = 0x40
KiB = 1 << 10
MiB = 1 << 20

# Property tests explore the same examples on every run.
deterministic = settings(derandomize=True, database=None, deadline=None)

# RFC 7692 section 7.2.3: the frames of its examples, as a server sends them.
HELLO = bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00")  # 7.2.3.1
HELLO_FRAGMENTED = [bytes.fromhex("41 03 f2 48 cd"), bytes.fromhex("80 04 c9 c9 07 00")]
HELLO_AGAIN = bytes.fromhex("c1 05 f2 00 11 00 00")  # 7.2.3.2, with the shared window
HELLO_STORED = bytes.fromhex("c1 0b 00 05 00 fa ff 48 65 6c 6c 6f 00")  # 7.2.3.3
HELLO_BFINAL = bytes.fromhex("c1 08 f3 48 cd c9 c9 07 00 00")  # 7.2.3.4
HELLO_TWO_BLOCKS = bytes.fromhex("c1 0d f2 48 05 00 00 00 ff ff ca c9 c9 07 00")  # 7.2.3.5


@pytest.fixture(autouse=True)
def _fixed_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rapidws.core.protocol.generate_mask", lambda: MASK)
    monkeypatch.setattr("rapidws.core.client.generate_key", lambda: KEY)


# Helpers.


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """Build a frame; masked when ``mask`` is given."""
    first = (0x80 if fin else 0) | rsv | opcode
    body = payload if mask is None else apply_mask(payload, mask)
    return frame_header(first, len(payload), mask) + body


def rfc_sender(**kwargs: object) -> Protocol:
    """A server engine compressing like the RFC's examples (zlib's defaults)."""
    options: dict[str, object] = {
        "local_max_window_bits": 15,
        "mem_level": 8,
        "level": 6,
        "threshold": 0,
        **kwargs,
    }
    return Protocol(is_client=False, extensions=[PerMessageDeflate(**options)])  # type: ignore[arg-type]


def rfc_receiver(**kwargs: object) -> Protocol:
    """A client engine that inflates what a server compressed with a 2^15 window."""
    return Protocol(is_client=True, extensions=[PerMessageDeflate()], **kwargs)  # type: ignore[arg-type]


def feed(proto: Protocol, *chunks: bytes) -> list[Event]:
    """Feed ``chunks`` one by one; return the events that came out."""
    for chunk in chunks:
        proto.receive_data(chunk)
    return proto.events_received()


def pair(
    server_factory: ServerPerMessageDeflate | None = None,
    client_factory: ClientPerMessageDeflate | None = None,
    **kwargs: object,
) -> tuple[Protocol, Protocol]:
    """Negotiate as a handshake does; return connected (client, server) engines."""
    server_factory = server_factory or ServerPerMessageDeflate()
    client_factory = client_factory or ClientPerMessageDeflate()
    result = server_factory.negotiate(client_factory.offer())
    assert result is not None
    answer, server_extension = result
    client_extension = client_factory.accept(answer)
    client = Protocol(is_client=True, extensions=[client_extension], **kwargs)  # type: ignore[arg-type]
    server = Protocol(is_client=False, extensions=[server_extension], **kwargs)  # type: ignore[arg-type]
    return client, server


def deflate_of(proto: Protocol) -> PerMessageDeflate:
    [extension] = proto.extensions
    assert isinstance(extension, PerMessageDeflate)
    return extension


def transfer(sender: Protocol, receiver: Protocol) -> list[Event]:
    """Move what ``sender`` wrote to ``receiver``; return the events that came out."""
    return feed(receiver, *sender.data_to_send())


def settings_of(extension: object) -> tuple[bool, bool, int, int]:
    """The negotiated parameters of a PerMessageDeflate, local side first."""
    assert isinstance(extension, PerMessageDeflate)
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def assert_failed(proto: Protocol, code: int, reason: str) -> None:
    """Check that ``proto`` failed the connection with ``code`` and ``reason``."""
    assert proto.parser_exc is not None
    assert proto.parser_exc.code == code
    assert str(proto.parser_exc) == reason
    assert proto.close_sent == Close(code, reason)
    assert proto.state is CLOSING
    out = proto.data_to_send()
    mask = MASK if proto.is_client else None
    assert out[0] == frame(OP_CLOSE, Close(code, reason).serialize(), mask=mask)
    assert out[1:] == ([] if proto.is_client else [b""])
    assert proto.events_received() == []


def deflate_raw(data: bytes, wbits: int = 15) -> bytes:
    """Compress ``data`` as a one-frame message payload (trailer removed)."""
    encoder = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    output = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
    assert output.endswith(b"\x00\x00\xff\xff")
    return output[:-4]


# RFC 7692 section 7.2.3, receiving side: a client engine reads server frames.


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([HELLO], id="7.2.3.1-one-frame"),
        pytest.param(HELLO_FRAGMENTED, id="7.2.3.1-fragmented"),
        pytest.param([HELLO_STORED], id="7.2.3.3-stored-block"),
        pytest.param([HELLO_BFINAL], id="7.2.3.4-bfinal"),
        pytest.param([HELLO_TWO_BLOCKS], id="7.2.3.5-two-blocks"),
    ],
)
def test_rfc_examples_received(frames: list[bytes], bytewise: bool) -> None:
    proto = rfc_receiver()
    data = b"".join(frames)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else frames
    assert feed(proto, *chunks) == ["Hello"]
    assert proto.parser_exc is None
    assert proto.data_to_send() == []


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-by-byte"])
def test_rfc_shared_window_received(bytewise: bool) -> None:
    # 7.2.3.2: the second message refers back to the first one.
    proto = rfc_receiver()
    data = HELLO + HELLO_AGAIN
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [HELLO, HELLO_AGAIN]
    assert feed(proto, *chunks) == ["Hello", "Hello"]
    assert proto.parser_exc is None


def test_rfc_no_context_takeover_received() -> None:
    # 7.2.3.2: without context takeover the second message is the same bytes.
    proto = rfc_receiver()
    assert feed(proto, HELLO, HELLO) == ["Hello", "Hello"]


def test_rfc_bfinal_then_more_messages_received() -> None:
    # A message that ends its deflate stream (BFINAL) must not swallow the
    # next ones: each later message starts a new stream. (A decoder left at
    # the end of the stream used to return every later message as "".)
    proto = rfc_receiver()
    assert feed(proto, HELLO_BFINAL, HELLO_BFINAL, HELLO, HELLO_AGAIN) == ["Hello"] * 4
    assert proto.parser_exc is None


def test_rfc_example_mixed_with_uncompressed_message() -> None:
    # RSV1 is per message: an uncompressed one in between keeps the window.
    proto = rfc_receiver()
    assert feed(proto, HELLO, frame(OP_TEXT, b"plain"), HELLO_AGAIN) == ["Hello", "plain", "Hello"]


# RFC 7692 section 7.2.3, sending side: a server engine writes unmasked frames.


def test_rfc_one_frame_sent() -> None:
    proto = rfc_sender()
    proto.send_text("Hello")
    assert proto.data_to_send() == [HELLO]


def test_rfc_fragmented_sent() -> None:
    # The RFC cuts one compressed stream at an arbitrary byte. A sender that
    # writes each fragment as it is given must flush it (Z_SYNC_FLUSH), which
    # ends the block and adds an empty stored block (00 00 00 ff ff): zlib's
    # bytes differ, and the receiver decodes them to the same message.
    proto = rfc_sender()
    proto.send_text("Hel", fin=False)
    proto.send_continuation("lo", fin=True)
    out = proto.data_to_send()
    assert out == [
        bytes.fromhex("41 09 f2 48 cd 01 00 00 00 ff ff"),
        bytes.fromhex("80 04 ca c9 07 00"),
    ]
    assert feed(rfc_receiver(), *out) == ["Hello"]


def test_rfc_shared_window_sent() -> None:
    proto = rfc_sender()
    proto.send_text("Hello")
    proto.send_text("Hello")
    assert proto.data_to_send() == [HELLO, HELLO_AGAIN]


def test_rfc_no_context_takeover_sent() -> None:
    proto = rfc_sender(local_no_context_takeover=True)
    proto.send_text("Hello")
    proto.send_text("Hello")
    assert proto.data_to_send() == [HELLO, HELLO]


def test_rfc_stored_block_sent() -> None:
    # Level 0 makes zlib write stored blocks.
    proto = rfc_sender(level=0)
    proto.send_text("Hello")
    assert proto.data_to_send() == [HELLO_STORED]


def test_rfc_two_blocks_sent() -> None:
    # 7.2.3.5 is "He" flushed, then "llo": two fragments here, whose payloads
    # joined are the RFC's payload byte for byte. (7.2.3.4, BFINAL, has no
    # sending side: a sync flush never sets BFINAL, and the encoder never
    # ends its stream.)
    proto = rfc_sender()
    proto.send_text("He", fin=False)
    proto.send_continuation("llo", fin=True)
    out = proto.data_to_send()
    assert out == [
        bytes.fromhex("41 08 f2 48 05 00 00 00 ff ff"),
        bytes.fromhex("80 05 ca c9 c9 07 00"),
    ]
    assert out[0][2:] + out[1][2:] == HELLO_TWO_BLOCKS[2:]


def test_rfc_empty_message_sent() -> None:
    # 7.2.3.6: an empty message compresses to one byte, 0x00.
    proto = rfc_sender()
    proto.send_binary(b"")
    assert proto.data_to_send() == [bytes.fromhex("c2 01 00")]


# ServerPerMessageDeflate.negotiate: settings x offer -> answer, extension.

SNCT: ExtensionParameter = ("server_no_context_takeover", None)
CNCT: ExtensionParameter = ("client_no_context_takeover", None)
CMWB: ExtensionParameter = ("client_max_window_bits", None)


def smwb(bits: int | str) -> ExtensionParameter:
    return ("server_max_window_bits", str(bits))


def cmwb(bits: int | str) -> ExtensionParameter:
    return ("client_max_window_bits", str(bits))


@pytest.mark.parametrize(
    ("config", "offer", "answer", "expected"),
    [
        # (local nct, remote nct, local window, remote window) of the server.
        pytest.param({}, [CMWB], [smwb(12), cmwb(12)], (False, False, 12, 12), id="browser"),
        pytest.param({}, [], [smwb(12)], (False, False, 12, 15), id="empty-offer"),
        pytest.param({}, [SNCT], [SNCT, smwb(12)], (True, False, 12, 15), id="server-nct"),
        pytest.param({}, [CNCT], [CNCT, smwb(12)], (False, True, 12, 15), id="client-nct"),
        pytest.param({}, [CNCT, CMWB], [CNCT, smwb(12), cmwb(12)], (False, True, 12, 12)),
        pytest.param({}, [smwb(10)], [smwb(10)], (False, False, 10, 15), id="smwb-10"),
        pytest.param({}, [smwb(9)], [smwb(9)], (False, False, 9, 15), id="smwb-9"),
        pytest.param({}, [smwb(15)], [smwb(12)], (False, False, 12, 15), id="smwb-15"),
        pytest.param({}, [cmwb(10)], [smwb(12), cmwb(10)], (False, False, 12, 10), id="cmwb-10"),
        pytest.param({}, [cmwb(15)], [smwb(12), cmwb(12)], (False, False, 12, 12), id="cmwb-15"),
        pytest.param({}, [cmwb(8)], [smwb(12), cmwb(8)], (False, False, 12, 8), id="cmwb-8"),
        pytest.param(
            {},
            [SNCT, CNCT, smwb(10), cmwb(9)],
            [SNCT, CNCT, smwb(10), cmwb(9)],
            (True, True, 10, 9),
            id="everything",
        ),
        pytest.param(
            {"client_max_window_bits": None},
            [CMWB],
            [smwb(12)],
            (False, False, 12, 15),
            id="config-cmwb-none",
        ),
        pytest.param(
            {"client_max_window_bits": None},
            [cmwb(10)],
            [smwb(12)],
            (False, False, 12, 15),
            id="config-cmwb-none-offer-10",
        ),
        pytest.param(
            {"client_max_window_bits": 15},
            [CMWB],
            [smwb(12), cmwb(15)],
            (False, False, 12, 15),
            id="config-cmwb-15",
        ),
        pytest.param(
            {"client_max_window_bits": 8},
            [CMWB],
            [smwb(12), cmwb(8)],
            (False, False, 12, 8),
            id="config-cmwb-8",
        ),
        pytest.param(
            {"server_no_context_takeover": True},
            [],
            [SNCT, smwb(12)],
            (True, False, 12, 15),
            id="config-server-nct",
        ),
        pytest.param(
            {"client_no_context_takeover": True},
            [CMWB],
            [CNCT, smwb(12), cmwb(12)],
            (False, True, 12, 12),
            id="config-client-nct",
        ),
        pytest.param(
            {"server_max_window_bits": 15},
            [],
            [],
            (False, False, 15, 15),
            id="config-smwb-15-not-announced",
        ),
        pytest.param(
            {"server_max_window_bits": 15, "client_max_window_bits": None},
            [CMWB],
            [],
            (False, False, 15, 15),
            id="config-15-none",
        ),
        pytest.param(
            {"server_max_window_bits": 15},
            [smwb(15)],
            [smwb(15)],
            (False, False, 15, 15),
            id="config-smwb-15-requested-15",
        ),
        pytest.param(
            {"server_max_window_bits": 9},
            [smwb(14)],
            [smwb(9)],
            (False, False, 9, 15),
            id="config-smwb-9",
        ),
    ],
)
def test_server_negotiate(
    config: dict[str, object],
    offer: list[ExtensionParameter],
    answer: list[ExtensionParameter],
    expected: tuple[bool, bool, int, int],
) -> None:
    factory = ServerPerMessageDeflate(**config)  # type: ignore[arg-type]
    result = factory.negotiate(offer)
    assert result is not None
    params, extension = result
    assert params == answer
    assert settings_of(extension) == expected
    if cmwb(8) in offer or cmwb(8) in answer:
        return  # a client of ours neither offers nor accepts 8
    # The client that sent this offer agrees: same no-context-takeover modes,
    # its decoder fits the server's encoder, its encoder the server's decoder.
    client = client_for_offer(offer).accept(params)
    assert isinstance(client, PerMessageDeflate) and isinstance(extension, PerMessageDeflate)
    assert client.local_no_context_takeover is extension.remote_no_context_takeover
    assert client.remote_no_context_takeover is extension.local_no_context_takeover
    assert client.remote_max_window_bits == extension.local_max_window_bits
    assert client.local_max_window_bits <= extension.remote_max_window_bits


def client_for_offer(offer: Sequence[ExtensionParameter]) -> ClientPerMessageDeflate:
    """The client factory whose offer() is ``offer``."""
    params = dict(offer)
    client_bits: bool | int = False
    if "client_max_window_bits" in params:
        value = params["client_max_window_bits"]
        client_bits = True if value is None else int(value)
    server_bits = params.get("server_max_window_bits")
    factory = ClientPerMessageDeflate(
        server_no_context_takeover="server_no_context_takeover" in params,
        client_no_context_takeover="client_no_context_takeover" in params,
        server_max_window_bits=None if server_bits is None else int(server_bits),
        client_max_window_bits=client_bits,
    )
    assert factory.offer() == list(offer)
    return factory


@pytest.mark.parametrize(
    "offer",
    [
        pytest.param([smwb(8)], id="smwb-8-zlib-cannot"),
        pytest.param([("foo", None)], id="unknown"),
        pytest.param([("foo", "1"), CMWB], id="unknown-with-known"),
        pytest.param([SNCT, SNCT], id="repeated-snct"),
        pytest.param([CMWB, cmwb(10)], id="repeated-cmwb"),
        pytest.param([smwb(10), smwb(10)], id="repeated-smwb"),
        pytest.param([("server_no_context_takeover", "1")], id="value-on-snct"),
        pytest.param([("client_no_context_takeover", "")], id="empty-value-on-cnct"),
        pytest.param([("server_max_window_bits", None)], id="smwb-no-value"),
        *(
            pytest.param([make(value)], id=f"{make.__name__}-{value!r}")
            for make in (smwb, cmwb)
            for value in ("7", "16", "08", "abc", "", " 10", "+9", "1e1")
        ),
    ],
)
def test_server_declines_offer(offer: list[ExtensionParameter]) -> None:
    assert ServerPerMessageDeflate().negotiate(offer) is None


def test_server_carries_compression_settings() -> None:
    factory = ServerPerMessageDeflate(level=1, mem_level=9, threshold=100)
    result = factory.negotiate([])
    assert result is not None
    extension = result[1]
    assert isinstance(extension, PerMessageDeflate)
    assert (extension.level, extension.mem_level, extension.threshold) == (1, 9, 100)


def test_server_negotiates_fresh_extension_each_time() -> None:
    factory = ServerPerMessageDeflate()
    first, second = factory.negotiate([]), factory.negotiate([])
    assert first is not None and second is not None
    assert first[1] is not second[1]


# ServerPerMessageDeflate through ServerProtocol.


def request_bytes(*offers: str) -> bytes:
    lines = [
        "GET /chat HTTP/1.1",
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"Sec-WebSocket-Extensions: {offer}" for offer in offers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def server_handshake(*offers: str, **kwargs: object) -> tuple[ServerProtocol, Response]:
    server = ServerProtocol(
        server_header=None,
        extensions=[ServerPerMessageDeflate(**kwargs)],  # type: ignore[arg-type]
    )
    server.receive_data(request_bytes(*offers))
    [request] = server.events_received()
    assert isinstance(request, Request)
    response = server.accept(request)
    return server, response


@pytest.mark.parametrize(
    ("offers", "answer", "expected"),
    [
        pytest.param(
            [
                "permessage-deflate; server_max_window_bits=8, "
                "permessage-deflate; client_max_window_bits"
            ],
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            (False, False, 12, 12),
            id="first-declined-second-accepted",
        ),
        pytest.param(
            ["permessage-deflate; foo", "permessage-deflate; server_no_context_takeover"],
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
            (True, False, 12, 15),
            id="malformed-then-valid-in-two-headers",
        ),
        pytest.param(
            ['x-unknown, permessage-deflate; server_max_window_bits="10"'],
            "permessage-deflate; server_max_window_bits=10",
            (False, False, 10, 15),
            id="quoted-value",
        ),
        pytest.param(
            ["permessage-deflate; client_max_window_bits, permessage-deflate"],
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            (False, False, 12, 12),
            id="first-accepted-second-ignored",
        ),
    ],
)
def test_server_protocol_negotiates(
    offers: list[str], answer: str, expected: tuple[bool, bool, int, int]
) -> None:
    server, response = server_handshake(*offers)
    assert response.status == 101
    assert response.headers.get_all("Sec-WebSocket-Extensions") == [answer]
    [extension] = server.extensions
    assert settings_of(extension) == expected
    server.send_response(response)
    server.data_to_send()
    # RSV1 now means compressed.
    server.receive_data(frame(OP_TEXT, deflate_raw(b"Hello"), rsv=RSV1, mask=PEER_MASK))
    assert server.events_received() == ["Hello"]


def test_server_protocol_all_offers_declined() -> None:
    server, response = server_handshake("permessage-deflate; server_max_window_bits=8")
    assert response.status == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert server.extensions == []


@pytest.mark.parametrize("offers", [(), ("x-other",)], ids=["no-header", "other-extension"])
def test_server_protocol_without_offer(offers: tuple[str, ...]) -> None:
    server, response = server_handshake(*offers)
    assert response.status == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert server.extensions == []
    server.send_response(response)
    server.data_to_send()
    # Without the extension, RSV1 is a protocol error.
    server.receive_data(frame(OP_TEXT, deflate_raw(b"Hello"), rsv=RSV1, mask=PEER_MASK))
    assert_failed(server, 1002, "RSV bits set without an extension that defines them")


def test_server_protocol_unparseable_header() -> None:
    server, response = server_handshake("permessage-deflate; =")
    assert response.status == 400
    assert isinstance(server.handshake_exc, InvalidRequest)
    assert str(server.handshake_exc) == "expected a token at position 20 of 'permessage-deflate; ='"
    assert server.extensions == []


# ClientPerMessageDeflate: offer() and accept().


@pytest.mark.parametrize(
    ("config", "offer"),
    [
        pytest.param({}, [CMWB], id="defaults"),
        pytest.param({"server_no_context_takeover": True}, [SNCT, CMWB], id="snct"),
        pytest.param({"client_no_context_takeover": True}, [CNCT, CMWB], id="cnct"),
        pytest.param({"server_max_window_bits": 10}, [smwb(10), CMWB], id="smwb-10"),
        pytest.param({"server_max_window_bits": 8}, [smwb(8), CMWB], id="smwb-8"),
        pytest.param({"client_max_window_bits": 10}, [cmwb(10)], id="cmwb-10"),
        pytest.param({"client_max_window_bits": True}, [CMWB], id="cmwb-true"),
        pytest.param({"client_max_window_bits": False}, [], id="cmwb-false"),
        pytest.param(
            {
                "server_no_context_takeover": True,
                "client_no_context_takeover": True,
                "server_max_window_bits": 9,
                "client_max_window_bits": 11,
            },
            [SNCT, CNCT, smwb(9), cmwb(11)],
            id="everything",
        ),
    ],
)
def test_client_offer(config: dict[str, object], offer: list[ExtensionParameter]) -> None:
    assert ClientPerMessageDeflate(**config).offer() == offer  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "answer", "expected"),
    [
        # (local nct, remote nct, local window, remote window) of the client.
        pytest.param({}, [], (False, False, 15, 15), id="empty"),
        pytest.param({}, [smwb(12), cmwb(12)], (False, False, 12, 12), id="browser-answer"),
        pytest.param({}, [SNCT], (False, True, 15, 15), id="server-nct-unasked"),
        pytest.param({}, [CNCT], (True, False, 15, 15), id="client-nct-asked"),
        pytest.param({}, [smwb(8)], (False, False, 15, 8), id="smwb-8-inflates"),
        pytest.param({}, [cmwb(9)], (False, False, 9, 15), id="cmwb-9"),
        pytest.param(
            {"client_no_context_takeover": True},
            [],
            (True, False, 15, 15),
            id="cnct-promised-not-echoed",
        ),
        pytest.param(
            {"server_no_context_takeover": True}, [SNCT], (False, True, 15, 15), id="snct-honored"
        ),
        pytest.param({"server_max_window_bits": 10}, [smwb(10)], (False, False, 15, 10)),
        pytest.param({"server_max_window_bits": 10}, [smwb(9)], (False, False, 15, 9)),
        pytest.param({"client_max_window_bits": 10}, [], (False, False, 10, 15), id="cmwb-own"),
        pytest.param({"client_max_window_bits": 10}, [cmwb(12)], (False, False, 10, 15)),
        pytest.param({"client_max_window_bits": 10}, [cmwb(9)], (False, False, 9, 15)),
        pytest.param({"client_max_window_bits": False}, [smwb(11)], (False, False, 15, 11)),
        pytest.param(
            {"level": 1},
            [SNCT, CNCT, smwb(13), cmwb(14)],
            (True, True, 14, 13),
            id="everything",
        ),
    ],
)
def test_client_accept(
    config: dict[str, object],
    answer: list[ExtensionParameter],
    expected: tuple[bool, bool, int, int],
) -> None:
    extension = ClientPerMessageDeflate(**config).accept(answer)  # type: ignore[arg-type]
    assert settings_of(extension) == expected


@pytest.mark.parametrize(
    ("config", "answer", "message"),
    [
        ({}, [("foo", None)], "unknown permessage-deflate parameter 'foo'"),
        ({}, [SNCT, SNCT], "repeated permessage-deflate parameter 'server_no_context_takeover'"),
        (
            {},
            [cmwb(10), cmwb(11)],
            "repeated permessage-deflate parameter 'client_max_window_bits'",
        ),
        (
            {"server_max_window_bits": 10},
            [smwb(11)],
            "server_max_window_bits=11 exceeds the 10 requested",
        ),
        (
            {"server_max_window_bits": 10},
            [],
            "server_max_window_bits=15 exceeds the 10 requested",
        ),
        (
            {"client_max_window_bits": False},
            [cmwb(10)],
            "server set client_max_window_bits, which was not offered",
        ),
        (
            {},
            [cmwb(8)],
            "server asked for client_max_window_bits=8, which zlib cannot deflate with",
        ),
        (
            {"client_max_window_bits": 12},
            [cmwb(8)],
            "server asked for client_max_window_bits=8, which zlib cannot deflate with",
        ),
        ({}, [CMWB], "permessage-deflate parameter client_max_window_bits needs a value"),
        (
            {},
            [("server_max_window_bits", None)],
            "permessage-deflate parameter server_max_window_bits needs a value",
        ),
        (
            {},
            [("client_no_context_takeover", "1")],
            "permessage-deflate parameter client_no_context_takeover takes no value",
        ),
        (
            {},
            [smwb(16)],
            "invalid value '16' for permessage-deflate parameter server_max_window_bits",
        ),
        (
            {},
            [smwb("08")],
            "invalid value '08' for permessage-deflate parameter server_max_window_bits",
        ),
        (
            {},
            [cmwb(7)],
            "invalid value '7' for permessage-deflate parameter client_max_window_bits",
        ),
        (
            {"server_no_context_takeover": True},
            [],
            "server did not accept server_no_context_takeover",
        ),
    ],
)
def test_client_accept_invalid(
    config: dict[str, object], answer: list[ExtensionParameter], message: str
) -> None:
    factory = ClientPerMessageDeflate(**config)  # type: ignore[arg-type]
    with pytest.raises(InvalidHandshake) as raised:
        factory.accept(answer)
    assert str(raised.value) == message


# ClientPerMessageDeflate through ClientProtocol.


def make_client(**kwargs: object) -> ClientProtocol:
    client = ClientProtocol(
        parse_uri("ws://example.com/chat"),
        extensions=[ClientPerMessageDeflate(**kwargs)],  # type: ignore[arg-type]
    )
    client.send_request(client.connect())
    return client


def response_bytes(extensions: str | None) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {ACCEPT}",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("config", "header"),
    [
        ({}, "permessage-deflate; client_max_window_bits"),
        ({"client_max_window_bits": False}, "permessage-deflate"),
        (
            {"server_no_context_takeover": True, "server_max_window_bits": 10},
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; "
            "client_max_window_bits",
        ),
    ],
)
def test_client_protocol_sends_offer(config: dict[str, object], header: str) -> None:
    client = make_client(**config)
    [request] = client.data_to_send()
    assert f"\r\nSec-WebSocket-Extensions: {header}\r\n".encode() in request


def test_client_protocol_accepts_answer() -> None:
    client = make_client()
    client.data_to_send()
    answer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    client.receive_data(response_bytes(answer) + HELLO_STORED)
    assert client.handshake_exc is None
    assert client.state is OPEN
    [extension] = client.extensions
    assert settings_of(extension) == (False, False, 12, 12)
    assert client.events_received()[1:] == ["Hello"]


def test_client_protocol_without_answer() -> None:
    # The server ignored the offer: no compression, and RSV1 is an error.
    client = make_client()
    client.data_to_send()
    client.receive_data(response_bytes(None))
    assert client.state is OPEN
    assert client.extensions == []
    client.events_received()
    client.receive_data(HELLO)
    assert_failed(client, 1002, "RSV bits set without an extension that defines them")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            "permessage-deflate; client_max_window_bits=8",
            "server asked for client_max_window_bits=8, which zlib cannot deflate with",
        ),
        ("permessage-deflate; foo=bar", "unknown permessage-deflate parameter 'foo'"),
        (
            "permessage-deflate, permessage-deflate",
            "server accepted extension 'permessage-deflate', not offered",
        ),
    ],
)
def test_client_protocol_refuses_bad_answer(answer: str, message: str) -> None:
    client = make_client()
    client.data_to_send()
    client.receive_data(response_bytes(answer))
    exc = client.handshake_exc
    assert type(exc) is InvalidResponse
    assert str(exc) == message
    assert exc.response is client.response
    assert client.extensions == []
    assert client.data_to_send() == [b""]


def test_handshake_between_engines() -> None:
    client = ClientProtocol(
        parse_uri("ws://example.com/chat"),
        extensions=[ClientPerMessageDeflate(server_max_window_bits=11)],
    )
    server = ServerProtocol(extensions=[ServerPerMessageDeflate(client_no_context_takeover=True)])
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    [request] = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    assert client.state is server.state is OPEN
    # The server caps the client's window at its default, 12.
    assert settings_of(client.extensions[0]) == (True, False, 12, 11)
    assert settings_of(server.extensions[0]) == (False, True, 11, 12)
    client.events_received()
    message = "compressible " * 20
    client.send_text(message)
    server.send_text(message)
    assert transfer(client, server) == [message]
    assert transfer(server, client) == [message]


# Constructor validation.


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (PerMessageDeflate, {"local_max_window_bits": 8}),
        (PerMessageDeflate, {"local_max_window_bits": 16}),
        (ServerPerMessageDeflate, {"server_max_window_bits": 8}),
        (ServerPerMessageDeflate, {"server_max_window_bits": 16}),
        (ServerPerMessageDeflate, {"client_max_window_bits": 7}),
        (ServerPerMessageDeflate, {"client_max_window_bits": 16}),
        (ClientPerMessageDeflate, {"server_max_window_bits": 7}),
        (ClientPerMessageDeflate, {"server_max_window_bits": 16}),
        (ClientPerMessageDeflate, {"client_max_window_bits": 8}),
        (ClientPerMessageDeflate, {"client_max_window_bits": 16}),
    ],
)
def test_invalid_windows(factory: type, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        factory(**kwargs)


def test_valid_window_bounds() -> None:
    ServerPerMessageDeflate(server_max_window_bits=9, client_max_window_bits=8)
    ServerPerMessageDeflate(server_max_window_bits=15, client_max_window_bits=15)
    ClientPerMessageDeflate(server_max_window_bits=8, client_max_window_bits=9)
    ClientPerMessageDeflate(server_max_window_bits=15, client_max_window_bits=15)
    PerMessageDeflate(local_max_window_bits=9, remote_max_window_bits=8)


def test_repr() -> None:
    assert repr(PerMessageDeflate(local_no_context_takeover=True, remote_max_window_bits=10)) == (
        "PerMessageDeflate(local_no_context_takeover=True, remote_no_context_takeover=False, "
        "local_max_window_bits=15, remote_max_window_bits=10)"
    )


def test_with_compression() -> None:
    other = ServerPerMessageDeflate()
    factories = with_compression("deflate", [other], ServerPerMessageDeflate)
    assert len(factories) == 2
    assert isinstance(factories[0], ServerPerMessageDeflate)
    assert factories[1] is other
    assert with_compression(None, [other], ServerPerMessageDeflate) == [other]
    mine = ClientPerMessageDeflate(level=1)
    assert with_compression(mine, [], ClientPerMessageDeflate) == [mine]
    with pytest.raises(ValueError, match="unsupported compression"):
        with_compression("gzip", [], ClientPerMessageDeflate)
    with pytest.raises(ValueError, match="unsupported compression"):
        with_compression(ServerPerMessageDeflate(), [], ClientPerMessageDeflate)  # type: ignore[type-var]


# Messages through pairs of engines.


def test_rsv1_on_first_frame_only() -> None:
    client, server = pair(ServerPerMessageDeflate(threshold=0))
    server.send_binary(b"a" * 100, fin=False)
    server.send_continuation(b"b" * 100, fin=False)
    server.send_continuation(b"c" * 100, fin=True)
    out = server.data_to_send()
    assert [chunk[0] for chunk in out] == [RSV1 | OP_BINARY, OP_CONT, 0x80 | OP_CONT]
    assert feed(client, *out) == [b"a" * 100 + b"b" * 100 + b"c" * 100]


def test_rsv1_on_first_frame_only_client_side() -> None:
    client, server = pair()
    client.send_text("é" * 50, fin=False)
    client.send_continuation("è" * 50, fin=True)
    out = client.data_to_send()
    assert [chunk[0] for chunk in out] == [RSV1 | OP_TEXT, 0x80 | OP_CONT]
    assert all(chunk[1] & 0x80 for chunk in out)  # masked
    assert feed(server, *out) == ["é" * 50 + "è" * 50]


@pytest.mark.parametrize("fragmented", [False, True])
def test_send_without_compression(fragmented: bool) -> None:
    client, server = pair()
    message = b"x" * 1000
    if fragmented:
        client.send_binary(message[:500], fin=False, compress=False)
        client.send_continuation(message[500:], fin=True)
    else:
        client.send_binary(message, compress=False)
    out = client.data_to_send()
    assert b"".join(out) == b"".join(
        frame(opcode, part, fin=fin, mask=MASK)
        for opcode, part, fin in (
            [(OP_BINARY, message[:500], False), (OP_CONT, message[500:], True)]
            if fragmented
            else [(OP_BINARY, message, True)]
        )
    )
    assert feed(server, *out) == [message]
    # The next message is compressed again.
    client.send_binary(message)
    out = client.data_to_send()
    assert out[0][0] == 0x80 | RSV1 | OP_BINARY
    assert feed(server, *out) == [message]


@pytest.mark.parametrize(("size", "compressed"), [(0, False), (31, False), (32, True), (33, True)])
def test_threshold(size: int, compressed: bool) -> None:
    client, server = pair(ServerPerMessageDeflate(threshold=32))
    server.send_binary(b"z" * size)
    [out] = server.data_to_send()
    if compressed:
        assert out[0] == 0x80 | RSV1 | OP_BINARY
    else:
        assert out == frame(OP_BINARY, b"z" * size)
    assert feed(client, out) == [b"z" * size]


def test_threshold_skipped_for_fragmented_message() -> None:
    # The size of a fragmented message is unknown on its first frame.
    client, server = pair(ServerPerMessageDeflate(threshold=32))
    server.send_binary(b"z", fin=False)
    server.send_continuation(b"", fin=True)
    out = server.data_to_send()
    assert out[0][0] == RSV1 | OP_BINARY
    assert feed(client, *out) == [b"z"]


def test_empty_message_compressed() -> None:
    client, server = pair(
        ServerPerMessageDeflate(threshold=0), ClientPerMessageDeflate(threshold=0)
    )
    for _ in range(3):  # the second and third follow a sync flush
        server.send_text("")
        client.send_binary(b"")
        server_out, client_out = server.data_to_send(), client.data_to_send()
        assert server_out[0][0] == 0x80 | RSV1 | OP_TEXT
        assert client_out[0][0] == 0x80 | RSV1 | OP_BINARY
        assert feed(client, *server_out) == [""]
        assert feed(server, *client_out) == [b""]
    # The window still works afterwards.
    server.send_text("Hello")
    assert transfer(server, client) == ["Hello"]


def test_empty_fragments() -> None:
    client, server = pair(ServerPerMessageDeflate(threshold=0))
    server.send_text("", fin=False)
    server.send_continuation("Hello", fin=False)
    server.send_continuation("", fin=False)
    server.send_continuation("", fin=True)
    assert transfer(server, client) == ["Hello"]


def test_control_frames_never_compressed() -> None:
    client, server = pair(
        ServerPerMessageDeflate(threshold=0), ClientPerMessageDeflate(threshold=0)
    )
    client.send_ping(b"ping" * 10)
    client.send_pong(b"pong" * 10)
    assert client.data_to_send() == [
        frame(OP_PING, b"ping" * 10, mask=MASK),
        frame(OP_PONG, b"pong" * 10, mask=MASK),
    ]
    server.send_ping(b"ping" * 10)
    server.send_pong(b"pong" * 10)
    server.send_close(1000, "bye bye bye bye")
    assert server.data_to_send() == [
        frame(OP_PING, b"ping" * 10),
        frame(OP_PONG, b"pong" * 10),
        frame(OP_CLOSE, Close(1000, "bye bye bye bye").serialize()),
    ]
    # The engine answers a ping with an uncompressed pong too.
    client.receive_data(frame(OP_PING, b"x" * 50))
    assert client.events_received() == [Ping(b"x" * 50)]
    assert client.data_to_send() == [frame(OP_PONG, b"x" * 50, mask=MASK)]
    server.receive_data(frame(OP_PONG, b"y", mask=PEER_MASK))
    assert server.events_received() == [Pong(b"y")]


def test_rsv1_on_continuation_frame() -> None:
    client, _ = pair()
    client.receive_data(frame(OP_TEXT, bytes.fromhex("f2 48 cd"), fin=False, rsv=RSV1))
    client.receive_data(frame(OP_CONT, bytes.fromhex("c9 c9 07 00"), rsv=RSV1))
    assert_failed(client, 1002, "RSV bits set on a continuation frame")


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_rsv1_on_control_frame(opcode: int) -> None:
    _, server = pair()
    server.receive_data(frame(opcode, b"", rsv=RSV1, mask=PEER_MASK))
    assert_failed(server, 1002, "RSV bits set on a control frame")


@pytest.mark.parametrize("rsv", [0x20, 0x10, 0x60])
def test_other_rsv_bits_refused(rsv: int) -> None:
    client, _ = pair()
    client.receive_data(frame(OP_BINARY, deflate_raw(b"x"), rsv=rsv))
    assert_failed(client, 1002, "RSV bits set without an extension that defines them")


def test_rsv1_without_extension() -> None:
    proto = Protocol(is_client=True)
    proto.receive_data(HELLO)
    assert_failed(proto, 1002, "RSV bits set without an extension that defines them")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            b"\xff\xff\xff",
            "invalid compressed data: Error -3 while decompressing data: invalid block type",
        ),
        # A distance beyond the start of the stream (back 1 byte, nothing yet).
        (
            bytes.fromhex("02 02 00"),
            "invalid compressed data: Error -3 while decompressing "
            "data: invalid distance too far back",
        ),
    ],
)
def test_undecodable_data(payload: bytes, reason: str) -> None:
    client, _ = pair()
    client.receive_data(frame(OP_BINARY, payload, rsv=RSV1))
    assert_failed(client, 1007, reason)


def test_undecodable_data_in_fragments() -> None:
    _, server = pair()
    flushed = deflate_raw(b"Hel") + b"\x00\x00\xff\xff"  # a fragment ends with a sync flush
    server.receive_data(frame(OP_TEXT, flushed, fin=False, rsv=RSV1, mask=PEER_MASK))
    assert server.parser_exc is None
    server.receive_data(frame(OP_CONT, b"\xff\xff\xff", mask=PEER_MASK))
    assert_failed(
        server,
        1007,
        "invalid compressed data: Error -3 while decompressing data: invalid block type",
    )


def test_invalid_utf8_after_inflating() -> None:
    client, _ = pair()
    client.receive_data(frame(OP_TEXT, deflate_raw(b"ok \xff"), rsv=RSV1))
    assert client.parser_exc is not None
    assert client.parser_exc.code == 1007


@pytest.mark.parametrize(
    ("server_factory", "client_factory"),
    [
        pytest.param(
            ServerPerMessageDeflate(server_no_context_takeover=True),
            ClientPerMessageDeflate(),
            id="server-nct",
        ),
        pytest.param(
            ServerPerMessageDeflate(),
            ClientPerMessageDeflate(client_no_context_takeover=True),
            id="client-nct-offered",
        ),
        pytest.param(
            ServerPerMessageDeflate(client_no_context_takeover=True),
            ClientPerMessageDeflate(),
            id="client-nct-requested",
        ),
        pytest.param(
            ServerPerMessageDeflate(),
            ClientPerMessageDeflate(server_no_context_takeover=True),
            id="server-nct-requested",
        ),
    ],
)
def test_no_context_takeover_frees_zlib(
    server_factory: ServerPerMessageDeflate, client_factory: ClientPerMessageDeflate
) -> None:
    client, server = pair(server_factory, client_factory)
    client_ext, server_ext = deflate_of(client), deflate_of(server)
    server_nct = server_ext.local_no_context_takeover
    client_nct = client_ext.local_no_context_takeover
    assert server_nct is client_ext.remote_no_context_takeover
    assert client_nct is server_ext.remote_no_context_takeover
    assert server_nct or client_nct
    # An idle connection holds no zlib state.
    assert client_ext._encoder is None and client_ext._decoder is None
    assert server_ext._encoder is None and server_ext._decoder is None
    # Each is over the threshold: all are compressed.
    messages = [f"a message long enough to compress, number {i}: " + "abc" * i for i in range(30)]
    for message in messages:
        server.send_text(message)
        assert transfer(server, client) == [message]
        client.send_text(message)
        assert transfer(client, server) == [message]
        # Freed after each message on the side that resets, kept on the other.
        assert (server_ext._encoder is None) is server_nct
        assert (client_ext._decoder is None) is server_nct
        assert (client_ext._encoder is None) is client_nct
        assert (server_ext._decoder is None) is client_nct


def test_no_context_takeover_frees_zlib_after_fragmented_message() -> None:
    client, server = pair(
        ServerPerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True)
    )
    server_ext, client_ext = deflate_of(server), deflate_of(client)
    server.send_text("Hello " * 10, fin=False)
    assert server_ext._encoder is not None  # in use until the message ends
    server.send_continuation("world " * 10, fin=True)
    assert server_ext._encoder is None
    out = server.data_to_send()
    client.receive_data(out[0])
    assert client_ext._decoder is not None
    client.receive_data(out[1])
    assert client_ext._decoder is None
    assert client.events_received() == ["Hello " * 10 + "world " * 10]


def test_context_takeover_shrinks_repeated_messages() -> None:
    client, server = pair()
    message = '{"user": "alice", "action": "update", "items": [1, 2, 3, 4, 5], "ok": true}' * 3
    sizes = []
    for _ in range(3):
        server.send_text(message)
        [out] = server.data_to_send()
        sizes.append(len(out))
        assert feed(client, out) == [message]
    assert sizes[1] * 4 < sizes[0]
    assert sizes[2] == sizes[1]
    assert deflate_of(server)._encoder is not None
    assert deflate_of(client)._decoder is not None


def test_no_context_takeover_does_not_shrink_repeated_messages() -> None:
    client, server = pair(ServerPerMessageDeflate(server_no_context_takeover=True))
    message = "the same message " * 10
    server.send_text(message)
    server.send_text(message)
    first, second = server.data_to_send()
    assert first == second
    assert feed(client, first, second) == [message, message]


def test_uncompressed_message_keeps_window_and_state() -> None:
    client, server = pair(ServerPerMessageDeflate(server_no_context_takeover=True))
    server.send_text("short")  # under the threshold: zlib is not even allocated
    assert deflate_of(server)._encoder is None
    assert transfer(server, client) == ["short"]
    assert deflate_of(client)._decoder is None


# Round trips with random settings, messages, fragmentation and chunking.

window_bits = st.integers(min_value=9, max_value=15)
messages_strategy = st.lists(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.builds(lambda text, times: text * times, st.text(max_size=20), st.integers(0, 60)),
        st.builds(lambda data, times: data * times, st.binary(max_size=20), st.integers(0, 60)),
    ),
    max_size=8,
)


@settings(deterministic, max_examples=100)
@given(
    sender_bits=window_bits,
    extra_bits=st.integers(min_value=0, max_value=6),
    local_nct=st.booleans(),
    remote_nct=st.booleans(),
    sender_is_client=st.booleans(),
    threshold=st.sampled_from([0, 1, 32, 100]),
    messages=messages_strategy,
    data=st.data(),
)
def test_round_trip(
    *,
    sender_bits: int,
    extra_bits: int,
    local_nct: bool,
    remote_nct: bool,
    sender_is_client: bool,
    threshold: int,
    messages: list[str | bytes],
    data: st.DataObject,
) -> None:
    # The receiver may drop its decoder only when the sender resets its encoder.
    sender = Protocol(
        is_client=sender_is_client,
        extensions=[
            PerMessageDeflate(
                local_no_context_takeover=local_nct,
                local_max_window_bits=sender_bits,
                threshold=threshold,
            )
        ],
    )
    receiver = Protocol(
        is_client=not sender_is_client,
        max_message_size=None,
        extensions=[
            PerMessageDeflate(
                remote_no_context_takeover=local_nct and remote_nct,
                remote_max_window_bits=min(15, sender_bits + extra_bits),
            )
        ],
    )
    for message in messages:
        encoded = message.encode() if isinstance(message, str) else message
        cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=3)))
        pieces = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
        compress = data.draw(st.booleans())
        for index, piece in enumerate(pieces):
            fin = index == len(pieces) - 1
            if index > 0:
                sender.send_continuation(piece, fin=fin)
            elif isinstance(message, str):
                sender.send_text(piece, fin=fin, compress=compress)
            else:
                sender.send_binary(piece, fin=fin, compress=compress)
    stream = b"".join(sender.data_to_send())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed(receiver, *chunks) == messages
    assert receiver.parser_exc is None


# Deflate bombs: inflating is bounded by max_message_size.


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    """1 GiB of zeros deflated into one message payload (about 1 MB)."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    parts = [encoder.compress(chunk) for _ in range(1024)]
    parts.append(encoder.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


def server_with_deflate(max_message_size: int | None) -> Protocol:
    return Protocol(
        is_client=False, max_message_size=max_message_size, extensions=[PerMessageDeflate()]
    )


def test_bomb_in_one_frame(gigabyte_bomb: bytes) -> None:
    assert len(gigabyte_bomb) < 2 * MiB  # the frame passes the header check
    server = server_with_deflate(2 * MiB)
    data = frame(OP_BINARY, gigabyte_bomb, rsv=RSV1, mask=PEER_MASK)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        server.receive_data(data)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # Measured (CPython 3.11, zlib 1.2.13): a peak of 6.0 MiB (6,320,263
    # bytes) above the baseline for a 1,043,639-byte payload: the unmasked
    # copy of the payload, zlib's unconsumed input, 2 MiB + 1 of output and
    # the output buffer's growth; not the 1 GiB that the payload inflates to.
    assert peak < len(gigabyte_bomb) + 16 * MiB, peak
    assert isinstance(server.parser_exc, PayloadTooBig)
    assert_failed(
        server,
        1009,
        f"message exceeds the limit of {2 * MiB} bytes once decompressed",
    )


def fragment_bomb(count: int) -> list[bytes]:
    """The payloads of ``count`` fragments, each inflating to 512 KiB of zeros."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(512 * KiB)
    return [encoder.compress(chunk) + encoder.flush(zlib.Z_SYNC_FLUSH) for _ in range(count)]


def fragment_frames(payloads: list[bytes], *, fin: bool) -> list[bytes]:
    """One message's frames; when ``fin``, the last one ends it (trailer removed)."""
    if fin:
        payloads = [*payloads[:-1], payloads[-1][:-4]]
    last = len(payloads) - 1
    return [
        frame(
            OP_CONT if index else OP_BINARY,
            payload,
            fin=fin and index == last,
            rsv=0 if index else RSV1,
            mask=PEER_MASK,
        )
        for index, payload in enumerate(payloads)
    ]


def test_bomb_in_fragments_fails_once_past_limit() -> None:
    payloads = fragment_bomb(5)
    assert all(len(payload) < KiB for payload in payloads)
    server = server_with_deflate(2 * MiB)
    frames = fragment_frames(payloads, fin=False)
    for data in frames[:4]:
        server.receive_data(data)
        assert server.parser_exc is None  # 2 MiB so far: not over the limit yet
    server.receive_data(frames[4])
    assert isinstance(server.parser_exc, PayloadTooBig)
    assert_failed(server, 1009, f"message exceeds the limit of {2 * MiB} bytes once decompressed")


def test_bomb_in_fragments_exactly_at_limit() -> None:
    server = server_with_deflate(2 * MiB)
    assert feed(server, *fragment_frames(fragment_bomb(4), fin=True)) == [bytes(2 * MiB)]
    assert server.parser_exc is None


def test_limit_off_by_one() -> None:
    server = server_with_deflate(1000)
    server.receive_data(frame(OP_BINARY, deflate_raw(bytes(1000)), rsv=RSV1, mask=PEER_MASK))
    assert server.events_received() == [bytes(1000)]
    server.receive_data(frame(OP_BINARY, deflate_raw(bytes(1001)), rsv=RSV1, mask=PEER_MASK))
    assert_failed(server, 1009, "message exceeds the limit of 1000 bytes once decompressed")


def test_bomb_without_limit_inflates_whole() -> None:
    server = server_with_deflate(None)
    assert feed(server, *fragment_frames(fragment_bomb(8), fin=True)) == [bytes(4 * MiB)]
    server.receive_data(frame(OP_BINARY, deflate_raw(bytes(3 * MiB)), rsv=RSV1, mask=PEER_MASK))
    assert server.events_received() == [bytes(3 * MiB)]
    assert server.parser_exc is None


# decode_stream(): inflating a streamed message in bounded pieces.


def test_decode_stream_bounds_each_piece_and_keeps_the_context() -> None:
    client, server = pair()
    extension = deflate_of(client)
    for text in [b"stream " * 10_000, b"stream " * 10]:
        server.send_binary(text)
        [data] = server.data_to_send()
        header = parse_frame_header(data, 0)
        assert header is not None
        compressed = data[header[4] :]
        pieces = list(extension.decode_stream(compressed, rsv=RSV1, fin=True, chunk_size=1000))
        assert b"".join(pieces) == text
        assert all(len(piece) <= 1000 for piece in pieces)


def test_decode_stream_passes_uncompressed_messages() -> None:
    extension = deflate_of(rfc_receiver())
    assert list(extension.decode_stream(b"raw", rsv=0, fin=True, chunk_size=1)) == [b"raw"]


def test_decode_stream_refuses_invalid_data() -> None:
    extension = deflate_of(rfc_receiver())
    with pytest.raises(ProtocolError, match="invalid compressed data") as info:
        list(extension.decode_stream(b"\xff\xff", rsv=RSV1, fin=True, chunk_size=10))
    assert info.value.code == 1007
