"""The interface between the protocol and its extensions (RFC 6455 section 9).

An extension is negotiated in the opening handshake by a factory (one per side)
and then transforms the payloads of data messages. Extensions own RSV bits:
the protocol fails a connection on a frame whose RSV bits no negotiated
extension owns, and on RSV bits on any frame but the first of a message
(the rule of RFC 7692, the only extension in wide use).
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterator, Sequence

from ..headers import ExtensionParameter

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]


class Extension(abc.ABC):
    """A negotiated extension, for the lifetime of one connection.

    Attributes:
        name: the registered extension name (``permessage-deflate``).
        rsv_bits: the RSV bits this extension may set on the first frame of a
            message (``0x40`` for RSV1).
    """

    name: str
    rsv_bits: int

    @abc.abstractmethod
    def decode(self, data: bytes, *, rsv: int, fin: bool, max_size: int | None) -> bytes:
        """Transform received payload bytes of a data message.

        Called for each piece of each frame as it arrives, in order.

        Args:
            data: a piece of the message's payload, unmasked.
            rsv: the RSV bits of the message's first frame.
            fin: whether this piece ends the message.
            max_size: how many more bytes the message may grow by, or ``None``.

        Raises:
            ProtocolError: when the data cannot be decoded (the connection is
                failed with its code; ``PayloadTooBig`` for ``max_size``).
        """

    def decode_stream(
        self, data: bytes, *, rsv: int, fin: bool, chunk_size: int
    ) -> Iterator[bytes]:
        """Transform received payload bytes of a streamed message, in bounded pieces.

        As :meth:`decode`, for a message that the protocol hands out as a
        stream (:mod:`rapidws.core.stream`): the output comes in pieces of at
        most ``chunk_size`` bytes, produced as they are asked for, so that a
        small input that expands a lot is never held whole. The default calls
        :meth:`decode` without a limit, which suits an extension that does not
        expand its input; one that does overrides this.

        Raises:
            ProtocolError: when the data cannot be decoded.
        """
        yield self.decode(data, rsv=rsv, fin=fin, max_size=None)

    @abc.abstractmethod
    def encode(self, data: bytes, *, first: bool, fin: bool, compress: bool) -> tuple[int, bytes]:
        """Transform the payload of an outgoing data frame.

        Args:
            data: the frame's payload.
            first: whether this frame starts a message.
            fin: whether this frame ends the message.
            compress: whether the sender lets this message be compressed
                (``send(data, compress=False)`` says no); set on every frame
                of a message with the value of its first frame.

        Returns:
            The RSV bits to set on the frame and the payload to send.
        """

    def prepared_form(self) -> Hashable | None:
        """Tell whether whole messages encode the same on every connection like this one.

        Returns a hashable key: connections whose extensions give equal keys
        get the same bytes from :meth:`encode_prepared` for any message, so a
        broadcast frames it once for all of them. ``None`` (the default) when
        the encoding depends on this connection's state (a compressor with
        context takeover): such a connection encodes each message itself.
        """
        return None

    def encode_prepared(self, data: bytes, *, compress: bool) -> tuple[int, bytes]:
        """Encode a whole message without this connection's state, for its wire form.

        Called only when :meth:`prepared_form` is not ``None``; returns the
        RSV bits and the payload, as :meth:`encode` does for a whole message.
        """
        raise NotImplementedError


class ClientExtensionFactory(abc.ABC):
    """Offers an extension in a client's request and accepts the server's answer."""

    name: str

    @abc.abstractmethod
    def offer(self) -> list[ExtensionParameter]:
        """Return the parameters to offer in ``Sec-WebSocket-Extensions``."""

    @abc.abstractmethod
    def accept(self, params: Sequence[ExtensionParameter]) -> Extension:
        """Build the extension from the parameters of the server's answer.

        Raises:
            InvalidHandshake: when the answer names parameters that were not offered.
        """


class ServerExtensionFactory(abc.ABC):
    """Answers a client's offers of an extension."""

    name: str

    @abc.abstractmethod
    def negotiate(
        self, params: Sequence[ExtensionParameter]
    ) -> tuple[list[ExtensionParameter], Extension] | None:
        """Answer one offer of this extension.

        Returns:
            The parameters to answer with and the extension to apply, or ``None``
            to decline this offer (the next offer, if any, is tried).

        Raises:
            InvalidHandshake: when the offer is malformed (the handshake fails with 400).
        """
