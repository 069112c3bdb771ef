"""The WebSocket protocol class that uvicorn runs: ASGI events over the rapidws engine.

``uvicorn main:app --ws rapidws.asgi:UvicornProtocol`` (or
``Config(ws=UvicornProtocol)``) serves FastAPI and Starlette WebSocket
endpoints with rapidws. uvicorn's HTTP protocol reads the upgrade request,
makes one :class:`UvicornProtocol` per connection with ``(config,
server_state, app_state)``, hands it the transport and feeds it the request's
bytes again; from there on this class owns the connection.

It is an :class:`~rapidws.asyncio.connection.Connection`: flow control, the
receive queue, keepalive pings (one shared :class:`Heartbeat` per server) and
close timeouts (shared :class:`Deadlines`) are that layer's, unchanged. What
is added here is the ASGI side (spec 2.4): the scope, the ``receive`` and
``send`` callables and their messages, the denial response extension, and
uvicorn's settings, logs and shutdown.

Three ASGI extensions, advertised in the scope's ``"extensions"``, give apps
what the ASGI spec cannot express; an app that does not use them sees what it
would see on any ASGI server:

- ``"rapidws.websocket.compress"``: a ``websocket.send`` message with
  ``"rapidws.compress": False`` goes uncompressed even when permessage-deflate
  was negotiated (data that is compressed already, or latency-critical).
- ``"rapidws.websocket.ping"``: a ``websocket.send`` message with
  ``"rapidws.ping": data`` (bytes, up to 125; ``b""`` for any) and neither
  ``"text"`` nor ``"bytes"`` sends a ping; once its pong is back, ``receive``
  returns a ``websocket.receive`` event with ``"rapidws.pong": {"data": data,
  "rtt": seconds}`` and neither ``"text"`` nor ``"bytes"``, in order with the
  messages. A connection that closes first gives no pong event.
- ``"rapidws.websocket.stream"``: large messages in fragments, never held
  whole. An app opts in when it accepts: ``{"type": "websocket.accept",
  "rapidws.stream": True}``, with ``"rapidws.max_stream_size": n`` (bytes,
  1009 beyond; ``None``, the default, for no limit) in place of uvicorn's
  ``ws_max_size``. From then on, every ``websocket.receive`` event with
  ``"text"`` or ``"bytes"`` has a ``"rapidws.more"`` key: ``False`` for a
  message that came whole (a small one, arriving at once), ``True`` for each
  chunk of a large one (at most 64 KiB, text cut between code points) but the
  last, whose ``False`` ends the message (its chunk may be empty). Reading
  from the socket pauses while a few chunks wait for the app: its pace of
  ``receive`` calls sets the peer's. Sending needs no opt-in: a
  ``websocket.send`` with ``"rapidws.more": True`` is a fragment of a message
  that the next ``websocket.send`` without it ends (all of one type,
  ``"rapidws.compress"`` read from the first).

All ride on the spec's message types, not new ones: Starlette and FastAPI
refuse any other type in both directions, so new types could not reach their
apps.

Where uvicorn's own WebSocket classes differ from each other or from the RFC,
this one follows the RFC and says so below: an app that raises after accepting
closes its connection with 1011, and one that returns without closing gets a
normal closing handshake (1000), where uvicorn drops the TCP connection.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from ..asyncio.connection import (
    Connection,
    Data,
    MessageStream,
    MessageWriter,
    Settings,
    connection_settings,
)
from ..asyncio.deadlines import Deadlines
from ..asyncio.heartbeat import Heartbeat
from ..core.extensions.base import ServerExtensionFactory
from ..core.extensions.permessage_deflate import ServerPerMessageDeflate
from ..core.headers import Headers
from ..core.http11 import Request, Response
from ..core.limits import CLOSE_TIMEOUT, WRITE_LIMIT
from ..core.protocol import CONNECTING, OPEN
from ..core.server import ServerProtocol
from ..exceptions import ConnectionClosed

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["ClientDisconnected", "UvicornProtocol"]

#: An ASGI message: a dict with a ``"type"``.
Message = MutableMapping[str, Any]

logger = logging.getLogger("uvicorn.error")

# What a client may send after its request while the app decides whether to
# accept: the rest waits in the socket (TCP pushes back).
_EARLY_DATA_LIMIT = 65536

# The result of the app's waiting recv() when the connection is lost (Any:
# it stands where a message would).
_LOST: Any = object()


class ClientDisconnected(OSError):
    """Raised by ``send`` when the connection is closed (ASGI spec: an ``OSError``).

    Starlette turns it into ``WebSocketDisconnect(1006)``; uvicorn's own
    protocol classes raise an ``OSError`` subclass of the same name.
    """


class _PongArrived(Exception):
    """Wakes an app waiting in ``receive`` for a message: a pong event is ready."""


class _Phase(enum.Enum):
    """Where the ASGI conversation stands (the WebSocket state is the engine's)."""

    HANDSHAKE = 0  # the app has not answered the request yet
    RESPONSE = 1  # the app started a denial response
    ACCEPTED = 2  # the app accepted; messages flow
    DONE = 3  # the app closed, or its response was sent: nothing more to send


class _Shared:
    """What the connections of one uvicorn server share: settings and timers."""

    def __init__(self, config: Config, compression: ServerExtensionFactory) -> None:
        ping_interval = config.ws_ping_interval
        if ping_interval is not None and ping_interval <= 0:
            ping_interval = None  # uvicorn's protocols read 0 as "no pings" too
        self.settings: Settings = connection_settings(
            ping_interval, config.ws_ping_timeout, CLOSE_TIMEOUT, config.ws_max_queue, WRITE_LIMIT
        )
        self.extensions: list[ServerExtensionFactory] = (
            [compression] if config.ws_per_message_deflate else []
        )
        self.asgi_version: str = config.asgi_version  # a property: computed each time
        self.heartbeats: dict[float, Heartbeat] = {}
        self.deadlines: dict[float, Deadlines[Any]] = {}
        self._encoded: list[tuple[bytes, bytes]] | None = None
        self._headers = Headers()

    def default_headers(self, encoded: list[tuple[bytes, bytes]]) -> Headers:
        """Return uvicorn's default headers (Server, Date, ``--header``) decoded and checked.

        Once per list: uvicorn makes a new one when the date changes, every
        second. Shared: a caller copies it or update()s from it, never changes it.
        """
        if encoded is not self._encoded:
            self._headers = Headers(_headers_of(encoded))
            self._encoded = encoded
        return self._headers


# One _Shared per uvicorn server: its ServerState is the one object that every
# connection of a server gets and no other server does.
_SHARED: weakref.WeakKeyDictionary[ServerState, _Shared] = weakref.WeakKeyDictionary()
_LAST_SHARED: tuple[weakref.ref[ServerState], _Shared] | None = None


class UvicornProtocol(Connection[ServerProtocol]):
    """The WebSocket side of uvicorn on the rapidws engine.

    Made by uvicorn, one per connection: ``uvicorn main:app --ws
    rapidws.asgi:UvicornProtocol``, or ``uvicorn.Config(app, ws=UvicornProtocol)``.
    It takes uvicorn's ``ws_max_size``, ``ws_max_queue``, ``ws_ping_interval``,
    ``ws_ping_timeout``, ``ws_per_message_deflate``, ``root_path``,
    ``limit_concurrency`` and default headers (``server_header``,
    ``date_header``, ``headers``).

    Args:
        config: uvicorn's configuration.
        server_state: what uvicorn's connections share (connections, tasks,
            default headers).
        app_state: the lifespan state, copied into each scope's ``"state"``.
    """

    #: The permessage-deflate settings used when uvicorn's
    #: ``ws_per_message_deflate`` is on (its default): rapidws's memory-lean
    #: ones (4 KiB windows, lazy zlib). A subclass named in ``--ws`` may set
    #: others, e.g. ``ServerPerMessageDeflate(threshold=0)``.
    compression: ServerExtensionFactory = ServerPerMessageDeflate()

    __slots__ = (
        "_app_pings",
        "_asgi_stream",
        "_asgi_streaming",
        "_asgi_writer",
        "_closing",
        "_connect_sent",
        "_denial",
        "_early_data",
        "_handshake",
        "_http_scope",
        "_phase",
        "_pongs",
        "_shared",
        "app",
        "app_state",
        "client",
        "config",
        "root_path",
        "scheme",
        "scope",
        "server",
        "server_state",
        "task",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        shared = self._shared_of(config, server_state)
        protocol = ServerProtocol(
            extensions=shared.extensions,
            max_message_size=config.ws_max_size,
            # uvicorn's default headers carry Server (and Date) instead.
            server_header=None,
        )
        self._setup(protocol, shared.settings, logger, _loop or asyncio.get_event_loop())
        self._shared = shared
        self.config = config
        self.app: Callable[..., Awaitable[Any]] = config.loaded_app
        self.root_path: str = config.root_path
        self.app_state = app_state
        self.server_state = server_state
        #: The ASGI scope, once the request is read.
        self.scope: dict[str, Any] | None = None
        #: The task that runs the app.
        self.task: asyncio.Task[None] | None = None
        #: The local and remote addresses and the scheme, as uvicorn's protocols have them.
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"
        self._phase = _Phase.HANDSHAKE
        # The scope of uvicorn's HTTP protocol for the upgrade request, if any.
        self._http_scope: dict[str, Any] | None = None
        self._connect_sent = False
        self._early_data = 0
        # The 101 that accept() prepared, sent when the app accepts.
        self._handshake: Response | None = None
        # A denial response: its status and headers, until its head is written.
        self._denial: tuple[int, Headers] | None = None
        # The disconnect event of a close this side started (the app's, or
        # shutdown's), as uvicorn's protocols report it.
        self._closing: Message | None = None
        # The app's pings waiting for their pong (with the data it gave),
        # and their pong events, waiting for its next receive.
        self._app_pings: collections.deque[tuple[asyncio.Future[float], bytes]] | None
        self._app_pings = None
        self._pongs: collections.deque[Message] | None = None
        # The stream extension: whether the app opted in, the message it is
        # receiving in chunks, and the one it is sending in fragments.
        self._asgi_streaming = False
        self._asgi_stream: MessageStream | None = None
        self._asgi_writer: MessageWriter | None = None

    # Sharing timers with the server's other connections.

    def _shared_of(self, config: Config, server_state: ServerState) -> _Shared:
        # The last server's first: a WeakKeyDictionary lookup makes a weak
        # reference each time, and a server's connections come in a row.
        global _LAST_SHARED
        last = _LAST_SHARED
        if last is not None and last[0]() is server_state:
            return last[1]
        shared = _SHARED.get(server_state)
        if shared is None:
            shared = _SHARED[server_state] = _Shared(config, self.compression)
        _LAST_SHARED = (weakref.ref(server_state), shared)
        return shared

    def _join_heartbeat(self, interval: float) -> Heartbeat:
        beat = self._shared.heartbeats.get(interval)
        if beat is None:
            beat = self._shared.heartbeats[interval] = Heartbeat(interval)
        return beat

    def _close_deadlines(self, timeout: float) -> Deadlines[Connection[Any]]:
        deadlines = self._shared.deadlines.get(timeout)
        if deadlines is None:
            deadlines = Deadlines(timeout, Connection._close_timed_out)
            self._shared.deadlines[timeout] = deadlines
        return deadlines

    # asyncio.Protocol callbacks and uvicorn's calls.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start using the transport (called by uvicorn's HTTP protocol)."""
        super().connection_made(transport)
        # uvicorn's type lists its own protocols; any with shutdown() will do.
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        # uvicorn's HTTP protocol is still the transport's (it hands over
        # after this call) and has read the addresses, the scheme and the
        # request's headers as the scope wants them: taken, not made again.
        http_scope = getattr(transport.get_protocol(), "scope", None)
        if type(http_scope) is dict and http_scope.get("type") == "http":
            self._http_scope = http_scope
            self.server, self.client = http_scope["server"], http_scope["client"]
            if http_scope["scheme"] == "https":
                self.scheme = "wss"
        else:
            peer = _address(transport.get_extra_info("peername"))
            self.client = None if peer is None or peer[1] is None else (peer[0], peer[1])
            if transport.get_extra_info("sslcontext") is not None:
                self.scheme = "wss"
        if self.server is None:
            # uvicorn's is None on a Unix socket, where the spec has (path, None).
            self.server = _address(transport.get_extra_info("sockname"))

    def _data_received_more(self, data: bytes) -> None:
        # Bytes while the connection is not open: the request, or what the
        # client sends before the app has accepted (held back, within limits).
        if self.protocol.request is not None and self.protocol.state is CONNECTING:
            self._early_data += len(data)
            if self._early_data > _EARLY_DATA_LIMIT:
                self._pause_reading()
        super()._data_received_more(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake the app's waiting ``receive`` and unregister (called by asyncio)."""
        recv_waiter = self._recv_waiter
        if recv_waiter is not None and not recv_waiter.done():
            # What receive() makes the disconnect event of, without the
            # ConnectionClosed that recv() would raise: its traceback holds
            # recv()'s frame, and so this connection, in a reference cycle,
            # leaving every connection to the cyclic GC.
            recv_waiter.set_result(_LOST)
        super().connection_lost(exc)
        self.server_state.connections.discard(self)
        if self._app_pings:
            # Closed before their pong: no event (the app gets the disconnect).
            for waiter, _ in self._app_pings:
                waiter.exception()
            self._app_pings = None

    def shutdown(self) -> None:
        """Close for uvicorn's shutdown: 1012 (service restart), as uvicorn's protocols do.

        A connection whose handshake is not answered yet gets a 500.
        """
        transport = self.transport
        if transport is None or self._lost:
            return
        state = self.protocol.state
        if state is OPEN:
            self._phase = _Phase.DONE
            self._closing = {"type": "websocket.disconnect", "code": 1012}
            self.protocol.send_close(1012)
            self._write_pending()  # the close timer bounds the wait for the reply
        elif state is CONNECTING and self._phase is _Phase.HANDSHAKE and self.scope is not None:
            self._phase = _Phase.DONE
            self._send_http(self._plain_response(500, "Internal Server Error"))
        elif state is CONNECTING:
            transport.close()

    # The opening handshake.

    def _handshake_event(self, event: Request | Response) -> None:
        assert isinstance(event, Request)
        self.request = event
        response = self.protocol.accept(event)
        if response.status != 101:
            # Not a valid handshake: answered here, the app never sees it.
            response.headers.update(self._default_headers())
            self._phase = _Phase.DONE
            self.protocol.send_response(response)
            return
        limit = self.config.limit_concurrency
        connections, tasks = self.server_state.connections, self.server_state.tasks
        # The count uvicorn's HTTP protocols make; they leave upgrades to us.
        if limit is not None and (len(connections) >= limit or len(tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            self._phase = _Phase.DONE
            self.protocol.send_response(self._plain_response(503, "Service Unavailable"))
            return
        self._handshake = response
        self.scope = self._make_scope(event)
        self.task = self.loop.create_task(self._run_asgi())
        self.server_state.tasks.add(self.task)
        self.task.add_done_callback(self.server_state.tasks.discard)

    def _make_scope(self, request: Request) -> dict[str, Any]:
        raw_path, _, query = request.target.partition("?")
        root_path = self.root_path
        http_scope = self._http_scope
        if http_scope is not None:
            # The bytes uvicorn parsed, the same fields our parser checked.
            headers, state = http_scope["headers"], http_scope["state"]
        else:
            headers, state = _scope_headers(request.headers), self.app_state.copy()
        offered = request.headers.get_all("Sec-WebSocket-Protocol")
        subprotocols = (
            [token.strip() for value in offered for token in value.split(",") if token.strip()]
            if offered
            else []  # most clients offer none: no comprehension to run
        )
        return {
            "type": "websocket",
            "asgi": {"version": self._shared.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root_path,
            "path": root_path + (unquote(raw_path) if "%" in raw_path else raw_path),
            "raw_path": root_path.encode("ascii") + raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": state,
            "extensions": {
                "websocket.http.response": {},
                "rapidws.websocket.compress": {},
                "rapidws.websocket.ping": {},
                "rapidws.websocket.stream": {},
            },
        }

    def _default_headers(self) -> Headers:
        # Server and Date, refreshed by uvicorn every second, and --header ones:
        # shared by the connections, to update() from or copy, never to change.
        return self._shared.default_headers(self.server_state.default_headers)

    def _plain_response(self, status: int, text: str) -> Response:
        response = Response(status, text, Headers(self._default_headers()))
        response.headers["Connection"] = "close"
        return response

    def _send_http(self, response: Response) -> None:
        # An answer instead of the upgrade; the engine then ends the connection.
        if self.protocol.state is CONNECTING and self.protocol.response is None:
            self.protocol.send_response(response)
            self._resume_reading()
            self._write_pending()

    # Running the app.

    async def _run_asgi(self) -> None:
        try:
            result = await self.app(self.scope, self.asgi_receive, self.asgi_send)
        except ClientDisconnected:
            pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.logger.exception("Exception in ASGI application\n")
            self._app_ended(1011, "internal error")
            if not isinstance(exc, Exception):
                raise
        else:
            if self._phase is _Phase.HANDSHAKE:
                self.logger.error("ASGI callable returned without completing handshake.")
                self._app_ended(1011, "")
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._app_ended(1011, "internal error")
            else:
                # uvicorn drops the TCP connection here (the peer sees 1006):
                # a closing handshake tells the peer the end is deliberate.
                self._app_ended(1000, "")

    def _app_ended(self, code: int, reason: str) -> None:
        """End what the app left open: 500 before the handshake, ``code`` after."""
        phase, self._phase = self._phase, _Phase.DONE
        if self._lost:
            return
        if phase is _Phase.HANDSHAKE:
            self._send_http(self._plain_response(500, "Internal Server Error"))
        elif phase is _Phase.RESPONSE:
            self._end_denial(b"")
        elif self.protocol.state is OPEN:
            if self._asgi_writer is not None and code == 1000:
                # Half a message is on the wire: not a normal end for the peer.
                code, reason = 1011, "message left unfinished"
            self.protocol.send_close(code, reason)
            self._write_pending()

    async def asgi_receive(self) -> Message:
        """Return the app's next event (the ASGI ``receive`` callable)."""
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        if self._phase is _Phase.ACCEPTED:
            if self._pongs:
                return self._pongs.popleft()
            event: Message
            try:
                stream = self._asgi_stream
                if stream is not None:
                    return await self._next_chunk(stream)
                # _streamed: a message that arrives in chunks comes as its
                # stream (only once the app opted in), not joined.
                message: Data | MessageStream = await self.recv(_streamed=True)
                if type(message) is str:
                    event = {"type": "websocket.receive", "text": message}
                elif type(message) is bytes:
                    event = {"type": "websocket.receive", "bytes": message}
                elif message is _LOST:
                    return self._disconnect_event()
                else:
                    self._asgi_stream = cast("MessageStream", message)
                    return await self._next_chunk(self._asgi_stream)
            except ConnectionClosed:
                return self._disconnect_event()
            except _PongArrived:
                return self._pongs.popleft()  # type: ignore[union-attr]
            if self._asgi_streaming:
                event["rapidws.more"] = False  # a message that came whole
            return event
        # Before accepting (or after closing), nothing comes but the end.
        await self.wait_closed()
        return self._disconnect_event()

    async def _next_chunk(self, stream: MessageStream) -> Message:
        # The next chunk of the message being received in chunks, flagged
        # with whether more follow. MessageStream pauses reading while
        # chunks wait, and resumes inflating as they are taken.
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            # The end came after the last chunk was handed out.
            chunk = "" if stream.text else b""
        more = not stream._done or bool(stream._chunks)
        if not more:
            self._asgi_stream = None
        key = "text" if stream.text else "bytes"
        return {"type": "websocket.receive", key: chunk, "rapidws.more": more}

    def _disconnect_event(self) -> Message:
        protocol = self.protocol
        if protocol.response is None or protocol.response.status != 101:
            return {"type": "websocket.disconnect", "code": 1006}
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        # The peer's close frame when it started the closing handshake; else
        # what this side sent: the app's close, shutdown's 1012, or the code
        # of the engine's failure (1002, 1007, 1009, 1011 on ping timeout).
        if rcvd is not None and (sent is None or protocol.close_rcvd_then_sent):
            return {"type": "websocket.disconnect", "code": rcvd.code, "reason": rcvd.reason}
        if self._closing is not None:
            return self._closing
        if sent is not None:
            return {"type": "websocket.disconnect", "code": sent.code, "reason": sent.reason}
        return {"type": "websocket.disconnect", "code": 1006}

    async def asgi_send(self, message: Message) -> None:
        """Act on a message from the app (the ASGI ``send`` callable).

        Raises:
            ClientDisconnected: when the connection is closed.
            RuntimeError: for a message that is not valid at this point.
            TypeError: for a fragment of another type than the message's first.
        """
        kind = message["type"]
        phase = self._phase
        if phase is _Phase.ACCEPTED:
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is None:
                    data = message.get("text")
                    if data is None:
                        if "rapidws.ping" in message:
                            self._asgi_ping(message["rapidws.ping"])
                            return
                        raise RuntimeError("'websocket.send' has neither 'bytes' nor 'text'")
                compress = message.get("rapidws.compress", True)
                try:
                    if self._asgi_writer is None and not message.get("rapidws.more"):
                        await self.send(data, compress=compress)
                    else:
                        await self._send_part(data, message.get("rapidws.more", False), compress)
                except ConnectionClosed:
                    raise ClientDisconnected from None
            elif kind == "websocket.close":
                self._phase = _Phase.DONE
                if self.protocol.state is not OPEN:
                    raise ClientDisconnected
                code, reason = message.get("code") or 1000, message.get("reason") or ""
                self._closing = {"type": "websocket.disconnect", "code": code, "reason": reason}
                self.protocol.send_close(code, reason)
                self._write_pending()
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got '{kind}'."
                )
        elif self._lost:
            raise ClientDisconnected
        elif phase is _Phase.HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._log_outcome("403")
                self._phase = _Phase.DONE
                self._send_http(self._plain_response(403, ""))
            elif kind == "websocket.http.response.start":
                self._start_denial(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{kind}'."
                )
        elif phase is _Phase.RESPONSE:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            self._denial_body(message.get("body", b""), more=message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    async def _send_part(self, data: Data, more: bool, compress: bool) -> None:
        # A fragment of a message sent in parts; the first says its type.
        writer = self._asgi_writer
        if writer is None:
            writer = self._asgi_writer = MessageWriter(self, None, compress)
        writer._check(data)
        if not more:
            self._asgi_writer = None
        writer._write(data, fin=not more)
        if self._writing_paused:
            await self._drain()

    def _asgi_ping(self, data: bytes) -> None:
        if self.protocol.state is not OPEN:
            # As a websocket.send would: no pong can come back any more.
            raise ClientDisconnected
        waiter = self.ping(data or None)  # b"": data that no pending ping has
        if self._app_pings is None:
            self._app_pings = collections.deque()
        self._app_pings.append((waiter, data))

    def _pong_received(self, data: bytes) -> None:
        super()._pong_received(data)
        pings = self._app_pings
        # Here, not in the futures' callbacks (a loop step later): the pong
        # event takes its place among the messages of this read.
        while pings and pings[0][0].done():
            waiter, sent = pings.popleft()
            pong = {"data": sent, "rtt": waiter.result()}
            event: Message = {"type": "websocket.receive", "rapidws.pong": pong}
            if self._pongs is None:
                self._pongs = collections.deque()
            self._pongs.append(event)
            recv_waiter: asyncio.Future[Any] | None = self._recv_waiter
            if self._asgi_stream is not None:
                # Between two chunks: control frames come amid fragments.
                recv_waiter = self._asgi_stream._waiter
            if recv_waiter is not None and not recv_waiter.done():
                recv_waiter.set_exception(_PongArrived())

    def _accept(self, message: Message) -> None:
        response = self._handshake
        assert response is not None
        self._log_outcome("[accepted]")
        response.headers.update(self._default_headers())
        extra = message.get("headers")
        if extra:
            response.headers.update(_headers_of(extra))
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.protocol.subprotocol = subprotocol
        if message.get("rapidws.stream"):
            # Before the response: frames that came with it are parsed then.
            self._asgi_streaming = self.protocol.streaming = True
            self.protocol.max_stream_size = message.get("rapidws.max_stream_size")
        self._phase = _Phase.ACCEPTED
        self._early_data = 0
        self.protocol.send_response(response)
        self._start_keepalive()
        self._resume_reading()
        # Frames that came before the accept are parsed now.
        self._process_events()

    # The denial response extension.

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if not 100 <= status < 600:
            raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
        headers = Headers(self._default_headers())
        headers.update(_headers_of(message.get("headers") or ()))
        self._log_outcome(str(status))
        self._phase = _Phase.RESPONSE
        self._denial = (status, headers)

    def _denial_body(self, body: bytes, *, more: bool) -> None:
        transport = self.transport
        assert transport is not None
        if not more:
            self._phase = _Phase.DONE
            self._end_denial(body)
            return
        if self._denial is not None:
            # A body in parts: the head goes now. Without a length from the
            # app, the end of the body is the end of the connection.
            status, headers = self._denial
            self._denial = None
            if "Connection" not in headers:
                headers["Connection"] = "close"
            head = f"HTTP/1.1 {status} {_phrase(status)}\r\n".encode() + headers.serialize()
            transport.write(head + b"\r\n")
        if body:
            transport.write(body)

    def _end_denial(self, body: bytes) -> None:
        if self._denial is None:
            # The head is out (and the body up to now): what is left, then the end.
            if body:
                self.transport.write(body)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        status, headers = self._denial
        self._denial = None
        response = Response(status, body, headers)
        if "Connection" not in headers:
            headers["Connection"] = "close"
        if "Content-Type" not in headers:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        self._send_http(response)

    def _log_outcome(self, outcome: str) -> None:
        # The access line uvicorn's protocols write: client, path, outcome.
        if not self.logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope or {}
        client = scope.get("client")
        path = scope.get("raw_path", b"").decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        self.logger.info(
            '%s - "WebSocket %s" %s',
            f"{client[0]}:{client[1]}" if client else "",
            path.replace('"', "%22"),
            outcome,
        )


def _address(info: Any) -> tuple[str, int | None] | None:
    # (host, port) from a socket address; a Unix socket's path with no port.
    if type(info) is tuple and len(info) == 2 and type(info[0]) is str and type(info[1]) is int:
        return info  # IPv4 as the loops give it: nothing to convert
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    if isinstance(info, str):
        return info, None
    return None


def _scope_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    # Header fields were decoded from Latin-1: this gives back their bytes,
    # names lower-cased as ASGI has them. The usual names are encoded once.
    names = _SCOPE_NAMES
    fields = []
    for name, value in headers.items():
        key = names.get(name)
        if key is None:
            key = name.lower().encode("latin-1")
            if len(names) < 256:  # not every name a client makes up
                names[name] = key
        fields.append((key, value.encode("latin-1")))
    return fields


_SCOPE_NAMES: dict[str, bytes] = {}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _headers_of(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in pairs]
