"""``rapidws demo chat``: rooms, presence and history, in one process and across workers.

The end-to-end test runs ``rapidws demo chat --workers 2 --broker redis://...``
against a real redis-server, with two headless Chromium browsers on two
different worker processes; it writes a screenshot of each for a person to
look at (the path is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rapidws
from rapidws.cli.demo import _stamp, chat_app
from rapidws.pubsub import Position

from ..asyncio.utils import wait
from ..browser import chromium
from ..pubsub.redis_server import RedisServer, redis_server
from .test_workers import TIMEOUT, WORKER, supervisor


async def receive(ws: rapidws.ClientConnection, kind: str) -> dict[str, Any]:
    """The next event of type ``kind`` (skipping others)."""
    while True:
        event: dict[str, Any] = json.loads(await wait(ws.recv()))
        if event["type"] == kind:
            return event


def test_stamp_adds_the_position_to_a_json_object() -> None:
    assert _stamp(b'{"a":1}', Position("e1", 7)) == b'{"a":1,"position":"e1:7"}'
    assert _stamp(b'{"a":1}', None) == b'{"a":1}'


async def test_chat_in_one_process() -> None:
    app = chat_app()
    async with app.serve("127.0.0.1", 0) as server:
        base = f"ws://127.0.0.1:{server.port}/ws/lobby"
        ann = await rapidws.connect(f"{base}?name=ann")
        welcome = await receive(ann, "welcome")
        assert welcome["recovered"] is True and list(welcome["users"].values()) == ["ann"]
        bob = await rapidws.connect(f"{base}?name=bob")
        assert sorted((await receive(bob, "welcome"))["users"].values()) == ["ann", "bob"]
        assert (await receive(ann, "join"))["user"] == "ann"  # its own, first
        assert (await receive(ann, "join"))["user"] == "bob"
        await bob.send(json.dumps({"text": "hello"}))
        message = await receive(ann, "message")
        assert (message["user"], message["text"]) == ("bob", "hello")
        await bob.send("not json")  # ignored, not fatal
        await bob.send(json.dumps({"text": 42}))
        # ann leaves; what it misses meanwhile comes back with its position.
        await ann.close()
        await bob.send(json.dumps({"text": "while you were away"}))
        ann = await rapidws.connect(f"{base}?name=ann&since={message['position']}")
        replayed = [await receive(ann, "message")]
        assert replayed[0]["text"] == "while you were away"
        assert (await receive(ann, "welcome"))["recovered"] is True
        garbled = await rapidws.connect(f"{base}?name=eve&since=garbage")
        assert (await receive(garbled, "welcome"))["recovered"] is True  # live only
        for ws in (ann, bob, garbled):
            await ws.close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@contextlib.contextmanager
def browsers(count: int) -> Iterator[list[Any]]:
    opened: list[Any] = []
    try:
        for _ in range(count):
            opened.append(chromium())
        yield opened
    finally:
        for browser in opened:
            browser.quit()


def until(condition: Any, what: str) -> Any:
    """Poll ``condition()`` until it is truthy; fail with ``what`` after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def worker_of(browser: Any) -> int:
    return int(
        until(lambda: browser.execute_script("return document.body.dataset.worker"), "a welcome")
    )


def apart(ann: Any, bob: Any) -> None:
    """Reload bob's page until it is served by another worker than ann's.

    The kernel spreads connections over the workers (SO_REUSEPORT): a reload
    may land anywhere. Bob's page keeps its position in sessionStorage.
    """
    for _ in range(40):
        if worker_of(ann) != worker_of(bob):
            return
        bob.execute_script("delete document.body.dataset.worker")
        bob.refresh()
    raise AssertionError("both browsers stayed on one worker")


def lines(browser: Any) -> list[str]:
    return [li.text for li in browser.find_elements("css selector", "#messages li")]


def say(browser: Any, text: str) -> None:
    box = browser.find_element("id", "text")
    box.send_keys(text)
    browser.find_element("css selector", "#send button").click()


def test_chat_across_two_workers_in_chromium(redis: RedisServer, tmp_path: Path) -> None:
    # Launched through the real command: rapidws demo chat --workers 2 --broker.
    with (
        supervisor(
            "demo", "chat", "--workers", "2", "--broker", redis.url, "--port", "0"
        ) as running,
        browsers(2) as (ann, bob),
    ):
        port = int(running.wait_for(WORKER.pattern, 2)[0][3])
        page = f"http://127.0.0.1:{port}/?room=r1&name="
        ann.get(page + "ann")
        bob.get(page + "bob")
        apart(ann, bob)
        # Messages and presence cross workers through Redis.
        say(ann, "hello from ann")
        until(lambda: any("hello from ann" in t for t in lines(bob)), "ann's message")
        until(lambda: "ann" in bob.find_element("id", "users").text, "ann in bob's presence list")
        until(lambda: "bob" in ann.find_element("id", "users").text, "bob in ann's presence list")
        # Bob goes away and comes back: history gives him what he missed.
        bob.get("about:blank")
        say(ann, "while bob was away")
        bob.get(page + "bob")
        until(lambda: any("while bob was away" in t for t in lines(bob)), "the missed message")
        # Bob's worker dies: his page reconnects (to the other worker, or the
        # one restarted in its place) and recovers what was said meanwhile.
        apart(ann, bob)
        dead = worker_of(bob)
        bob.execute_script("delete document.body.dataset.worker")
        os.kill(dead, signal.SIGKILL)
        say(ann, "after the crash")
        until(lambda: any("after the crash" in t for t in lines(bob)), "recovery after the crash")
        assert worker_of(bob) != dead
        for name, browser in (("ann", ann), ("bob", bob)):
            shot = tmp_path / f"demo-chat-{name}.png"
            browser.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
        assert running.stop() == 0
