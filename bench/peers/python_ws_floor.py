"""The floor of a streaming WebSocket server in Python: the least work a read can cost.

    python bench/peers/python_ws_floor.py --port P [--loop uvloop|asyncio]

Not a WebSocket library: a yardstick for issue 18's streaming targets. Each
read's payload goes back at once, from the read callback, as one fragment of
the message (no task, no queue, no flow control, no UTF-8 check, no limits):
what a streaming echo costs in Python when nothing but the protocol's own work
is done. The payload is unmasked with rapidws's C kernel (the only part of
rapidws used), since any real server must unmask it before handing it on.

On ``/ack`` the payload is unmasked and counted, and each message answered with
its length as text, as bench/server.py does. It serves bench/loadclient.c and
well-behaved clients only: a malformed frame closes the connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

from _runner import run, serve_until_signalled

from rapidws.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
OP_CONT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x8, 0x9, 0xA
READ_SIZE = 256 * 1024  # one read, as uvloop's


def frame_header(first: int, length: int) -> bytes:
    """Return an unmasked frame's header (RFC 6455 section 5.2)."""
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


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
        self.mask = b""
        self.opcode = 0  # of the message; 0 between messages
        self.frame_opcode = 0
        self.position = 0  # where the payload starts, after head_done()
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
                if not self.head_done(data, position, nbytes, out):
                    break
                position = self.position
                if not self.left:
                    continue  # an empty frame: done in head_done()
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
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.ack = lines[0].split(b" ")[1] == b"/ack"
        self.open = True

    def head_done(self, data: memoryview, position: int, end: int, out: list[bytes]) -> bool:
        """Parse the next frame header; False when the read ends before it does."""
        head = self.head + bytes(data[position : min(end, position + 14 - len(self.head))])
        size = 6 if len(head) < 2 else 6 + {126: 2, 127: 8}.get(head[1] & 0x7F, 0)
        if len(head) < size:
            self.head = head
            return False
        self.position = position + size - len(self.head)
        self.head = b""
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack_from("!H", head, 2)[0]
        elif length == 127:
            length = struct.unpack_from("!Q", head, 2)[0]
        opcode = head[0] & 0x0F
        self.fin = bool(head[0] & 0x80)
        if opcode < OP_CLOSE and opcode != OP_CONT:
            self.opcode = opcode
        self.frame_opcode = opcode
        self.mask = head[size - 4 : size]
        self.left = length
        self.offset = 0
        if not length:
            self.payload(b"", out)
        return True

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
                out += (frame_header(0x81, len(text)), text)
                self.size = 0
        elif payload or last:
            opcode = OP_CONT if self.sent_first else self.opcode
            out += (frame_header((0x80 if last else 0) | opcode, len(payload)), payload)
            self.sent_first = not last
        if last:
            self.opcode = 0

    def control_frame(self, out: list[bytes]) -> None:
        """Answer a ping with a pong, a close frame with a close frame."""
        payload, self.control = self.control, b""
        if self.frame_opcode == OP_PING:
            out += (frame_header(0x80 | OP_PONG, len(payload)), payload)
        elif self.frame_opcode == OP_CLOSE:
            out.append(frame_header(0x80 | OP_CLOSE, len(payload[:2])) + payload[:2])
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
