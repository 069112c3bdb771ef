"""Messages framed once for many connections: the basis of encode-once broadcast.

A server's frame is not masked (RFC 6455 section 5.1), so the bytes of a
whole message are the same for every connection that encodes it the same
way. A :class:`PreparedMessage` keeps one frame per distinct wire form: one for
every connection without extensions (and for messages an extension leaves
alone, such as those under the compression threshold), one per distinct
permessage-deflate setting among connections that reset their compressor after
each message (RFC 7692 section 7.1.1.1, ``server_no_context_takeover``).
Connections whose encoding depends on their own history (context takeover)
and clients (which mask every frame with a fresh key) encode the message
themselves: :meth:`Protocol.send_prepared` knows which is which.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from ..speedups import encode_frame
from .frames import OP_BINARY, OP_TEXT

if TYPE_CHECKING:
    from .extensions.base import Extension

__all__ = ["PreparedMessage", "wire_form"]


class PreparedMessage:
    """A whole message to send to many connections, framed once per wire form.

    ``str`` is sent as text (encoded to UTF-8 once, here), bytes-like as binary.
    Pass it to ``send()`` or ``send_nowait()`` of any number of connections;
    the frames are built on first use and shared.

    Args:
        message: the message.
        compress: ``False`` skips a negotiated compression, as in ``send()``.

    Attributes:
        opcode: the message's opcode (text or binary).
        payload: the message's payload bytes.
    """

    __slots__ = ("_frames", "compress", "opcode", "payload")

    def __init__(self, message: str | bytes | bytearray | memoryview, *, compress: bool = True):
        if isinstance(message, str):
            self.opcode = OP_TEXT
            self.payload = message.encode()
        elif isinstance(message, (bytes, bytearray, memoryview)):
            self.opcode = OP_BINARY
            self.payload = bytes(message)
        else:
            raise TypeError(f"cannot send {type(message).__name__}: send str or bytes")
        self.compress = compress
        # Wire form (see wire_form()) -> the frame's bytes.
        self._frames: dict[Hashable, bytes] = {}

    @classmethod
    def from_payload(cls, opcode: int, payload: bytes, *, compress: bool = True) -> PreparedMessage:
        """Make a prepared message of an opcode (1 text, 2 binary) and its payload.

        For payloads that arrive encoded already (from a broker): a text
        payload must be valid UTF-8, which is not checked again here.
        """
        if opcode not in (OP_TEXT, OP_BINARY):
            raise ValueError(f"a prepared message is text (1) or binary (2), not opcode {opcode}")
        message = cls.__new__(cls)
        message.opcode = opcode
        message.payload = payload
        message.compress = compress
        message._frames = {}
        return message

    def __len__(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        kind = "text" if self.opcode == OP_TEXT else "binary"
        return f"<PreparedMessage {kind} {len(self.payload)} bytes, {len(self._frames)} forms>"

    def frame(self, form: Hashable, extensions: Sequence[Extension]) -> bytes:
        """Return the frame of this message for connections of wire form ``form``.

        ``form`` and ``extensions`` come from one connection, whose
        :func:`wire_form` is ``form``; connections of the same form share
        the returned bytes.
        """
        frame = self._frames.get(form)
        if frame is None:
            rsv, data = 0, self.payload
            for extension in extensions:
                bits, data = extension.encode_prepared(data, compress=self.compress)
                rsv |= bits
            if not rsv and form != () and data is self.payload:
                # The extensions left this message alone (under the
                # compression threshold): the plain frame serves.
                frame = self.frame((), ())
            else:
                frame = encode_frame(0x80 | rsv | self.opcode, data)
            self._frames[form] = frame
        return frame


def wire_form(extensions: Sequence[Extension]) -> Hashable | None:
    """Return the key under which connections share frames, or ``None`` if they cannot.

    ``()`` for a connection without extensions; a tuple of the extensions'
    :meth:`~rapidws.core.Extension.prepared_form` otherwise; ``None`` when an
    extension's output depends on the connection's own state.
    """
    if not extensions:
        return ()
    forms = tuple(extension.prepared_form() for extension in extensions)
    return None if None in forms else forms
