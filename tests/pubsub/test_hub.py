"""The Hub over real sockets: topics, encode-once fan-out, slow consumers, history, presence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest

import rapidws
from rapidws.pubsub import History, Hub, Position, TopicOptions

from ..asyncio.utils import RawPeer, handshake_request, until, uri, wait


@contextlib.asynccontextmanager
async def chat(hub: Hub, **kwargs: Any) -> AsyncIterator[rapidws.Server]:
    """A server whose connections join the topic named by their path and publish what they send."""

    async def handler(ws: rapidws.ServerConnection) -> None:
        assert ws.request is not None and ws.transport is not None
        # Small kernel buffers: a subscriber that does not read backs up fast.
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        topic = ws.request.path.lstrip("/")
        await hub.subscribe(ws, topic, info={"path": ws.request.path})
        async for message in ws:
            await hub.publish(topic, message, exclude=ws)

    async with rapidws.serve(handler, "127.0.0.1", 0, **kwargs) as server:
        yield server


async def joined(hub: Hub, topic: str, count: int) -> None:
    await until(lambda: hub.count(topic) == count)


async def test_a_message_reaches_every_subscriber_but_the_publisher() -> None:
    hub = Hub()
    async with chat(hub) as server:
        clients = [await rapidws.connect(uri(server, "/room")) for _ in range(3)]
        other = await rapidws.connect(uri(server, "/elsewhere"))
        await joined(hub, "room", 3)
        await clients[0].send("hello")
        assert [await wait(ws.recv()) for ws in clients[1:]] == ["hello", "hello"]
        await clients[1].send(b"\x00\x01")
        assert await wait(clients[0].recv()) == b"\x00\x01"
        assert await wait(clients[2].recv()) == b"\x00\x01"
        with pytest.raises(TimeoutError):
            await wait(other.recv(), 0.05)  # another topic
        with pytest.raises(TimeoutError):
            await wait(clients[0].recv(), 0.05)  # its own message is excluded
        stats = hub.stats("room")
        assert (stats.subscribers, stats.published, stats.delivered) == (3, 2, 4)
        for ws in [*clients, other]:
            await ws.close()
        await joined(hub, "room", 0)  # leaving on close
        assert hub.stats("room").subscribers == 0


async def test_topics_count_unsubscribe_and_publish_from_outside_a_connection() -> None:
    hub = Hub()
    connections: asyncio.Queue[rapidws.ServerConnection] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        hub.subscribe(ws, "a")
        hub.subscribe(ws, "b")
        hub.subscribe(ws, "b")  # twice: nothing more
        await connections.put(ws)
        await ws.wait_closed()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as client,
    ):
        sws = await wait(connections.get())
        assert hub.topics(sws) == {"a", "b"}
        assert (hub.count("a"), hub.count("b"), hub.count("c")) == (1, 1, 0)
        hub.unsubscribe(sws, "a")
        hub.unsubscribe(sws, "c")  # not subscribed: nothing happens
        assert hub.topics(sws) == {"b"}
        assert await hub.publish("a", "not for you") is None
        await hub.publish("b", "for you")
        assert await wait(client.recv()) == "for you"
        with pytest.raises(TypeError, match="publish str or bytes"):
            await hub.publish("b", 42)  # type: ignore[arg-type]


class Member(rapidws.Callbacks):
    """A callback-style subscriber."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_open(self, connection: rapidws.ServerConnection) -> None:
        self.hub.subscribe(connection, "news")

    def on_message(self, connection: rapidws.ServerConnection, message: str | bytes) -> None:
        self.hub.publish_nowait("news", message)  # delivered before it returns


async def test_callbacks_and_endpoint_connections_share_a_topic() -> None:
    hub = Hub()

    class Reader(rapidws.Endpoint):
        async def on_open(self, ws: rapidws.ServerConnection) -> None:
            await hub.subscribe(ws, "news")

    app = rapidws.App()
    app.add_websocket("/endpoint", Reader)
    app.add_websocket("/callbacks", Member(hub))
    async with (
        app.serve("127.0.0.1", 0) as server,
        rapidws.connect(uri(server, "/endpoint")) as endpoint,
        rapidws.connect(uri(server, "/callbacks")) as callbacks,
    ):
        await joined(hub, "news", 2)
        await callbacks.send("extra")
        assert await wait(endpoint.recv()) == "extra"
        assert await wait(callbacks.recv()) == "extra"


async def test_every_subscriber_gets_the_same_frame_object() -> None:
    # Encode once: one bytes object written to all plain connections, and one
    # per compressed wire form (server_no_context_takeover).
    hub = Hub()
    written: list[bytes] = []
    deflate = rapidws.ServerPerMessageDeflate(server_no_context_takeover=True)

    class Spy:
        # The transport, recording what is written (uvloop's cannot be patched).
        def __init__(self, transport: Any) -> None:
            self.transport = transport

        def write(self, data: bytes) -> None:
            written.append(data)
            self.transport.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    async def handler(ws: rapidws.ServerConnection) -> None:
        ws.transport = Spy(ws.transport)  # type: ignore[assignment]
        hub.subscribe(ws, "t")
        await ws.wait_closed()

    async with rapidws.serve(handler, "127.0.0.1", 0, compression=deflate) as server:
        plain = [await rapidws.connect(uri(server), compression=None) for _ in range(3)]
        packed = [await rapidws.connect(uri(server)) for _ in range(3)]
        await joined(hub, "t", 6)
        text = "ticker " * 100
        await hub.publish("t", text)
        for ws in plain + packed:
            assert await wait(ws.recv()) == text
        frames = [data for data in written if len(data) > 2]
        assert len(frames) == 6
        assert len({id(frame) for frame in frames}) == 2  # one plain, one deflated
        assert len({len(frame) for frame in frames}) == 2
        for ws in plain + packed:
            await ws.close()


async def test_context_takeover_connections_still_get_every_message() -> None:
    hub = Hub()
    async with chat(hub) as server:
        sender = await rapidws.connect(uri(server, "/t"), compression=None)
        receiver = await rapidws.connect(uri(server, "/t"))  # deflate with takeover
        await joined(hub, "t", 2)
        for i in range(5):
            await sender.send(f"message {i} " * 20)
        assert [await wait(receiver.recv()) for _ in range(5)] == [
            f"message {i} " * 20 for i in range(5)
        ]
        await sender.close()
        await receiver.close()


@contextlib.asynccontextmanager
async def deaf(server: rapidws.Server, path: str) -> AsyncIterator[RawPeer]:
    """A subscriber that completes the handshake and then never reads."""
    peer = await RawPeer.connect(port=server.port)
    peer.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.writer.transport.pause_reading()  # type: ignore[attr-defined]
    peer.send(handshake_request(path))
    try:
        yield peer
    finally:
        peer.abort()


async def stalling_client(server: rapidws.Server, path: str) -> rapidws.ClientConnection:
    """A client with a small receive buffer, set before connecting (the window stays small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await rapidws.connect(uri(server, path), sock=sock, max_queue=1)


async def fill(hub: Hub, topic: str, count: int, size: int = 1000, **kwargs: Any) -> None:
    for i in range(count):
        await hub.publish(topic, f"{i:06d}".ljust(size, "."), **kwargs)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the transports write


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_a_slow_subscriber_drops_within_its_budget_and_fast_ones_get_everything(
    policy: str,
) -> None:
    hub = Hub(options=TopicOptions(slow=policy, max_pending=20))  # type: ignore[arg-type]
    async with chat(hub, write_limit=4096) as server:
        fast = [await rapidws.connect(uri(server, "/t"), max_queue=None) for _ in range(3)]
        async with deaf(server, "/t"):
            await joined(hub, "t", 4)
            await fill(hub, "t", 500)
            for ws in fast:
                received = [await wait(ws.recv()) for _ in range(500)]
                assert [int(m[:6]) for m in received] == list(range(500))
            stats = hub.stats("t")
            assert stats.dropped > 0
            # Everything else went out or waits in the bounded queue.
            assert stats.delivered + stats.dropped <= 4 * 500
            assert stats.delivered >= 3 * 500
            # The deaf one's queue stays within its budget.
            assert all(
                len(m.pending.queue if m.pending else ()) <= 20 for m in hub._members.values()
            )
        for ws in fast:
            await ws.close()


async def test_drop_oldest_keeps_the_newest_and_sends_them_once_the_reader_is_back() -> None:
    hub = Hub(options=TopicOptions(slow="drop_oldest", max_pending=10))
    async with chat(hub, write_limit=4096) as server:
        slow = await stalling_client(server, "/t")
        await joined(hub, "t", 1)
        # The client stops reading: its queue of one fills, then TCP, then ours.
        slow.transport.pause_reading()  # type: ignore[union-attr]
        await fill(hub, "t", 2000)
        assert hub.stats("t").dropped > 0
        slow.transport.resume_reading()  # type: ignore[union-attr]
        numbers = []
        while not numbers or numbers[-1] != 1999:
            numbers.append(int((await wait(slow.recv()))[:6]))
        assert numbers == sorted(numbers)  # in order, no duplicates
        assert numbers[-10:] == list(range(1990, 2000))  # the newest ten survived
        await slow.close()


async def test_coalesce_keeps_the_latest_value_per_key() -> None:
    hub = Hub(options=TopicOptions(slow="coalesce", max_pending=100))
    async with chat(hub, write_limit=4096) as server:
        slow = await stalling_client(server, "/prices")
        await joined(hub, "prices", 1)
        slow.transport.pause_reading()  # type: ignore[union-attr]
        for i in range(3000):
            symbol = ["AAPL", "MSFT", "GOOG"][i % 3]
            await hub.publish("prices", json.dumps([symbol, i]).ljust(300), key=symbol)
            if i % 50 == 0:
                await asyncio.sleep(0)
        assert hub.stats("prices").coalesced > 0
        slow.transport.resume_reading()  # type: ignore[union-attr]
        latest: dict[str, int] = {}
        while latest != {"AAPL": 2997, "MSFT": 2998, "GOOG": 2999}:
            symbol, i = json.loads(await wait(slow.recv()))
            assert i > latest.get(symbol, -1)  # per key, in order
            latest[symbol] = i
        await slow.close()


@pytest.mark.parametrize("code", [1013, 1008])
async def test_the_close_policy_closes_only_the_slow_subscriber(code: int) -> None:
    hub = Hub(options=TopicOptions(slow="close", close_code=code, max_pending=20))
    async with chat(hub, write_limit=4096, close_timeout=0.5) as server:
        fast = await rapidws.connect(uri(server, "/t"), max_queue=None)
        async with deaf(server, "/t"):
            await joined(hub, "t", 2)
            await fill(hub, "t", 300)
            assert [int((await wait(fast.recv()))[:6]) for _ in range(300)] == list(range(300))
            assert hub.stats("t").closed == 1
            assert hub.count("t") == 1  # the slow one is out at once
        await fast.close()


async def test_a_thousand_subscribers_with_a_hundred_deaf_ones() -> None:
    # The deaf ones cost the others nothing: every fast subscriber gets every
    # message, and the deaf ones hold a bounded queue each.
    hub = Hub(options=TopicOptions(slow="drop_oldest", max_pending=8))
    async with chat(hub, write_limit=2048) as server, contextlib.AsyncExitStack() as stack:
        for _ in range(100):
            await stack.enter_async_context(deaf(server, "/t"))
        fast = await asyncio.gather(
            *[rapidws.connect(uri(server, "/t"), max_queue=None) for _ in range(900)]
        )
        await joined(hub, "t", 1000)
        await fill(hub, "t", 100, size=2000)
        for ws in fast:
            assert [int((await wait(ws.recv()))[:6]) for _ in range(100)] == list(range(100))
        slow = [m for m in hub._members.values() if m.pending]
        assert slow and all(len(m.pending.queue) <= 8 for m in slow if m.pending)
        await asyncio.gather(*[ws.close() for ws in fast])


async def test_history_replays_what_a_subscriber_missed_then_goes_live() -> None:
    hub = Hub(options=TopicOptions(history=History(size=3)))
    positions = [await hub.publish("log", f"m{i}") for i in range(5)]
    assert [p.offset for p in positions if p] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions if p}) == 1
    subscribed: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        assert ws.request is not None
        since = Position.parse(urllib.parse.parse_qs(ws.request.query)["since"][0])
        await subscribed.put(await hub.subscribe(ws, "log", since=since))
        await ws.wait_closed()

    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        epoch = positions[0].epoch  # type: ignore[union-attr]
        async with rapidws.connect(uri(server, f"/?since={epoch}:3")) as ws:
            result = await wait(subscribed.get())
            assert (result.recovered, result.replayed, result.position.offset) == (True, 2, 5)
            await hub.publish("log", "live")
            assert [await wait(ws.recv()) for _ in range(3)] == ["m3", "m4", "live"]
        async with rapidws.connect(uri(server, f"/?since={epoch}:1")) as ws:
            # m1 fell out of the history of 3: not recoverable.
            result = await wait(subscribed.get())
            assert (result.recovered, result.replayed) == (False, 3)
        async with rapidws.connect(uri(server, "/?since=other:5")) as ws:
            result = await wait(subscribed.get())  # another epoch
            assert (result.recovered, result.replayed, result.position.offset) == (False, 0, 6)


async def test_presence_join_and_leave() -> None:
    events: list[tuple[str, str, Any]] = []
    hub = Hub(
        on_join=lambda *event: events.append(("join", *event)),  # type: ignore[arg-type]
        on_leave=lambda *event: events.append(("leave", *event)),  # type: ignore[arg-type]
    )
    async with chat(hub) as server:
        first = await rapidws.connect(uri(server, "/room"))
        second = await rapidws.connect(uri(server, "/room"))
        await joined(hub, "room", 2)
        await until(lambda: len(events) == 2)
        present = await hub.presence("room")
        assert sorted(present.values(), key=str) == [{"path": "/room"}] * 2
        assert [e[0] for e in events] == ["join", "join"]
        await first.close()
        await joined(hub, "room", 1)
        await until(lambda: len(events) == 3)
        assert events[2][0] == "leave" and events[2][1] == "room"
        await until(lambda: True)
        assert len(await hub.presence("room")) == 1
        await second.close()


async def test_publish_to_user_reaches_every_connection_of_that_user() -> None:
    hub = Hub()

    async def handler(ws: rapidws.ServerConnection) -> None:
        assert ws.request is not None
        await hub.add_user(ws, ws.request.path.lstrip("/"))
        await ws.wait_closed()

    async with rapidws.serve(handler, "127.0.0.1", 0) as server:
        tabs = [await rapidws.connect(uri(server, "/ann")) for _ in range(2)]
        bob = await rapidws.connect(uri(server, "/bob"))
        await joined(hub, Hub.user_topic("ann"), 2)
        await hub.publish_to_user("ann", "for ann")
        assert [await wait(ws.recv()) for ws in tabs] == ["for ann", "for ann"]
        with pytest.raises(TimeoutError):
            await wait(bob.recv(), 0.05)
        for ws in [*tabs, bob]:
            await ws.close()


def test_topic_options_are_checked_and_configured_by_pattern() -> None:
    with pytest.raises(ValueError, match="slow must be one of"):
        TopicOptions(slow="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        TopicOptions(max_pending=-1)
    hub = Hub()
    ticker = TopicOptions(slow="coalesce")
    hub.configure("prices:*", ticker)
    assert hub.options("prices:AAPL") is ticker
    assert hub.options("chat") == TopicOptions()


async def test_stamp_puts_each_message_position_in_it_replays_included() -> None:
    def stamp(payload: bytes, position: Position | None) -> bytes:
        return payload + b" @" + str(position).encode()

    hub = Hub(options=TopicOptions(history=History(size=10), stamp=stamp))
    first = await hub.publish("t", "one")
    assert first is not None
    subscribed: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(ws: rapidws.ServerConnection) -> None:
        await subscribed.put(await hub.subscribe(ws, "t", since=Position(first.epoch, 0)))
        await ws.wait_closed()

    async with (
        rapidws.serve(handler, "127.0.0.1", 0) as server,
        rapidws.connect(uri(server)) as ws,
    ):
        await wait(subscribed.get())
        await hub.publish("t", b"two")
        assert await wait(ws.recv()) == f"one @{first.epoch}:1"
        assert await wait(ws.recv()) == f"two @{first.epoch}:2".encode()


async def test_publish_nowait_delivers_at_once_in_one_process() -> None:
    hub = Hub()
    async with chat(hub) as server, rapidws.connect(uri(server, "/t")) as ws:
        await joined(hub, "t", 1)
        await hub.start()  # the first subscribe starts it, in a task that may not have run yet
        hub.publish_nowait("t", "now")
        assert hub.stats("t").delivered == 1  # framed before publish_nowait returned
        assert await wait(ws.recv()) == "now"
        with pytest.raises(TypeError, match="publish str or bytes"):
            hub.publish_nowait("t", 42)  # type: ignore[arg-type]
