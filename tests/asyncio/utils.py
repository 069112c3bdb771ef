"""Helpers shared by the asyncio tests: raw HTTP and frame bytes, raw peers.

A :class:`RawPeer` speaks hand-written bytes over an asyncio stream, to check
exactly what rapidws puts on the wire and how it reacts to hostile peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from rapidws.core.handshake import accept_key

# Every wait that should succeed quickly is bounded by this.
TIMEOUT_FACTOR = float(os.environ.get("RAPIDWS_TESTS_TIMEOUT_FACTOR", "1"))
TIMEOUT = 5.0 * TIMEOUT_FACTOR

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = accept_key(KEY)
MASK = b"\x37\xfa\x21\x3d"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


async def wait(aw: Awaitable[Any], timeout: float = TIMEOUT) -> Any:
    """Await ``aw`` for at most ``timeout`` seconds; raise the builtin TimeoutError after."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise TimeoutError from None


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` every 10 ms, for at most ``timeout`` seconds.

    Only for states that no public event signals (a transport pausing).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def uri(server: Any, path: str = "/") -> str:
    """The ``ws://`` URI of a server listening on 127.0.0.1."""
    return f"ws://127.0.0.1:{server.port}{path}"


# Bytes.


def handshake_request(
    path: str = "/",
    *,
    host: str = "localhost",
    key: str = KEY,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A client's opening handshake request."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def handshake_response(key: str, *, accept: str | None = None) -> bytes:
    """A server's 101 response to a request carrying ``key``."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key) if accept is None else accept}\r\n"
        "\r\n"
    ).encode()


def frame_header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask: bytes | None = MASK
) -> bytes:
    """A frame header; ``mask=None`` for an unmasked (server) frame."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header + (mask or b"")


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """Mask or unmask ``data`` (RFC 6455 section 5.3)."""
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
) -> bytes:
    """A whole frame; masked by default, as a client sends it."""
    if isinstance(payload, str):
        payload = payload.encode()
    header = frame_header(opcode, len(payload), fin=fin, rsv=rsv, mask=mask)
    return header + (apply_mask(payload, mask) if mask is not None else payload)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame."""
    return struct.pack("!H", code) + reason.encode()


class Frame(NamedTuple):
    """A frame as read from the wire, unmasked."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool
    rsv: int = 0

    @property
    def close_code(self) -> int:
        assert self.opcode == OP_CLOSE, self
        return int(struct.unpack("!H", self.payload[:2])[0]) if self.payload else 1005

    @property
    def close_reason(self) -> str:
        assert self.opcode == OP_CLOSE, self
        return self.payload[2:].decode()


class HTTPMessage(NamedTuple):
    """An HTTP request or response head, and the body of a response."""

    start_line: str
    headers: dict[str, str]  # lower-case names; a repeated name keeps its last value
    body: bytes = b""

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1])


# Raw peers.


class RawPeer:
    """One end of a TCP connection driven by hand, as a client or as a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> RawPeer:
        """Open a TCP connection (or a Unix one with ``path=``)."""
        if "path" in kwargs:
            reader, writer = await wait(asyncio.open_unix_connection(**kwargs))
        else:
            reader, writer = await wait(asyncio.open_connection(host, port, **kwargs))
        return cls(reader, writer)

    @classmethod
    async def open_websocket(
        cls, port: int, path: str = "/", headers: Iterable[tuple[str, str]] = ()
    ) -> RawPeer:
        """Connect to a server on 127.0.0.1 and complete the opening handshake."""
        peer = await cls.connect("127.0.0.1", port)
        peer.send(handshake_request(path, headers=headers))
        response = await peer.read_response()
        assert response.status == 101, response
        assert response.headers["sec-websocket-accept"] == ACCEPT
        return peer

    # Writing.

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes | str = b"", **kwargs: Any) -> None:
        self.send(frame(opcode, payload, **kwargs))

    def send_close(self, code: int = 1000, reason: str = "", **kwargs: Any) -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kwargs)

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await wait(self.writer.wait_closed())

    # Reading.

    async def _read_head(self, timeout: float) -> tuple[str, dict[str, str]]:
        head = await wait(self.reader.readuntil(b"\r\n\r\n"), timeout)
        start_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return start_line, headers

    async def read_response(self, timeout: float = TIMEOUT) -> HTTPMessage:
        """Read a response head and, per ``Content-Length``, its body."""
        start_line, headers = await self._read_head(timeout)
        length = int(headers.get("content-length", "0"))
        body = await wait(self.reader.readexactly(length), timeout) if length else b""
        return HTTPMessage(start_line, headers, body)

    async def read_request(self, timeout: float = TIMEOUT) -> HTTPMessage:
        """Read a request head (as a raw server)."""
        start_line, headers = await self._read_head(timeout)
        return HTTPMessage(start_line, headers)

    async def accept(self, *, accept: str | None = None) -> HTTPMessage:
        """Read a handshake request and answer it with 101 (as a raw server)."""
        request = await self.read_request()
        self.send(handshake_response(request.headers["sec-websocket-key"], accept=accept))
        return request

    async def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        """Read one frame, unmasking it when it is masked."""
        return await wait(self._read_frame(), timeout)

    async def _read_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        masked = bool(second & 0x80)
        mask = await self.reader.readexactly(4) if masked else None
        payload = await self.reader.readexactly(length)
        if mask is not None:
            payload = apply_mask(payload, mask)
        return Frame(bool(first & 0x80), first & 0x0F, payload, masked, first & 0x70)

    async def read_close(self, timeout: float = TIMEOUT) -> Frame:
        """Read frames until a close frame, skipping pings and pongs; return it."""
        return await wait(self._read_close(), timeout)

    async def _read_close(self) -> Frame:
        while True:
            received = await self._read_frame()
            if received.opcode == OP_CLOSE:
                return received
            assert received.opcode in (OP_PING, OP_PONG), received

    async def read_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Read until the peer closes the connection; return what came before.

        A reset counts as a close: an aborted connection may end either way.
        """
        try:
            return await wait(self.reader.read(), timeout)
        except ConnectionResetError:
            return b""

    async def at_eof_soon(self, timeout: float = TIMEOUT) -> bool:
        """Tell whether the peer closes the connection (and sends nothing) in time."""
        return await self.read_eof(timeout) == b""


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[RawPeer], Awaitable[None]],
) -> AsyncIterator[int]:
    """Run a TCP server on 127.0.0.1 whose connections ``handler`` drives; yield its port.

    Handler tasks still running when the block ends are cancelled; an exception
    raised by a handler is raised again then.
    """
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(peer)
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        for result in results:
            if isinstance(result, Exception):
                raise result


# Handlers.


async def echo(ws: Any) -> None:
    """Send every message back."""
    async for message in ws:
        await ws.send(message)


class Recorder:
    """A handler that hands each connection to the test, and holds it open until it closes."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[Any] = asyncio.Queue()

    async def __call__(self, ws: Any) -> None:
        await self.connections.put(ws)
        await ws.wait_closed()

    async def get(self) -> Any:
        """The next connection, once its handler has started."""
        return await wait(self.connections.get())
