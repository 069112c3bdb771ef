"""The floor: a TCP echo server on uvloop (or asyncio) with no WebSocket at all.

    python bench/peers/raw_tcp_server.py --port P [--loop uvloop|asyncio]

An ``asyncio.Protocol`` that writes back whatever it reads. No handshake, no
framing, no masking: the cheapest a Python echo server on this event loop can
be, so its rate is the ceiling for every WebSocket server and proof that the
load client is not the bottleneck.

A connection whose first byte is zero is an upload instead (``loadclient -m
upload -R``): each message is an 8-byte big-endian length and the payload, and
is answered with its length as text once its last byte is in. The payload is
counted, never kept: the floor for one-way transfers.
"""

from __future__ import annotations

import asyncio

from _runner import run, serve_until_signalled


class Echo(asyncio.Protocol):
    """Write back every chunk as it arrives."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Echo ``data``."""
        self.transport.write(data)


class Ack(asyncio.Protocol):
    """Count each message's bytes; answer its length when they are all in."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.header = b""
        self.length = self.left = 0

    def data_received(self, data: bytes) -> None:
        """Consume ``data``: lengths, and payload that is only counted."""
        pos, end = 0, len(data)
        while pos < end:
            if not self.left:
                need = 8 - len(self.header)
                self.header += data[pos : pos + need]
                pos += need
                if len(self.header) < 8:
                    return
                self.length = self.left = int.from_bytes(self.header, "big")
                self.header = b""
            take = min(self.left, end - pos)
            pos += take
            self.left -= take
            if not self.left:
                self.transport.write(str(self.length).encode())


class Sniff(asyncio.Protocol):
    """Choose echo or upload by the first byte, then step aside."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Hand the transport, and ``data``, to the protocol the first byte picks."""
        protocol = (Ack if data[0] == 0 else Echo)(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(data)


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sniff, "127.0.0.1", port, backlog=1024)
    await serve_until_signalled("")
    server.close()


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
