"""The pure-Python twin of ``ConnectionCore``, in ``_connection.c``.

The part of :class:`rapidws.asyncio.connection.Connection` that every message
goes through: ``data_received()`` feeds the engine and, on an open connection
with a message callback, hands each message to it and writes the replies.
Without a callback, a read that brings one message while ``recv()`` waits
hands it to ``recv()``'s future. Anything else goes on in the subclass's
methods (``_data_received_more``, ``_process_events``, ``_events_done``,
``_write_pending``, ``_read_payload_directly``, ``_callback_failed``,
``_send_nowait_more``), with the same arguments. The C twin does the same with
no Python frame of its own.

It also counts what goes through (:mod:`rapidws.metrics` reads the counts
when scraped): messages and payload bytes each way by type, and bytes on the
wire (:data:`COUNTS` names them), added to as the data passes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["COUNTS", "DIRECT_READ_MIN", "ConnectionCore"]

# A frame with this much payload still to come is read straight into its
# message (recv_into), not through data_received() and a copy.
DIRECT_READ_MIN = 64 * 1024
_OPEN: object = None  # pure.set_open_state()


#: The connection's counts, as attributes of the same names on both twins.
COUNTS = (
    "_text_in",
    "_text_in_bytes",
    "_binary_in",
    "_binary_in_bytes",
    "_text_out",
    "_text_out_bytes",
    "_binary_out",
    "_binary_out_bytes",
    "_wire_in",
    "_wire_out",
)


def _size(data: Any) -> int | None:
    # The payload size of a message's data: UTF-8 for str, None for what is
    # not counted (a PreparedMessage).
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return None


def _only_messages(events: list[Any]) -> bool:
    return all(type(event) is str or type(event) is bytes for event in events)


class ConnectionCore:
    """The per-message part of a connection; subclassed by ``Connection``."""

    __slots__ = ("_handling", "_on_message", "_recv_waiter", "protocol", "transport", *COUNTS)

    #: The sans-I/O engine of this connection.
    protocol: Any
    #: The asyncio transport, once connected.
    transport: Any
    _on_message: Any
    _handling: bool
    #: The future of the recv() waiting for a message, if any.
    _recv_waiter: Any
    _text_in: int
    _text_in_bytes: int
    _binary_in: int
    _binary_in_bytes: int
    _text_out: int
    _text_out_bytes: int
    _binary_out: int
    _binary_out_bytes: int
    _wire_in: int
    _wire_out: int

    def __new__(cls, *args: Any, **kwargs: Any) -> ConnectionCore:
        """Make a connection with its counts at zero, as the C twin's allocation has them."""
        self = super().__new__(cls)
        for name in COUNTS:
            setattr(self, name, 0)
        return self

    def data_received(self, data: bytes) -> None:
        """Feed received bytes to the engine (called by asyncio)."""
        self._wire_in += len(data)
        protocol = self.protocol
        if protocol.state is not _OPEN:
            self._data_received_more(data)
            return
        protocol.receive_data(data)
        on_message = self._on_message
        if on_message is not None and not self._handling and _only_messages(protocol._events):
            events = protocol.events_received()
            self._handling = True
            try:
                for message in events:
                    self._count_received(message, True)
                    try:
                        on_message(self, message)
                    except Exception as exc:
                        self._callback_failed(on_message, exc)
            finally:
                self._handling = False
            self._handled(protocol)
        elif not self._handling:
            self._hand_over(protocol)
        else:
            self._process_events()
        if protocol.payload_left >= DIRECT_READ_MIN:
            self._read_payload_directly()

    def _hand_over(self, protocol: Any) -> None:
        # _process_events() when the read brought one message for the
        # waiting recv(): its future gets it, then the engine's output is
        # written.
        waiter = getattr(self, "_recv_waiter", None)
        events = protocol._events
        if (
            waiter is None
            or waiter.done()
            or len(events) != 1
            or (type(events[0]) is not str and type(events[0]) is not bytes)
        ):
            self._process_events()
            return
        message = protocol.events_received()[0]
        self._count_received(message, True)
        self._recv_waiter = None
        self._handling = True
        try:
            waiter.set_result(message)
        finally:
            self._handling = False
        self._handled(protocol)

    def _handled(self, protocol: Any) -> None:
        # After the events: a pause is _events_done()'s to handle; else the
        # replies and what the engine sent go out.
        if protocol.parsing_paused:
            self._events_done()
        else:
            self._write_pending()

    def send_nowait(self, message: Any, *, compress: bool = True) -> None:
        """Send a message at once, without waiting for the write buffer to drain.

        For callbacks and broadcasts, where awaiting is not possible or not
        wanted; the write buffer then grows past its high-water mark, and
        reading from the peer pauses until it drains.

        Raises:
            ConnectionClosed: when the connection is closing or closed.
            InvalidState: while a fragmented message is being sent.
            TypeError: for a message that is neither ``str`` nor bytes-like.
        """
        protocol = self.protocol
        if protocol.state is not _OPEN:
            self._send_nowait_more(message, compress=compress)
            self._count_sent(message, True)
            return
        protocol.send_message(message, compress=compress)
        self._count_sent(message, True)
        if not self._handling:
            self._write_pending()

    def _count_received(self, data: Any, message: bool) -> None:
        # Received data of a message, and one message more when message is
        # set; for the paths in Python (streams, the general event loop).
        self._count(data, message, 0)

    def _count_sent(self, data: Any, message: bool) -> None:
        # Sent data of a message, as _count_received() counts received data.
        self._count(data, message, 4)

    def _count(self, data: Any, message: bool, first: int) -> None:
        # COUNTS[first:first + 4]: text messages, text bytes, binary
        # messages, binary bytes.
        size = _size(data)
        if size is None:
            return
        if not isinstance(data, str):
            first += 2
        messages, sizes = COUNTS[first], COUNTS[first + 1]
        setattr(self, messages, getattr(self, messages) + message)
        setattr(self, sizes, getattr(self, sizes) + size)

    def _data_received_more(self, data: bytes) -> None:
        raise NotImplementedError

    def _process_events(self) -> None:
        raise NotImplementedError

    def _events_done(self) -> None:
        raise NotImplementedError

    def _write_pending(self) -> None:
        raise NotImplementedError

    def _read_payload_directly(self) -> None:
        raise NotImplementedError

    def _callback_failed(self, method: Any, exc: BaseException) -> None:
        raise NotImplementedError

    def _send_nowait_more(self, message: Any, *, compress: bool = True) -> None:
        raise NotImplementedError
