"""The chat of FastAPI's WebSocket tutorial, served by rapidws through uvicorn.

    uvicorn fastapi_chat:app --app-dir examples --ws rapidws.asgi:UvicornProtocol

Open http://127.0.0.1:8000/ in two browser tabs, or from a shell:
``rapidws connect ws://127.0.0.1:8000/ws/42``. Nothing here knows about
rapidws: the app is the tutorial's (a connection manager that broadcasts to
every client), and ``--ws`` alone picks the engine.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

app = FastAPI()

PAGE = """<!doctype html><meta charset="utf-8"><title>Chat</title>
<h1>WebSocket Chat</h1>
<h2>Your ID: <span id="ws-id"></span></h2>
<form action="" onsubmit="sendMessage(event)">
  <input type="text" id="messageText" autocomplete="off"><button>Send</button>
</form>
<ul id="messages"></ul>
<script>
  var client_id = Date.now();
  document.querySelector("#ws-id").textContent = client_id;
  var ws = new WebSocket(`ws://${location.host}/ws/${client_id}`);
  ws.onmessage = function (event) {
    var message = document.createElement("li");
    message.textContent = event.data;
    document.getElementById("messages").appendChild(message);
  };
  function sendMessage(event) {
    var input = document.getElementById("messageText");
    ws.send(input.value);
    input.value = "";
    event.preventDefault();
  }
</script>
"""


class ConnectionManager:
    """The open connections, and a broadcast to all of them."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        """Accept a client and remember it."""
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget a client that left."""
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        """Send a message to one client."""
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        """Send a message to every client."""
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


@app.get("/")
async def get() -> HTMLResponse:
    """Serve the chat page."""
    return HTMLResponse(PAGE)


@app.websocket("/ws/{client_id}")
async def websocket_endpoint(websocket: WebSocket, client_id: int) -> None:
    """Echo each message to its sender and broadcast it; announce departures."""
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.send_personal_message(f"You wrote: {data}", websocket)
            await manager.broadcast(f"Client #{client_id} says: {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)
        await manager.broadcast(f"Client #{client_id} left the chat")
