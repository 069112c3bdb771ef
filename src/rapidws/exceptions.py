"""Every exception that rapidws raises.

The tree::

    WebSocketError                  base of everything below
    ├── ProtocolError               the peer broke RFC 6455; carries the close code
    │   └── PayloadTooBig           a frame or message over a size limit (1009)
    ├── InvalidHandshake            the opening handshake failed
    │   ├── InvalidRequest          a server got a request it refuses; carries the HTTP status
    │   ├── InvalidResponse         a client got a response it refuses; carries the response
    │   │   ├── InvalidStatus       the server answered with a status other than 101
    │   │   └── InvalidRedirect     a redirect the client will not follow; carries the response
    │   ├── InvalidURI              a client was given a URI it cannot connect to
    │   ├── InvalidProxy            a proxy URL is invalid, or the proxy failed to open a tunnel
    │   │   └── ProxyRefused        the proxy refused the tunnel; carries its status and reason
    │   └── SecurityError           a handshake limit was exceeded (header size or count)
    ├── ConnectionClosed            the connection is closed; carries the close frames
    │   ├── ConnectionClosedOK      closed with 1000 or 1001
    │   └── ConnectionClosedError   closed for any other reason
    ├── InvalidState                local misuse: the connection is not in the right state
    └── ConcurrencyError            two coroutines used a connection the same way at once

``InvalidState`` is also an :class:`AssertionError` and ``ConcurrencyError`` a
:class:`RuntimeError`, as they signal bugs in the calling code, not in the peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core.frames import Close
    from .core.http11 import Response

__all__ = [
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "InvalidHandshake",
    "InvalidProxy",
    "InvalidRedirect",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyRefused",
    "SecurityError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every exception that rapidws raises."""


class ProtocolError(WebSocketError):
    """The peer broke the WebSocket protocol.

    Attributes:
        code: the close code that the connection was failed with (1002 for a
            framing error, 1007 for invalid UTF-8, 1009 for a size limit, ...).
    """

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class PayloadTooBig(ProtocolError):
    """A frame or a message exceeded a size limit.

    Attributes:
        size: the size in bytes that the frame or message reached, as far as known.
        limit: the limit in bytes that it exceeded.
    """

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message, 1009)
        self.size = size
        self.limit = limit


class InvalidHandshake(WebSocketError):
    """The opening handshake failed."""


class InvalidRequest(InvalidHandshake):
    """A server refused the client's handshake request.

    Attributes:
        status: the HTTP status the server answers with (400, 405, 426, ...).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SecurityError(InvalidRequest):
    """The handshake exceeded a limit (line length, header count, header bytes).

    A server answers it with 431 (or 414 for an overlong request line).
    """

    def __init__(self, message: str, status: int = 431) -> None:
        super().__init__(message, status)


class InvalidResponse(InvalidHandshake):
    """A client refused the server's handshake response.

    Attributes:
        response: the response as received, or ``None`` when it could not be parsed.
    """

    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class InvalidStatus(InvalidResponse):
    """The server answered the handshake with a status other than 101."""

    response: Response

    def __init__(self, response: Response) -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status}", response)


class InvalidRedirect(InvalidResponse):
    """The server redirected the client somewhere it will not follow.

    To a ``ws://`` URI from a ``wss://`` one, to an invalid ``Location``, or
    past the client's ``max_redirects``.
    """

    response: Response


class InvalidURI(InvalidHandshake):
    """The URI given to a client is not a valid ``ws://`` or ``wss://`` URI."""


class InvalidProxy(InvalidHandshake):
    """A proxy URL is invalid, or the proxy failed to open a tunnel.

    The proxy answered something that is not its protocol, or closed the
    connection before opening the tunnel.
    """


class ProxyRefused(InvalidProxy):
    """The proxy refused to open a tunnel to the server.

    Attributes:
        status: the HTTP status of an HTTP proxy (407, 403, 502, ...), or the
            reply code of a SOCKS proxy (0x02 to 0x08 for SOCKS5, 0x5B to 0x5D
            for SOCKS4).
        reason: the HTTP reason phrase, or the meaning of the SOCKS code.
    """

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[ProxyRefused], tuple[str, int, str]]:
        # For copy and pickle, which rebuild an exception from its args alone.
        return type(self), (str(self), self.status, self.reason)


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed.

    Attributes:
        rcvd: the close frame received from the peer, or ``None``.
        sent: the close frame sent to the peer, or ``None``.
        rcvd_then_sent: whether the peer started the close handshake, when both
            frames exist.
    """

    def __init__(
        self, rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None = None
    ) -> None:
        # The message is built by __str__, not here: a server makes one of
        # these (or two) for every connection that closes, and most are never
        # printed. The arguments stay in ``args``, so that copy and pickle can
        # rebuild the exception.
        super().__init__(rcvd, sent, rcvd_then_sent)
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent

    def __str__(self) -> str:
        if self.rcvd is None and self.sent is None:
            return "no close frame received or sent"
        if self.rcvd is None:
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {self.rcvd}; then sent {self.sent}"
        return f"sent {self.sent}; then received {self.rcvd}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    @property
    def code(self) -> int:
        """The close code of the connection: the peer's, else ours, else 1006."""
        return self.code_and_reason(self.rcvd, self.sent)[0]

    @property
    def reason(self) -> str:
        """The close reason matching :attr:`code`."""
        return self.code_and_reason(self.rcvd, self.sent)[1]

    @staticmethod
    def code_and_reason(rcvd: Close | None, sent: Close | None) -> tuple[int, str]:
        """Return :attr:`code` and :attr:`reason` for these frames, without an exception."""
        if rcvd is not None:
            return rcvd.code, rcvd.reason
        if sent is not None and sent.code != 1000:
            return sent.code, sent.reason
        return 1006, ""


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (close code 1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error, or without a close handshake."""


class InvalidState(WebSocketError, AssertionError):
    """An operation was attempted in a state that does not allow it."""


class ConcurrencyError(WebSocketError, RuntimeError):
    """Two coroutines tried to receive (or send a fragmented message) at once."""
