"""The socketify (uWebSockets) peer of bench/hub_bench.py's chat case: the native ceiling.

    python bench/peers/socketify_chat_server.py --port P

Every connection subscribes to the topic ``chat``; each message received is
published to it with ``app.publish()``, the sender included (as in
socketify's own benchmark). Compression off, automatic pings off, no idle
timeout. socketify runs its own libuv loop: there is no ``--loop``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os

from socketify import App, CompressOptions, OpCode, WebSocket

ROOM = "chat"


def main(port: int) -> None:
    """Serve until killed."""
    app = App()

    def on_open(ws: WebSocket) -> None:
        ws.subscribe(ROOM)

    def on_message(ws: WebSocket, message: str | bytes, opcode: OpCode) -> None:
        app.publish(ROOM, message, opcode)

    app.ws(
        "/*",
        {
            "compression": CompressOptions.DISABLED,
            "max_payload_length": 1 << 20,
            "idle_timeout": 0,
            "send_pings_automatically": False,
            "open": on_open,
            "message": on_message,
        },
    )
    version = importlib.metadata.version("socketify")
    app.listen(
        port, lambda config: print(f"ready pid={os.getpid()} socketify={version}", flush=True)
    )
    app.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    main(parser.parse_args().port)
