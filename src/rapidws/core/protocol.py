"""The sans-I/O WebSocket engine shared by clients and servers (RFC 6455).

Rules that the code below keeps:

1. Bytes go in through :meth:`Protocol.receive_data` and :meth:`receive_eof`;
   events come out of :meth:`events_received`; bytes to write come out of
   :meth:`data_to_send`, where ``b""`` asks the I/O layer to half-close.
2. A peer's fault never raises to the I/O layer. The engine records it in
   :attr:`parser_exc`, sends a close frame with the matching code, and ignores
   whatever the peer sends after (RFC 6455 section 7.1.7).
3. Every frame is judged on its header, before its payload is buffered: a
   forbidden opcode, RSV bit, mask bit or length fails the connection at once.
4. Payloads are consumed as they arrive, so a large frame is never held twice
   and invalid UTF-8 is caught at its first bad byte, even mid-frame.
5. Messages come out as ``str`` (text) or ``bytes`` (binary) with no wrapper
   object; control frames come out as :class:`Ping`, :class:`Pong` and
   :class:`~rapidws.core.frames.Close`. In streaming mode (:attr:`Protocol.streaming`)
   a message that needs it comes out in bounded pieces instead, as
   :mod:`rapidws.core.stream` describes.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Union

from ..exceptions import InvalidState, PayloadTooBig, ProtocolError
from ..speedups import (
    JOIN_LIMIT,
    MessageBuffer,
    ProtocolCore,
    Utf8Validator,
    append_unmasked,
    apply_mask,
    encode_frame,
    parse_frame_header,
    read_messages,
    set_open_state,
)
from .frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Close, frame_header
from .limits import MAX_MESSAGE_SIZE
from .prepared import PreparedMessage, wire_form
from .stream import (
    STREAM_CHUNK_SIZE,
    MessageChunk,
    MessageEnd,
    MessageStart,
    StreamDecoder,
    decode_pieces,
)

if TYPE_CHECKING:
    from .extensions.base import Extension
    from .http11 import Request, Response

__all__ = ["Event", "Ping", "Pong", "Protocol", "State", "generate_mask"]


class State(enum.IntEnum):
    """The state of a WebSocket connection (RFC 6455 section 4 and 7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


CONNECTING, OPEN, CLOSING, CLOSED = State
set_open_state(OPEN)  # ProtocolCore's common case is for open connections


class Ping(bytes):
    """A ping received from the peer; its value is the ping's payload."""

    __slots__ = ()


class Pong(bytes):
    """A pong received from the peer; its value is the pong's payload."""

    __slots__ = ()


Event = Union[
    str, bytes, Ping, Pong, Close, MessageStart, MessageChunk, MessageEnd, "Request", "Response"
]

_NO_LIMIT = (1 << 63) - 1
# A binary frame is filled in place (its whole payload allocated, pages
# touched as the bytes arrive) once a quarter of it has arrived, or 64 KiB of
# a frame of up to 1 MiB: at most 16 times what the peer sent. Growing a
# buffer until then costs copies, and a heap that grows and shrinks (page
# faults) with every large message.
_FILL_RATIO = 4
_FILL_ARRIVED = 64 * 1024
_FILL_AT_ONCE = 1024 * 1024
# A compressed streamed message: at most this many chunks of output are
# handed out by one receive_data() or resume_parsing() call, however many
# frames they come from, before parsing pauses for the consumer (see
# Protocol._inflate).
_INFLATE_CHUNKS = 4
# payload_buffer() views at most this much: each read is unmasked while it is
# still in the CPU cache.
_READ_CHUNK = 256 * 1024


def _check_limit(name: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0 or None")
    return value


def _read_limit(max_message_size: int | None, max_frame_size: int | None) -> int:
    # The largest single-frame message that read_messages() may take;
    # anything larger goes through the general parser, which refuses it.
    limit = _NO_LIMIT
    if max_message_size is not None and max_message_size < limit:
        limit = max_message_size
    if max_frame_size is not None and max_frame_size < limit:
        limit = max_frame_size
    return limit


def _fills_in_place(arrived: int, size: int) -> bool:
    return arrived * _FILL_RATIO >= size or (arrived >= _FILL_ARRIVED and size <= _FILL_AT_ONCE)


def generate_mask() -> bytes:
    """Return a fresh, unpredictable masking key (RFC 6455 section 5.3).

    Tests patch this one name to make client frames deterministic.
    """
    return os.urandom(4)


class Protocol(ProtocolCore):
    """The WebSocket engine for one connection, on either side.

    Args:
        is_client: ``True`` for the client side, which masks what it sends and
            refuses masked frames; ``False`` for the server side.
        state: the initial state, ``OPEN`` when the handshake is done elsewhere.
        max_message_size: the largest message, in bytes, that the peer may send;
            ``None`` for no limit. A larger one fails the connection with 1009.
        max_frame_size: the largest frame payload, in bytes; ``None`` leaves only
            ``max_message_size``.
        extensions: the negotiated extensions, in the order of the handshake.
        auto_pong: whether a ping is answered with a pong; see :attr:`auto_pong`.
    """

    # Slots: a server holds thousands of these, and a __dict__ costs ~1 KiB.
    __slots__ = (
        "__weakref__",
        "_allowed_rsv",
        "_discard",
        "_frame_fin",
        "_frame_mask",
        "_frame_offset",
        "_inflated",
        "_inflating",
        "_inflating_fin",
        "_max_frame_size",
        "_max_message_size",
        "_msg_buf",
        "_msg_decoded",
        "_msg_fill",
        "_msg_rsv",
        "_msg_single",
        "_msg_size",
        "_msg_stream",
        "_send_compress",
        "_send_opcode",
        "_stream",
        "_stream_read",
        "_streaming",
        "_utf8",
        "auto_pong",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "extensions",
        "is_client",
        "parser_exc",
        "request",
        "response",
        "subprotocol",
    )
    # ProtocolCore's fields (slots there), typed for this engine.
    state: State
    _events: list[Event]

    if TYPE_CHECKING:

        def events_received(self) -> list[Event]:
            """Return the events produced since the last call, oldest first."""
            ...

    def __init__(
        self,
        *,
        is_client: bool,
        state: State = OPEN,
        max_message_size: int | None = MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        extensions: Sequence[Extension] = (),
        auto_pong: bool = True,
    ) -> None:
        self.is_client = is_client
        self.state = state
        #: Whether a ping received is answered with a pong, as RFC 6455
        #: section 5.5.2 requires ("MUST send a Pong frame in response").
        #: ``False`` breaks that rule on purpose, to test how a peer's
        #: keepalive handles a silent endpoint; the ping is still an event.
        self.auto_pong = auto_pong
        self._max_message_size = _check_limit("max_message_size", max_message_size)
        self._max_frame_size = _check_limit("max_frame_size", max_frame_size)
        self._read_limit = _read_limit(max_message_size, max_frame_size)
        self._masked = not is_client  # whether received frames must be masked

        #: The opening handshake's request, response and subprotocol, on the
        #: sides that have a handshake (:class:`~rapidws.core.server.ServerProtocol`,
        #: :class:`~rapidws.core.client.ClientProtocol`).
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        #: The close frame received from the peer, if any.
        self.close_rcvd: Close | None = None
        #: The close frame sent to the peer, if any.
        self.close_sent: Close | None = None
        #: Whether the peer started the close handshake (when both frames exist).
        self.close_rcvd_then_sent: bool | None = None
        #: The error that made the engine fail the connection, if any.
        self.parser_exc: ProtocolError | None = None
        self.eof_sent = False
        #: The messages just returned precede a protocol error or the peer's
        #: close frame: parsing stops there until :meth:`resume_parsing` is
        #: called, once the application has handled (and answered) them.
        self.parsing_paused = False

        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._buf = bytearray()
        self._discard = False
        # The frame whose payload is arriving: remaining length, FIN, masking
        # key and how many payload bytes were unmasked already.
        self._frame_left = 0
        self._frame_fin = False
        self._frame_mask: bytes | None = None
        self._frame_offset = 0
        # The message being assembled: its opcode (0 when none), RSV bits, size
        # so far, pieces, and the UTF-8 decoder of a text message.
        self._msg_opcode = 0
        self._msg_rsv = 0
        self._msg_size = 0
        self._msg_decoded = 0  # size after the extensions' decoding
        self._msg_buf: bytearray | None = None  # a message that came in pieces
        self._msg_single = False  # whether the message is one frame
        # A large binary message in one frame, filled in place once enough of
        # it has arrived (see _payload).
        self._msg_fill: MessageBuffer | None = None
        self._utf8 = Utf8Validator()  # for text messages that come in pieces
        # Streaming (rapidws.core.stream): whether messages that start from now
        # on are streamed, whether the current one is, and the decoder, made
        # when first needed (most connections never stream).
        self._streaming = False
        self._msg_stream = False
        self._stream: StreamDecoder | None = None
        # The buffer that a streamed message's payload is read into (see
        # payload_buffer), while such a message is received.
        self._stream_read: memoryview | None = None
        # A compressed piece whose output was not all handed out (see
        # _inflate), whether it ends its message, and how many decoded bytes
        # the current call handed out.
        self._inflating: Iterator[bytes] | None = None
        self._inflating_fin = False
        self._inflated = 0
        # The opcode of the message being sent in fragments, 0 when none, and
        # whether it may be compressed.
        self._send_opcode = 0
        self._send_compress = True
        self._use_extensions(list(extensions))

    @property
    def max_message_size(self) -> int | None:
        """The largest message, in bytes, that the peer may send; ``None``: no limit."""
        return self._max_message_size

    @max_message_size.setter
    def max_message_size(self, value: int | None) -> None:
        self._max_message_size = _check_limit("max_message_size", value)
        self._update_read_limit()

    @property
    def max_frame_size(self) -> int | None:
        """The largest frame payload, in bytes; ``None`` leaves only ``max_message_size``."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int | None) -> None:
        self._max_frame_size = _check_limit("max_frame_size", value)
        self._update_read_limit()

    @property
    def streaming(self) -> bool:
        """Whether messages are handed out as streams (:mod:`rapidws.core.stream`).

        A change applies from the next message on. While it is set, an
        uncompressed message that is one frame of at most
        :attr:`stream_chunk_size` bytes, arriving whole, is still one ``str``
        or ``bytes`` event; any other comes out as
        :class:`~rapidws.core.stream.MessageStart`, chunks and
        :class:`~rapidws.core.stream.MessageEnd`, limited by
        :attr:`max_stream_size` instead of :attr:`max_message_size`.
        """
        return self._streaming

    @streaming.setter
    def streaming(self, value: bool) -> None:
        self._stream_decoder()
        self._streaming = value
        self._update_read_limit()

    @property
    def max_stream_size(self) -> int | None:
        """The largest streamed message, in bytes once decoded; ``None`` (the default): no limit."""
        return None if self._stream is None else self._stream.max_size

    @max_stream_size.setter
    def max_stream_size(self, value: int | None) -> None:
        self._stream_decoder().max_size = _check_limit("max_stream_size", value)
        self._update_read_limit()

    @property
    def stream_chunk_size(self) -> int:
        """The largest chunk of a streamed message, in bytes (64 KiB by default)."""
        return STREAM_CHUNK_SIZE if self._stream is None else self._stream.chunk_size

    @stream_chunk_size.setter
    def stream_chunk_size(self, value: int) -> None:
        if value < 1:
            raise ValueError("stream_chunk_size must be >= 1")
        self._stream_decoder().chunk_size = value
        self._update_read_limit()

    def _stream_decoder(self) -> StreamDecoder:
        if self._stream is None:
            self._stream = StreamDecoder()
        return self._stream

    def _use_extensions(self, extensions: list[Extension]) -> None:
        """Apply the negotiated ``extensions`` to every frame from now on."""
        self.extensions = extensions
        self._allowed_rsv = 0
        for extension in extensions:
            self._allowed_rsv |= extension.rsv_bits
        self._update_send_direct()

    def _update_send_direct(self) -> None:
        # Whether a whole message may be framed at once, with no fragmented
        # message in progress, no extension to run and no mask: send_message()
        # then takes a shortcut for a small one.
        self._send_direct = not (self.is_client or self.extensions or self._send_opcode)

    def _update_read_limit(self) -> None:
        stream = self._stream
        if self._streaming and stream is not None:
            # The fast path reads whole only what would be a single chunk.
            limit = _read_limit(stream.max_size, self._max_frame_size)
            self._read_limit = min(limit, stream.chunk_size)
        else:
            self._read_limit = _read_limit(self._max_message_size, self._max_frame_size)

    # Input.

    def _receive_more(self, data: bytes, pos: int) -> None:
        # What receive_data() did not take at once (ProtocolCore): data[pos:].
        if self._discard or self.state is CLOSED:
            return
        if self.state is CONNECTING:
            self._receive_handshake(data)
            return
        if self.parsing_paused:
            self._buf += data
            return
        if data:
            # New input, a new budget of inflated output (resume_parsing()
            # gives one too, and then calls this with b"").
            self._inflated = 0
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        pos = self._parse(buf, pos)
        if buf is self._buf:
            del buf[:pos]
        elif pos < len(buf) and not self._discard:
            self._buf = bytearray(memoryview(buf)[pos:])

    def resume_parsing(self) -> None:
        """Parse the bytes held back while :attr:`parsing_paused` was set.

        When the pause is :attr:`inflating`, the next part of the output comes
        first; parsing may pause again after it.
        """
        self.parsing_paused = False
        self._inflated = 0
        if self._inflating is not None and not self._discard:
            self._inflate()
            if self.parsing_paused:
                return
        self.receive_data(b"")

    @property
    def inflating(self) -> bool:
        """Whether parsing paused with decoded output of a streamed message still to come.

        A compressed message may expand a thousandfold: its chunks come out
        four at a time, then parsing pauses until
        :meth:`resume_parsing`, which an I/O layer calls once the consumer
        took them, so that what a read inflates to is never all in memory.
        The four count per call of :meth:`receive_data` or
        :meth:`resume_parsing`, not per frame: a read of many small frames
        that each inflate to a chunk pauses as one large frame does.
        """
        return self.parsing_paused and self._inflating is not None

    def payload_buffer(self) -> memoryview | None:
        """Return a writable view for the current frame's payload to be read into.

        There is one while a binary message that is a single frame is being
        filled in place (a large one, once part of it is here), nothing else is
        held back, and the message will be read. A socket reads the masked
        payload straight into the message (``recv_into``), without a copy;
        :meth:`payload_received` takes it from there. The view covers the rest
        of the frame, 256 KiB at most, so it never holds a byte of the next.
        Write into it before :meth:`payload_received`, never after: the view
        then points into a message that is handed out.

        There is one too while an uncompressed message is streamed: the view
        is the engine's read buffer then (the rest of the frame, up to 256 KiB
        or a chunk, whichever is larger), and :meth:`payload_received` hands
        what was read out as chunks at once, unmasked on their way out of it.
        A read costs no ``bytes`` object of its own, and no copy but the chunks.
        """
        size = self.payload_buffer_size()
        if not size:
            return None
        fill = self._msg_fill
        if fill is not None:
            return fill.reserve(size)
        read = self._stream_read
        if read is None or len(read) < size:
            # Never committed: MessageBuffer's reserve() is a writable view
            # with no bytes set first (a bytearray would zero them).
            read = self._stream_read = MessageBuffer(size).reserve(size)
        return read[:size]

    def payload_buffer_size(self) -> int:
        """Return how many bytes :meth:`payload_buffer` would view now; 0 for no view."""
        if self.state is not OPEN or self.parsing_paused or self._buf:
            return 0
        if self._msg_fill is not None:
            return min(self._frame_left, _READ_CHUNK)
        if self._msg_stream and self._frame_left and not self._msg_rsv:
            # At least a read's worth, however small the chunks: a read each
            # would cost a system call each.
            assert self._stream is not None  # made when streaming was set
            return min(self._frame_left, max(self._stream.chunk_size, _READ_CHUNK))
        return 0

    def payload_received(self, nbytes: int) -> None:
        """Take ``nbytes`` read into the start of the last :meth:`payload_buffer`.

        The last of the frame makes the message an event; a streamed message's
        bytes become chunks at once.
        """
        fill = self._msg_fill
        if fill is None:
            read = self._stream_read
            if read is None:
                raise InvalidState("no payload_buffer() to take bytes from")
            if not 0 <= nbytes <= min(len(read), self._frame_left):
                raise ValueError("more bytes than payload_buffer() viewed")
            self._frame_left -= nbytes
            fin = self._frame_fin and not self._frame_left
            with read[:nbytes] as piece:
                self._stream_payload(piece, self._frame_mask, self._frame_offset, fin)
            self._frame_offset += nbytes
            return
        fill.commit(nbytes, self._frame_mask, self._frame_offset)
        self._frame_left -= nbytes
        self._frame_offset += nbytes
        if not self._frame_left:
            message = fill.finish()
            if self.state is OPEN:  # else nobody reads it, as in _message_data()
                self._events.append(message)
            self._end_message()

    def receive_eof(self) -> None:
        """Tell the engine that the peer closed its side of the TCP connection."""
        if self.state is CLOSED:
            return
        self._discard = True
        self.state = CLOSED
        # The hook runs first: a client reads a refusal's body until EOF.
        self._receive_eof_hook()
        self._buf.clear()

    def _receive_handshake(self, data: bytes) -> None:
        raise InvalidState("this engine has no opening handshake")

    def _receive_eof_hook(self) -> None:
        """Let a side react to EOF (a client's half-read response)."""

    # Output.

    def close_expected(self) -> bool:
        """Tell whether the I/O layer should expect the TCP connection to end soon.

        Once true, the I/O layer closes the connection itself if the peer has
        not done so within its close timeout.
        """
        return self.state is CLOSING or self.state is CLOSED or self.eof_sent

    # Sending.

    def _send_message_more(
        self,
        data: str | bytes | bytearray | memoryview | PreparedMessage,
        *,
        compress: bool = True,
    ) -> None:
        # What send_message() did not frame at once (ProtocolCore).
        if isinstance(data, str):
            self._send_data(OP_TEXT, data.encode(), True, compress)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self._send_data(OP_BINARY, data, True, compress)
        elif isinstance(data, PreparedMessage):
            self.send_prepared(data)
        else:
            raise TypeError(f"cannot send {type(data).__name__}: send str or bytes")

    def send_prepared(self, message: PreparedMessage) -> None:
        """Send a message framed once for many connections (a broadcast).

        A server connection whose extensions encode every message the same
        way (none, or permessage-deflate without context takeover) sends the
        message's shared frame for its wire form; any other connection
        encodes the message itself, as :meth:`send_text` would.

        Raises:
            InvalidState: when the connection is not open, or while a
                fragmented message is being sent.
        """
        if self.state is not OPEN:
            raise InvalidState(f"cannot send a message: connection is {self.state.name}")
        if self._send_opcode:
            raise InvalidState("a fragmented message is being sent; finish it first")
        form = None if self.is_client else wire_form(self.extensions)
        if form is None:
            # Masked (a client) or stateful compression: this connection's own.
            self._send_data(message.opcode, message.payload, True, message.compress)
        else:
            self._out.append(message.frame(form, self.extensions))

    def send_text(self, data: str | bytes, fin: bool = True, *, compress: bool = True) -> None:
        """Send a text message, or its first fragment when ``fin`` is false.

        ``bytes`` are sent as they are and must be UTF-8 already. With
        ``compress=False`` a negotiated compression skips this message.
        """
        if isinstance(data, str):
            data = data.encode()
        self._send_data(OP_TEXT, data, fin, compress)

    def send_binary(
        self, data: bytes | bytearray | memoryview, fin: bool = True, *, compress: bool = True
    ) -> None:
        """Send a binary message, or its first fragment when ``fin`` is false.

        With ``compress=False`` a negotiated compression skips this message.
        """
        self._send_data(OP_BINARY, data, fin, compress)

    def send_continuation(self, data: str | bytes | bytearray | memoryview, fin: bool) -> None:
        """Send the next fragment of a message started with ``fin=False``."""
        if not self._send_opcode:
            raise InvalidState("no fragmented message is being sent")
        if isinstance(data, str):
            data = data.encode()
        self._send_data(OP_CONT, data, fin, self._send_compress)

    def _send_data(
        self, opcode: int, data: bytes | bytearray | memoryview, fin: bool, compress: bool
    ) -> None:
        if self.state is not OPEN:
            raise InvalidState(f"cannot send a message: connection is {self.state.name}")
        if type(data) is memoryview and (data.itemsize != 1 or data.ndim != 1):
            # Frame lengths count bytes, not items (array("I"), numpy views).
            data = data.cast("B") if data.c_contiguous else data.tobytes()
        if opcode == OP_CONT:
            first = False
        elif self._send_opcode:
            raise InvalidState("a fragmented message is being sent; finish it first")
        else:
            first = True
        if fin and first and not self.extensions:
            self._send_frame(0x80 | opcode, data)  # a whole message
            return
        sending = 0 if fin else (opcode or self._send_opcode)
        if sending != self._send_opcode:  # not for each fragment of a stream
            self._send_opcode = sending
            self._update_send_direct()
        self._send_compress = compress
        rsv = 0
        for extension in self.extensions:
            bits, data = extension.encode(bytes(data), first=first, fin=fin, compress=compress)
            rsv |= bits
        self._send_frame((0x80 if fin else 0) | rsv | opcode, data)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a ping; ``data`` (at most 125 bytes) comes back in the pong."""
        self._send_control(OP_PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat), at most 125 bytes."""
        self._send_control(OP_PONG, data)

    def _send_control(self, opcode: int, data: bytes) -> None:
        if self.state is not OPEN:
            raise InvalidState(f"cannot send a control frame: connection is {self.state.name}")
        if len(data) > 125:
            raise ValueError("control frame payloads are limited to 125 bytes")
        self._send_frame(0x80 | opcode, data)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, or answer the peer's close frame.

        Args:
            code: the close code; 1005 sends a close frame without a payload.
            reason: a short explanation, at most 123 bytes in UTF-8.

        Raises:
            InvalidState: when a close frame was sent already.
            ValueError: for an invalid code or an overlong reason.
        """
        if self.close_sent is not None or self.state in (CONNECTING, CLOSED):
            raise InvalidState(f"cannot send a close frame: connection is {self.state.name}")
        close = Close(code, reason)
        self._send_close(close, close.serialize())

    def _send_close(self, close: Close, payload: bytes) -> None:
        # send_close() once the frame is checked and serialized.
        self._send_frame(0x80 | OP_CLOSE, payload)
        self.close_sent = close
        if self.close_rcvd is not None:
            self.close_rcvd_then_sent = True
            self._close_handshake_done()
        self.state = CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 section 7.1.7).

        Sends a close frame with ``code`` unless one was sent already, stops
        processing input, and on the server side closes the TCP connection.
        """
        if self.close_sent is None and self.state in (OPEN, CLOSING):
            close = Close(code, reason)
            self._send_frame(0x80 | OP_CLOSE, close.serialize())
            self.close_sent = close
            if self.close_rcvd is not None:
                self.close_rcvd_then_sent = True
        if self.state is OPEN:
            self.state = CLOSING
        self._discard = True
        self._buf.clear()
        # RFC 6455 section 7.1.1: the server closes the TCP connection first.
        if not self.is_client:
            self.send_eof()

    def send_eof(self) -> None:
        """Ask the I/O layer to half-close the TCP connection (once)."""
        if not self.eof_sent:
            self.eof_sent = True
            self._out.append(b"")

    def _send_frame(self, first: int, payload: bytes | bytearray | memoryview) -> None:
        if self.is_client:
            # Masking copies the payload anyway: into the frame, at once.
            self._out.append(encode_frame(first, payload, generate_mask()))
        elif len(payload) <= JOIN_LIMIT:
            self._out.append(encode_frame(first, payload))
        else:
            # Header and payload apart, the payload not copied (a stream's
            # fragments too): the I/O layer writes both in one writev() if it can.
            self._out.append(frame_header(first, len(payload), None))
            self._out.append(payload if isinstance(payload, bytes) else bytes(payload))

    def _close_handshake_done(self) -> None:
        # Both close frames have crossed: the server ends the TCP connection.
        if not self.is_client:
            self.send_eof()

    # Parsing.

    def _fail_with(self, exc: ProtocolError) -> None:
        self.parser_exc = exc
        # A close reason is at most 123 bytes; cut on a character boundary.
        reason = str(exc).encode()[:123].decode(errors="ignore")
        self.fail(exc.code, reason)

    def _parse(self, buf: bytes | bytearray, pos: int) -> int:
        """Consume complete frames and arriving payload from ``buf[pos:]``; return the end."""
        end = len(buf)
        while pos < end:
            if not self._frame_left and not self._msg_opcode and self.close_sent is None:
                pos = read_messages(buf, pos, self._masked, self._read_limit, self._events)
                if pos >= end:
                    break
            if self._frame_left:
                # The payload of a data frame whose header was consumed.
                take = min(self._frame_left, end - pos)
                self._frame_left -= take
                fin = self._frame_fin and not self._frame_left
                self._payload(
                    buf, pos, pos + take, mask=self._frame_mask, offset=self._frame_offset, fin=fin
                )
                pos += take
                self._frame_offset += take
                if self._discard:
                    return end
                if self.parsing_paused:
                    break  # decoded output waits for the consumer (inflating)
                continue

            header = parse_frame_header(buf, pos)
            if header is None:
                break
            first, _second, length, mask, payload_start = header
            error = self._check_header(first, length, mask)
            if error is not None:
                if self._can_answer_first():
                    # Valid messages came before the bad frame: let the
                    # application handle them (and answer) before failing.
                    self.parsing_paused = True
                    break
                self._fail_with(error)
                return end
            opcode = first & 0x0F
            if opcode >= OP_CLOSE:
                # Control frames are at most 125 bytes: wait for the whole frame.
                if payload_start + length > end:
                    break
                if opcode == OP_CLOSE and self._can_answer_first():
                    # Likewise, answer the messages before the peer's close
                    # frame while the connection is still open for sending.
                    self.parsing_paused = True
                    break
                payload = bytes(buf[payload_start : payload_start + length])
                if mask is not None:
                    payload = apply_mask(payload, mask)
                pos = payload_start + length
                self._control_frame(opcode, payload)
                if self._discard:
                    return end
                continue

            fin = first & 0x80 != 0
            if opcode != OP_CONT:
                self._msg_opcode = opcode
                self._msg_single = fin
                self._msg_rsv = first & 0x70
                self._msg_size = 0
                self._msg_decoded = 0
                self._msg_stream = self._streaming
            self._msg_size += length
            pos = payload_start
            if payload_start + length <= end and fin and opcode != OP_CONT:
                # A whole unfragmented message is here.
                pos += length
                self._payload(buf, payload_start, pos, mask=mask, offset=0, fin=True)
                if self._discard:
                    return end
                if self.parsing_paused:
                    break
                continue
            self._frame_left = length
            self._frame_fin = fin
            self._frame_mask = mask
            self._frame_offset = 0
            if not length:
                if self._msg_stream:
                    self._stream_payload(memoryview(b""), None, 0, fin)
                else:
                    self._message_data(b"", fin)
                if self._discard:
                    return end
                if self.parsing_paused:
                    break
        return pos

    def _can_answer_first(self) -> bool:
        # Messages wait in the events and this side may still send answers.
        if self.close_sent is not None:
            return False
        return any(type(event) is str or type(event) is bytes for event in self._events)

    def _check_header(self, first: int, length: int, mask: bytes | None) -> ProtocolError | None:
        opcode = first & 0x0F
        rsv = first & 0x70
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                return ProtocolError(f"reserved opcode {opcode:#x}")
            if not first & 0x80:
                return ProtocolError("fragmented control frame")
            if length > 125:
                return ProtocolError("control frame payload is longer than 125 bytes")
            if rsv:
                return ProtocolError("RSV bits set on a control frame")
        elif opcode > OP_BINARY:
            return ProtocolError(f"reserved opcode {opcode:#x}")
        elif opcode == OP_CONT:
            if not self._msg_opcode:
                return ProtocolError("continuation frame without a message to continue")
            if rsv:
                return ProtocolError("RSV bits set on a continuation frame")
        elif self._msg_opcode:
            return ProtocolError("new data frame before the fragmented message ended")
        elif rsv & ~self._allowed_rsv:
            return ProtocolError("RSV bits set without an extension that defines them")
        if (mask is None) is not self.is_client:
            if self.is_client:
                return ProtocolError("masked frame from the server")
            return ProtocolError("unmasked frame from the client")
        if length >> 63:
            return ProtocolError("payload length with the most significant bit set")
        if opcode < OP_CLOSE:
            if self.max_frame_size is not None and length > self.max_frame_size:
                return PayloadTooBig(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_size} bytes",
                    length,
                    self.max_frame_size,
                )
            streamed = self._msg_stream if opcode == OP_CONT else self._streaming
            limit = self.max_stream_size if streamed else self.max_message_size
            size = (self._msg_size if opcode == OP_CONT else 0) + length
            if limit is not None and size > limit:
                return PayloadTooBig(
                    f"message of {size} bytes or more exceeds the limit of {limit} bytes",
                    size,
                    limit,
                )
        return None

    def _payload(
        self,
        buf: bytes | bytearray,
        start: int,
        stop: int,
        *,
        mask: bytes | None,
        offset: int,
        fin: bool,
    ) -> None:
        """Add ``buf[start:stop]``, unmasked from ``offset`` on, to the current message."""
        if self._msg_stream:
            with memoryview(buf) as view, view[start:stop] as piece:
                self._stream_payload(piece, mask, offset, fin)
            return
        msg = self._msg_buf
        fill = self._msg_fill
        whole = msg is None and fill is None and fin
        if whole or self._msg_rsv or self.close_sent is not None:
            # A message in one piece, or input for the extensions, or one
            # that nobody will read.
            with memoryview(buf) as view:
                piece = view[start:stop]
                chunk = bytes(piece) if mask is None else apply_mask(piece, mask, offset)
                piece.release()
            self._message_data(chunk, fin)
            return
        text = self._msg_opcode == OP_TEXT
        if fill is None and self._msg_single and not text:
            held = 0 if msg is None else len(msg)
            if _fills_in_place(held + stop - start, self._msg_size):
                # A large binary frame that the peer is really sending: from
                # now on its payload goes straight into the final bytes object,
                # which saves copying it at the end. Not before: a header alone
                # must not make us allocate the size it announces.
                fill = self._msg_fill = MessageBuffer(self._msg_size)
                if msg is not None:
                    fill.append(msg, 0, held, None, 0)
                    self._msg_buf = None
        if fill is not None:
            fill.append(buf, start, stop, mask, offset)
            if fin:
                self._events.append(fill.finish())
                self._end_message()
            return
        # Pieces of a message go from the receive buffer into the message's
        # buffer in one copy, and are validated there as they arrive.
        if msg is None:
            msg = self._msg_buf = bytearray()
        size = len(msg)
        append_unmasked(msg, buf, start, stop, mask, offset)
        if text:
            with memoryview(msg) as view:
                piece = view[size:]
                valid = self._utf8.validate(piece, fin)
                piece.release()
            if not valid:
                self._fail_with(ProtocolError("invalid UTF-8 in text message", 1007))
                return
        if fin:
            self._events.append(msg.decode() if text else bytes(msg))
            self._end_message()

    def _stream_payload(self, view: memoryview, mask: bytes | None, offset: int, fin: bool) -> None:
        """Hand a piece of payload, unmasked from ``offset`` on, out as chunks."""
        stream = self._stream
        assert stream is not None  # made when streaming was set
        if self.close_sent is not None:
            # After our close frame nobody reads the stream (as _message_data).
            if fin:
                stream.active = False
                self._end_message()
            return
        events = self._events
        if not stream.active:
            events.append(stream.start(self._msg_opcode == OP_TEXT))
        size = stream.chunk_size
        if self._msg_rsv:
            # Decoded lazily, as the consumer goes (see _inflate).
            data = bytes(view) if mask is None else apply_mask(view, mask, offset)
            self._inflating = decode_pieces(
                self.extensions, data, rsv=self._msg_rsv, fin=fin, chunk_size=size
            )
            self._inflating_fin = fin
            self._inflate()
            return
        stop = len(view)
        start = 0
        try:
            # At least once: an empty frame may end the message.
            while True:
                end = min(stop, start + size)
                with view[start:end] as piece:
                    data = bytes(piece) if mask is None else apply_mask(piece, mask, offset)
                chunk = stream.data(data)
                if chunk:
                    events.append(MessageChunk(chunk))
                offset += end - start
                start = end
                if start >= stop:
                    break
            if fin:
                events.append(stream.end())
                self._end_message()
        except ProtocolError as exc:
            stream.active = False
            self._fail_with(exc)

    def _inflate(self) -> None:
        """Hand out the decoded output of a compressed piece, a few chunks per call.

        Past :data:`_INFLATE_CHUNKS` chunks since the input (or the resume)
        came, counting the earlier frames' output, parsing pauses
        (:attr:`inflating`) with the rest of the output still in the
        extensions, and goes on in :meth:`resume_parsing`.
        """
        stream = self._stream
        pieces = self._inflating
        assert stream is not None and pieces is not None
        if self.close_sent is not None:
            # Nobody reads the stream any more (as in _stream_payload).
            self._inflating = None
            if self._inflating_fin:
                stream.active = False
                self._end_message()
            return
        limit = _INFLATE_CHUNKS * stream.chunk_size
        events = self._events
        try:
            for decoded in pieces:
                chunk = stream.data(decoded)
                if chunk:
                    events.append(MessageChunk(chunk))
                self._inflated += len(decoded)
                if self._inflated >= limit:
                    self.parsing_paused = True
                    return
            self._inflating = None
            if self._inflating_fin:
                events.append(stream.end())
                self._end_message()
        except ProtocolError as exc:
            self._inflating = None
            stream.active = False
            self._fail_with(exc)

    def _message_data(self, chunk: bytes | bytearray, fin: bool) -> None:
        """Add a piece of the current message's payload (decoded), in order."""
        if self.close_sent is not None:
            # After our close frame nobody will read a message: assembling it
            # would only hold memory until the close timeout.
            if fin:
                self._end_message()
            return
        if self._msg_rsv:
            chunk = self._decode_extensions(chunk, fin)
            if self._discard:
                return
        text = self._msg_opcode == OP_TEXT
        buf = self._msg_buf
        if buf is None and fin:
            # The whole message in one piece: no assembly, no extra copy.
            if not text:
                self._events.append(bytes(chunk))
            else:
                try:
                    self._events.append(chunk.decode())
                except UnicodeDecodeError:
                    self._fail_with(ProtocolError("invalid UTF-8 in text message", 1007))
                    return
            self._end_message()
            return
        # Validated as the bytes arrive, so a bad byte fails at once.
        if text and not self._utf8.validate(chunk, fin):
            self._fail_with(ProtocolError("invalid UTF-8 in text message", 1007))
            return
        if buf is None:
            # One growing buffer, however many fragments: memory stays near
            # the message's size (a list of pieces costs ~50 bytes a piece).
            buf = self._msg_buf = bytearray()
        buf += chunk
        if fin:
            self._events.append(buf.decode() if text else bytes(buf))
            self._end_message()

    def _end_message(self) -> None:
        self._msg_opcode = 0
        self._msg_buf = None
        self._msg_fill = None
        self._stream_read = None

    def _decode_extensions(self, chunk: bytes | bytearray, fin: bool) -> bytes:
        data = bytes(chunk)
        limit = self.max_message_size
        max_size = None if limit is None else limit - self._msg_decoded
        try:
            for extension in reversed(self.extensions):
                data = extension.decode(data, rsv=self._msg_rsv, fin=fin, max_size=max_size)
        except PayloadTooBig:
            # The extension knows the room left; the user wants the totals.
            assert limit is not None
            self._fail_with(
                PayloadTooBig(
                    f"message exceeds the limit of {limit} bytes once decompressed",
                    limit + 1,
                    limit,
                )
            )
        except ProtocolError as exc:
            self._fail_with(exc)
        self._msg_decoded += len(data)
        return data

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._events.append(Ping(payload))
            # RFC 6455 section 5.5.2: answer with a pong as soon as practical,
            # unless the close handshake has begun on our side.
            if self.close_sent is None and self.auto_pong:
                self._send_frame(0x80 | OP_PONG, payload)
        elif opcode == OP_PONG:
            self._events.append(Pong(payload))
        else:
            try:
                close = Close.parse(payload)
            except ProtocolError as exc:
                self._fail_with(exc)
                return
            self._close_received(close, payload)

    def _close_frame(self, code: int, reason: str, payload: bytes) -> None:
        # ProtocolCore.receive_data() found the peer's close frame, valid.
        self._close_received(Close(code, reason), payload)

    def _close_received(self, close: Close, payload: bytes) -> None:
        self.close_rcvd = close
        self._events.append(close)
        if self.close_sent is None:
            # RFC 6455 section 5.5.1: echo the status code received (and the
            # reason: the payload, valid as it parsed).
            self._send_close(close, payload)
        else:
            self.close_rcvd_then_sent = False
            self._close_handshake_done()
        self.state = CLOSING
        # Nothing may follow a close frame (RFC 6455 section 5.5.1).
        self._discard = True
        self._buf.clear()
