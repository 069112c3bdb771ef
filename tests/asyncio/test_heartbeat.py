"""The shared keepalive timer: each connection pinged every interval, one timer in all.

The timer's own tests run on the virtual clock (tests/clock.py): counts and
intervals are exact. The tests over real sockets assert membership, not timing.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref

import pytest

import rapidws
from rapidws.asyncio.heartbeat import TICKS, Heartbeat

INTERVAL = 0.16
TICK = INTERVAL / TICKS


class Member:
    """Records when the heartbeat pings it."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.beat: Heartbeat | None = None
        self.place = 0
        self.evict: Member | None = None

    def join(self, beat: Heartbeat) -> None:
        self.beat = beat
        self.place = beat.add(self)

    def leave(self) -> None:
        assert self.beat is not None
        self.beat.discard(self, self.place)

    def _keepalive(self) -> None:
        self.times.append(asyncio.get_running_loop().time())
        if self.evict is not None:
            self.evict.leave()


@pytest.mark.virtual_clock
async def test_each_member_is_pinged_every_interval_from_when_it_joined() -> None:
    loop = asyncio.get_running_loop()
    beat = Heartbeat(INTERVAL)
    first, second = Member(), Member()
    start = loop.time()
    first.join(beat)
    await asyncio.sleep(INTERVAL / 2 + TICK / 3)  # between two ticks
    joined = loop.time()
    second.join(beat)
    await asyncio.sleep(INTERVAL * 2.7)
    assert len(first.times) == 3  # 3.2 intervals
    assert len(second.times) == 2  # 2.7 intervals
    # The first ping one interval after joining, never early and at most a
    # tick late (it waits for a tick), then exactly one per interval.
    assert first.times[0] - start == pytest.approx(INTERVAL + TICK)  # the timer starts with it
    assert INTERVAL <= second.times[0] - joined <= INTERVAL + TICK
    for times in (first.times, second.times):
        for earlier, later in itertools.pairwise(times):
            assert later - earlier == pytest.approx(INTERVAL)
    first.leave()
    second.leave()
    assert len(beat) == 0
    await asyncio.sleep(INTERVAL)
    assert beat._timer is None  # no members: the timer stopped
    assert len(first.times) == 3


@pytest.mark.virtual_clock
async def test_pings_of_many_members_spread_over_the_interval() -> None:
    beat = Heartbeat(INTERVAL)
    members = [Member() for _ in range(TICKS)]
    for member in members:
        member.join(beat)
        await asyncio.sleep(TICK)
    await asyncio.sleep(INTERVAL * 2)
    # One member's ping per tick, not all at once; each still once per interval.
    firsts = sorted(member.times[0] for member in members)
    for earlier, later in itertools.pairwise(firsts):
        assert later - earlier == pytest.approx(TICK)
    assert {len(member.times) for member in members} == {2}


@pytest.mark.virtual_clock
async def test_discarded_members_are_not_pinged_and_the_timer_stops() -> None:
    beat = Heartbeat(INTERVAL)
    member = Member()
    member.join(beat)
    member.leave()
    member.leave()  # twice is harmless
    await asyncio.sleep(INTERVAL * 1.5)
    assert member.times == []
    assert beat._timer is None


@pytest.mark.virtual_clock
async def test_a_member_that_leaves_during_a_tick_is_not_pinged() -> None:
    beat = Heartbeat(INTERVAL)
    members = [Member() for _ in range(2)]
    members[0].evict = members[1]
    members[1].evict = members[0]
    for member in members:
        member.join(beat)
    await asyncio.sleep(INTERVAL * 1.5)
    # Whichever went first evicted the other.
    assert sorted(len(member.times) for member in members) == [0, 1]
    assert len(beat) == 1


@pytest.mark.virtual_clock
async def test_a_failing_member_does_not_stop_the_others() -> None:
    beat = Heartbeat(INTERVAL)
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))

    class Failing(Member):
        def _keepalive(self) -> None:
            super()._keepalive()
            raise RuntimeError("boom")

    members = [Failing(), Member(), Failing(), Member()]
    for member in members:
        member.join(beat)
    await asyncio.sleep(INTERVAL * 1.5)
    assert [len(member.times) for member in members] == [1, 1, 1, 1]
    assert [type(error["exception"]) for error in errors] == [RuntimeError, RuntimeError]
    for member in members:
        member.leave()


async def test_connections_of_a_server_share_one_heartbeat() -> None:
    async with rapidws.serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0) as server:
        clients = [await rapidws.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
        beats = {id(connection._heartbeat) for connection in server.connections}
        assert len(beats) == 1
        (beat,) = server._heartbeats.values()
        assert len(beat) == 3
        for client in clients:
            await client.close()
        for connection in list(server.connections):
            await connection.wait_closed()
        assert len(beat) == 0


def test_no_event_loop_is_kept_alive() -> None:
    # A program that calls asyncio.run() again and again must not accumulate loops.
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def session() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with (
            rapidws.serve(
                lambda ws: ws.wait_closed(), "127.0.0.1", 0, ping_interval=0.05
            ) as server,
            rapidws.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=0.05),
        ):
            await asyncio.sleep(0.12)

    for _ in range(3):
        asyncio.run(session())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
