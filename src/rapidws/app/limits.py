"""Abuse limits of an App, off by default: connections per client address, messages per second.

``App(max_connections_per_ip=20, message_rate=RateLimit(50, burst=200))``:
a handshake from an address that already holds 20 open connections gets 429;
a connection that sends faster than 50 messages per second on average, past
a burst of 200, is closed with 1008 (policy violation). Neither touches other
clients, and neither costs anything when it is off.

The message rate is a token bucket per connection, on the event loop's
clock: ``burst`` tokens, refilled at ``rate`` per second, one taken per
message handed to the application (so a handler that reads slowly is never
over the rate: its peer is held back by flow control instead).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from ..asyncio.connection import Data
from ..asyncio.server import Callbacks, ServerConnection

__all__ = ["ConnectionCounter", "RateLimit", "RateLimitedCallbacks", "TokenBucket"]

# RFC 6455 section 7.4.1: a message that violates the server's policy.
POLICY_VIOLATION = 1008
_REASON = "message rate exceeded"


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` messages per second on average, in bursts of up to ``burst``.

    Raises:
        ValueError: ``rate`` or ``burst`` is not positive.
    """

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("a rate limit has a positive rate and a burst of at least 1")


class TokenBucket:
    """One connection's budget under a :class:`RateLimit`."""

    __slots__ = ("_limit", "_stamp", "_tokens", "connection")

    def __init__(self, limit: RateLimit, connection: ServerConnection) -> None:
        self._limit = limit
        self._tokens = float(limit.burst)
        self._stamp = connection.loop.time()
        self.connection = connection

    def take(self) -> bool:
        """Take a token for a message; tell whether there was one."""
        now = self.connection.loop.time()
        limit = self._limit
        self._tokens = min(limit.burst, self._tokens + (now - self._stamp) * limit.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def __call__(self, message: Data) -> None:
        """Count a message; over the rate, close the connection with 1008 and refuse it.

        Raises:
            ConnectionClosedError: the connection is over its rate (as
                ``recv()`` raises it, which calls this).
        """
        if not self.take():
            connection = self.connection
            connection.close_nowait(POLICY_VIOLATION, _REASON)
            raise connection._closed_exc()


class RateLimitedCallbacks(Callbacks):
    """Callbacks with a message rate limit in front: over it, 1008 and no more messages."""

    def __init__(self, callbacks: Callbacks, limit: RateLimit) -> None:
        self.callbacks = callbacks
        self.limit = limit
        self._buckets: dict[ServerConnection, TokenBucket] = {}

    def on_open(self, connection: ServerConnection) -> None:
        """Give the connection its bucket, then open it for the callbacks."""
        self._buckets[connection] = TokenBucket(self.limit, connection)
        self.callbacks.on_open(connection)

    def on_message(self, connection: ServerConnection, message: str | bytes) -> None:
        """Hand the message over if the connection is within its rate."""
        bucket = self._buckets.get(connection)
        if bucket is None:
            return  # over its rate already: closing, the rest is dropped
        if bucket.take():
            self.callbacks.on_message(connection, message)
        else:
            del self._buckets[connection]
            connection.close_nowait(POLICY_VIOLATION, _REASON)

    def on_close(self, connection: ServerConnection, code: int, reason: str) -> None:
        """Forget the bucket, then tell the callbacks."""
        self._buckets.pop(connection, None)
        self.callbacks.on_close(connection, code, reason)


class ConnectionCounter:
    """Open connections per client address, within a limit."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_connections_per_ip is at least 1")
        self.limit = limit
        self._counts: collections.Counter[Any] = collections.Counter()

    def full(self, address: Any) -> bool:
        """Tell whether ``address`` holds as many connections as allowed."""
        return self._counts[address] >= self.limit

    def add(self, connection: ServerConnection, address: Any) -> None:
        """Count ``connection`` for ``address`` until it closes."""
        self._counts[address] += 1

        def release(_: object) -> None:
            self._counts[address] -= 1
            if not self._counts[address]:
                del self._counts[address]

        connection.loop.create_task(connection.wait_closed()).add_done_callback(release)

    def __len__(self) -> int:
        return sum(self._counts.values())
