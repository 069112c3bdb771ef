"""ASGI apps written for any server run unchanged under ``--ws rapidws.asgi:UvicornProtocol``.

Each app is served by the real uvicorn command in a subprocess (so the import
string works as documented): the chat of FastAPI's WebSocket tutorial
(examples/fastapi_chat.py) and a Starlette ``WebSocketEndpoint``
(tests/asgi/endpoint_app.py). They are driven by rapidws's client and by
headless Chromium (the ``chromium`` and ``chromium-driver`` Debian packages,
with selenium).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import rapidws
import rapidws.sync

from ..asyncio.utils import wait
from ..browser import chromium
from ..conftest import TIMEOUT_FACTOR

ROOT = Path(__file__).parents[2]
TIMEOUT = 10 * TIMEOUT_FACTOR


class Uvicorn:
    """A uvicorn command's port, and its log once it has exited."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.log = ""

    def app_errors(self) -> int:
        """How many times uvicorn logged an exception that escaped the app."""
        return self.log.count("Exception in ASGI application")


@contextlib.contextmanager
def uvicorn_cli(app_dir: Path, app: str, loop: str = "uvloop") -> Iterator[Uvicorn]:
    """Run ``uvicorn APP --ws rapidws.asgi:UvicornProtocol`` on a free port until the block ends."""
    command = [
        *(sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir)),
        *("--ws", "rapidws.asgi:UvicornProtocol", "--loop", loop),
        *("--host", "127.0.0.1", "--port", "0", "--no-access-log"),
    ]
    # uvicorn logs to stderr: into a file, read for the port, then for errors.
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while (match := re.search(r"Uvicorn running on \S+:(\d+)", _read(log))) is None:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"uvicorn did not start in {TIMEOUT} s:\n{_read(log)}")
                time.sleep(0.02)
            server = Uvicorn(int(match[1]))
            yield server
        finally:
            process.terminate()
            process.wait(TIMEOUT)
        server.log = _read(log)
    assert "Finished server process" in server.log, server.log


def _read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


# FastAPI's chat: a connection manager broadcasting to every client.


async def recv(ws: rapidws.ClientConnection) -> Any:
    return await wait(ws.recv(), TIMEOUT)


async def test_fastapi_chat_broadcasts_to_every_client(event_loop_name: str) -> None:
    with uvicorn_cli(ROOT / "examples", "fastapi_chat:app", event_loop_name) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        one = await wait(rapidws.connect(f"{uri}/1"), TIMEOUT)
        two = await wait(rapidws.connect(f"{uri}/2"), TIMEOUT)
        three = await wait(rapidws.connect(f"{uri}/3"), TIMEOUT)
        await one.send("hello")
        assert await recv(one) == "You wrote: hello"
        for ws in (one, two, three):
            assert await recv(ws) == "Client #1 says: hello"
        await three.send("bye")
        assert await recv(three) == "You wrote: bye"
        for ws in (one, two, three):
            assert await recv(ws) == "Client #3 says: bye"
        # One leaves at a time: the tutorial's manager broadcasts the departure
        # to the others, and fails (on any server) if one of them left meanwhile.
        await three.close()
        assert three.close_code == 1000
        for ws in (one, two):
            assert await recv(ws) == "Client #3 left the chat"
        await two.close()
        assert await recv(one) == "Client #2 left the chat"
        await one.close()
        # The app's path validation, unchanged: a client_id that is not an int.
        with pytest.raises(rapidws.InvalidStatus) as refused:
            await wait(rapidws.connect(f"{uri}/x"), TIMEOUT)
        assert refused.value.response.status == 403
    assert server.app_errors() == 0, server.log


def test_fastapi_chat_between_chromium_and_rapidws(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with uvicorn_cli(ROOT / "examples", "fastapi_chat:app") as server:
        port = server.port
        browser = chromium()
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            until = WebDriverWait(browser, TIMEOUT).until
            until(lambda b: b.execute_script("return ws.readyState === WebSocket.OPEN"))
            browser_id = browser.find_element(By.ID, "ws-id").text
            with rapidws.sync.connect(f"ws://127.0.0.1:{port}/ws/7") as ws:
                # The browser saw the rapidws client? Only through messages:
                # the page types one, the rapidws client must get it.
                browser.find_element(By.ID, "messageText").send_keys("hello from chromium")
                browser.find_element(By.TAG_NAME, "button").click()
                assert ws.recv(TIMEOUT) == f"Client #{browser_id} says: hello from chromium"
                ws.send("hello from rapidws")
                assert ws.recv(TIMEOUT) == "You wrote: hello from rapidws"

                def lines(b: Any) -> list[str]:
                    return [li.text for li in b.find_elements(By.CSS_SELECTOR, "#messages li")]

                until(lambda b: "Client #7 says: hello from rapidws" in lines(b))
            until(lambda b: "Client #7 left the chat" in lines(b))
            assert lines(browser) == [
                "You wrote: hello from chromium",
                f"Client #{browser_id} says: hello from chromium",
                "Client #7 says: hello from rapidws",
                "Client #7 left the chat",
            ]
            screenshot = tmp_path / "fastapi_chat.png"
            assert browser.save_screenshot(str(screenshot))
            print(f"screenshot: {screenshot}")
        finally:
            browser.quit()
    assert server.app_errors() == 0, server.log


# A Starlette WebSocketEndpoint with encoding="json".


async def test_starlette_json_endpoint(event_loop_name: str) -> None:
    with uvicorn_cli(ROOT / "tests" / "asgi", "endpoint_app:app", event_loop_name) as server:
        uri = f"ws://127.0.0.1:{server.port}/room?name="
        async with rapidws.connect(uri + "ada") as ada:
            assert json.loads(await recv(ada)) == {"joined": "ada", "members": ["ada"]}
            async with rapidws.connect(uri + "bob") as bob:
                joined = {"joined": "bob", "members": ["ada", "bob"]}
                assert json.loads(await recv(ada)) == joined
                assert json.loads(await recv(bob)) == joined
                await bob.send_json({"n": 1})
                for ws in (ada, bob):
                    assert json.loads(await recv(ws)) == {"from": "bob", "data": {"n": 1}}
                await bob.close(4000, "later")
            assert json.loads(await recv(ada)) == {"left": "bob", "code": 4000}
            # Not JSON: Starlette closes with 1003 (unsupported data) and
            # raises, as on any server.
            await ada.send("{not json")
            await wait(ada.wait_closed(), TIMEOUT)
            assert ada.close_code == 1003
    assert server.app_errors() == 1, server.log
    assert "RuntimeError: Malformed JSON data received." in server.log
