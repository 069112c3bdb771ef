"""Messages received as streams: a start, bounded chunks of payload, an end.

A :class:`~rapidws.core.protocol.Protocol` in streaming mode
(:attr:`~rapidws.core.protocol.Protocol.streaming`) hands a message that needs
it out in pieces, so that an upload is never held whole in memory and an
answer can start before the last byte arrived:

1. :class:`MessageStart` tells the type, before any payload.
2. :class:`MessageChunk` events carry the payload as it arrives, decoded
   (inflated by permessage-deflate), each at most ``chunk_size`` bytes (a text
   chunk up to 3 more: the start of a code point that the previous one cut).
   A text chunk is a ``str`` cut only between code points; the UTF-8 is validated as
   the bytes arrive, so a bad byte fails the connection with 1007 at once
   (RFC 6455 section 8.1), and a message that ends mid-code-point too.
3. :class:`MessageEnd` ends the message.

A compressed message may inflate a thousandfold: its output comes a few
chunks at a time (per input, whether one frame or many small ones bring
them), then parsing pauses
(:attr:`~rapidws.core.protocol.Protocol.inflating`) until the I/O layer calls
:meth:`~rapidws.core.protocol.Protocol.resume_parsing`, once the consumer took
them. Memory stays bounded without any size limit.

An uncompressed message that is one frame of at most ``chunk_size`` bytes,
arriving whole, still comes out as one ``str`` or ``bytes`` event (the fast
path): an I/O layer treats it as a stream of one chunk. :attr:`max_stream_size
<rapidws.core.protocol.Protocol.max_stream_size>` limits a streamed message,
in place of ``max_message_size`` (1009 beyond, checked on each frame header
and, once inflated, on each chunk).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..exceptions import PayloadTooBig, ProtocolError
from ..speedups import Utf8Validator

if TYPE_CHECKING:
    from .extensions.base import Extension

__all__ = ["STREAM_CHUNK_SIZE", "MessageChunk", "MessageEnd", "MessageStart", "StreamDecoder"]

#: The default largest chunk, in bytes: large enough that a chunk costs little
#: next to its bytes, small enough to stay in the CPU cache while it is used.
STREAM_CHUNK_SIZE = 64 * 1024


@dataclasses.dataclass(slots=True)
class MessageStart:
    """A streamed message begins; ``text`` tells its type (``str`` chunks or ``bytes``)."""

    text: bool


@dataclasses.dataclass(slots=True)
class MessageChunk:
    """A piece of a streamed message's payload: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


@dataclasses.dataclass(slots=True)
class MessageEnd:
    """A streamed message ends: every chunk was delivered."""


_END = MessageEnd()


class StreamDecoder:
    """The state of the streamed message being received; one per connection.

    The protocol unmasks and inflates the payload; this turns the decoded bytes
    into chunks, checking the size and, for text, the UTF-8.

    Args:
        chunk_size: the largest chunk, in bytes.
        max_size: the largest message, in decoded bytes; ``None`` for no limit.
    """

    __slots__ = ("_size", "_tail", "_text", "_utf8", "active", "chunk_size", "max_size")

    def __init__(self, chunk_size: int = STREAM_CHUNK_SIZE, max_size: int | None = None) -> None:
        self.chunk_size = chunk_size
        self.max_size = max_size
        #: Whether a message is being streamed (between start and end).
        self.active = False
        self._text = False
        self._size = 0
        self._utf8 = Utf8Validator()
        # The bytes of a code point cut by a chunk's end, held for the next.
        self._tail = b""

    def start(self, text: bool) -> MessageStart:
        """Begin a message; return its start event."""
        self.active = True
        self._text = text
        self._size = 0
        self._tail = b""
        self._utf8.reset()
        return MessageStart(text)

    def data(self, data: bytes) -> str | bytes:
        """Take decoded payload; return it as a chunk (``""`` or ``b""``: nothing to hand out).

        Raises:
            PayloadTooBig: past ``max_size``.
            ProtocolError: for invalid UTF-8 in a text message (1007).
        """
        self._size += len(data)
        if self.max_size is not None and self._size > self.max_size:
            raise PayloadTooBig(
                f"streamed message exceeds the limit of {self.max_size} bytes",
                self._size,
                self.max_size,
            )
        if not self._text:
            return data
        if self._tail:
            data = self._tail + data
        cut = _code_point_end(data)
        try:
            # decode() validates the whole code points (RFC 3629): one pass
            # over the bytes, not a validator's and then decode()'s.
            text = data[:cut].decode() if cut < len(data) else data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 in text message", 1007) from None
        tail = data[cut:]
        if tail:
            # The start of the cut code point fails at once if it cannot begin
            # a valid one (an overlong, a surrogate, past U+10FFFF).
            self._utf8.reset()
            if not self._utf8.validate(tail):
                raise ProtocolError("invalid UTF-8 in text message", 1007)
        self._tail = tail
        return text

    def end(self) -> MessageEnd:
        """End the message; return its end event.

        Raises:
            ProtocolError: when a text message ends mid-code-point (1007).
        """
        self.active = False
        if self._tail:
            self._tail = b""
            raise ProtocolError("invalid UTF-8 in text message: it ends mid-code-point", 1007)
        return _END


def _code_point_end(data: bytes) -> int:
    """Return where the last whole code point of valid UTF-8 ``data`` ends."""
    # A sequence's lead byte is within the last 4 bytes; continuation bytes
    # are 0b10xxxxxx (RFC 3629 section 3).
    size = len(data)
    for back in range(1, min(size, 4) + 1):
        byte = data[size - back]
        if byte & 0xC0 != 0x80:
            if byte < 0x80:
                length = 1
            elif byte >= 0xF0:
                length = 4
            elif byte >= 0xE0:
                length = 3
            else:
                length = 2
            return size if back >= length else size - back
    return size


def decode_pieces(
    extensions: list[Extension], data: bytes, *, rsv: int, fin: bool, chunk_size: int
) -> Iterator[bytes]:
    """Decode a piece of payload through ``extensions``, in bounded pieces.

    Each extension's :meth:`~rapidws.core.extensions.base.Extension.decode_stream`
    runs in turn (the last negotiated first, RFC 6455 section 9), lazily:
    inflating a small piece into a large output never holds the whole output.
    """
    pieces: Iterable[tuple[bytes, bool]] = ((data, fin),)
    for extension in reversed(extensions):
        pieces = _decoded(extension, pieces, rsv, chunk_size)
    for piece, _ in pieces:
        yield piece


def _decoded(
    extension: Extension, pieces: Iterable[tuple[bytes, bool]], rsv: int, chunk_size: int
) -> Iterator[tuple[bytes, bool]]:
    # One extension's output, each piece with whether it ends the message:
    # the next extension must see ``fin`` on the last piece only.
    for data, fin in pieces:
        held: bytes | None = None
        for out in extension.decode_stream(data, rsv=rsv, fin=fin, chunk_size=chunk_size):
            if held is not None:
                yield held, False
            held = out
        if held is not None:
            yield held, fin
        elif fin:
            yield b"", True
