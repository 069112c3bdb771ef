"""The shared keepalive timer: each connection pinged every interval, one timer in all."""

from __future__ import annotations

import asyncio
import itertools
import time

from rapidws.asyncio.heartbeat import TICKS, Heartbeat, heartbeat

INTERVAL = 0.16
TICK = INTERVAL / TICKS
LATE = INTERVAL / 4  # how late a loaded machine may run a timer


class Member:
    """Records when the heartbeat pings it."""

    def __init__(self, beat: Heartbeat | None = None) -> None:
        self.times: list[float] = []
        self.beat = beat
        self.evict: Member | None = None

    def _keepalive(self) -> None:
        self.times.append(time.monotonic())
        if self.evict is not None and self.beat is not None:
            self.beat.discard(self.evict)


async def test_each_member_is_pinged_every_interval_from_when_it_joined() -> None:
    beat = Heartbeat(asyncio.get_running_loop(), INTERVAL)
    first, second = Member(), Member()
    start = time.monotonic()
    beat.add(first)
    await asyncio.sleep(INTERVAL / 2)
    joined = time.monotonic()
    beat.add(second)
    await asyncio.sleep(INTERVAL * 2.7)
    assert len(first.times) == 3  # 3.2 intervals
    assert len(second.times) == 2  # 2.7 intervals
    # The first ping one interval after joining, never more than a tick early
    # (nor much later, but a busy machine's loop is late), then one per interval.
    assert INTERVAL - TICK <= first.times[0] - start <= INTERVAL + LATE
    assert INTERVAL - TICK <= second.times[0] - joined <= INTERVAL + LATE
    for times in (first.times, second.times):
        for earlier, later in itertools.pairwise(times):
            assert INTERVAL - 2 * TICK <= later - earlier <= INTERVAL + LATE
    beat.discard(first)
    beat.discard(second)
    assert len(beat) == 0


async def test_discarded_members_are_not_pinged_and_the_timer_stops() -> None:
    beat = Heartbeat(asyncio.get_running_loop(), INTERVAL)
    member = Member()
    beat.add(member)
    beat.discard(member)
    beat.discard(member)  # twice is harmless
    await asyncio.sleep(INTERVAL * 1.5)
    assert member.times == []
    assert beat._timer is None


async def test_a_member_that_leaves_during_a_tick_is_not_pinged() -> None:
    beat = Heartbeat(asyncio.get_running_loop(), INTERVAL)
    members = [Member(beat) for _ in range(2)]
    members[0].evict = members[1]
    members[1].evict = members[0]
    for member in members:
        beat.add(member)
    await asyncio.sleep(INTERVAL * 1.5)
    # Whichever went first evicted the other.
    assert sorted(len(member.times) for member in members) == [0, 1]
    assert len(beat) == 1


async def test_one_heartbeat_per_loop_and_interval() -> None:
    loop = asyncio.get_running_loop()
    assert heartbeat(loop, 20.0) is heartbeat(loop, 20.0)
    assert heartbeat(loop, 20.0) is not heartbeat(loop, 10.0)
