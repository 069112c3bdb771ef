"""The Redis broker: topics across processes and machines (``pip install rapidws[redis]``).

What it does, and why:

- **Interest routing.** A node subscribes to the channel of a topic only while
  it has local subscribers, so it never receives (or decodes) messages it
  would not deliver.
- **One round trip per batch.** Publishes made in the same event-loop turn go
  to Redis in one pipeline.
- **History in Redis Streams.** A topic with history keeps its messages in a
  stream whose entry ids are the messages' offsets (``XADD key <offset>-0``),
  trimmed to its size (``MAXLEN ~``), with the epoch and the last offset in
  a hash beside it; a Lua script assigns the offset, appends and publishes
  atomically, so that positions and deliveries agree.
- **Faults are expected.** The subscriber connection is the broker's own:
  when it fails (Redis restarts, a failover, Redis dropping it for its
  output buffer), or goes silent (a liveness ping gets no answer), the broker
  reconnects with backoff, subscribes again, and catches up every topic with
  history from its stream, delivering what was missed in order; a topic
  whose epoch changed (history lost) or that keeps no history is reported to
  the hub's ``on_gap``. A periodic position check finds gaps on quiet topics.
  Publishing while Redis is unreachable fails fast with
  :class:`BrokerUnavailable`; nothing is buffered without bound.
- **Redis Cluster.** With ``cluster=True`` it uses sharded pub/sub
  (``SPUBLISH``/``SSUBSCRIBE``, Redis 7); every key of a topic shares one
  hash slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..asyncio.reconnect import Backoff
from .broker import Broker, Envelope, History, Position

try:
    import redis.asyncio as redis_asyncio
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the Redis broker needs redis-py: pip install 'rapidws[redis]'") from exc

__all__ = ["BrokerUnavailable", "RedisBroker"]

logger = logging.getLogger("rapidws.pubsub")

# Assigns the next offset (and the epoch, on a topic's first message or after
# Redis lost it), appends to the stream, and publishes: atomically.
# KEYS: meta hash, stream. ARGV: channel, opcode, the rest of the message
# (lengths line, exclude, key, payload), history size, TTL in seconds, new
# epoch, publish command.
_PUBLISH = """
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('del', KEYS[2])
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
local message = ARGV[2] .. ' ' .. offset .. ' ' .. epoch .. ' ' .. ARGV[3]
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', '~', size, offset .. '-0', 't', ARGV[8], 'm', message)
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('expire', KEYS[1], ttl)
  redis.call('expire', KEYS[2], ttl)
end
redis.call(ARGV[7], ARGV[1], message)
return {epoch, offset}
"""

# Seconds a poll of a cluster's shard connections waits for a message, and
# between polls when it cannot wait.
_SHARD_POLL = 0.2
_SHARD_IDLE = 0.02

_PUBLISH_SHA = hashlib.sha1(_PUBLISH.encode()).hexdigest()

# Presence: a sorted set of client ids scored by expiry, and their info.
_PRESENCE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
local clients = redis.call('zrange', KEYS[1], 0, -1)
if #clients == 0 then
  redis.call('del', KEYS[2])
  return {}
end
local infos = redis.call('hmget', KEYS[2], unpack(clients))
local out = {}
for i, client in ipairs(clients) do
  out[#out + 1] = client
  out[#out + 1] = infos[i] or 'null'
end
return out
"""


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached: the publish (or query) did not happen."""


class RedisBroker(Broker):
    """Topics across processes through Redis (single server or Cluster).

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS).
        cluster: a Redis Cluster: sharded pub/sub, keys slotted per topic.
        prefix: the prefix of every key and channel.
        timeout: seconds a command may take before it fails (publishes fail
            fast while Redis is down or paused).
        reconnect: the backoff between attempts to restore the subscriber
            connection (it retries forever).
        probe_interval: seconds of silence on the subscriber connection
            after which it is pinged; no answer within ``timeout`` makes it
            reconnect, so a deaf connection is replaced within
            ``probe_interval + timeout``.
        check_interval: seconds between position checks of the topics with
            history (finds gaps on quiet topics); ``None`` disables them.
        clock: the wall clock of presence expiry and history TTLs, shared by
            every node through Redis (their clocks should agree within
            seconds).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        prefix: str = "rapidws",
        timeout: float = 2.0,
        reconnect: Backoff | None = None,
        probe_interval: float = 15.0,
        check_interval: float | None = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self.prefix = prefix
        self.timeout = timeout
        self.reconnect = reconnect or Backoff(initial=0.1, factor=2.0, max_delay=5.0)
        self.probe_interval = probe_interval
        self.check_interval = check_interval
        self._clock = clock
        self._publish_command = "spublish" if cluster else "publish"
        self._client: Any = None
        self._deliver: Callable[[Envelope], None] | None = None
        self._on_gap: Callable[[str], None] = _ignore
        # Topics this node subscribes to -> the last (epoch, offset) delivered.
        self._topics: dict[str, Position | None] = {}
        self._channels: dict[bytes, str] = {}
        self._histories: dict[str, History] = {}
        self._pubsub: Any = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        # Publishes of this loop turn, sent in one pipeline.
        self._batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        #: How many times the subscriber connection was restored.
        self.reconnects = 0
        self._opened = False

    # Keys: every key of a topic in one hash slot (the {...} tag).

    def _key(self, topic: str, kind: str) -> str:
        return f"{self.prefix}:{{{topic}}}:{kind}"

    def _channel(self, topic: str) -> bytes:
        return self._key(topic, "c").encode()

    # Lifecycle.

    async def start(
        self, deliver: Callable[[Envelope], None], on_gap: Callable[[str], None]
    ) -> None:
        """Connect to Redis and start the subscriber connection."""
        self._deliver = deliver
        self._on_gap = on_gap
        options: dict[str, Any] = dict(
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # Errors reach this broker, which decides what to retry.
            retry=Retry(NoBackoff(), 0),
        )
        if self.cluster:
            self._client = RedisCluster.from_url(self.url, **options)
        else:
            self._client = redis_asyncio.Redis.from_url(self.url, **options)
        self._presence_script = self._client.register_script(_PRESENCE)
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_forever())
        if self.check_interval is not None:
            self._checker = loop.create_task(self._check_forever(self.check_interval))
        with contextlib.suppress(asyncio.TimeoutError):
            # Not fatal: the reader keeps trying, and publishes report errors.
            await asyncio.wait_for(self._connected.wait(), self.timeout)

    async def stop(self) -> None:
        """Close the connections to Redis."""
        for task in (self._reader, self._checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._checker = None
        await self._close_pubsub()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._deliver = None

    # Publishing.

    async def publish(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> Position | None:
        """Publish through Redis; with history, append to the topic's stream too."""
        rest = _rest(exclude, key, payload)
        if history:
            self._histories[topic] = history
            ttl = 0 if history.ttl is None else max(1, int(history.ttl + 0.999))
            keys = (self._key(topic, "m"), self._key(topic, "s"))
            args = (
                self._channel(topic),
                str(opcode),
                rest,
                history.size,
                ttl,
                secrets.token_hex(4),
                self._publish_command,
                repr(self._clock()),
            )
            epoch, offset = await self._batched(("EVALSHA", _PUBLISH_SHA, len(keys), *keys, *args))
            return Position(epoch.decode(), int(offset))
        # No positions: the message carries offset 0 and no epoch.
        await self._batched(
            (self._publish_command, self._channel(topic), b"%d 0 - %s" % (opcode, rest))
        )
        return None

    def publish_nowait(
        self, topic: str, opcode: int, payload: bytes, *, exclude: str, key: str, history: History
    ) -> None:
        """Queue the publish for this loop turn's pipeline; a failure is logged."""
        if history:
            super().publish_nowait(
                topic, opcode, payload, exclude=exclude, key=key, history=history
            )
            return
        message = b"%d 0 - %s" % (opcode, _rest(exclude, key, payload))
        future = self._enqueue((self._publish_command, self._channel(topic), message))
        future.add_done_callback(_logged)

    async def announce(self, topic: str, payload: bytes) -> None:
        """Publish an event (opcode 0, no position) on the topic's channel."""
        message = b"0 0 - " + _rest("", "", payload)
        await self._batched((self._publish_command, self._channel(topic), message))

    async def _batched(self, command: tuple[Any, ...]) -> Any:
        # Queue a command for this loop turn's pipeline, and wait for its reply.
        return await self._enqueue(command)

    def _enqueue(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush_soon, loop)
        self._batch.append((command, future))
        return future

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._flush())
        _flushing.add(task)
        task.add_done_callback(_flushing.discard)

    async def _flush(self) -> None:
        batch, self._batch = self._batch, []
        try:
            if self._client is None:
                raise BrokerUnavailable("the Redis broker is not started")
            replies = await self._execute([command for command, _ in batch])
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # A restarted Redis forgot the script: load it, send those again.
                await self._client.script_load(_PUBLISH)
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                for i, reply in zip(
                    again, await self._execute([batch[i][0] for i in again]), strict=True
                ):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            error = BrokerUnavailable(f"Redis at {self.url} is unavailable: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(BrokerUnavailable(f"Redis refused the publish: {reply}"))
            else:
                future.set_result(reply)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        # One round trip for the lot; replies may be exceptions.
        if self.cluster:
            # Routed by slot: the cluster pipeline splits the lot per shard.
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute(raise_on_error=False))
        # One write of the packed commands, then the replies in order: half
        # the cost of redis-py's pipeline per command.
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # this command's error, not the link's
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect()  # its replies are out of step now
            raise
        finally:
            await pool.release(connection)

    # Subscribing.

    async def subscribe(self, topic: str, history: History) -> None:
        """Receive ``topic``'s messages here from now on."""
        position = None
        if history:
            self._histories[topic] = history
            with contextlib.suppress(BrokerUnavailable):
                # Where the stream stands before subscribing: a message lost
                # from the first one on is then caught up from the stream.
                position = (await self.history(topic, None))[1]
        self._topics.setdefault(topic, position)
        channel = self._channel(topic)
        self._channels[channel] = topic
        if self._pubsub is not None:
            try:
                await self._subscribe(channel)
            except (RedisError, OSError) as exc:
                # The reader notices the broken connection and subscribes
                # again to every topic once it is back.
                logger.warning("subscribing to %s failed: %s", topic, exc)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``'s messages."""
        self._topics.pop(topic, None)
        channel = self._channel(topic)
        self._channels.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                if self.cluster:
                    await self._pubsub.sunsubscribe(channel)
                else:
                    await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, *channels: bytes) -> None:
        if self.cluster:
            await self._pubsub.ssubscribe(*channels)
        else:
            await self._pubsub.subscribe(*channels)

    # The subscriber connection.

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._open_pubsub()
                await self._catch_up_all()
                attempt = 0
                if self._opened:
                    self.reconnects += 1
                self._opened = True
                self._connected.set()
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure reconnects
                self._connected.clear()
                await self._close_pubsub()
                delay = self.reconnect.delay(attempt)
                attempt += 1
                logger.warning(
                    "Redis subscriber connection lost (%s); reconnecting in %.2f s", exc, delay
                )
                await asyncio.sleep(delay)

    async def _open_pubsub(self) -> None:
        self._pubsub = self._client.pubsub()
        if self._channels:
            await self._subscribe(*self._channels)
        elif self.cluster:
            await self._client.ping()  # shard connections open with their channels
        else:
            await self._pubsub.ping()  # a connection without channels: prove it

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), self.timeout)

    async def _read(self) -> None:
        if self.cluster:
            await self._read_shards()
        pubsub = self._pubsub
        probing = False
        while True:
            timeout = self.timeout if probing else self.probe_interval
            message = await pubsub.get_message(timeout=timeout)
            if message is None:
                if probing:
                    raise TimeoutError("the Redis subscriber connection does not answer")
                # Silence: prove the connection is alive.
                await pubsub.ping()
                probing = True
                continue
            probing = False
            await self._message(message)

    async def _read_shards(self) -> None:
        # One connection per shard holding our channels, made as channels are
        # subscribed: polled briefly, so that a new shard is read at once.
        pubsub = self._pubsub
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            started = loop.time()
            message = await pubsub.get_sharded_message(timeout=_SHARD_POLL)
            if message is not None:
                heard = loop.time()
                await self._message(message)
                continue
            if loop.time() - started < _SHARD_POLL / 2:
                # No shard connection to wait on yet (no channel), or a
                # redis-py that does not wait: never spin.
                await asyncio.sleep(_SHARD_IDLE)
            if loop.time() - heard > self.probe_interval:
                # Silence: the cluster must still answer (redis-py checks each
                # shard connection as it reads).
                await self._client.ping()
                heard = loop.time()

    async def _message(self, message: dict[str, Any]) -> None:
        if message["type"] in (b"message", "message", b"smessage", "smessage"):
            await self._received(message["channel"], message["data"])

    async def _received(self, channel: bytes, data: bytes) -> None:
        topic = self._channels.get(channel)
        if topic is None:
            return  # unsubscribed meanwhile
        envelope = _parse(topic, data)
        position = envelope.position
        if position is not None:
            last = self._topics.get(topic)
            if (
                last is not None
                and last.epoch == position.epoch
                and position.offset > last.offset + 1
            ):
                # Missed messages (a dropped connection): from the stream, in order.
                await self._catch_up(topic, last)
            last = self._topics.get(topic)
            if last is not None and last.epoch == position.epoch and position.offset <= last.offset:
                return  # delivered already by a catch-up
            if last is not None and last.epoch != position.epoch:
                self._gap(topic)
            if topic in self._topics:
                self._topics[topic] = position
        if self._deliver is not None:
            self._deliver(envelope)

    async def _catch_up_all(self) -> None:
        # After (re)connecting: every topic's missed messages, or a gap.
        # A topic whose messages carry positions keeps history: catch up from
        # its stream. Without positions, nothing tells what was missed.
        for topic, last in list(self._topics.items()):
            if last is not None:
                await self._catch_up(topic, last)
            else:
                self._gap(topic)

    async def _catch_up(self, topic: str, last: Position) -> None:
        missed, current, recovered = await self.history(topic, last)
        if not recovered:
            self._gap(topic)
            if current is not None and current.epoch != last.epoch:
                # A new history (Redis restarted empty): what it holds is
                # newer than anything delivered, so deliver all of it.
                last = Position(current.epoch, 0)
                self._topics[topic] = last
                missed, current, _ = await self.history(topic, last)
        for envelope in missed:
            if topic in self._topics:
                self._topics[topic] = envelope.position
            if self._deliver is not None:
                self._deliver(envelope)

    def _gap(self, topic: str) -> None:
        self._on_gap(topic)

    async def _check_forever(self, interval: float) -> None:
        # Quiet topics: a message lost while nothing else was published shows
        # only in the stream's position.
        while True:
            await asyncio.sleep(interval)
            if not self._connected.is_set():
                continue
            for topic, last in list(self._topics.items()):
                if last is None:
                    continue
                with contextlib.suppress(RedisError, OSError):
                    epoch, offset = await self._client.hmget(self._key(topic, "m"), "e", "o")
                    if epoch is None or epoch.decode() != last.epoch or int(offset) > last.offset:
                        await self._catch_up(topic, last)

    # History.

    async def history(
        self, topic: str, since: Position | None
    ) -> tuple[list[Envelope], Position | None, bool]:
        """Return the messages after ``since`` from the topic's stream."""
        try:
            epoch, offset = await self._client.hmget(self._key(topic, "m"), "e", "o")
            if epoch is None:
                # No message yet (or Redis lost it): start an epoch now, so
                # that positions given out are comparable later.
                meta = self._key(topic, "m")
                await self._client.hsetnx(meta, "e", secrets.token_hex(4))
                history = self._histories.get(topic)
                if history is not None and history.ttl is not None:
                    await self._client.expire(meta, max(1, int(history.ttl + 0.999)))
                epoch, offset = await self._client.hmget(meta, "e", "o")
            current = Position(epoch.decode(), int(offset or 0))
            if since is None:
                return [], current, True
            if since.epoch != current.epoch or since.offset > current.offset:
                return [], current, False
            if since.offset == current.offset:
                return [], current, True
            entries = await self._client.xrange(
                self._key(topic, "s"), min=f"{since.offset + 1}-0", max="+"
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url} is unavailable: {exc}") from None
        kept = self._histories.get(topic)
        oldest = None if kept is None or kept.ttl is None else self._clock() - kept.ttl
        missed = []
        for _, fields in entries:
            if oldest is not None and float(fields[b"t"]) < oldest:
                continue
            missed.append(_parse(topic, fields[b"m"]))
        first = missed[0].position.offset if missed and missed[0].position else current.offset + 1
        return missed, current, first == since.offset + 1

    # Presence.

    async def join(self, topic: str, client: str, info: Any, ttl: float) -> None:
        """Record ``client`` as present for ``ttl`` seconds."""
        zset, infos = self._key(topic, "pz"), self._key(topic, "ph")
        try:
            async with self._client.pipeline(transaction=not self.cluster) as pipe:
                pipe.zadd(zset, {client: self._clock() + ttl})
                pipe.hset(infos, client, json.dumps(info))
                pipe.expire(zset, int(ttl) + 1)
                pipe.expire(infos, int(ttl) + 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url} is unavailable: {exc}") from None

    async def leave(self, topic: str, client: str) -> None:
        """Remove ``client`` from ``topic``'s presence."""
        try:
            async with self._client.pipeline(transaction=not self.cluster) as pipe:
                pipe.zrem(self._key(topic, "pz"), client)
                pipe.hdel(self._key(topic, "ph"), client)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url} is unavailable: {exc}") from None

    async def presence(self, topic: str) -> dict[str, Any]:
        """Return the unexpired presence entries of ``topic``, from every node."""
        try:
            flat = await self._presence_script(
                keys=(self._key(topic, "pz"), self._key(topic, "ph")), args=(self._clock(),)
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url} is unavailable: {exc}") from None
        return {flat[i].decode(): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}


def _rest(exclude: str, key: str, payload: bytes) -> bytes:
    # The message after its "opcode offset epoch " head (see _parse()).
    excluded, keyed = exclude.encode(), key.encode()
    return b"%d %d\n%s%s%s" % (len(excluded), len(keyed), excluded, keyed, payload)


def _ignore(topic: str) -> None:
    pass


def _parse(topic: str, data: bytes) -> Envelope:
    # "opcode offset epoch exclude_len key_len\n" + exclude + key + payload.
    head, _, rest = data.partition(b"\n")
    opcode, offset, epoch, exclude_len, key_len = head.split(b" ")
    ex, kl = int(exclude_len), int(key_len)
    position = None if offset == b"0" else Position(epoch.decode(), int(offset))
    return Envelope(
        topic,
        int(opcode),
        rest[ex + kl :],
        rest[:ex].decode(),
        rest[ex : ex + kl].decode(),
        position,
    )


# Flushes in progress, referenced until done (the loop holds tasks weakly).
_flushing: set[asyncio.Task[None]] = set()


def _logged(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("publish failed: %s", future.exception())
