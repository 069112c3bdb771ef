"""The picows peer: the same echo server as bench/server.py, as a picows WSListener.

    python bench/peers/picows_server.py --port P [--loop uvloop|asyncio]

picows hands over frames, not messages: single-frame messages (all the load
client sends) are echoed straight from the frame's buffer, fragmented ones are
joined first. Echoes with the type on any path; on ``/ack`` answers each
message with its length, as text. picows does not compress; frames up to
64 MiB; everything else at picows' defaults (it uses aiofastnet when installed,
as it is by default).
"""

from __future__ import annotations

import picows
from _runner import run, serve_until_signalled
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX_SIZE = 64 * 1024 * 1024


class Echo(WSListener):
    """Echo each message, or its length on ``/ack``."""

    def __init__(self, ack: bool) -> None:
        """Remember the path's role."""
        self.ack = ack
        self.kind: WSMsgType | None = None
        self.parts = bytearray()

    def reply(self, transport: WSTransport, kind: WSMsgType, data: bytes | memoryview) -> None:
        """Send the answer to one complete message."""
        if self.ack:
            transport.send(WSMsgType.TEXT, str(len(data)).encode())
        else:
            transport.send(kind, data)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Handle one frame."""
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif kind in (WSMsgType.TEXT, WSMsgType.BINARY):
            if frame.fin:
                self.reply(transport, kind, frame.get_payload_as_memoryview())
            else:
                self.kind = kind
                self.parts = bytearray(frame.get_payload_as_memoryview())
        elif kind == WSMsgType.CONTINUATION and self.kind is not None:
            self.parts += frame.get_payload_as_memoryview()
            if len(self.parts) > MAX_SIZE:
                transport.send_close(picows.WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                self.reply(transport, self.kind, bytes(self.parts))
                self.kind, self.parts = None, bytearray()


def listener(request: WSUpgradeRequest) -> Echo:
    """Route by path."""
    return Echo(request.path == b"/ack")


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = await ws_create_server(listener, "127.0.0.1", port, max_frame_size=MAX_SIZE)
    await serve_until_signalled(f"picows={picows.__version__}")
    server.close()


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
