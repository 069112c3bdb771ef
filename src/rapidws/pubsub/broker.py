"""Brokers: what carries a hub's messages, history and presence.

A :class:`~rapidws.pubsub.Hub` frames and delivers; its broker decides what is
published where, keeps each topic's history with positions, and knows who is
present. :class:`MemoryBroker` (the default) serves one process; a broker for
many processes implements the same interface over an existing engine (Redis),
never a home-made one.

A message crosses a broker as what a receiving hub needs to frame it and
nothing to re-parse: the topic, the opcode (text or binary), the payload bytes,
the publisher's connection id (for ``exclude``) and the coalescing key.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Broker", "Envelope", "History", "MemoryBroker", "Position"]

logger = logging.getLogger("rapidws.pubsub")


@dataclasses.dataclass(frozen=True, order=True)
class Position:
    """Where a message stands in its topic's stream: ``(epoch, offset)``.

    Offsets grow by one per message of the topic. The epoch changes when the
    stream's history is lost (a broker restarted without persistence): a
    position of another epoch cannot be recovered from.
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read a position written by ``str()``, e.g. from a client's reconnect URL.

        Raises:
            ValueError: for text that is not ``epoch:offset``.
        """
        epoch, sep, offset = text.rpartition(":")
        if not sep or not epoch or not offset.isdigit():
            raise ValueError(f"not a position: {text!r}")
        return cls(epoch, int(offset))


class Envelope(NamedTuple):
    """A published message as a broker carries it between hubs."""

    topic: str
    #: 1 for text, 2 for binary (the WebSocket opcode); 0 for a hub's event
    #: (:meth:`Broker.announce`), never sent to connections.
    opcode: int
    payload: bytes
    #: The publisher's connection id, which must not receive it, or ``""``.
    exclude: str
    #: The coalescing key (latest value per key wins for slow subscribers), or ``""``.
    key: str
    #: Its position in the topic's history, or ``None`` when the topic keeps none.
    position: Position | None


@dataclasses.dataclass(frozen=True)
class History:
    """What a topic keeps of its past messages: the last ``size``, at most ``ttl`` seconds old."""

    size: int = 0
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("history size must be >= 0")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError("history ttl must be > 0 seconds")

    def __bool__(self) -> bool:
        return self.size > 0


class Broker(abc.ABC):
    """Carries messages between the hubs of one or many processes.

    A hub calls :meth:`start` with the function that delivers an envelope to
    its local subscribers; the broker calls it for every message of a topic
    this node is subscribed to (:meth:`subscribe`), including the node's own.
    """

    @abc.abstractmethod
    async def start(
        self, deliver: Callable[[Envelope], None], on_gap: Callable[[str], None]
    ) -> None:
        """Connect; deliver envelopes to ``deliver`` from now on.

        ``on_gap(topic)`` is called when messages of a subscribed topic may
        have been lost (the broker's connection failed, its history is gone).
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; deliver nothing more."""

    @abc.abstractmethod
    async def publish(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> Position | None:
        """Publish a message; return its position when the topic keeps history."""

    def publish_nowait(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> None:
        """Publish without waiting (for callbacks); a failure is logged, not raised.

        By default a task runs :meth:`publish`; brokers do better where they can.
        """
        task = asyncio.get_running_loop().create_task(
            self.publish(topic, opcode, payload, exclude=exclude, key=key, history=history)
        )
        _background.add(task)
        task.add_done_callback(_published)

    @abc.abstractmethod
    async def announce(self, topic: str, payload: bytes) -> None:
        """Send an event about ``topic`` (a presence change) to every node subscribed to it.

        It arrives as an envelope of opcode 0, without a position, in order
        with the topic's messages; hubs never send it to connections.
        """

    @abc.abstractmethod
    async def subscribe(self, topic: str, history: History) -> None:
        """Receive the topic's messages on this node (its first local subscriber joined).

        ``history`` is what the topic keeps: a broker that loses messages
        (a dropped connection) catches up from it.
        """

    @abc.abstractmethod
    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving the topic's messages (its last local subscriber left)."""

    @abc.abstractmethod
    async def history(
        self, topic: str, since: Position | None
    ) -> tuple[list[Envelope], Position | None, bool]:
        """Return the messages after ``since``, the topic's position, and whether recovered.

        The last is whether the history reaches back to ``since`` (``True``
        when ``since`` is ``None``).
        """

    @abc.abstractmethod
    async def join(self, topic: str, client: str, info: Any, ttl: float) -> None:
        """Record ``client`` as present in ``topic`` for ``ttl`` seconds (renewed by the hub)."""

    @abc.abstractmethod
    async def leave(self, topic: str, client: str) -> None:
        """Remove ``client`` from ``topic``'s presence."""

    @abc.abstractmethod
    async def presence(self, topic: str) -> dict[str, Any]:
        """Return who is present in ``topic``: client id -> info."""


class _Stream:
    # A topic's history in memory: its epoch, next offset, settings and last
    # messages with the time each was published.
    __slots__ = ("entries", "epoch", "history", "next_offset")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)
        self.next_offset = 1
        self.history = History()
        self.entries: collections.deque[tuple[float, Envelope]] = collections.deque()

    def trim(self, now: float) -> None:
        entries, history = self.entries, self.history
        while len(entries) > history.size:
            entries.popleft()
        if history.ttl is not None:
            oldest = now - history.ttl
            while entries and entries[0][0] < oldest:
                entries.popleft()


class MemoryBroker(Broker):
    """The broker of a single process: delivery at once, history and presence in memory.

    Args:
        clock: the time source for history TTLs and presence expiry.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deliver: Callable[[Envelope], None] | None = None
        self._streams: dict[str, _Stream] = {}
        self._presence: dict[str, dict[str, tuple[float, Any]]] = {}

    async def start(
        self, deliver: Callable[[Envelope], None], on_gap: Callable[[str], None]
    ) -> None:
        """Deliver to ``deliver`` from now on (nothing is ever lost in memory)."""
        self._deliver = deliver

    async def stop(self) -> None:
        """Deliver nothing more."""
        self._deliver = None

    async def publish(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> Position | None:
        """Publish, keep in history, and deliver to this process's hub at once."""
        return self._publish(topic, opcode, payload, exclude=exclude, key=key, history=history)

    def publish_nowait(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> None:
        """Publish and deliver at once: nothing to wait for in one process."""
        self._publish(topic, opcode, payload, exclude=exclude, key=key, history=history)

    def _publish(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> Position | None:
        position = None
        stream = self._streams.get(topic)
        if history or stream is not None:
            # A topic that keeps history, or one a subscriber asked a position of.
            if stream is None:
                stream = self._streams[topic] = _Stream()
            position = Position(stream.epoch, stream.next_offset)
            stream.next_offset += 1
        envelope = Envelope(topic, opcode, payload, exclude, key, position)
        if stream is not None and history:
            now = self._clock()
            stream.history = history
            stream.entries.append((now, envelope))
            stream.trim(now)
        if self._deliver is not None:
            self._deliver(envelope)
        return position

    async def announce(self, topic: str, payload: bytes) -> None:
        """Deliver the event to this process's hub at once."""
        if self._deliver is not None:
            self._deliver(Envelope(topic, 0, payload, "", "", None))

    async def subscribe(self, topic: str, history: History) -> None:
        """Nothing to do: every message of this process is delivered here."""

    async def unsubscribe(self, topic: str) -> None:
        """Nothing to do (see :meth:`subscribe`)."""

    async def history(
        self, topic: str, since: Position | None
    ) -> tuple[list[Envelope], Position | None, bool]:
        """Return the missed messages kept in memory, trimmed by age first."""
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream()
        stream.trim(self._clock())
        last = stream.next_offset - 1
        current = Position(stream.epoch, last)
        if since is None:
            return [], current, True
        if since.epoch != stream.epoch or since.offset > last:
            return [], current, False
        missed = [envelope for _, envelope in stream.entries if _offset(envelope) > since.offset]
        first = _offset(missed[0]) if missed else last + 1
        # Recovered only when no message between ``since`` and the oldest one
        # kept was trimmed away.
        return missed, current, first == since.offset + 1

    async def join(self, topic: str, client: str, info: Any, ttl: float) -> None:
        """Record ``client`` as present until ``ttl`` seconds from now."""
        self._presence.setdefault(topic, {})[client] = (self._clock() + ttl, info)

    async def leave(self, topic: str, client: str) -> None:
        """Remove ``client`` from ``topic``'s presence."""
        clients = self._presence.get(topic)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._presence[topic]

    async def presence(self, topic: str) -> dict[str, Any]:
        """Return the unexpired presence entries of ``topic``."""
        now = self._clock()
        clients = self._presence.get(topic, {})
        return {client: info for client, (expires, info) in clients.items() if expires > now}


def _offset(envelope: Envelope) -> int:
    # Envelopes kept in a history always have a position.
    assert envelope.position is not None
    return envelope.position.offset


# Tasks of publish_nowait(), referenced until done (the loop holds them weakly).
_background: set[asyncio.Task[Any]] = set()


def _published(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("publish failed: %s", task.exception())
