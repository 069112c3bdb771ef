"""Reconnection: a backoff policy, what is worth retrying, and the iterator of connections.

``async for ws in rapidws.connect(uri, reconnect=True)`` yields a fresh open
connection each time the previous one ends for a reason that may pass (the
server restarts, the network blips), after a truncated exponential backoff
with full jitter, so that many clients dropped at once do not come back at
once. It stops, raising the original exception, on what retrying cannot fix
(a 403, a 1008 policy close), and ends after a normal closure (1000). The
sync client (:func:`rapidws.sync.connections`) and the event client
(:class:`rapidws.WebSocketApp`) run this same iterator.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
    WebSocketError,
)
from .connection import Connection

__all__ = [
    "Backoff",
    "ReconnectHook",
    "Reconnecting",
    "as_policy",
    "closing_code",
    "retry_after",
    "retryable",
]

#: Close codes after which a new connection may succeed (RFC 6455 7.4.1 and
#: the IANA registry): going away, no close frame, server error, service
#: restart, try again later, bad gateway.
RETRY_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})

# What the client says when the server hangs up before answering the
# handshake (a server shutting down or still starting).
_CLOSED_DURING_HANDSHAKE = "connection closed during the opening handshake"

#: Called before each wait: ``on_reconnect(attempt, delay, cause)``, with the
#: attempt's number from 1, the delay in seconds and the exception that caused
#: it; it may be a coroutine function.
ReconnectHook = Callable[[int, float, BaseException], Awaitable[None] | None]

C = TypeVar("C", bound=Connection[Any])


@dataclass(frozen=True)
class Backoff:
    """A reconnection policy: truncated exponential backoff with full jitter.

    Before retry number ``n`` (from 0), the client waits a uniformly random
    delay between 0 and ``min(max_delay, initial * factor ** n)`` seconds; a
    ``Retry-After`` header of a 429 or 503 refusal raises that to at least its
    value. The count starts again after each successful opening handshake.

    Attributes:
        initial: the upper bound of the first delay, in seconds.
        factor: how much the upper bound grows after each failed attempt.
        max_delay: the largest upper bound, in seconds.
        max_attempts: how many consecutive attempts fail before the client
            gives up and raises the last error; ``None`` retries forever.
    """

    initial: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.max_delay < self.initial:
            raise ValueError("Backoff needs initial > 0, factor >= 1 and max_delay >= initial")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")

    def bound(self, attempt: int) -> float:
        """Return the upper bound of the delay before retry number ``attempt`` (from 0)."""
        try:
            return min(self.max_delay, self.initial * self.factor**attempt)
        except OverflowError:  # factor ** attempt past the float range
            return self.max_delay

    def delay(
        self,
        attempt: int,
        cause: BaseException | None = None,
        *,
        random: Callable[[], float] = random.random,
    ) -> float:
        """Return the delay before retry ``attempt``: full jitter, floored by ``Retry-After``.

        ``random`` returns a float in [0, 1): tests pass a fixed one.
        """
        delay = random() * self.bound(attempt)
        floor = None if cause is None else retry_after(cause)
        return delay if floor is None else max(delay, floor)


def as_policy(reconnect: bool | Backoff) -> Backoff | None:
    """Return the policy that a ``reconnect=`` option means: ``True`` is the default one."""
    if isinstance(reconnect, Backoff):
        return reconnect
    return Backoff() if reconnect else None


def retryable(exc: BaseException) -> bool:
    """Whether a new connection may succeed after ``exc``, so that retrying is worth it.

    Retried: refused, reset or timed out TCP; TLS errors other than a failed
    certificate check; a temporary DNS failure; a server that hangs up during
    the handshake; HTTP 5xx and 429; closes 1001, 1006, 1011, 1012, 1013 and
    1014 started by the peer or by a timeout. Not retried: other HTTP
    refusals (401, 403, 404), invalid URIs and handshakes, and closes such as
    1000, 1002, 1003, 1007, 1008 and 1009.
    """
    if isinstance(exc, ConnectionClosed):
        return closing_code(exc) in RETRY_CLOSE_CODES
    if isinstance(exc, InvalidStatus):
        status = exc.response.status
        return status == 429 or 500 <= status <= 599
    if isinstance(exc, InvalidResponse):
        return exc.response is None and str(exc) == _CLOSED_DURING_HANDSHAKE
    if isinstance(exc, WebSocketError):
        return False  # a bad URI or handshake: the same again next time
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False  # a configuration error, not a transient one
    if isinstance(exc, socket.gaierror):
        # EAI_AGAIN: the resolver could not answer now; a name that does not
        # exist (EAI_NONAME) will not exist in a second either.
        return exc.errno == socket.EAI_AGAIN
    # Refused, reset, aborted, unreachable, timed out (TimeoutError is an
    # OSError), and the other TLS errors (ssl.SSLError is one too).
    return isinstance(exc, OSError)


def closing_code(exc: ConnectionClosed) -> int:
    """Return the close code of whoever started the closing handshake; 1006 without one.

    A close this side started with 1000 or 1001 (the application's own
    ``close()``) counts as 1000: the application is done, not the server.
    """
    rcvd, sent = exc.rcvd, exc.sent
    if sent is not None and (rcvd is None or not exc.rcvd_then_sent):
        return 1000 if sent.code in (1000, 1001) else sent.code
    return 1006 if rcvd is None else rcvd.code


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """Return the seconds that a 429 or 503's ``Retry-After`` header asks for, if any.

    The header holds seconds or an HTTP date (RFC 9110 10.2.3); ``now`` is
    the current Unix time for a date, :func:`time.time` by default.
    """
    if not isinstance(exc, InvalidStatus) or exc.response.status not in (429, 503):
        return None
    value = exc.response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: the backoff's own delay applies
    return max(0.0, date.timestamp() - (time.time() if now is None else now))


class Reconnecting(Generic[C]):
    """The connections of ``async for ws in connect(uri, reconnect=...)``.

    Each step first finishes with the previous connection: it is closed
    (1000) if the loop body left it open, then judged by how it closed. A
    normal closure ends the iteration; a retryable one leads to a new
    connection after the backoff; any other raises its
    :class:`ConnectionClosedError`. A failed opening handshake is retried the
    same way, until ``max_attempts`` consecutive failures raise the last error.

    Args:
        open: opens one connection (``connect.__await__``'s coroutine).
        policy: the backoff; ``None`` yields a single connection, no retries.
        on_reconnect: called before each wait (see :data:`ReconnectHook`).
        random: the jitter's source, a float in [0, 1).
    """

    def __init__(
        self,
        open: Callable[[], Awaitable[C]],
        policy: Backoff | None,
        on_reconnect: ReconnectHook | None = None,
        *,
        random: Callable[[], float] = random.random,
    ) -> None:
        self._open = open
        self._policy = policy
        self._on_reconnect = on_reconnect
        self._random = random
        self._connection: C | None = None
        self._failures = 0
        self._done = False

    def __aiter__(self) -> AsyncIterator[C]:
        return self

    async def __anext__(self) -> C:
        if self._done:
            raise StopAsyncIteration
        previous, self._connection = self._connection, None
        cause: BaseException | None = None
        if previous is not None:
            cause = await _ended(previous)
            # Without a policy, one connection only, however it ended.
            if cause is None or self._policy is None:
                self._done = True
                raise StopAsyncIteration
            if not retryable(cause):
                self._done = True
                raise cause
        while True:
            if cause is not None:
                await self._wait(cause)
            try:
                connection = await self._open()
            except Exception as exc:
                policy = self._policy
                if (
                    policy is None
                    or not retryable(exc)
                    or (policy.max_attempts is not None and self._failures >= policy.max_attempts)
                ):
                    self._done = True
                    raise
                cause = exc
                continue
            self._failures = 0
            self._connection = connection
            return connection

    async def _wait(self, cause: BaseException) -> None:
        assert self._policy is not None
        delay = self._policy.delay(self._failures, cause, random=self._random)
        self._failures += 1
        if self._on_reconnect is not None:
            result = self._on_reconnect(self._failures, delay, cause)
            if inspect.isawaitable(result):
                await result
        await asyncio.sleep(delay)


async def _ended(connection: Connection[Any]) -> ConnectionClosed | None:
    """Close ``connection`` if still open; return why it closed, ``None`` for a normal end."""
    await connection.close()
    protocol = connection.protocol
    args = (protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)
    code = closing_code(ConnectionClosedError(*args))
    if code == 1000:
        return None
    closed = ConnectionClosedOK if code == 1001 else ConnectionClosedError
    return closed(*args)
