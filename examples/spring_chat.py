"""A chat server in the style of Spring / JSR-356 (``@ServerEndpoint("/ws/{userName}")``).

Run ``python examples/spring_chat.py --port 8080`` and open
http://127.0.0.1:8080/?token=s3cret in two browser tabs, or from a shell:
``rapidws connect "ws://127.0.0.1:8080/ws/ada?token=s3cret"``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any, ClassVar

import rapidws
from rapidws import ServerConnection

app = rapidws.App()

PAGE = """<!doctype html><meta charset="utf-8"><title>rapidws chat</title>
<pre id="log"></pre><input id="text" placeholder="say something" autofocus>
<script>
  const name = encodeURIComponent(prompt("Your name?") || "guest");
  const ws = new WebSocket(`ws://${location.host}/ws/${name}${location.search}`);  // ?token=
  const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log(`closed (${event.code})`);
  document.getElementById("text").onkeydown = (event) => {
    if (event.key === "Enter") { ws.send(event.target.value); event.target.value = ""; }
  };
</script>
"""


@app.websocket("/ws/{userName}")  # the Java world's camelCase, passed as a keyword argument
class ChatEndpoint(rapidws.Endpoint):
    """One instance per connection, like a JSR-356 ``@ServerEndpoint`` class."""

    # Java's `static Set<Session> sessions`: every open connection of the server.
    sessions: ClassVar[set[ServerConnection]] = set()

    def on_open(self, ws: ServerConnection, userName: str) -> None:  # type: ignore[override]
        """``@OnOpen``: remember the user and tell everyone."""
        self.user = userName
        self.sessions.add(ws)
        broadcast(f"{userName} joined")

    def on_message(self, ws: ServerConnection, message: Any) -> None:
        """``@OnMessage``: send the message to every user."""
        if not isinstance(message, str):
            raise TypeError("text messages only")  # goes to on_error
        broadcast(f"{self.user}: {message}")

    def on_close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """``@OnClose``: forget the connection and tell the others."""
        self.sessions.discard(ws)
        broadcast(f"{self.user} left")

    def on_error(self, ws: ServerConnection, exc: Exception) -> None:
        """``@OnError``: answer the sender and keep its connection open (raise to close)."""
        ws.send_nowait(f"error: {exc}")


def broadcast(text: str) -> None:
    """Send ``text`` to every open session; ``send_nowait`` never waits on a slow peer."""
    for session in list(ChatEndpoint.sessions):
        if session.state is rapidws.State.OPEN:  # skip those already closing
            session.send_nowait(text)


@app.get("/healthz")
def health(request: rapidws.Request) -> dict[str, Any]:
    """Answer like Spring Boot Actuator's health check, on the same port (a dict is JSON)."""
    return {"status": "UP", "users": len(ChatEndpoint.sessions)}


@app.get("/")
def index(request: rapidws.Request) -> rapidws.Response:
    """Serve the chat page, whose script connects to the WebSocket route."""
    return rapidws.Response(200, PAGE, [("Content-Type", "text/html; charset=utf-8")])


async def main() -> None:
    """Parse the options, add the interceptors and serve until interrupted."""
    parser = argparse.ArgumentParser(description="A Spring-style chat server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--token", default="s3cret", help="the token clients must present")
    parser.add_argument("--origin", action="append", default=[], help="another allowed origin")
    args = parser.parse_args()
    # Bind first, so that the page's own origin is known even with --port 0.
    sock = socket.create_server((args.host, args.port))
    port = sock.getsockname()[1]
    # Spring's setAllowedOriginPatterns("http://localhost:*") has no twin here:
    # allow_origins matches scheme, host and port exactly ("https://*.example.com"
    # for subdomains), so list the origins. Clients that are not browsers send no
    # Origin (allow_missing): the check protects browsers' users from other sites.
    origins = [f"http://localhost:{port}", f"http://{args.host}:{port}", *args.origin]
    app.interceptor(rapidws.allow_origins(origins, allow_missing=True))  # 403 otherwise
    # Browsers cannot set an Authorization header on a WebSocket: take ?token= too.
    app.interceptor(rapidws.bearer_auth([args.token], query_param="token"))  # 401 otherwise
    async with app.serve(sock=sock) as server:
        print(f"listening on ws://{args.host}:{server.port}", file=sys.stderr)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
