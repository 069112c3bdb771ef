"""permessage-deflate (RFC 7692): message compression, negotiated per connection.

Memory is the cost users notice, so three rules hold here:

1. Compression state is allocated on first use and, without context takeover,
   freed after each message: an idle connection holds no zlib state at all.
2. The defaults cap both windows at 2^12 bytes with memLevel 5 (about 40 KiB
   per busy connection instead of 300 KiB with zlib's defaults); browsers'
   offers let the server cap the client's window too.
3. Inflating is bounded: each call to zlib gets the output room left under
   ``max_message_size``, so a small frame that would inflate past it fails
   with 1009 after at most that much output, whatever the ratio.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Hashable, Iterator, Sequence
from typing import TypeVar

from ...exceptions import InvalidHandshake, PayloadTooBig, ProtocolError
from ..headers import ExtensionParameter
from .base import ClientExtensionFactory, Extension, ServerExtensionFactory

__all__ = [
    "ClientPerMessageDeflate",
    "PerMessageDeflate",
    "ServerPerMessageDeflate",
    "with_compression",
]

NAME = "permessage-deflate"
RSV1 = 0x40

# RFC 7692 section 7.2.1: a message's compressed data, once flushed, ends with
# these 4 bytes (an empty stored block); they are removed on send and
# restored on receive.
_TRAILER = b"\x00\x00\xff\xff"

# Defaults: a 4 KiB window finds most of the repetition in chat and JSON
# messages; memLevel 5 keeps the compressor's hash tables at 16 KiB.
DEFAULT_WINDOW_BITS = 12
DEFAULT_MEM_LEVEL = 5
DEFAULT_LEVEL = 6
# Deflate adds a few bytes of framing: messages below this size rarely shrink.
DEFAULT_THRESHOLD = 32

_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))  # no leading zeros
_PARAMS = (
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
)


class PerMessageDeflate(Extension):
    """The negotiated permessage-deflate of one connection.

    "Local" is what this side compresses, "remote" what it inflates.

    Args:
        local_no_context_takeover: reset the compressor after each message.
        remote_no_context_takeover: the peer resets its compressor after each
            message, so the decompressor can be dropped between messages.
        local_max_window_bits: the compressor's window, 9 to 15.
        remote_max_window_bits: the decompressor's window, 8 to 15.
        level: zlib's compression level, 0 (none) to 9 (smallest, slowest).
        mem_level: zlib's memory level, 1 to 9.
        threshold: messages shorter than this are sent uncompressed.
    """

    name = NAME
    rsv_bits = RSV1

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        level: int = DEFAULT_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        if not 9 <= local_max_window_bits <= 15:
            # zlib cannot deflate with an 8-bit window (RFC 7692 allows one).
            raise ValueError(f"local_max_window_bits must be 9 to 15, not {local_max_window_bits}")
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.level = level
        self.mem_level = mem_level
        self.threshold = threshold
        self._decoder: zlib._Decompress | None = None
        self._encoder: zlib._Compress | None = None
        self._compressing = False  # whether the message being sent is compressed

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    def decode(self, data: bytes, *, rsv: int, fin: bool, max_size: int | None) -> bytes:
        """Inflate a piece of a compressed message, within ``max_size`` bytes of output."""
        if not rsv & RSV1:
            return data
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(-self.remote_max_window_bits)
        # zlib's max_length: 0 means no limit; one byte over the limit tells
        # "too big" from "exactly the limit".
        room = 0 if max_size is None else max_size + 1
        try:
            output = decoder.decompress(data, room)
            if fin and not decoder.unconsumed_tail:
                left = 0 if max_size is None else room - len(output)
                if max_size is None or left > 0:
                    output += decoder.decompress(_TRAILER, left)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}", 1007) from None
        if max_size is not None and (len(output) > max_size or decoder.unconsumed_tail):
            raise PayloadTooBig(
                f"compressed message inflates beyond the limit of {max_size} more bytes",
                max_size + 1,
                max_size,
            )
        # A message ending with BFINAL set (RFC 7692 section 7.2.3.4) ends the
        # stream: the next message starts a new one.
        if fin and (self.remote_no_context_takeover or decoder.eof):
            self._decoder = None
        return output

    def decode_stream(
        self, data: bytes, *, rsv: int, fin: bool, chunk_size: int
    ) -> Iterator[bytes]:
        """Inflate a piece of a streamed message, at most ``chunk_size`` bytes at a time.

        zlib's ``max_length`` bounds each output; the input it did not use yet
        waits in ``unconsumed_tail`` until the consumer asks for more.
        """
        if not rsv & RSV1:
            yield data
            return
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(-self.remote_max_window_bits)
        yield from _inflate(decoder, data, chunk_size)
        if fin:
            yield from _inflate(decoder, _TRAILER, chunk_size)
            if self.remote_no_context_takeover or decoder.eof:
                self._decoder = None

    def encode(self, data: bytes, *, first: bool, fin: bool, compress: bool) -> tuple[int, bytes]:
        """Deflate a frame's payload when its message is compressed."""
        if first:
            # Decided for the whole message on its first frame: RSV1 marks it.
            self._compressing = compress and (not fin or len(data) >= self.threshold)
        if not self._compressing:
            return 0, data
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = zlib.compressobj(
                self.level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
            )
        output = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            output = output[:-4]  # the trailer, that a sync flush always ends with
            if self.local_no_context_takeover:
                self._encoder = None
        return (RSV1 if first else 0), output

    def prepared_form(self) -> Hashable | None:
        """Without context takeover, the output depends only on the settings."""
        if not self.local_no_context_takeover:
            return None
        return (NAME, self.local_max_window_bits, self.level, self.mem_level, self.threshold)

    def encode_prepared(self, data: bytes, *, compress: bool) -> tuple[int, bytes]:
        """Deflate a whole message with a fresh compressor (RFC 7692 section 7.2.1)."""
        if not compress or len(data) < self.threshold:
            return 0, data
        encoder = zlib.compressobj(
            self.level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
        )
        return RSV1, (encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _parse(params: Sequence[ExtensionParameter], *, response: bool) -> dict[str, int | None]:
    """Check the parameters of an offer or a response (RFC 7692 section 7).

    Returns:
        The parameters by name, window sizes as ints.

    Raises:
        InvalidHandshake: for an unknown or repeated parameter or a bad value.
    """
    result: dict[str, int | None] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise InvalidHandshake(f"unknown {NAME} parameter {name!r}")
        if name in result:
            raise InvalidHandshake(f"repeated {NAME} parameter {name!r}")
        if name.endswith("no_context_takeover"):
            if value is not None:
                raise InvalidHandshake(f"{NAME} parameter {name} takes no value")
            result[name] = None
            continue
        # A client may offer client_max_window_bits without a value.
        if value is None and (response or name == "server_max_window_bits"):
            raise InvalidHandshake(f"{NAME} parameter {name} needs a value")
        if value is not None and value not in _WINDOW_BITS:
            raise InvalidHandshake(f"invalid value {value!r} for {NAME} parameter {name}")
        result[name] = None if value is None else int(value)
    return result


@dataclasses.dataclass(frozen=True)
class _Settings:
    level: int = DEFAULT_LEVEL
    mem_level: int = DEFAULT_MEM_LEVEL
    threshold: int = DEFAULT_THRESHOLD

    def extension(
        self, local_nct: bool, remote_nct: bool, local_bits: int, remote_bits: int
    ) -> PerMessageDeflate:
        return PerMessageDeflate(
            local_no_context_takeover=local_nct,
            remote_no_context_takeover=remote_nct,
            local_max_window_bits=local_bits,
            remote_max_window_bits=remote_bits,
            level=self.level,
            mem_level=self.mem_level,
            threshold=self.threshold,
        )


class ServerPerMessageDeflate(ServerExtensionFactory):
    """Accept permessage-deflate offers on a server.

    Each offer is taken in the client's order; the first one this server can
    honour is accepted, and answered with the parameters in force. An offer it
    cannot honour or that is malformed is declined (RFC 7692 section 5), never
    fatal: the connection then opens without compression.

    Args:
        server_no_context_takeover: reset the server's compressor after each
            message (less memory between messages, lower ratio).
        client_no_context_takeover: ask the client to do the same, which lets
            the server drop its decompressor between messages.
        server_max_window_bits: the server's compression window, 9 to 15; an
            offer may lower it. Always announced when under 15.
        client_max_window_bits: the window asked of clients that support the
            parameter (browsers do), 8 to 15; ``None`` leaves theirs alone.
        level: zlib's compression level.
        mem_level: zlib's memory level.
        threshold: messages shorter than this many bytes go uncompressed.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int = DEFAULT_WINDOW_BITS,
        client_max_window_bits: int | None = DEFAULT_WINDOW_BITS,
        level: int = DEFAULT_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        if not 9 <= server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be 9 to 15 (zlib cannot deflate with 8)")
        if client_max_window_bits is not None and not 8 <= client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be 8 to 15")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.settings = _Settings(level, mem_level, threshold)

    def negotiate(
        self, params: Sequence[ExtensionParameter]
    ) -> tuple[list[ExtensionParameter], Extension] | None:
        """Answer one offer, or decline it (``None``)."""
        try:
            offer = _parse(params, response=False)
        except InvalidHandshake:
            return None  # RFC 7692 section 5: decline a malformed offer
        answer: list[ExtensionParameter] = []

        server_nct = self.server_no_context_takeover or "server_no_context_takeover" in offer
        if server_nct:
            answer.append(("server_no_context_takeover", None))
        # The client's promise (in its offer) or our request: either way the
        # client compresses each message alone.
        client_nct = self.client_no_context_takeover or "client_no_context_takeover" in offer
        if client_nct:
            answer.append(("client_no_context_takeover", None))

        server_bits = self.server_max_window_bits
        requested = offer.get("server_max_window_bits")
        if requested is not None:
            if requested < 9:
                return None  # zlib cannot deflate with an 8-bit window
            server_bits = min(server_bits, requested)
        if requested is not None or server_bits < 15:
            answer.append(("server_max_window_bits", str(server_bits)))

        client_bits = 15
        if "client_max_window_bits" in offer and self.client_max_window_bits is not None:
            client_bits = min(self.client_max_window_bits, offer["client_max_window_bits"] or 15)
            answer.append(("client_max_window_bits", str(client_bits)))

        extension = self.settings.extension(server_nct, client_nct, server_bits, client_bits)
        return answer, extension


class ClientPerMessageDeflate(ClientExtensionFactory):
    """Offer permessage-deflate from a client, and apply the server's answer.

    The default offer is the browsers' one, ``permessage-deflate;
    client_max_window_bits``. An answer that names a parameter the offer did
    not allow fails the handshake (RFC 7692 section 7.1).

    Args:
        server_no_context_takeover: ask the server to reset its compressor after
            each message.
        client_no_context_takeover: promise to reset ours after each message.
        server_max_window_bits: ask the server for at most this window, 8 to 15.
        client_max_window_bits: ``True`` lets the server choose our window (the
            browsers' offer); an int also caps it ourselves, 9 to 15; ``False``
            does not offer the parameter.
        level: zlib's compression level.
        mem_level: zlib's memory level.
        threshold: messages shorter than this many bytes go uncompressed.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: bool | int = True,
        level: int = DEFAULT_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        if server_max_window_bits is not None and not 8 <= server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be 8 to 15")
        if not isinstance(client_max_window_bits, bool) and not 9 <= client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be 9 to 15 (or True or False)")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.settings = _Settings(level, mem_level, threshold)

    def offer(self) -> list[ExtensionParameter]:
        """Return the parameters of the offer."""
        params: list[ExtensionParameter] = []
        if self.server_no_context_takeover:
            params.append(("server_no_context_takeover", None))
        if self.client_no_context_takeover:
            params.append(("client_no_context_takeover", None))
        if self.server_max_window_bits is not None:
            params.append(("server_max_window_bits", str(self.server_max_window_bits)))
        if self.client_max_window_bits is True:
            params.append(("client_max_window_bits", None))
        elif self.client_max_window_bits is not False:
            params.append(("client_max_window_bits", str(self.client_max_window_bits)))
        return params

    def accept(self, params: Sequence[ExtensionParameter]) -> Extension:
        """Check the server's answer and build the extension it sets up."""
        answer = _parse(params, response=True)
        if self.server_no_context_takeover and "server_no_context_takeover" not in answer:
            raise InvalidHandshake("server did not accept server_no_context_takeover")
        server_bits = answer.get("server_max_window_bits") or 15
        if self.server_max_window_bits is not None and server_bits > self.server_max_window_bits:
            raise InvalidHandshake(
                f"server_max_window_bits={server_bits} exceeds the "
                f"{self.server_max_window_bits} requested"
            )
        offered = self.client_max_window_bits
        client_bits = 15 if isinstance(offered, bool) else offered
        if "client_max_window_bits" in answer:
            if offered is False:
                raise InvalidHandshake("server set client_max_window_bits, which was not offered")
            client_bits = min(client_bits, answer["client_max_window_bits"] or 15)
            if client_bits < 9:
                raise InvalidHandshake(
                    "server asked for client_max_window_bits=8, which zlib cannot deflate with"
                )
        return self.settings.extension(
            self.client_no_context_takeover or "client_no_context_takeover" in answer,
            "server_no_context_takeover" in answer,
            client_bits,
            server_bits,
        )


Factory = TypeVar("Factory", ClientExtensionFactory, ServerExtensionFactory)


def with_compression(
    compression: str | Factory | None, extensions: Sequence[Factory], default: type[Factory]
) -> list[Factory]:
    """Put the factory that ``compression`` names first among ``extensions``.

    ``compression`` is ``"deflate"`` (a ``default()`` factory), a factory, or
    ``None`` for no compression.
    """
    if compression is None:
        return list(extensions)
    if compression == "deflate":
        compression = default()
    if not isinstance(compression, default):
        raise ValueError(f"unsupported compression: {compression!r}")
    factories: list[Factory] = [compression]
    factories.extend(extensions)
    return factories


def _inflate(decoder: zlib._Decompress, data: bytes, chunk_size: int) -> Iterator[bytes]:
    # Until the input is used up and zlib has no output left for a full
    # chunk (a full one may leave more inside zlib, with no input left).
    while True:
        try:
            output = decoder.decompress(data, chunk_size)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}", 1007) from None
        if output:
            yield output
        data = decoder.unconsumed_tail
        if not data and len(output) < chunk_size:
            return
