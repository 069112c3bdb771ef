"""``rapidws demo chat``: a browser chat with rooms, presence and history.

The page (``chat.html``, plain HTML and the browser's WebSocket API) joins
``/ws/{room}?name=...``; every message goes to everyone in the room through
the app's :class:`~rapidws.Hub`, so that with ``--workers 2 --broker
redis://...`` two browsers on two worker processes chat as if on one. Each
message carries its position in the room's history; a tab that reconnects (a
reload, a worker that died) sends the last one it saw and gets what it
missed, in order.

The wire format, JSON objects: the client sends ``{"text": ...}``; the server
sends ``welcome`` (worker pid, whether history was recovered, who is
present), ``message`` (user, text), ``join`` and ``leave`` (user, client id),
each room message with its ``position``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import urllib.parse
from importlib import resources
from typing import Any

from ..app import App
from ..asyncio.server import ServerConnection
from ..core.http11 import Request, Response
from ..pubsub import History, Position, TopicOptions
from . import serve

__all__ = ["add_demo_command", "chat_app"]

#: The longest name and message the demo takes, in characters.
MAX_NAME, MAX_TEXT = 32, 2000


def _stamp(payload: bytes, position: Position | None) -> bytes:
    # Each room message is a JSON object: its position goes in as one more key.
    if position is None:
        return payload
    return b'%s,"position":"%s"}' % (payload[:-1], str(position).encode())


def chat_app(history: int = 100) -> App:
    """Return the chat demo's App: the page at ``/``, rooms at ``/ws/{room}``."""
    app = App()
    hub = app.hub
    hub.configure("room:*", TopicOptions(history=History(size=history), stamp=_stamp))
    page = resources.files(__package__).joinpath("chat.html").read_bytes()

    @app.get("/")
    def index(request: Request) -> Response:
        return Response(200, page, {"Content-Type": "text/html; charset=utf-8"})

    @app.get("/healthz", readiness=True)
    def healthz(request: Request) -> str:
        return "ok"

    @app.websocket("/ws/{room}")
    async def chat(ws: ServerConnection, room: str) -> None:
        assert ws.request is not None
        query = urllib.parse.parse_qs(ws.request.query)
        name = (query.get("name") or ["guest"])[0][:MAX_NAME] or "guest"
        since = None
        if "since" in query:
            with contextlib.suppress(ValueError):  # garbled: live messages only
                since = Position.parse(query["since"][0])
        topic = f"room:{room}"
        joined = await hub.subscribe(ws, topic, since=since, info=name)
        client = hub.client_id(ws)
        await ws.send_json(
            {
                "type": "welcome",
                "worker": os.getpid(),
                "client": client,
                "recovered": joined.recovered,
                "users": await hub.presence(topic),
            }
        )
        await hub.publish(topic, _event("join", user=name, client=client))
        try:
            async for message in ws:
                text = _text(message)
                if text:
                    await hub.publish(
                        topic, _event("message", user=name, text=text, time=time.time())
                    )
        finally:
            with contextlib.suppress(ConnectionError):  # the broker may be down
                await hub.publish(topic, _event("leave", user=name, client=client))

    return app


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def _text(message: str | bytes) -> str:
    # {"text": ...} from the page; anything else is ignored, not fatal.
    try:
        data = json.loads(message)
    except ValueError:
        return ""
    text = data.get("text") if isinstance(data, dict) else None
    return text[:MAX_TEXT] if isinstance(text, str) else ""


def add_demo_command(commands: Any) -> None:
    """Add ``demo chat`` to the subcommands of the ``rapidws`` parser."""
    parser = commands.add_parser(
        "demo",
        help="run a demo: chat (a browser chat with rooms, presence and history)",
        description="Run a demo app, served as `rapidws serve` serves apps.",
    )
    demos = parser.add_subparsers(dest="demo", metavar="DEMO", required=True)
    chat = demos.add_parser(
        "chat",
        help="a browser chat: open http://HOST:PORT/ in two tabs",
        description=(
            "A browser chat with rooms, presence and history. With --workers N --broker "
            "redis://..., the workers share rooms through Redis; a tab that reconnects gets "
            "the messages it missed."
        ),
    )
    chat.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    chat.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    chat.add_argument("--workers", default="1", metavar="N", help="worker processes")
    chat.add_argument("--broker", metavar="URL", help="Redis URL shared by the workers")
    chat.set_defaults(run=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    """Serve the chat demo with ``rapidws serve``'s machinery."""
    argv = ["rapidws.cli.demo:chat_app", "--factory", "--host", args.host]
    argv += ["--port", str(args.port), "--workers", args.workers]
    if args.broker:
        argv += ["--broker", args.broker]
    parser = argparse.ArgumentParser(prog="rapidws demo chat")
    serve.add_serve_command(parser.add_subparsers())
    return int(serve.run_serve(parser.parse_args(["serve", *argv])))
