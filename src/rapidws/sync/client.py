"""The blocking WebSocket client: ``rapidws.sync.connect(uri)``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from ..asyncio.client import ClientConnection as AsyncClientConnection
from ..asyncio.client import connect as async_connect
from .connection import Connection
from .loop import loop_thread, submit, wait

__all__ = ["ClientConnection", "connect"]

P = ParamSpec("P")


class ClientConnection(Connection):
    """A blocking, thread-safe connection opened by :func:`connect`.

    Use it as a context manager: ``with connect(uri) as ws:`` closes it at
    the end of the block.
    """

    def __enter__(self) -> ClientConnection:
        return self


def _blocking(
    opener: Callable[P, Awaitable[AsyncClientConnection]],
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
        loop thread, shared by the process's sync connections.

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
        loop, thread = loop_thread.acquire()
        try:
            connection = wait(submit(loop, thread, lambda: _await(opening)))
        except BaseException:
            loop_thread.release()
            loop_thread.join_if_retired(thread)
            raise
        return ClientConnection(connection, loop, thread)

    # help() and IDEs show the asyncio connect()'s parameters.
    signature = inspect.signature(opener).replace(return_annotation="ClientConnection")
    setattr(connect, "__signature__", signature)  # noqa: B010 - mypy rejects the attribute
    return connect


async def _await(opening: Awaitable[AsyncClientConnection]) -> AsyncClientConnection:
    return await opening


connect = _blocking(async_connect)
