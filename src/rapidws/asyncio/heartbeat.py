"""Keepalive pings from one timer per server, not one per connection.

A server with thousands of idle connections would otherwise hold a timer for
each (about 0.6 KiB with uvloop) and wake up once per connection per interval.
Here a :class:`Heartbeat` ticks :data:`TICKS` times per interval and, at each
tick, pings the connections that joined one interval ago (or were pinged one
interval ago): each connection is still pinged every interval, give or take a
tick, and the pings of many connections spread over the interval instead of
coming all at once. The timer runs only while the heartbeat has members.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["TICKS", "Heartbeat", "Pingable"]

#: Ticks per interval: a connection's first ping comes between one interval
#: and one interval plus a tick after it joins.
TICKS = 16


class Pingable(Protocol):
    """What a heartbeat drives: a connection with a keepalive round."""

    def _keepalive(self) -> None: ...


class Heartbeat:
    """The keepalive timer of the connections of one server (or one client).

    Its members must all run on one event loop: the one running when the
    first is added.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        # One bucket per tick of the interval; each maps a connection to the
        # tick at which its next ping is due.
        self._buckets: list[dict[Pingable, int]] = [{} for _ in range(TICKS)]
        self._tick = 0  # the number of the next tick
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Pingable) -> int:
        """Ping ``connection`` every interval from now on; add it once only.

        Returns its place, for :meth:`discard`.
        """
        due = self._tick + TICKS
        place = due % TICKS
        self._buckets[place][connection] = due
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.interval / TICKS, self._on_tick)
        return place

    def discard(self, connection: Pingable, place: int) -> None:
        """Stop pinging ``connection``, at the place :meth:`add` gave; again is harmless."""
        self._buckets[place].pop(connection, None)

    def __len__(self) -> int:
        return sum(map(len, self._buckets))

    def _on_tick(self) -> None:
        tick = self._tick
        self._tick += 1
        bucket = self._buckets[tick % TICKS]
        due = [connection for connection, at in bucket.items() if at <= tick]
        for connection in due:
            bucket[connection] = tick + TICKS
        self._timer = None
        loop = self._loop
        assert loop is not None
        if any(self._buckets):
            self._timer = loop.call_later(self.interval / TICKS, self._on_tick)
        else:
            self._loop = None  # hold no loop while idle
        for connection in due:
            # A connection may leave (close) while others are pinged.
            if bucket.get(connection) != tick + TICKS:
                continue
            try:
                connection._keepalive()
            except Exception as exc:
                # One connection's failure must not skip the others' pings.
                loop.call_exception_handler({"message": "keepalive ping failed", "exception": exc})
