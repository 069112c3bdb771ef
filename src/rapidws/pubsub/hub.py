"""Topics and broadcast: :class:`Hub`.

A hub keeps which connections subscribe to which topics, and delivers each
published message to them framed once per wire form (see
:class:`~rapidws.PreparedMessage`): the same bytes object is written to every
connection that encodes the message the same way.

A subscriber that cannot keep up never grows a buffer without bound. While its
write buffer is above its high-water mark, its messages wait in a small
per-connection queue bounded per topic (``max_pending`` messages and
``max_pending_bytes``); beyond that the topic's declared policy applies:
``"drop_newest"``, ``"drop_oldest"``, ``"coalesce"`` (the latest message per
key wins: tickers) or ``"close"`` (the connection closes with
``close_code``, 1013 by default). A slow subscriber costs the others nothing:
delivery to them never waits.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fnmatch
import itertools
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal

from ..asyncio.connection import Connection
from ..core.frames import OP_BINARY, OP_TEXT
from ..core.prepared import PreparedMessage
from ..core.protocol import OPEN
from ..exceptions import ConnectionClosed, InvalidState
from .broker import Broker, Envelope, History, MemoryBroker, Position

__all__ = ["Hub", "SlowPolicy", "Subscription", "TopicOptions", "TopicStats"]

logger = logging.getLogger("rapidws.pubsub")

SlowPolicy = Literal["drop_newest", "drop_oldest", "coalesce", "close"]
_POLICIES = ("drop_newest", "drop_oldest", "coalesce", "close")


@dataclasses.dataclass(frozen=True)
class TopicOptions:
    """How a topic treats slow subscribers, compression and history.

    Args:
        slow: what happens to a message for a subscriber whose queue is full
            (see the module's documentation).
        max_pending: messages of this topic queued per slow subscriber.
        max_pending_bytes: their total size.
        close_code: the close code of the ``"close"`` policy: 1013 (try
            again later) or 1008 (policy violation).
        compress: whether messages may be compressed, where negotiated.
        history: how many past messages (and for how long) the topic keeps
            for subscribers that come back with a position.
        stamp: called as ``stamp(payload, position)`` once per message on
            each node, before it is framed, to put the message's position
            in it (a client keeps the last one to recover from after a
            reconnect); returns the payload to send. Replayed messages are
            stamped the same way.
    """

    slow: SlowPolicy = "drop_oldest"
    max_pending: int = 1000
    max_pending_bytes: int = 1 << 20
    close_code: int = 1013
    compress: bool = True
    history: History = dataclasses.field(default_factory=History)
    stamp: Callable[[bytes, Position | None], bytes] | None = None

    def __post_init__(self) -> None:
        if self.slow not in _POLICIES:
            raise ValueError(f"slow must be one of {', '.join(_POLICIES)}, not {self.slow!r}")
        if self.max_pending < 0 or self.max_pending_bytes < 0:
            raise ValueError("max_pending and max_pending_bytes must be >= 0")


@dataclasses.dataclass
class TopicStats:
    """What happened in a topic on this node, since it had its first subscriber."""

    subscribers: int = 0
    #: Messages delivered to this node for the topic.
    published: int = 0
    #: Messages written to subscribers (one per subscriber).
    delivered: int = 0
    #: Messages a slow subscriber's policy dropped.
    dropped: int = 0
    #: Messages replaced by a newer one with the same key.
    coalesced: int = 0
    #: Subscribers closed by the ``"close"`` policy.
    closed: int = 0


@dataclasses.dataclass(frozen=True)
class Subscription:
    """The outcome of :meth:`Hub.subscribe`, once awaited.

    Attributes:
        topic: the topic.
        position: the topic's position when live delivery began (``None``
            when the topic keeps no positions).
        recovered: with ``since=``, whether every missed message was
            replayed; ``False`` means the history no longer reaches back (or
            the epoch changed): the application should reload its state.
        replayed: how many missed messages were replayed.
    """

    topic: str
    position: Position | None = None
    recovered: bool = True
    replayed: int = 0


class _Topic:
    # A topic with local subscribers.
    __slots__ = ("members", "name", "options", "recovering", "stats")

    def __init__(self, name: str, options: TopicOptions) -> None:
        self.name = name
        self.options = options
        self.members: dict[Connection[Any], _Member] = {}
        # Subscribers replaying history: live envelopes wait here meanwhile.
        self.recovering: dict[Connection[Any], list[Envelope]] = {}
        self.stats = TopicStats()


class _Backlog:
    # A slow subscriber's queue of [topic, message, key] entries, the queued
    # count and bytes per topic, the entries by (topic, key) for coalescing,
    # and the task that sends them as the write buffer drains.
    __slots__ = ("counts", "drainer", "keyed", "queue")

    def __init__(self) -> None:
        self.queue: collections.deque[list[Any]] = collections.deque()
        self.counts: dict[str, list[int]] = {}
        self.keyed: dict[tuple[str, str], list[Any]] = {}
        self.drainer: asyncio.Task[None] | None = None

    def dequeued(self, entry: list[Any]) -> None:
        counts = self.counts[entry[0]]
        counts[0] -= 1
        counts[1] -= len(entry[1])
        if entry[2]:
            self.keyed.pop((entry[0], entry[2]), None)


class _Member:
    # One connection of this node that subscribes to at least one topic.
    __slots__ = ("client", "info", "pending", "topics", "ws")

    def __init__(self, ws: Connection[Any], client: str) -> None:
        self.ws = ws
        self.client = client
        self.topics: dict[str, _Topic] = {}
        self.info: dict[str, Any] | None = None  # presence info per topic, when given
        self.pending: _Backlog | None = None  # while slow


class Hub:
    """Topics (rooms) for connections, with encode-once fan-out.

    ``hub.subscribe(ws, "room:42")``, then ``await hub.publish("room:42",
    "hello", exclude=ws)``: the message reaches every subscriber but ``ws``.
    A connection leaves its topics when it closes. Works with every kind of
    connection (iterator handlers, :class:`~rapidws.Endpoint`,
    :class:`~rapidws.Callbacks`).

    Args:
        broker: carries messages between processes; by default a
            :class:`~rapidws.pubsub.MemoryBroker` (one process).
        options: the default :class:`TopicOptions`; :meth:`configure` sets
            them per topic or topic pattern.
        presence_ttl: seconds a presence entry lives without renewal (a
            crashed node's entries expire).
        on_join: called with ``(topic, client, info)`` when a connection joins
            a topic with ``info``, on every node that has subscribers to the
            topic (through the broker), and at once on the joiner's node.
        on_leave: called with ``(topic, client, info)`` when it leaves, likewise.
        on_gap: called with ``topic`` when the broker may have lost some of
            its messages (its connection to Redis failed and the topic keeps
            no history to catch up from, or the history itself was lost):
            the application may tell its subscribers to reload. Logged as a
            warning in any case.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        options: TopicOptions | None = None,
        presence_ttl: float = 60.0,
        on_join: Callable[[str, str, Any], object] | None = None,
        on_leave: Callable[[str, str, Any], object] | None = None,
        on_gap: Callable[[str], object] | None = None,
    ) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self.default_options = options or TopicOptions()
        self.presence_ttl = presence_ttl
        self.on_join = on_join
        self.on_leave = on_leave
        self.on_gap = on_gap
        self._node = ("", 0)  # (id, pid): made in the process that uses it
        self._serial = itertools.count(1)
        self._patterns: list[tuple[str, TopicOptions]] = []
        self._topics: dict[str, _Topic] = {}
        self._members: dict[Connection[Any], _Member] = {}
        self._clients: dict[str, _Member] = {}
        self._stats: dict[str, TopicStats] = {}
        self._started: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Connections with frames published to them this loop turn, unwritten.
        self._corked: set[Connection[Any]] = set()
        self._uncorking = False

    @property
    def node(self) -> str:
        """The id of this node, the prefix of its connections' client ids.

        Made in the process that first uses it: workers forked from one
        parent (``rapidws serve --workers``) each get their own.
        """
        node, pid = self._node
        if pid != os.getpid():
            node = secrets.token_hex(4)
            self._node = (node, os.getpid())
        return node

    # Lifecycle.

    async def start(self) -> None:
        """Connect the broker; the first subscribe or publish does it when needed."""
        await self._start()

    def _start(self) -> asyncio.Task[None]:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(
                self.broker.start(self._deliver, self._gap)
            )
        return self._started

    async def stop(self) -> None:
        """Stop the broker and the hub's background tasks (subscribers stay open)."""
        for task in list(self._tasks):
            task.cancel()
        if self._started is not None:
            await self.broker.stop()
            self._started = None

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Settings.

    def configure(self, pattern: str, options: TopicOptions) -> None:
        """Set the options of the topics matching ``pattern`` (``"prices:*"``, fnmatch style).

        Later calls take precedence; topics with subscribers already keep theirs.
        """
        self._patterns.insert(0, (pattern, options))

    def options(self, topic: str) -> TopicOptions:
        """Return the options that apply to ``topic``."""
        for pattern, options in self._patterns:
            if fnmatch.fnmatchcase(topic, pattern):
                return options
        return self.default_options

    # Subscriptions.

    def subscribe(
        self,
        ws: Connection[Any],
        topic: str,
        *,
        since: Position | None = None,
        info: Any = None,
    ) -> Awaitable[Subscription]:
        """Add ``ws`` to ``topic``; it receives the messages published from now on.

        Takes effect at once on this node. Await the result to know that the
        broker delivers the topic here too, and for recovery: with ``since``
        (a position the client saw last), the messages published after it are
        sent first, in order, then live ones, without duplicates or a gap; the
        :class:`Subscription` tells whether the history reached back.
        ``info`` (JSON-serializable: a user name) makes ``ws`` present in the
        topic (:meth:`presence`). Subscribing twice does nothing more.
        """
        member = self._members.get(ws)
        if member is None:
            member = self._add_member(ws)
        loop = asyncio.get_running_loop()
        if topic in member.topics:
            done: asyncio.Future[Subscription] = loop.create_future()
            done.set_result(Subscription(topic))
            return done
        state = self._topics.get(topic)
        first = state is None
        if state is None:
            state = self._topics[topic] = _Topic(topic, self.options(topic))
            state.stats = self._stats.setdefault(topic, TopicStats())
        state.members[ws] = member
        member.topics[state.name] = state  # one string per topic, shared
        state.stats.subscribers += 1
        if info is not None:
            if member.info is None:
                member.info = {}
            member.info[topic] = info
            if self.on_join is not None:
                self.on_join(topic, member.client, info)
            self._renew_presence()
        if since is not None:
            state.recovering[ws] = []
        elif not first and info is None and self._started is not None and self._started.done():
            # The common case: nothing to wait for.
            done = loop.create_future()
            done.set_result(Subscription(topic))
            return done
        return self._spawn(self._subscribed(member, state, first, since, info))

    def _renew_presence(self) -> None:
        # Presence entries expire unless renewed: a crashed node's go away.
        if self._renewer is None or self._renewer.done():
            self._renewer = self._spawn(self._renew_loop())

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            entries = [
                (topic, member.client, info)
                for member in self._members.values()
                for topic, info in (member.info or {}).items()
            ]
            if not entries:
                return
            for topic, client, info in entries:
                await self.broker.join(topic, client, info, self.presence_ttl)

    async def _subscribed(
        self,
        member: _Member,
        state: _Topic,
        first: bool,
        since: Position | None,
        info: Any,
    ) -> Subscription:
        await self._start()
        if first:
            await self.broker.subscribe(state.name, state.options.history)
        if info is not None:
            await self.broker.join(state.name, member.client, info, self.presence_ttl)
            await self._announce(state.name, "join", member.client, info)
        ws = member.ws
        if since is None and ws not in state.recovering:
            return Subscription(state.name)
        try:
            missed, position, recovered = await self.broker.history(state.name, since)
        except BaseException:
            self._end_recovery(member, state, None)
            raise
        for envelope in missed:
            self._send(member, state, self._prepare(envelope, state), envelope.key)
        if missed:
            position = missed[-1].position
        self._end_recovery(member, state, position)
        return Subscription(state.name, position, recovered, len(missed))

    def _end_recovery(self, member: _Member, state: _Topic, position: Position | None) -> None:
        # Live messages that arrived during the replay, minus those replayed.
        held = state.recovering.pop(member.ws, [])
        if member.ws not in state.members:
            return
        for envelope in held:
            if (
                position is not None
                and envelope.position is not None
                and envelope.position.epoch == position.epoch
                and envelope.position.offset <= position.offset
            ):
                continue
            if envelope.exclude != member.client:
                self._send(member, state, self._prepare(envelope, state), envelope.key)

    def unsubscribe(self, ws: Connection[Any], topic: str) -> None:
        """Remove ``ws`` from ``topic`` (nothing happens if it is not subscribed)."""
        member = self._members.get(ws)
        if member is None or topic not in member.topics:
            return
        self._leave(member, member.topics.pop(topic))
        if not member.topics:
            self._remove_member(member)

    def topics(self, ws: Connection[Any]) -> frozenset[str]:
        """Return the topics ``ws`` subscribes to."""
        member = self._members.get(ws)
        return frozenset(member.topics) if member is not None else frozenset()

    def count(self, topic: str) -> int:
        """Return how many connections of this node subscribe to ``topic``."""
        state = self._topics.get(topic)
        return len(state.members) if state is not None else 0

    def stats(self, topic: str) -> TopicStats:
        """Return the counts of ``topic`` on this node (a copy)."""
        return dataclasses.replace(self._stats.get(topic) or TopicStats())

    def client_id(self, ws: Connection[Any]) -> str | None:
        """Return the id under which ``ws`` appears in presence, once it subscribed."""
        member = self._members.get(ws)
        return member.client if member is not None else None

    async def presence(self, topic: str) -> dict[str, Any]:
        """Return who is present in ``topic``, on every node: client id -> info."""
        await self._start()
        return await self.broker.presence(topic)

    # Per-user delivery: a topic per user, by convention.

    @staticmethod
    def user_topic(user: str) -> str:
        """Return the topic that reaches every connection of ``user``."""
        return f"user:{user}"

    def add_user(self, ws: Connection[Any], user: str) -> Awaitable[Subscription]:
        """Make ``ws`` receive what :meth:`publish_to_user` sends to ``user``."""
        return self.subscribe(ws, self.user_topic(user))

    async def publish_to_user(
        self, user: str, message: str | bytes, *, exclude: Connection[Any] | None = None
    ) -> Position | None:
        """Send ``message`` to every connection (tab, device) of ``user``."""
        return await self.publish(self.user_topic(user), message, exclude=exclude)

    # Publishing.

    async def publish(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        *,
        exclude: Connection[Any] | None = None,
        key: str | None = None,
    ) -> Position | None:
        """Publish ``message`` (``str`` as text, bytes-like as binary) to ``topic``.

        Every subscriber but ``exclude`` receives it, on every node of the
        broker. ``key`` names what the message updates, for the
        ``"coalesce"`` policy. Returns the message's position when the topic
        keeps history.

        Raises:
            TypeError: for a message that is neither ``str`` nor bytes-like.
            ConnectionError: when the broker is unreachable
                (:class:`~rapidws.pubsub.redis.BrokerUnavailable`).
        """
        opcode, payload, excluded = self._outgoing(message, exclude)
        if self._started is None or not self._started.done():
            await self._start()
        history = self.options(topic).history
        return await self.broker.publish(
            topic, opcode, payload, exclude=excluded, key=key or "", history=history
        )

    def publish_nowait(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        *,
        exclude: Connection[Any] | None = None,
        key: str | None = None,
    ) -> None:
        """Publish without waiting: for callbacks, which cannot await.

        In one process the message is delivered before this returns (once the
        hub has started; before, it goes out when it has); through a broker it
        goes out with this loop turn's other publishes, and a failure is
        logged instead of raised (use :meth:`publish` to know).
        """
        opcode, payload, excluded = self._outgoing(message, exclude)
        if self._started is None or not self._started.done():
            self._start()
            if not self._started.done():  # type: ignore[union-attr]
                # The broker is starting: publish once it has.
                self._spawn(self.publish(topic, message, exclude=exclude, key=key))
                return
        history = self.options(topic).history
        self.broker.publish_nowait(
            topic, opcode, payload, exclude=excluded, key=key or "", history=history
        )

    def _outgoing(
        self, message: str | bytes | bytearray | memoryview, exclude: Connection[Any] | None
    ) -> tuple[int, bytes, str]:
        # A message's opcode and payload, and the client id it excludes.
        if isinstance(message, str):
            opcode, payload = OP_TEXT, message.encode()
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode, payload = OP_BINARY, bytes(message)
        else:
            raise TypeError(f"cannot publish {type(message).__name__}: publish str or bytes")
        excluded = ""
        if exclude is not None:
            member = self._members.get(exclude)
            if member is not None:
                excluded = member.client
        return opcode, payload, excluded

    # Delivery.

    def _deliver(self, envelope: Envelope) -> None:
        # The broker's callback: one message for this node's subscribers.
        state = self._topics.get(envelope.topic)
        if state is None:
            return
        if not envelope.opcode:
            self._presence_event(envelope)
            return
        stats = state.stats
        stats.published += 1
        prepared = self._prepare(envelope, state)
        excluded = self._clients.get(envelope.exclude) if envelope.exclude else None
        recovering = state.recovering
        corked = self._corked
        delivered = 0
        # A copy without tuples: a subscriber may leave while this runs.
        for member in tuple(state.members.values()):
            if member is excluded:
                continue
            ws = member.ws
            if recovering and ws in recovering:
                recovering[ws].append(envelope)
            elif member.pending is None and not ws._writing_paused:
                # Framed now (in order with what the connection sends), written
                # at the end of this loop turn: one write per connection for
                # all the messages published to it meanwhile.
                try:
                    ws.protocol.send_prepared(prepared)
                except InvalidState:
                    if ws.protocol.state is OPEN:  # sending a fragmented message
                        self._hold(member, state, prepared, envelope.key)
                    continue  # else closing: on_close removes it
                corked.add(ws)
                delivered += 1
            else:
                self._hold(member, state, prepared, envelope.key)
        stats.delivered += delivered
        if corked and not self._uncorking:
            self._uncorking = True
            asyncio.get_running_loop().call_soon(self._uncork)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, set()
        self._uncorking = False
        for ws in corked:
            ws._write_pending()

    async def _announce(self, topic: str, event: str, client: str, info: Any) -> None:
        # Presence events reach the other nodes through the broker (their
        # hooks are theirs to set); this node's hooks ran already.
        payload = json.dumps({"event": event, "client": client, "info": info})
        await self.broker.announce(topic, payload.encode())

    def _presence_event(self, envelope: Envelope) -> None:
        event = json.loads(envelope.payload)
        client = event["client"]
        if client.startswith(self.node + "-"):
            return  # one of ours: its hook ran when it happened
        hook = self.on_join if event["event"] == "join" else self.on_leave
        if hook is not None:
            hook(envelope.topic, client, event["info"])

    def _gap(self, topic: str) -> None:
        logger.warning("messages of topic %s may have been lost", topic)
        if self.on_gap is not None:
            self.on_gap(topic)

    def _prepare(self, envelope: Envelope, state: _Topic) -> PreparedMessage:
        options = state.options
        payload = envelope.payload
        if options.stamp is not None:
            payload = options.stamp(payload, envelope.position)
        return PreparedMessage.from_payload(envelope.opcode, payload, compress=options.compress)

    def _send(self, member: _Member, state: _Topic, prepared: PreparedMessage, key: str) -> None:
        # One message to one subscriber (a replay), with the slow-consumer policy.
        if member.pending is None and not member.ws._writing_paused:
            try:
                member.ws.send_nowait(prepared)
            except ConnectionClosed:
                return
            except InvalidState:
                pass
            else:
                state.stats.delivered += 1
                return
        self._hold(member, state, prepared, key)

    def _hold(self, member: _Member, state: _Topic, prepared: PreparedMessage, key: str) -> None:
        # A message for a subscriber that is not keeping up.
        options, stats = state.options, state.stats
        backlog = member.pending
        if backlog is None:
            backlog = member.pending = _Backlog()
            backlog.drainer = self._spawn(self._drain(member, backlog))
        size = len(prepared)
        counts = backlog.counts.setdefault(state.name, [0, 0])
        if options.slow == "coalesce" and key:
            entry = backlog.keyed.get((state.name, key))
            if entry is not None:
                counts[1] += size - len(entry[1])
                entry[1] = prepared
                stats.coalesced += 1
                return
        while counts[0] >= options.max_pending or counts[1] + size > options.max_pending_bytes:
            if options.slow == "close":
                stats.closed += 1
                # Out of every topic at once: it gets nothing more.
                self._closed(member.ws)
                member.ws.close_nowait(options.close_code, "subscriber too slow")
                return
            if options.slow == "drop_newest" or not _evict_oldest(backlog, state.name):
                stats.dropped += 1
                return
            stats.dropped += 1
        entry = [state.name, prepared, key]
        backlog.queue.append(entry)
        counts[0] += 1
        counts[1] += size
        if key and options.slow == "coalesce":
            backlog.keyed[(state.name, key)] = entry

    async def _drain(self, member: _Member, backlog: _Backlog) -> None:
        # Send a slow subscriber's queue as its write buffer drains.
        ws, queue = member.ws, backlog.queue
        try:
            while queue:
                await ws.drain()
                entry = queue.popleft()
                backlog.dequeued(entry)
                await ws.send(entry[1])
                state = member.topics.get(entry[0])
                if state is not None:
                    state.stats.delivered += 1
        except ConnectionClosed:
            pass
        finally:
            if member.pending is backlog:
                member.pending = None

    def _drop(self, member: _Member) -> None:
        # Discard a subscriber's queue (it is being closed).
        backlog, member.pending = member.pending, None
        if backlog is not None and backlog.drainer is not None:
            backlog.drainer.cancel()

    # Bookkeeping.

    def _add_member(self, ws: Connection[Any]) -> _Member:
        member = _Member(ws, f"{self.node}-{next(self._serial)}")
        self._members[ws] = member
        self._clients[member.client] = member
        ws.on_close(self._closed)
        return member

    def _closed(self, ws: Connection[Any]) -> None:
        member = self._members.get(ws)
        if member is None:
            return
        for state in list(member.topics.values()):
            self._leave(member, state)
        member.topics.clear()
        self._remove_member(member)

    def _remove_member(self, member: _Member) -> None:
        self._drop(member)
        self._members.pop(member.ws, None)
        self._clients.pop(member.client, None)

    def _leave(self, member: _Member, state: _Topic) -> None:
        name = state.name
        state.members.pop(member.ws, None)
        state.recovering.pop(member.ws, None)
        state.stats.subscribers -= 1
        info = None if member.info is None else member.info.pop(name, None)
        if info is not None:
            if self.on_leave is not None:
                self.on_leave(name, member.client, info)
            self._spawn(self._quietly(self.broker.leave(name, member.client)))
            self._spawn(self._quietly(self._announce(name, "leave", member.client, info)))
        if not state.members:
            del self._topics[name]
            self._spawn(self._quietly(self.broker.unsubscribe(name)))

    async def _quietly(self, call: Awaitable[None]) -> None:
        # Bookkeeping that may fail while the broker is down: presence entries
        # expire by themselves, and a resubscription covers the rest.
        try:
            await call
        except ConnectionError as exc:
            logger.warning("broker unavailable: %s", exc)

    def _spawn(self, coroutine: Generator[Any, None, Any] | Any) -> asyncio.Task[Any]:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("hub task failed", exc_info=task.exception())


def _evict_oldest(backlog: _Backlog, topic: str) -> bool:
    # Remove the oldest queued message of ``topic``; False if there is none.
    for entry in backlog.queue:
        if entry[0] == topic:
            backlog.queue.remove(entry)
            backlog.dequeued(entry)
            return True
    return False
