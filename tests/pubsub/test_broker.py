"""The in-memory broker: positions, history trimming, recovery answers, presence expiry."""

from __future__ import annotations

import pytest

from rapidws.pubsub import Envelope, History, MemoryBroker, Position


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def publish(broker: MemoryBroker, topic: str, text: str, history: History) -> Position:
    position = await broker.publish(topic, 1, text.encode(), exclude="", key="", history=history)
    assert position is not None
    return position


async def test_delivers_every_message_with_its_position() -> None:
    delivered: list[Envelope] = []
    gaps: list[str] = []
    broker = MemoryBroker()
    await broker.start(delivered.append, gaps.append)
    first = await publish(broker, "t", "a", History(size=10))
    second = await publish(broker, "t", "b", History(size=10))
    assert (first.epoch, first.offset, second.offset) == (second.epoch, 1, 2)
    assert [(e.topic, e.opcode, e.payload, e.position) for e in delivered] == [
        ("t", 1, b"a", first),
        ("t", 1, b"b", second),
    ]
    await broker.stop()
    await publish(broker, "t", "c", History(size=10))
    assert len(delivered) == 2  # stopped: nothing delivered
    assert gaps == []


async def test_a_topic_without_history_has_no_positions_until_asked() -> None:
    broker = MemoryBroker()
    assert await broker.publish("t", 2, b"x", exclude="", key="", history=History()) is None
    missed, current, recovered = await broker.history("t", None)
    assert (missed, recovered) == ([], True)
    assert current is not None and current.offset == 0
    # From now on, positions are counted (a subscriber may come back with one).
    position = await broker.publish("t", 2, b"y", exclude="", key="", history=History())
    assert position == Position(current.epoch, 1)
    missed, _, recovered = await broker.history("t", current)
    assert (missed, recovered) == ([], False)  # nothing kept: a gap


async def test_history_keeps_the_last_n_and_says_when_it_no_longer_reaches_back() -> None:
    broker = MemoryBroker()
    history = History(size=3)
    positions = [await publish(broker, "t", str(i), history) for i in range(6)]
    missed, current, recovered = await broker.history("t", positions[2])
    assert [e.payload for e in missed] == [b"3", b"4", b"5"] and recovered
    assert current == positions[-1]
    missed, _, recovered = await broker.history("t", positions[1])
    assert [e.payload for e in missed] == [b"3", b"4", b"5"] and not recovered
    missed, _, recovered = await broker.history("t", positions[-1])
    assert (missed, recovered) == ([], True)  # up to date
    ahead = Position(positions[0].epoch, 99)
    assert (await broker.history("t", ahead))[2] is False
    other = Position("another-epoch", 3)
    assert (await broker.history("t", other))[2] is False


async def test_history_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    history = History(size=100, ttl=10.0)
    old = await publish(broker, "t", "old", history)
    clock.now = 5.0
    await publish(broker, "t", "newer", history)
    clock.now = 12.0
    missed, _, recovered = await broker.history("t", Position(old.epoch, 0))
    assert [e.payload for e in missed] == [b"newer"] and not recovered
    missed, _, recovered = await broker.history("t", old)
    assert [e.payload for e in missed] == [b"newer"] and recovered


async def test_presence_entries_expire_unless_renewed() -> None:
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    await broker.join("room", "n1-1", {"user": "ann"}, ttl=30.0)
    await broker.join("room", "n2-1", {"user": "bob"}, ttl=30.0)
    assert await broker.presence("room") == {"n1-1": {"user": "ann"}, "n2-1": {"user": "bob"}}
    clock.now = 20.0
    await broker.join("room", "n1-1", {"user": "ann"}, ttl=30.0)  # renewed
    clock.now = 40.0  # n2-1's node crashed and stopped renewing
    assert await broker.presence("room") == {"n1-1": {"user": "ann"}}
    await broker.leave("room", "n1-1")
    await broker.leave("room", "n1-1")  # twice: nothing happens
    assert await broker.presence("room") == {}


def test_positions_read_back_and_history_settings_are_checked() -> None:
    position = Position("ab12", 42)
    assert Position.parse(str(position)) == position
    for text in ["", "42", "ab12:", ":42", "ab12:x"]:
        with pytest.raises(ValueError, match="not a position"):
            Position.parse(text)
    with pytest.raises(ValueError, match="size"):
        History(size=-1)
    with pytest.raises(ValueError, match="ttl"):
        History(size=1, ttl=0)
    assert not History() and History(size=1)
