"""Timeouts of one length for many connections, from one timer.

Every connection of a server gets the same opening-handshake timeout, and
nearly every one completes its handshake in time: arming and cancelling a loop
timer for each cost more than the rest of setting the connection up (about
2 µs with uvloop). :class:`Deadlines` keeps its members in a dict in the order
they joined, which, as they all wait the same time, is the order they expire
in. One loop timer, set for the first member's deadline, expires the members
that are due and is set again for the next one. Joining and leaving are a dict
insert and a dict pop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

M = TypeVar("M", bound=Hashable)

# Members due within this many seconds are expired with the ones due now: a
# loop may run a timer a little early (uvloop counts in milliseconds), and
# waiting again for so little would only spin.
_SLACK = 0.001


class Deadlines(Generic[M]):
    """Call ``expire(member)`` for each member still there ``timeout`` seconds after it joined.

    Its members must all run on one event loop: the one running when the
    first is added.
    """

    __slots__ = ("_expire", "_loop", "_members", "_timer", "timeout")

    def __init__(self, timeout: float, expire: Callable[[M], object]) -> None:
        self.timeout = timeout
        self._expire = expire
        # Member -> the loop time it expires at; insertion order is expiry order.
        self._members: dict[M, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, member: M) -> None:
        """Expire ``member`` after the timeout, unless it is discarded first.

        Adding a member again restarts its timeout.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        members = self._members
        members.pop(member, None)  # to the end: its new deadline is the latest
        members[member] = deadline = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def discard(self, member: M) -> None:
        """Forget ``member``; again, or for one that never joined, is harmless."""
        self._members.pop(member, None)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        now = loop.time() + _SLACK
        members = self._members
        due: list[M] = []
        for member, deadline in members.items():
            if deadline > now:
                break
            due.append(member)
        for member in due:
            del members[member]
        if members:
            # A member that left early leaves the timer early: it then finds
            # nothing due and waits for the new first one.
            self._timer = loop.call_at(next(iter(members.values())), self._on_timer)
        else:
            self._loop = None  # hold no loop while idle
        for member in due:
            try:
                self._expire(member)
            except Exception as exc:
                # One member's failure must not keep the others open.
                loop.call_exception_handler({"message": "timeout handler failed", "exception": exc})
