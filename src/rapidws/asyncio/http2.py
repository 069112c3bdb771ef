"""HTTP/2 for the asyncio server: WebSockets as streams of one connection (RFC 8441).

With ``serve(..., http2=True)``, a connection that negotiates ``h2`` by TLS
ALPN, or that opens with the HTTP/2 preface in cleartext (h2c with prior
knowledge), is an :class:`Http2Connection`; any other is HTTP/1.1, as
without the option. It needs the ``h2`` package (``rapidws[http2]``).

Each stream is served by a :class:`StreamConnection`: the server's own
connection class, with its hooks, handler, timeouts and engine (an
:class:`~rapidws.core.http2.Http2ServerProtocol`), whose transport is the
stream (:class:`StreamTransport`). Its writes become DATA frames, its end of
output END_STREAM, an abort RST_STREAM; the stream's DATA is its input.
Extended CONNECT streams carry WebSockets; other requests get plain HTTP
answers (the App's pages and health checks). The client's side
(``connect(..., http2=True)``, :mod:`rapidws.asyncio.http2_client`) runs on
the same streams and flow control (:class:`BaseHttp2Connection`).

Flow control keeps the streams independent:

- Received DATA is acknowledged (``WINDOW_UPDATE``) as the stream's
  connection takes it, in batches of :data:`ACK_BATCH` bytes. A connection
  that stops reading (its message queue is full) leaves its DATA
  unacknowledged and buffered, at most the stream's window, until it reads
  again. The connection's window is opened wide enough for every stream's
  window at once, so that stalled streams never hold back the others.
- Sent data goes out as the peer's windows allow, a frame at a time, and
  only while the TCP write buffer is below its high-water mark; what waits is
  sent stream by stream, a frame each in turn, so that a large message does
  not starve the small ones of other streams. A stream's waiting data above
  its connection's ``write_limit`` pauses that connection's ``send()``.

The frames made in one turn of the event loop (while handling what was read,
or by the streams' writes) go out in one write to the transport: one TLS
record for many frames, instead of one per frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError, StreamIDTooLowError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import H2Stream, StreamState
from hyperframe.frame import DataFrame, Frame

from ..core.http2 import Http2ServerProtocol, request_from_fields, response_fields
from ..core.http11 import Request, Response
from ..core.limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_HTTP2_STREAMS
from ..core.server import wants_upgrade
from ..exceptions import InvalidRequest
from .server import ServerConnection

if TYPE_CHECKING:
    from .server import Server

__all__ = [
    "ACK_BATCH",
    "MAX_FRAME",
    "MAX_STREAMS",
    "RESETS_PER_SECOND",
    "RESET_BURST",
    "STREAM_WINDOW",
    "BaseHttp2Connection",
    "Http2Connection",
    "StreamConnection",
    "StreamTransport",
]

#: The most streams a client may have open at once on a connection
#: (``SETTINGS_MAX_CONCURRENT_STREAMS``), by default (``serve()``'s
#: ``http2_max_streams``); a client opens at most this many on one.
MAX_STREAMS = MAX_HTTP2_STREAMS
#: The receive window of each stream, in bytes (``SETTINGS_INITIAL_WINDOW_SIZE``):
#: what a stream whose reader stalls may buffer.
STREAM_WINDOW = 256 * 1024
#: The largest frame that a peer may send (``SETTINGS_MAX_FRAME_SIZE``): a
#: 64 KiB message fits in one DATA frame, not five of the default 16 KiB.
MAX_FRAME = STREAM_WINDOW // 2
#: The received bytes that a stream acknowledges at once: half its window,
#: the point at which ``h2`` sends a ``WINDOW_UPDATE``, so that the updates go
#: out as often as without batching, at a fraction of the calls.
ACK_BATCH = STREAM_WINDOW // 2
#: The streams that a client may reset (RST_STREAM), or open past
#: :data:`MAX_STREAMS` to be refused, in a burst; the allowance comes back at
#: :data:`RESETS_PER_SECOND`. Past it, the connection ends with GOAWAY
#: ENHANCE_YOUR_CALM: a stream opened and reset at once costs the server a
#: handshake and the client nothing ("rapid reset", CVE-2023-44487).
RESET_BURST = 2 * MAX_STREAMS
RESETS_PER_SECOND = MAX_STREAMS
# h2's output written at once, before the turn ends, past this many bytes:
# a large write reaches the TCP buffer, and its flow control, in pieces.
_FLUSH_SIZE = 64 * 1024

# RFC 9113 section 3.4: how a client with prior knowledge starts.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 section 4.1: a frame's header is its length (24 bits), type,
# flags and stream id (31 bits after a reserved one).
_FRAME_HEADER = struct.Struct(">BHBBL")
_DATA = 0x0
_HEADER_BLOCK = frozenset((0x1, 0x5, 0x9))  # HEADERS, PUSH_PROMISE, CONTINUATION
_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_WINDOW_UPDATE = 0x8
_INCREMENT = struct.Struct(">L")
_MAX_WINDOW = 2**31 - 1  # RFC 9113 section 6.9.1
# The states of a stream in which the peer may send DATA, in which we may,
# and in which its window may grow.
_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_WINDOWED = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL, StreamState.HALF_CLOSED_REMOTE)


def connection_factory(
    server: Server, *, max_streams: int = MAX_STREAMS
) -> Callable[[], asyncio.Protocol]:
    """Return the protocol factory of a server that speaks HTTP/2 beside HTTP/1.1.

    A client may have ``max_streams`` streams open at once on a connection.
    """
    return lambda: _VersionChooser(server, max_streams)


class _VersionChooser(asyncio.Protocol):
    """A connection's first protocol: it hands the transport to HTTP/2 or HTTP/1.1.

    With TLS, ALPN has decided when the connection is made; in cleartext,
    the first bytes tell (the preface, or anything else).
    """

    __slots__ = ("_buf", "_max_streams", "_server", "_transport")

    def __init__(self, server: Server, max_streams: int) -> None:
        self._server = server
        self._max_streams = max_streams
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Choose at once with TLS, else wait for the first bytes (called by asyncio)."""
        self._transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._hand_over(ssl_object.selected_alpn_protocol() == "h2", b"")
        elif self._server.open_timeout is not None:
            # A client that sends nothing is dropped, as by ServerConnection.
            self._server._deadlines_for(_VersionChooser._timed_out, self._server.open_timeout).add(
                self
            )

    def data_received(self, data: bytes) -> None:
        """Choose from the first bytes (called by asyncio)."""
        data = self._buf + data
        if len(data) < len(PREFACE) and PREFACE.startswith(data):
            self._buf = data  # perhaps the preface, in pieces
            return
        self._hand_over(data.startswith(PREFACE), data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline of a client that left before choosing (called by asyncio)."""
        self._forget()

    def _hand_over(self, http2: bool, data: bytes) -> None:
        self._forget()
        transport = self._transport
        assert transport is not None
        protocol: asyncio.Protocol
        if http2:
            protocol = Http2Connection(self._server, max_streams=self._max_streams)
        else:
            protocol = self._server._new_connection()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data and not transport.is_closing():
            protocol.data_received(data)

    def _forget(self) -> None:
        timeout = self._server.open_timeout
        if timeout is not None:
            self._server._deadlines_for(_VersionChooser._timed_out, timeout).discard(self)

    def _timed_out(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class _FrameBuffer(FrameBuffer):
    """h2's buffer of received frames, whose DATA frames skip their payload when formatted.

    h2 formats each frame that it receives for a trace log, even without a
    logger; for a DATA frame, hyperframe then copies the payload, hex-encodes
    all of it and keeps 10 bytes (h2 4.4, hyperframe 6.1): for 64 KiB, more
    than the rest of the frame's handling.
    """

    def __next__(self) -> Frame:
        frame = super().__next__()
        if frame.__class__ is DataFrame:
            frame.__dict__["_body_repr"] = _PAYLOAD_NOT_SHOWN
        return frame


_PAYLOAD_NOT_SHOWN = "<payload not shown>".__str__


class BaseHttp2Connection(asyncio.Protocol):
    """An HTTP/2 connection whose streams carry connections: what servers and clients share.

    It reads frames and hands each stream's DATA, END_STREAM and RST_STREAM
    to its :class:`StreamTransport`, and sends the streams' data as the
    flow-control windows and the TCP write buffer allow (see the module's
    docstring). The ``h2`` package keeps the connection's state and handles
    every frame but the DATA of open WebSocket streams, which goes straight
    between the socket and the stream both ways, with h2's windows kept as
    h2 keeps them. A side handles the other events (requests, responses,
    settings) in :meth:`_event`.
    """

    __slots__ = (
        "_flush_due",
        "_frames",
        "_h2",
        "_header_bytes",
        "_held",
        "_in_header_block",
        "_left",
        "_left_stream",
        "_max_header_block",
        "_max_streams",
        "_needed",
        "_partial",
        "_paused",
        "_preface",
        "_streams",
        "_unflushed",
        "_waiting",
        "loop",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, h2: H2Connection) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._h2 = h2
        #: The open streams, by id.
        self._streams: dict[int, StreamTransport] = {}
        # The streams whose data waits for a window or for the TCP buffer.
        self._waiting: dict[int, StreamTransport] = {}
        self._paused = False  # the TCP write buffer is above its high-water mark
        self._max_streams = MAX_STREAMS  # streams open at once, at most
        # A write of h2's output is due before the turn ends (data_received
        # runs, or _flush_later() scheduled one).
        self._flush_due = False
        self._unflushed = 0  # bytes of DATA sent since the last write
        # The streams' DATA frames, made here (see _send()), and h2's output
        # from before them: what the next write sends, before h2's output.
        self._frames = bytearray()
        # Received bytes held back (see _receive()): the start of a frame for
        # h2, in pieces, until _needed bytes are held.
        self._partial: list[bytes] = []
        self._held = 0
        self._needed = 0
        # The bytes still to come of a DATA frame whose start went to its
        # stream, and that stream.
        self._left = 0
        self._left_stream: StreamTransport | None = None
        self._preface = 0  # bytes of the client's preface still to come
        self._in_header_block = False  # CONTINUATION frames are due
        self._header_bytes = 0  # of the header block so far
        self._max_header_block: int | None = None  # see _configure()

    def _configure(
        self, settings: dict[SettingCodes, int], max_header_bytes: int | None, *, client: bool
    ) -> None:
        # The SETTINGS that we send: a side's own, and the windows and limits.
        settings[SettingCodes.INITIAL_WINDOW_SIZE] = STREAM_WINDOW
        settings[SettingCodes.MAX_FRAME_SIZE] = MAX_FRAME
        h2 = self._h2
        if max_header_bytes is not None:
            # HPACK bombs: the decoder refuses a larger header list.
            settings[SettingCodes.MAX_HEADER_LIST_SIZE] = max_header_bytes
            h2.decoder.max_header_list_size = max_header_bytes
            # A CONTINUATION flood: h2 holds a header block of up to 64
            # frames before decoding it, 8 MiB of our frames. An encoded
            # block twice the list's limit cannot decode within it (HPACK
            # compresses; only Huffman codes of rare bytes grow).
            self._max_header_block = 2 * max_header_bytes
        h2.local_settings = Settings(client=client, initial_values=settings)
        # h2 takes larger frames from the ACK of our SETTINGS on, but checks
        # the size of the frames read with it, in the same data, against the
        # old limit: take them from the start, as the peer may send them
        # right after its ACK.
        h2.max_inbound_frame_size = MAX_FRAME
        h2.incoming_buffer = _FrameBuffer(server=not client)
        self._preface = 0 if client else len(PREFACE)

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    def _start(self) -> None:
        # The preface (a client's) and the SETTINGS frame.
        h2 = self._h2
        h2.initiate_connection()
        # The connection's window holds every stream's at once: streams that
        # stall never leave the others without window (RFC 9113 section 5.2).
        h2.increment_flow_control_window(self._max_streams * STREAM_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Handle the frames received (called by asyncio)."""
        if self._flush_due:
            self._receive(data)  # the flush scheduled comes after
        else:
            # What the streams answer goes out at the end, in one write.
            self._flush_due = True
            try:
                self._receive(data)
            finally:
                self._flush_due = False
        self._flush()

    def _receive(self, data: bytes) -> None:
        # The DATA frames of open WebSocket streams go straight to their
        # streams, as they arrive: h2 would wait for each whole frame, and
        # make a frame object, run two state machines and make an event of
        # it, which costs more than the rest of a message's handling. Every
        # other frame goes to h2, whole and in order, so that h2 never holds
        # part of a frame taken here.
        size = len(data)
        pos = start = 0  # start: where the bytes not handed over yet start
        if self._left:
            # More of a DATA frame whose start went to its stream.
            pos = min(self._left, size)
            self._left -= pos
            stream = self._left_stream
            assert stream is not None
            if not self._left:
                self._left_stream = None  # not kept alive until the next
            if not self._piece(stream, data if pos == size else data[:pos]) or pos == size:
                return
            start = pos
        elif self._partial:
            self._partial.append(data)
            self._held += size
            if self._held < self._needed:
                return
            data = b"".join(self._partial)
            size = len(data)
            self._partial.clear()
            self._held = 0
        elif self._preface:
            pos = min(self._preface, size)  # h2 checks it
            self._preface -= pos
        streams = self._streams
        h2_streams = self._h2.streams
        limit = self._h2.max_inbound_frame_size
        while size - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
            length = high << 16 | low
            if length > limit:
                # RFC 9113 section 4.2, from the header: h2 would hold up to
                # 16 MiB of the frame first.
                self._end_after(data[start:pos], ErrorCodes.FRAME_SIZE_ERROR)
                return
            end = pos + 9 + length
            # DATA: not in a header block (h2 refuses it); END_STREAM and
            # padding are h2's to handle. WINDOW_UPDATE: whole, of a valid size.
            if not self._in_header_block and (
                (kind == _DATA and not flags & (_END_STREAM | _PADDED))
                or (kind == _WINDOW_UPDATE and length == 4 and end <= size)
            ):
                stream_id &= 0x7FFFFFFF
                if start < pos and stream_id in streams:
                    # h2 reads the frames before first: they may end or reset
                    # the stream (RFC 9113 section 5.1), or resize its window.
                    if not self._to_h2(data[start:pos]):
                        return
                    start = pos
                stream = streams.get(stream_id)
                h2_stream = h2_streams.get(stream_id)
                # Only a stream that carries an open WebSocket, in a state in
                # which h2 would take the frame.
                if (
                    stream is not None
                    and stream._websocket
                    and h2_stream is not None
                    and h2_stream.state_machine.state
                    in (_RECEIVING if kind == _DATA else _WINDOWED)
                ):
                    if kind == _DATA:
                        if not self._consume(h2_stream, length):
                            return
                        if end > size:
                            # The rest follows in the next reads.
                            self._left, self._left_stream = end - size, stream
                            if pos + 9 < size:
                                self._piece(stream, data[pos + 9 :])
                            return
                        if length and not self._piece(stream, data[pos + 9 : end]):
                            return
                        start = pos = end
                        continue
                    # A stream's WINDOW_UPDATE, as the peer reads (every other
                    # message of 64 KiB): its window grows as h2 would grow it.
                    # Errors (a zero increment, an overflow) are h2's to answer.
                    increment = _INCREMENT.unpack_from(data, pos + 9)[0] & 0x7FFFFFFF
                    window = h2_stream.outbound_flow_control_window + increment
                    if increment and window <= _MAX_WINDOW:
                        h2_stream.outbound_flow_control_window = window
                        if self._waiting:
                            self._send_waiting()
                        start = pos = end
                        continue
            if end > size:
                break
            if kind in _HEADER_BLOCK:
                self._in_header_block = not flags & _END_HEADERS
                self._header_bytes += length
                most = self._max_header_block
                if most is not None and self._header_bytes > most:
                    self._end_after(data[start:pos], ErrorCodes.ENHANCE_YOUR_CALM)
                    return
                if not self._in_header_block:
                    self._header_bytes = 0
            pos = end
        if start < pos and not self._to_h2(data[start:pos]):
            return
        if pos < size:
            # A frame's start: held until the whole frame (or its header) is.
            self._partial.append(data[pos:])
            self._held = size - pos
            self._needed = 9 if self._held < 9 else end - pos

    def _to_h2(self, data: bytes) -> bool:
        # Hand whole frames to h2 and handle its events; return whether the
        # connection goes on.
        try:
            events = self._h2.receive_data(data)
        except ProtocolError:
            self._close(goaway=False)  # h2 has queued the GOAWAY with the error
            return False
        self._handle(events)
        return self._going_on()

    def _end_after(self, frames: bytes, error: ErrorCodes) -> None:
        # Hand h2 the whole frames before a refused one, then end the
        # connection with ``error`` (unless those frames ended it).
        if not frames or self._to_h2(frames):
            self._close(error=error)

    def _going_on(self) -> bool:
        # Whether the connection still takes frames: what was just handled
        # may have closed it.
        transport = self.transport
        return transport is not None and not transport.is_closing()

    def _consume(self, h2_stream: H2Stream, size: int) -> bool:
        # A DATA frame taken past h2 shrinks the windows as h2 would (they
        # grow back through h2 as the stream acknowledges what it took).
        # Return whether the connection goes on.
        h2 = self._h2
        try:
            h2._inbound_flow_control_window_manager.window_consumed(size)
            h2_stream._inbound_window_manager.window_consumed(size)
        except ProtocolError as exc:  # the peer overran a window
            self._close(error=exc.error_code)
            return False
        return True

    def _piece(self, stream: StreamTransport, data: bytes) -> bool:
        # Hand a piece of a DATA frame's payload to its stream; return
        # whether the connection goes on.
        if stream._lost:
            # Closed meanwhile: the bytes still count against the connection's window.
            self._acknowledge(len(data), stream.stream_id)
        else:
            stream._data_received(data, len(data))
        return self._going_on()

    def _handle(self, events: list[Event]) -> None:
        streams = self._streams
        for event in events:
            if isinstance(event, DataReceived):
                stream = streams.get(event.stream_id)
                if stream is None:
                    # A stream that we closed: its bytes still count against
                    # the connection's window.
                    self._acknowledge(event.flow_controlled_length, event.stream_id)
                else:
                    stream._data_received(event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._eof_received()
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                # A stream that we had ended is not counted: its work was done
                # (a client may reset after the closing handshake rather than
                # wait for our END_STREAM). Any other is, whether seen or not:
                # reset in the frames of its request, or past the limit.
                counted = event.remote_reset and (stream is None or not stream._ended)
                if stream is not None:
                    stream._lose()
                if counted and self._reset_by_peer():
                    return  # one too many: the connection is over
            elif isinstance(event, ConnectionTerminated):
                # The peer's GOAWAY: h2 sends nothing more, the streams end.
                self._close()
                return
            else:
                if isinstance(event, (WindowUpdated, RemoteSettingsChanged)):
                    self._send_waiting()  # windows opened or resized
                self._event(event)
                if not self._going_on():
                    # The event ended the connection (a refusal past the
                    # allowance): h2 takes nothing more after its GOAWAY.
                    return

    def _event(self, event: Event) -> None:
        """Handle an event that is not about a stream's data or end."""

    def _reset_by_peer(self) -> bool:
        """Count a stream that the peer reset; return whether that ended the connection.

        A server limits how often (see :data:`RESET_BURST`).
        """
        return False

    def eof_received(self) -> None:
        """Close on the peer's EOF (called by asyncio)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """End every stream (called by asyncio)."""
        for stream in list(self._streams.values()):
            stream._lose()

    def pause_writing(self) -> None:
        """Hold the streams' data back (called by asyncio)."""
        self._paused = True

    def resume_writing(self) -> None:
        """Send what the streams hold back (called by asyncio)."""
        self._paused = False
        self._send_waiting()

    def _stream_closed(self, stream: StreamTransport) -> None:
        del self._streams[stream.stream_id]
        self._waiting.pop(stream.stream_id, None)
        if not self._streams:
            self._no_streams()

    def _no_streams(self) -> None:
        """React to the last open stream's end."""

    def _acknowledge(self, size: int, stream_id: int) -> None:
        if size:
            self._h2.acknowledge_received_data(size, stream_id)

    def _send(self, stream: StreamTransport, frames: int | None = None) -> bool:
        """Send the stream's data as far as the windows and the TCP buffer allow.

        At most ``frames`` frames, when given. Returns whether a frame went out.
        """
        h2 = self._h2
        stream_id = stream.stream_id
        out = stream._out
        sent = False
        h2_stream = None
        while out and not self._paused and frames != 0:
            if h2_stream is None:
                h2_stream = h2.streams.get(stream_id)
                if h2_stream is None or h2_stream.state_machine.state not in _SENDING:
                    # Reset by the peer in the frames being handled.
                    stream._reset_meanwhile()
                    return sent
                # h2's output made before these frames goes out first (the
                # loop makes none: it only counts h2's windows down).
                self._frames += h2.data_to_send()
            size = min(
                h2.outbound_flow_control_window,
                h2_stream.outbound_flow_control_window,
                h2.max_outbound_frame_size,
            )
            if size <= 0:
                break
            data = out[0]
            if len(data) > size:
                view = memoryview(data)
                out[0] = view[size:]
                data = view[:size]
            else:
                out.popleft()
            size = len(data)
            stream._out_size -= size
            # The DATA frame is made here, not by h2 (whose send_data() costs
            # more than the rest of a message's sending), and h2's windows
            # shrink as its own would: it grows them on WINDOW_UPDATE.
            h2.outbound_flow_control_window -= size
            h2_stream.outbound_flow_control_window -= size
            frames_out = self._frames
            frames_out += (size << 48 | stream_id).to_bytes(9, "big")
            frames_out += data
            self._unflushed += size
            if self._unflushed >= _FLUSH_SIZE:
                self._flush()
            sent = True
            if frames is not None:
                frames -= 1
        if out:
            self._waiting[stream_id] = stream
        else:
            self._waiting.pop(stream_id, None)
            if stream._eof and not stream._ended:
                stream._end()
        stream._sent()
        self._flush_later()
        return sent

    def _send_waiting(self) -> None:
        # A frame per stream in turn, while any goes out.
        while self._waiting and not self._paused:
            sent = False
            for stream in list(self._waiting.values()):
                sent = self._send(stream, 1) or sent
            if not sent:
                break
        self._flush_later()

    def _flush_later(self) -> None:
        # Write h2's output before the loop's turn ends, with what comes next.
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        self._flush()

    def _flush(self) -> None:
        # Write the frames made now: the streams' DATA, then h2's output.
        self._unflushed = 0
        data: bytes | bytearray = self._h2.data_to_send()
        frames = self._frames
        if frames:
            frames += data
            data = frames
            self._frames = bytearray()  # the transport may keep the one written
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self, *, goaway: bool = True, error: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if goaway:
            self._h2.close_connection(error)
        self._flush()
        transport.close()
        # h2 sends nothing more after a GOAWAY: the streams end now, and
        # their writes from now on go nowhere.
        for stream in list(self._streams.values()):
            stream._lose()


class Http2Connection(BaseHttp2Connection):
    """A server's HTTP/2 connection: each stream is a WebSocket or a plain HTTP request.

    Made by a server with ``http2=True`` when a client speaks HTTP/2.
    It sends ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`` (RFC 8441 section 3)
    and serves each stream with a :class:`StreamConnection`. Malformed
    requests are answered on their stream (400); HTTP/2 protocol errors end
    the connection with GOAWAY. Idle (no stream open) for the server's
    ``open_timeout``, and at the server's shutdown once its streams have
    closed (each WebSocket with 1001), it ends with GOAWAY.
    """

    __slots__ = ("_allowance", "_allowance_at", "_draining", "_idle", "_server")

    def __init__(self, server: Server, *, max_streams: int = MAX_STREAMS) -> None:
        assert server.loop is not None  # set when the server starts
        # Headers are checked by request_from_fields(): a malformed request
        # is refused on its stream, not with the whole connection.
        config = H2Configuration(client_side=False, validate_inbound_headers=False)
        super().__init__(server.loop, _ServerH2Connection(config))
        self._server = server
        options = server._protocol_options
        max_header_bytes = options.get("max_header_bytes", MAX_HEADER_BYTES)
        settings = {
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        }
        self._max_streams = max_streams
        self._configure(settings, max_header_bytes, client=False)
        self._draining = False  # the server is shutting down
        # Streams that the client may still reset or have refused (RESET_BURST).
        self._allowance = float(RESET_BURST)
        self._allowance_at = server.loop.time()
        self._idle = (
            None
            if server.open_timeout is None
            else server._deadlines_for(Http2Connection._idle_timed_out, server.open_timeout)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the server's SETTINGS (called by asyncio)."""
        self.transport = transport  # type: ignore[assignment]
        if self._server._closing is not None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._server.http2_connections.add(self)
        self._start()
        if self._idle is not None:
            self._idle.add(self)

    def _event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._request_received(event)

    def connection_lost(self, exc: Exception | None) -> None:
        """End every stream (called by asyncio)."""
        self._server.http2_connections.discard(self)
        if self._idle is not None:
            self._idle.discard(self)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Refuse new streams, and close with GOAWAY once the open ones have ended."""
        self._draining = True
        if not self._streams:
            self._close()

    # Streams.

    def _request_received(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self._draining:
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self._streams) >= self._max_streams:
            # RFC 9113 section 5.1.2: a stream past the limit we advertised is
            # a stream error. REFUSED_STREAM tells the client that nothing of
            # it was processed, so it may retry; the other streams go on.
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._reset_by_peer()  # a client that ignores the limit: as costly
            return
        if self._idle is not None:
            self._idle.discard(self)
        server = self._server
        stream = StreamTransport(self, stream_id)
        self._streams[stream_id] = stream
        connection = StreamConnection(server, Http2ServerProtocol(**server._protocol_options))
        stream._protocol = connection
        connection.connection_made(stream)
        if stream._lost:
            return  # refused: the server is closing
        try:
            request = request_from_fields(
                event.headers,  # bytes: no header_encoding
                max_headers=server._protocol_options.get("max_headers", MAX_HEADERS),
            )
        except InvalidRequest as exc:
            connection.refuse(exc)
            return
        stream._websocket = wants_upgrade(request)  # only an extended CONNECT does
        # Its StreamEnded event comes next, maybe after the response.
        stream._remote_ended = event.stream_ended is not None
        if not stream._remote_ended and not stream._websocket:
            # A plain request with a body: handed over at its end.
            stream._request = request
            stream._body = bytearray()
        else:
            connection.request_received(request)

    def _reset_by_peer(self) -> bool:
        now = self.loop.time()
        allowance = self._allowance + (now - self._allowance_at) * RESETS_PER_SECOND
        self._allowance = min(allowance, RESET_BURST) - 1
        self._allowance_at = now
        if self._allowance >= 0:
            return False
        self._close(error=ErrorCodes.ENHANCE_YOUR_CALM)
        return True

    def _no_streams(self) -> None:
        if self._draining:
            self._close()
        elif self._idle is not None and self.transport is not None:
            self._idle.add(self)

    def _idle_timed_out(self) -> None:
        if not self._streams:
            self._close()


class _ServerH2Connection(H2Connection):
    """h2's connection, with the limit on the client's streams left to :class:`Http2Connection`.

    h2 ends the whole connection when a client opens a stream past
    ``SETTINGS_MAX_CONCURRENT_STREAMS``; RFC 9113 section 5.1.2 makes it an
    error of that stream only, which :class:`Http2Connection` refuses.
    """

    @property
    def open_inbound_streams(self) -> int:
        """None, as h2 sees it: the only check that reads it is the one left to us."""
        super().open_inbound_streams  # noqa: B018 - it forgets the closed streams
        return 0


class StreamConnection(ServerConnection):
    """A server connection over one HTTP/2 stream: its response goes out as HEADERS.

    Otherwise it is a :class:`~rapidws.asyncio.server.ServerConnection`,
    handed to the same handler (``ws.transport.get_extra_info("http2_stream_id")``
    tells the stream).
    """

    __slots__ = ()

    def request_received(self, request: Request) -> None:
        """Handle the stream's request, as a request read from the transport."""
        self.protocol.receive_request(request)  # type: ignore[attr-defined]
        self._process_events()

    def refuse(self, exc: InvalidRequest) -> None:
        """Answer a request that cannot be read, with the status of ``exc``."""
        self.protocol.handshake_exc = exc
        self._send_response(self.protocol.reject(exc.status, str(exc)))

    def _send_response(self, response: Response) -> None:
        stream = self.transport
        if isinstance(stream, StreamTransport):
            request = self.protocol.request
            head_only = request is not None and request.method == "HEAD"
            stream._send_headers(response_fields(response, head_only=head_only))
            stream._accepted = response.status == 101
        super()._send_response(response)


class StreamTransport(asyncio.Transport):
    """One HTTP/2 stream, as the transport of the connection it carries.

    ``write()`` sends DATA, ``write_eof()`` END_STREAM, ``abort()``
    RST_STREAM; ``close()`` ends the stream after what is buffered (and
    resets it, without error, if the client has not ended its side).
    ``get_extra_info()`` answers for the TCP connection, and
    ``"http2_stream_id"`` gives the stream's id.
    """

    __slots__ = (
        "_accepted",
        "_body",
        "_closing",
        "_connection",
        "_ended",
        "_eof",
        "_high",
        "_in",
        "_in_eof",
        "_lost",
        "_low",
        "_out",
        "_out_size",
        "_protocol",
        "_reading_paused",
        "_remote_ended",
        "_request",
        "_unacked",
        "_websocket",
        "_writing_paused",
        "stream_id",
    )

    def __init__(self, connection: BaseHttp2Connection, stream_id: int) -> None:
        super().__init__()
        self._connection = connection
        #: The stream's id on its HTTP/2 connection.
        self.stream_id = stream_id
        self._protocol: Any = None
        self._websocket = False  # the request is an extended CONNECT
        self._accepted = False  # a WebSocket is open on it
        # A plain request waiting for its body.
        self._request: Request | None = None
        self._body: bytearray | None = None
        # Input held back while reading is paused: (data, flow-controlled size);
        # made for the streams that pause only (a deque is 760 bytes).
        self._in: collections.deque[tuple[bytes, int]] | None = None
        self._in_eof = False  # END_STREAM came after the held input
        self._unacked = 0  # bytes taken, not acknowledged yet (below ACK_BATCH)
        self._reading_paused = False
        self._out: collections.deque[bytes | memoryview] = collections.deque()
        self._out_size = 0
        self._high = 65536
        self._low = 16384
        self._writing_paused = False
        self._eof = False  # write_eof() was called: END_STREAM after _out
        self._closing = False  # close() was called
        self._ended = False  # END_STREAM sent
        self._remote_ended = False  # END_STREAM received
        self._lost = False

    # asyncio.Transport.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Return the stream's id for ``"http2_stream_id"``, else the TCP connection's info."""
        if name == "http2_stream_id":
            return self.stream_id
        transport = self._connection.transport
        return default if transport is None else transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand what comes in to ``protocol``."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """Return the protocol that gets what comes in."""
        return cast(asyncio.BaseProtocol, self._protocol)

    def is_closing(self) -> bool:
        """Tell whether the stream is ending or ended on our side."""
        return self._eof or self._lost

    def is_reading(self) -> bool:
        """Tell whether received data is handed over."""
        return not self._reading_paused

    def pause_reading(self) -> None:
        """Hold received data back, unacknowledged: the client's window closes."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Hand over the data held back, and acknowledge it."""
        if self._reading_paused:
            self._reading_paused = False
            if self._in or self._in_eof:
                self._connection.loop.call_soon(self._resume)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set when the protocol's writing pauses (above ``high``) and resumes (at ``low``)."""
        self._high = 65536 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        """Return how many bytes wait for a window."""
        return self._out_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """Return the low and high water marks."""
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` in DATA frames, as the windows allow."""
        if self._eof or self._lost or not data:
            return
        self._out.append(data if isinstance(data, bytes) else bytes(data))
        self._out_size += len(data)
        self._connection._send(self)
        if not self._writing_paused and self._out_size > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        """Return ``True``: END_STREAM half-closes a stream."""
        return True

    def write_eof(self) -> None:
        """End the stream on our side (END_STREAM) once the buffered data is sent."""
        if self._eof or self._lost:
            return
        self._eof = True
        self._connection._send(self)

    def close(self) -> None:
        """End the stream after the buffered data; reset it if the client's side is open."""
        if self._lost:
            return
        self._closing = True
        if self._ended:
            self._end()  # the client's side is still open: reset
        else:
            self.write_eof()

    def abort(self) -> None:
        """Reset the stream at once (RST_STREAM ``CANCEL``), dropping buffered data."""
        if self._lost:
            return
        with contextlib.suppress(StreamClosedError):  # see _reset_meanwhile()
            self._connection._h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
        self._connection._flush_later()
        self._lose()

    # From the HTTP/2 connection.

    def _send_headers(self, fields: list[tuple[str, str]]) -> None:
        if self._lost:
            return
        try:
            self._connection._h2.send_headers(self.stream_id, fields)
        except (StreamClosedError, StreamIDTooLowError):
            # Reset in the frames of its request: h2 closed the stream, and
            # may have forgotten it already (see _reset_meanwhile()).
            self._reset_meanwhile()
            return
        self._connection._flush_later()

    def _data_received(self, data: bytes, size: int) -> None:
        body = self._body
        if body is not None:
            self._body_received(body, data, size)
        elif self._reading_paused or self._in:
            if self._in is None:
                self._in = collections.deque()
            self._in.append((data, size))
        else:
            self._protocol.data_received(data)
            self._taken(size)

    def _taken(self, size: int) -> None:
        # The protocol took ``size`` flow-controlled bytes: acknowledge them,
        # ACK_BATCH at a time.
        unacked = self._unacked + size
        if unacked >= ACK_BATCH:
            self._connection._acknowledge(unacked, self.stream_id)
            unacked = 0
        self._unacked = unacked

    def _body_received(self, body: bytearray, data: bytes, size: int) -> None:
        self._connection._acknowledge(size, self.stream_id)
        body += data
        connection = self._protocol
        limit = connection.protocol.max_body_size
        if limit is not None and len(body) > limit:
            self._body = None
            connection.refuse(InvalidRequest(f"body over {limit} bytes", 413))

    def _eof_received(self) -> None:
        self._remote_ended = True
        request, body = self._request, self._body
        if request is not None and body is not None:
            self._request = self._body = None
            request.body = bytes(body)
            self._protocol.request_received(request)
        elif self._in:
            self._in_eof = True  # after the input held back
            return
        elif not self._websocket:
            pass  # a plain request: the response ends the stream
        elif not self._protocol.eof_received():
            self.close()
        if self._ended and not self._lost:
            self._lose()

    def _resume(self) -> None:
        # What came while reading was paused, in order, until it pauses again.
        held = self._in
        while held and not self._reading_paused and not self._lost:
            data, size = held.popleft()
            self._protocol.data_received(data)
            self._taken(size)
        if not held and self._in_eof and not self._lost:
            self._in_eof = False
            self._eof_received()
        self._connection._flush_later()

    def _sent(self) -> None:
        # After data left the buffer: writing may go on.
        if self._writing_paused and self._out_size <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _end(self) -> None:
        h2 = self._connection._h2
        try:
            if not self._ended:
                self._ended = True
                h2.end_stream(self.stream_id)
            if not self._remote_ended and (self._closing or not self._accepted):
                # RFC 9113 section 8.1: a complete answer before the peer's
                # end; or close() of a WebSocket the peer keeps open.
                h2.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
                self._lose()
            elif self._remote_ended:
                self._lose()
        except StreamClosedError:
            self._reset_meanwhile()

    def _reset_meanwhile(self) -> None:
        # h2 read the peer's RST_STREAM (or END_STREAM after ours) in the
        # frames whose events are being handled: the stream is over, and
        # its event, which comes next, finds it gone.
        self._lose()

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        # What the stream's peer sent still counts against the connection's window.
        unacked = self._unacked + sum(size for _, size in self._in or ())
        self._connection._acknowledge(unacked, self.stream_id)
        self._unacked = 0
        self._in = None
        self._out.clear()
        self._out_size = 0
        self._connection._stream_closed(self)
        # As asyncio does: connection_lost() runs in a step of its own.
        self._connection.loop.call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        self._protocol.connection_lost(None)
