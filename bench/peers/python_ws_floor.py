"""The floor of a streaming WebSocket server in Python: the least work a read can cost.

    python bench/peers/python_ws_floor.py --port P [--loop uvloop|asyncio]

Not a WebSocket library: a yardstick for issue 18's streaming targets. Each
read's payload goes back at once, from the read callback, as one fragment of
the message (no task, no queue, no flow control, no UTF-8 check, no limits):
what a streaming echo costs in Python when nothing but the protocol's own work
is done. It uses rapidws's primitives only (the C unmasking kernel, the frame
header parser and builder, the accept key): any real server must unmask the
payload before handing it on.

On ``/ack`` the payload is unmasked and counted, and each message answered with
its length as text, as bench/server.py does. It serves bench/loadclient.c and
well-behaved clients only: a malformed frame closes the connection.
"""

from __future__ import annotations

import asyncio

from _runner import run, serve_until_signalled

from rapidws.core.frames import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, frame_header
from rapidws.speedups import accept_key, apply_mask, parse_frame_header

READ_SIZE = 256 * 1024  # one read, as uvloop's


class Floor(asyncio.BufferedProtocol):
    """Handshake, then echo (or count, on /ack) each read's payload as it arrives."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(READ_SIZE))
        self.request = b""
        self.open = False
        self.ack = False
        self.head = b""  # a frame header cut by a read's end
        self.left = 0  # payload bytes of the current frame still to come
        self.offset = 0  # into the frame's payload, for the mask
        self.mask: bytes | None = b""
        self.opcode = 0  # of the message; 0 between messages
        self.frame_opcode = 0
        self.fin = False
        self.control = b""  # a control frame's payload so far
        self.sent_first = False  # whether the echo's first fragment is out
        self.size = 0  # of the message, on /ack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        """Read into the same buffer each time."""
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Take one read."""
        data = self.buffer[:nbytes]
        if not self.open:
            self.handshake(bytes(data))
            return
        out: list[bytes] = []
        position = 0
        while position < nbytes:
            if not self.left:
                start = self.header(data, position, nbytes)
                if start is None:
                    break
                position = start  # an empty frame goes on at once, with no payload
            take = min(self.left, nbytes - position)
            payload = apply_mask(data[position : position + take], self.mask, self.offset)
            self.left -= take
            self.offset += take
            position += take
            self.payload(payload, out)
        if out:
            self.transport.writelines(out)

    def handshake(self, data: bytes) -> None:
        """Answer the upgrade request once it is whole (RFC 6455 section 4.2.2)."""
        self.request += data
        if b"\r\n\r\n" not in self.request:
            return
        lines = self.request.split(b"\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in lines
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = accept_key(key.decode()).encode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.ack = lines[0].split(b" ")[1] == b"/ack"
        self.open = True

    def header(self, data: memoryview, position: int, end: int) -> int | None:
        """Parse the next frame header; return where its payload starts (None: not whole yet)."""
        head = self.head + bytes(data[position : min(end, position + 14 - len(self.head))])
        parsed = parse_frame_header(head, 0)
        if parsed is None:
            self.head = head
            return None
        first, _, self.left, self.mask, size = parsed
        start = position + size - len(self.head)
        self.head = b""
        opcode = first & 0x0F
        self.fin = bool(first & 0x80)
        if opcode < OP_CLOSE and opcode != OP_CONT:
            self.opcode = opcode
        self.frame_opcode = opcode
        self.offset = 0
        return start

    def payload(self, payload: bytes, out: list[bytes]) -> None:
        """Echo, count or collect a piece of the current frame's payload."""
        done = not self.left
        if self.frame_opcode >= OP_CLOSE:
            self.control += payload
            if done:
                self.control_frame(out)
            return
        last = done and self.fin
        if self.ack:
            self.size += len(payload)
            if last:
                text = str(self.size).encode()
                out += (frame_header(0x81, len(text), None), text)
                self.size = 0
        elif payload or last:
            opcode = OP_CONT if self.sent_first else self.opcode
            out += (frame_header((0x80 if last else 0) | opcode, len(payload), None), payload)
            self.sent_first = not last
        if last:
            self.opcode = 0

    def control_frame(self, out: list[bytes]) -> None:
        """Answer a ping with a pong, a close frame with a close frame."""
        payload, self.control = self.control, b""
        if self.frame_opcode == OP_PING:
            out += (frame_header(0x80 | OP_PONG, len(payload), None), payload)
        elif self.frame_opcode == OP_CLOSE:
            out.append(frame_header(0x80 | OP_CLOSE, len(payload[:2]), None) + payload[:2])
            self.transport.writelines(out)
            out.clear()
            self.transport.close()


async def main(port: int) -> None:
    """Serve on 127.0.0.1 until SIGINT or SIGTERM."""
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port)
    async with server:
        await serve_until_signalled("")


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
