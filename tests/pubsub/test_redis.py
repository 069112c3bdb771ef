"""The Redis broker against a real redis-server: across nodes, history, presence, and faults.

Two hubs with their own brokers and servers stand for two processes (or
machines); the faults are real: the server is killed and restarted, paused
with SIGSTOP, and made to drop our subscriber connection (CLIENT KILL, and
its pub/sub output-buffer limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import rapidws
from rapidws.pubsub import History, Hub, Position, TopicOptions
from rapidws.pubsub.redis import BrokerUnavailable, RedisBroker

from ..asyncio.utils import until, uri, wait
from .redis_server import RedisServer, redis_cluster, redis_server

# Redis restarts and reconnections take real time: bounded generously.
SLOW = 20.0


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


class Node:
    """A hub with its Redis broker and a server whose clients join the topic in their path."""

    def __init__(self, server: RedisServer, **options: Any) -> None:
        options.setdefault("timeout", 1.0)
        options.setdefault("reconnect", rapidws.Backoff(initial=0.05, max_delay=0.5))
        self.broker = RedisBroker(server.url, **options)
        self.gaps: list[str] = []
        self.hub = Hub(
            self.broker,
            options=TopicOptions(history=History(size=100)),
            on_gap=self.gaps.append,
        )
        self.hub.configure("plain:*", TopicOptions())
        self.results: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(self, ws: rapidws.ServerConnection) -> None:
        assert ws.request is not None
        topic = ws.request.path.lstrip("/")
        since = ws.request.query
        position = Position.parse(since) if since else None
        await self.results.put(await self.hub.subscribe(ws, topic, since=position, info=topic))
        async for message in ws:
            await self.hub.publish(topic, message, exclude=ws)


@contextlib.asynccontextmanager
async def node(server: RedisServer, **options: Any) -> AsyncIterator[tuple[Node, rapidws.Server]]:
    state = Node(server, **options)
    async with state.hub, rapidws.serve(state.handler, "127.0.0.1", 0) as ws_server:
        yield state, ws_server


async def connect(server: rapidws.Server, path: str, node: Node) -> rapidws.ClientConnection:
    ws = await rapidws.connect(uri(server, path))
    await wait(node.results.get())  # subscribed, through Redis
    return ws


def numsub(server: RedisServer, topic: str) -> int:
    channel = f"rapidws:{{{topic}}}:c"
    return int(dict(server.client().pubsub_numsub(channel))[channel.encode()])


async def test_messages_cross_nodes_with_exclude_and_positions(redis: RedisServer) -> None:
    async with node(redis) as (a, server_a), node(redis) as (b, server_b):
        ann = await connect(server_a, "/room", a)
        bob = await connect(server_b, "/room", b)
        cid = await connect(server_b, "/room", b)
        await ann.send("hello from a")
        assert await wait(bob.recv()) == "hello from a"
        assert await wait(cid.recv()) == "hello from a"
        await bob.send(b"\x00binary")
        assert await wait(ann.recv()) == b"\x00binary"
        assert await wait(cid.recv()) == b"\x00binary"
        with pytest.raises(TimeoutError):
            await wait(bob.recv(), 0.1)  # excluded: its own message
        position = await a.hub.publish("room", "third")
        assert position is not None and position.offset == 3
        assert [await wait(ws.recv()) for ws in (ann, bob, cid)] == ["third"] * 3
        for ws in (ann, bob, cid):
            await ws.close()


async def test_a_node_subscribes_only_to_topics_with_local_subscribers(
    redis: RedisServer,
) -> None:
    async with node(redis) as (a, server_a), node(redis) as (b, _):
        assert numsub(redis, "room") == 0
        ws = await connect(server_a, "/room", a)
        assert numsub(redis, "room") == 1  # node a only: b never receives it
        await b.hub.publish("room", "from b")
        assert await wait(ws.recv()) == "from b"
        assert b.hub.stats("room").published == 0  # nothing reached b's hub
        await ws.close()
        await until(lambda: numsub(redis, "room") == 0)


async def test_history_recovers_across_nodes_and_reports_what_is_lost(
    redis: RedisServer,
) -> None:
    async with node(redis) as (a, _), node(redis) as (b, server_b):
        positions = [await a.hub.publish("log", f"m{i}") for i in range(5)]
        assert [p.offset for p in positions if p] == [1, 2, 3, 4, 5]
        since = positions[1]
        assert since is not None
        ws = await rapidws.connect(uri(server_b, f"/log?{since}"))
        result = await wait(b.results.get())
        assert (result.recovered, result.replayed) == (True, 3)
        await a.hub.publish("log", "live")
        assert [await wait(ws.recv()) for _ in range(4)] == ["m2", "m3", "m4", "live"]
        await ws.close()
        stale = await rapidws.connect(uri(server_b, f"/log?{since.epoch}:99"))
        result = await wait(b.results.get())
        assert result.recovered is False  # ahead of the stream: another history
        await stale.close()


async def test_presence_is_cluster_wide_and_expires_with_a_crashed_node(
    redis: RedisServer,
) -> None:
    now = [1000.0]
    async with (
        node(redis, clock=lambda: now[0]) as (a, server_a),
        node(redis, clock=lambda: now[0]) as (b, server_b),
    ):
        first = await connect(server_a, "/room", a)
        second = await connect(server_b, "/room", b)
        clients = {a.hub.client_id(ws) for ws in a.hub._members}
        clients |= {b.hub.client_id(ws) for ws in b.hub._members}
        present = await a.hub.presence("room")
        assert set(present) == clients and list(present.values()) == ["room", "room"]
        # A node that crashed left an entry that nobody renews any more.
        await b.broker.join("room", "crashed-1", "ghost", ttl=30)
        assert len(await b.hub.presence("room")) == 3
        now[0] += 31  # the live entries (60 s) outlast it
        assert set(await b.hub.presence("room")) == clients
        await first.close()  # leaving is seen on every node
        await until(lambda: len(a.hub._members) == 0)
        await until_presence(b.hub, "room", 1)
        await second.close()


async def until_presence(hub: Hub, topic: str, count: int) -> None:
    for _ in range(100):
        if len(await hub.presence(topic)) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"presence of {topic} never reached {count}")


async def test_a_dropped_subscriber_connection_catches_up_without_loss(
    redis: RedisServer,
) -> None:
    async with node(redis) as (a, _), node(redis) as (b, server_b):
        ws = await connect(server_b, "/log", b)
        await a.hub.publish("log", "before")
        assert await wait(ws.recv()) == "before"
        # Redis drops b's subscriber connection (a failover, a proxy, a kill).
        redis.client().client_kill_filter(_type="pubsub")
        for i in range(10):
            await a.hub.publish("log", f"during {i}")
        await a.hub.publish("plain:x", "nobody")
        received = [await wait(ws.recv(), SLOW) for _ in range(10)]
        assert received == [f"during {i}" for i in range(10)]  # in order, none lost
        await until(lambda: b.broker.reconnects >= 1, SLOW)
        await a.hub.publish("log", "after")
        assert await wait(ws.recv(), SLOW) == "after"
        await ws.close()


async def test_the_pubsub_output_buffer_limit_is_survived(redis: RedisServer) -> None:
    async with node(redis) as (a, _), node(redis) as (b, server_b):
        ws = await rapidws.connect(uri(server_b, "/big"), max_size=None)
        await wait(b.results.get())
        # Redis disconnects a subscriber whose output buffer passes 64 KiB.
        redis.client().config_set("client-output-buffer-limit", "pubsub 65536 32768 0")
        big = ["x" * 200_000 + str(i) for i in range(3)]
        for message in big:
            await a.hub.publish("big", message)
        assert [await wait(ws.recv(), SLOW) for _ in range(3)] == big  # from the stream
        await until(lambda: b.broker.reconnects >= 1, SLOW)
        await ws.close()


async def test_redis_restart_reconnects_resubscribes_and_reports_gaps(
    redis: RedisServer,
) -> None:
    async with node(redis) as (a, _), node(redis) as (b, server_b):
        log = await connect(server_b, "/log", b)
        plain = await connect(server_b, "/plain:chat", b)
        await a.hub.publish("log", "one")
        await a.hub.publish("plain:chat", "one")
        assert await wait(log.recv()) == "one"
        assert await wait(plain.recv()) == "one"
        redis.kill()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="unavailable"):
            await a.hub.publish("log", "lost")
        assert time.monotonic() - started < SLOW  # fails fast, never hangs
        redis.start()  # same port, empty: the history is gone too
        await until(lambda: b.broker.reconnects >= 1 and a.broker.reconnects >= 1, SLOW)
        # Subscribed again: messages flow on both topics.
        await a.hub.publish("log", "two")
        await a.hub.publish("plain:chat", "two")
        assert await wait(log.recv(), SLOW) == "two"
        assert await wait(plain.recv(), SLOW) == "two"
        # b was told that both topics may have lost messages: the plain
        # topic keeps no history, the log's epoch changed with the restart.
        assert set(b.gaps) == {"log", "plain:chat"}
        for ws in (log, plain):
            await ws.close()


async def test_a_paused_redis_fails_publishes_fast_and_the_probe_reconnects(
    redis: RedisServer,
) -> None:
    async with (
        node(redis) as (a, _),
        node(redis, probe_interval=0.3, timeout=0.5) as (b, server_b),
    ):
        ws = await connect(server_b, "/log", b)
        redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await a.hub.publish("log", "stuck")
            assert time.monotonic() - started < SLOW
            # b's subscriber connection is silent: its probe gives up on it.
            await until(lambda: not b.broker._connected.is_set(), SLOW)
        finally:
            redis.resume()
        await until(b.broker._connected.is_set, SLOW)
        await a.hub.publish("log", "back")
        assert await wait(ws.recv(), SLOW) == "back"
        await ws.close()


async def test_a_broker_that_cannot_reach_redis_raises_a_clear_error(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens there
    hub = Hub(RedisBroker(server.url, timeout=0.5))
    async with hub:
        with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{server.port}"):
            await hub.publish("t", "x")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    with redis_cluster(tmp_path) as servers:
        yield servers


async def test_a_redis_cluster_carries_topics_on_sharded_pub_sub(
    cluster: list[RedisServer],
) -> None:
    first, second = cluster[0], cluster[1]
    # Topics whose channels live on different masters (slot ranges are split evenly).
    topics, shards = [], set()
    for i in range(100):
        slot = first.client().cluster("keyslot", f"rapidws:{{t{i}}}:c")
        shard = int(slot) * len(cluster) // 16384
        if shard not in shards:
            shards.add(shard)
            topics.append(f"t{i}")
    assert len(shards) == len(cluster)
    async with (
        node(first, cluster=True) as (a, server_a),
        node(second, cluster=True) as (b, server_b),
    ):
        for topic in topics:
            ann = await connect(server_a, f"/{topic}", a)
            bob = await connect(server_b, f"/{topic}", b)
            await ann.send(f"to {topic}")
            assert await wait(bob.recv(), SLOW) == f"to {topic}"
            with pytest.raises(TimeoutError):
                await wait(ann.recv(), 0.1)  # excluded across the cluster too
            await ann.close()
            await bob.close()
        # History and recovery through the shard's stream.
        positions = [await a.hub.publish(topics[0], f"m{i}") for i in range(3)]
        since = positions[0]
        ws = await rapidws.connect(uri(server_b, f"/{topics[0]}?{since}"))
        result = await wait(b.results.get(), SLOW)
        assert (result.recovered, result.replayed) == (True, 2)
        assert [await wait(ws.recv(), SLOW) for _ in range(2)] == ["m1", "m2"]
        assert len(await a.hub.presence(topics[0])) == 1  # cluster-wide presence
        await ws.close()


async def test_join_and_leave_events_reach_every_node_with_subscribers(
    redis: RedisServer,
) -> None:
    async with node(redis) as (a, server_a), node(redis) as (b, server_b):
        events: list[tuple[str, str, str, Any]] = []
        a.hub.on_join = lambda *event: events.append(("join", *event))
        a.hub.on_leave = lambda *event: events.append(("leave", *event))
        ann = await connect(server_a, "/room", a)
        ann_id = a.hub.client_id(next(iter(a.hub._members)))
        bob = await connect(server_b, "/room", b)
        bob_id = b.hub.client_id(next(iter(b.hub._members)))
        await until(lambda: len(events) == 2)
        assert events == [("join", "room", ann_id, "room"), ("join", "room", bob_id, "room")]
        await bob.close()
        await until(lambda: len(events) == 3)
        assert events[2] == ("leave", "room", bob_id, "room")
        await ann.close()


async def test_publish_nowait_goes_through_redis_and_logs_failures(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with node(redis) as (a, _), node(redis) as (b, server_b):
        ws = await connect(server_b, "/plain:room", b)
        log = await connect(server_b, "/log", b)
        for i in range(3):
            a.hub.publish_nowait("plain:room", f"quick {i}")
        a.hub.publish_nowait("log", "with history")  # through the script
        assert [await wait(ws.recv(), SLOW) for _ in range(3)] == [f"quick {i}" for i in range(3)]
        assert await wait(log.recv(), SLOW) == "with history"
        redis.kill()
        a.hub.publish_nowait("plain:room", "lost")  # never raises
        await until(lambda: "publish failed" in caplog.text, SLOW)
        await ws.close()
        await log.close()
