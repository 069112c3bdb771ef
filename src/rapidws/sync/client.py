"""The blocking WebSocket client: ``rapidws.sync.connect(uri)`` and ``connections(uri)``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec

from ..asyncio.client import ClientConnection as AsyncClientConnection
from ..asyncio.client import connect as async_connect
from ..asyncio.reconnect import Reconnecting
from .connection import Connection, ThreadedConnection, threaded
from .loop import loop_thread, submit, wait

__all__ = ["ClientConnection", "connect", "connections"]

P = ParamSpec("P")


class ClientConnection(Connection):
    """A blocking, thread-safe connection opened by :func:`connect`.

    Use it as a context manager: ``with connect(uri) as ws:`` closes it at
    the end of the block.
    """

    def __enter__(self) -> ClientConnection:
        return self


def _blocking(
    opener: Callable[P, async_connect],
) -> Callable[P, ClientConnection]:
    # connect() takes exactly the asyncio connect()'s arguments, checked by
    # mypy through the ParamSpec: one list of options, not a copy of it.

    def connect(*args: P.args, **kwargs: P.kwargs) -> ClientConnection:
        """Open a WebSocket connection, blocking until the handshake is done.

        Takes the arguments of the asyncio :func:`rapidws.connect` (``uri``,
        ``subprotocols``, ``additional_headers``, ``ssl``, ``compression``,
        ``open_timeout``, ``ping_interval``, ``max_size``, ...), with the same
        meaning and defaults. Works in any thread, whether an event loop runs
        there or not (a Jupyter kernel): the connection runs on a private
        loop thread, shared by the process's sync connections. With
        ``http2=True``, the connections to one origin that are open at the
        same time are streams of one HTTP/2 connection (the pool of the loop
        thread's event loop); it ends at the latest with the thread, after
        the last ``close()``.

        Returns:
            ClientConnection: the open connection; ``with connect(uri) as ws:``
            closes it at the end of the block.

        Raises:
            InvalidURI: for a URI that is not ``ws://`` or ``wss://``.
            InvalidStatus: when the server refuses with a status other than 101.
            InvalidHandshake: for any other handshake failure.
            OSError: when the TCP or TLS connection fails.
            TimeoutError: when the handshakes take longer than ``open_timeout``.
        """
        # Built here: a bad URI or option raises before any thread starts.
        opening = opener(*args, **kwargs)
        opening._create_connection = threaded(opening._create_connection)
        loop, thread = loop_thread.acquire()
        try:
            connection = wait(submit(loop, thread, lambda: _await(opening)))
        except BaseException:
            loop_thread.release()
            loop_thread.join_if_retired(thread)
            raise
        return ClientConnection(connection, loop, thread)

    _show_parameters(connect, opener, "ClientConnection")
    return connect


def _iterated(
    opener: Callable[P, async_connect],
) -> Callable[P, Iterator[ClientConnection]]:
    # The same arguments as connect(), for the iteration of async_connect.

    def connections(*args: P.args, **kwargs: P.kwargs) -> Iterator[ClientConnection]:
        """Yield connections, reconnecting with backoff as ``reconnect=`` says.

        The blocking twin of ``async for ws in rapidws.connect(uri, reconnect=...)``,
        with its arguments: ``reconnect`` (``True`` or a
        :class:`~rapidws.asyncio.reconnect.Backoff`) and ``on_reconnect``
        (called in the loop thread: keep it short) set the policy; without
        ``reconnect``, it yields one connection. Each step closes the previous
        connection if the loop body left it open, then opens the next one when
        the previous closure was worth retrying; the iteration ends after a
        normal closure. After ``break``, the current connection stays open.

        Raises:
            ConnectionClosedError: when a connection closed with a code not
                worth retrying (1002, 1003, 1007, 1008, 1009, ...).
            InvalidStatus, InvalidHandshake, OSError, TimeoutError: when an
                opening failed for good: not worth retrying, or after
                ``max_attempts`` attempts.
        """
        opening = opener(*args, **kwargs)
        opening._create_connection = threaded(opening._create_connection)
        return _reconnecting(
            Reconnecting(lambda: _await(opening), opening.reconnect, opening.on_reconnect)
        )

    _show_parameters(connections, opener, "Iterator[ClientConnection]")
    return connections


def _reconnecting(iterator: Reconnecting[ThreadedConnection]) -> Iterator[ClientConnection]:
    # The loop thread is held while the iteration waits between connections;
    # each connection holds it too, so that it outlives a break.
    loop, thread = loop_thread.acquire()
    try:
        while True:
            try:
                connection = wait(submit(loop, thread, iterator.__anext__))
            except StopAsyncIteration:
                return
            ws = ClientConnection(connection, *loop_thread.acquire())
            yield ws
            # The next step: done with this one (a no-op once closed).
            ws.close()
    finally:
        loop_thread.release()
        loop_thread.join_if_retired(thread)


def _show_parameters(
    function: Callable[..., object], opener: Callable[..., object], returns: str
) -> None:
    # help() and IDEs show the asyncio connect()'s parameters.
    signature = inspect.signature(opener).replace(return_annotation=returns)
    setattr(function, "__signature__", signature)  # noqa: B010 - mypy rejects the attribute


async def _await(opening: Awaitable[AsyncClientConnection]) -> ThreadedConnection:
    connection = await opening
    # threaded() made its class.
    assert isinstance(connection, ThreadedConnection)
    return connection


connect = _blocking(async_connect)
connections = _iterated(async_connect)
