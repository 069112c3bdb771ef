"""The floor: a TCP echo server on uvloop (or asyncio) with no WebSocket at all.

    python bench/peers/raw_tcp_server.py --port P [--loop uvloop|asyncio]

An ``asyncio.Protocol`` that writes back whatever it reads. No handshake, no
framing, no masking: the cheapest a Python echo server on this event loop can
be, so its rate is the ceiling for every WebSocket server and proof that the
load client is not the bottleneck.
"""

from __future__ import annotations

import asyncio

from _runner import run, serve_until_signalled


class Echo(asyncio.Protocol):
    """Write back every chunk as it arrives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Echo ``data``."""
        self.transport.write(data)


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    await serve_until_signalled("")
    server.close()


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
