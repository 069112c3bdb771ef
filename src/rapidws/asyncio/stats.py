"""What a server's connections did, for :mod:`rapidws.metrics` and the logs.

Each connection counts its own messages and bytes where they pass (see
:class:`~rapidws.speedups.ConnectionCore`); nothing here runs per message. A
:class:`ServerStats` gets what happens once per connection (the handshake's
outcome, the open, the close with its code), folds a closed connection's counts
into its totals, and adds the open connections' counts only when asked
(:meth:`ServerStats.snapshot`, at scrape time). At a connection's end it logs
one line with its story (``rapidws.server``, INFO), with the fields as the
record's attributes for a structured formatter (:mod:`rapidws.logging`).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import logging
import operator
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..speedups.pure_connection import COUNTS

if TYPE_CHECKING:
    from ..core.extensions.base import Extension
    from ..core.http11 import Response
    from .server import ServerConnection

__all__ = [
    "RTT_BUCKETS",
    "UNMATCHED",
    "RouteSnapshot",
    "ServerStats",
    "Snapshot",
    "Traffic",
    "traffic_of",
]

logger = logging.getLogger("rapidws.server")


class Traffic(NamedTuple):
    """What went through a connection, or through a server's connections.

    Messages and their payload bytes (UTF-8 for text) each way by type, as the
    application received and sent them, and the bytes on the wire (frames,
    compressed when permessage-deflate is on, and the handshake). Messages
    that a :class:`~rapidws.Hub` writes to its subscribers count on the wire
    only (the hub counts its deliveries).
    """

    text_in: int
    text_in_bytes: int
    binary_in: int
    binary_in_bytes: int
    text_out: int
    text_out_bytes: int
    binary_out: int
    binary_out_bytes: int
    wire_in: int
    wire_out: int


_read_counts = operator.attrgetter(*COUNTS)


def traffic_of(connection: Any) -> Traffic:
    """Return what went through ``connection`` (a :class:`Connection`) so far."""
    return Traffic(*_read_counts(connection))


#: The upper bounds, in seconds, of the ping round-trip-time histogram.
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DEFLATE = "permessage-deflate"
#: The route of an upgrade request that no App route took (404, 426...): one
#: label for them all, as the metrics' ``route`` must stay few (no raw paths).
UNMATCHED = "unmatched"


@dataclasses.dataclass(frozen=True)
class RouteSnapshot:
    """The counts of the connections of one App route; see :attr:`Snapshot.routes`.

    Attributes:
        opened: connections that completed the opening handshake.
        open: of those, the ones not closed yet.
        handshakes: answers to upgrade requests by status (101: accepted).
        traffic: the sum of the route's connections' :class:`Traffic`.
    """

    opened: int
    open: int
    handshakes: dict[int, int]
    traffic: Traffic


class _RouteCounts:
    # What ServerStats keeps per route, for the connections an App routed.
    __slots__ = ("closed", "opened", "refused", "traffic")

    def __init__(self) -> None:
        self.opened = self.closed = 0
        self.refused: collections.Counter[int] = collections.Counter()
        # The closed connections' counts, in COUNTS order.
        self.traffic = [0] * len(COUNTS)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A server's counts at one moment; see :meth:`ServerStats.snapshot`.

    Attributes:
        opened: connections that completed the opening handshake.
        open: of those, the ones not closed yet.
        closed: closed connections by ``(close code, who closed)``, where
            who is ``"client"``, ``"server"``, or ``"none"`` (the TCP
            connection ended without a closing handshake: code 1006).
        handshakes: answers to upgrade requests by status (101: accepted).
        traffic: the sum of every connection's :class:`Traffic`, open or closed.
        deflate: on the connections with permessage-deflate, the payload
            bytes received and sent, and the wire bytes received and sent:
            the compression ratio.
        rtt_buckets: the ping round-trip-time histogram's counts, one per
            bound of :data:`RTT_BUCKETS` and one above (not cumulative).
        rtt_sum: the sum of those round-trip times, in seconds.
        write_buffer: bytes waiting in the open connections' write buffers.
        write_buffer_max: the largest of those write buffers.
        receive_queue: messages received and not yet taken by ``recv()``.
        receive_queue_max: the longest of those queues.
        routes: the part of ``opened``, ``open``, ``handshakes`` and
            ``traffic`` of each App route, by template (``/ws/{user}``), and
            of :data:`UNMATCHED`; empty for a server without an App.
    """

    opened: int
    open: int
    closed: dict[tuple[int, str], int]
    handshakes: dict[int, int]
    traffic: Traffic
    deflate: tuple[int, int, int, int]
    rtt_buckets: tuple[int, ...]
    rtt_sum: float
    write_buffer: int
    write_buffer_max: int
    receive_queue: int
    receive_queue_max: int
    routes: dict[str, RouteSnapshot] = dataclasses.field(default_factory=dict)


class ServerStats:
    """The counts of one server (:attr:`Server.stats <rapidws.asyncio.server.Server.stats>`)."""

    def __init__(self) -> None:
        # The connections' ids: a number unique in the server.
        self.ids = itertools.count(1)
        self._opened = 0
        self._closed: collections.Counter[tuple[int, str]] = collections.Counter()
        self._handshakes: collections.Counter[int] = collections.Counter()
        # The closed connections' counts, in COUNTS order: those without a
        # route (the routes' are in _routes, summed when read: a routed close
        # folds once, as an unrouted one does).
        self._traffic = [0] * len(COUNTS)
        self._deflate = [0, 0, 0, 0]
        self._rtt = [0] * (len(RTT_BUCKETS) + 1)
        self._rtt_sum = 0.0
        # Only for connections with a route (ServerConnection.route, set by
        # an App): none on a server without an App.
        self._routes: dict[str, _RouteCounts] = {}

    def handshake(self, connection: ServerConnection, response: Response) -> None:
        """Count the answer to an upgrade request; log a refusal."""
        status = response.status
        self._handshakes[status] += 1
        route = connection.route
        if route is not None:
            part = self._routes.get(route)
            if part is None:
                part = self._routes[route] = _RouteCounts()
            if status == 101:
                part.opened += 1
            else:
                part.refused[status] += 1
        if status == 101:
            self._opened += 1
        elif logger.isEnabledFor(logging.INFO):
            # The body says why (the App's refusals do); else the phrase.
            reason = _first_line(response.body) or response.reason
            logger.info(
                "connection %d: handshake refused: %d %s",
                connection.id,
                status,
                reason,
                extra={
                    "event": "handshake_refused",
                    "connection_id": connection.id,
                    "remote_address": _address(connection.client_address),
                    "path": _path(connection),
                    "status": status,
                    "reason": reason,
                },
            )

    def latency(self, seconds: float) -> None:
        """Count a ping's round-trip time."""
        self._rtt[bisect.bisect_left(RTT_BUCKETS, seconds)] += 1
        self._rtt_sum += seconds

    def connection_closed(self, connection: ServerConnection, duration: float) -> None:
        """Fold the counts of a connection that was open into the totals; log its end."""
        counts = _read_counts(connection)
        route = connection.route
        if route is None:
            self._traffic = list(map(operator.add, self._traffic, counts))
        else:
            part = self._routes[route]  # made by its handshake
            part.closed += 1
            part.traffic = list(map(operator.add, part.traffic, counts))
        protocol = connection.protocol
        if _deflated(protocol.extensions):
            _add_deflate(self._deflate, counts)
        code, reason = connection._code_and_reason()
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        if rcvd is not None and (sent is None or protocol.close_rcvd_then_sent):
            closed_by = "client"
        elif sent is not None:
            closed_by = "server"
        else:
            closed_by = "none"
        self._closed[code, closed_by] += 1
        if not logger.isEnabledFor(logging.INFO):
            return
        traffic = Traffic(*counts)
        fields = {
            "event": "connection_closed",
            "connection_id": connection.id,
            "remote_address": _address(connection.client_address),
            "path": _path(connection),
            "subprotocol": protocol.subprotocol,
            "extensions": [extension.name for extension in protocol.extensions],
            "duration": round(duration, 6),
            "messages_in": traffic.text_in + traffic.binary_in,
            "messages_out": traffic.text_out + traffic.binary_out,
            "bytes_in": traffic.text_in_bytes + traffic.binary_in_bytes,
            "bytes_out": traffic.text_out_bytes + traffic.binary_out_bytes,
            "wire_bytes_in": traffic.wire_in,
            "wire_bytes_out": traffic.wire_out,
            "close_code": code,
            "close_reason": reason,
            "closed_by": closed_by,
        }
        logger.info(
            "connection %d closed: %d %s (by %s) after %.3f s, %d messages in, %d out",
            connection.id,
            code,
            reason or "-",
            closed_by,
            duration,
            fields["messages_in"],
            fields["messages_out"],
            extra=fields,
        )

    def snapshot(self, connections: Iterable[ServerConnection]) -> Snapshot:
        """Return the counts now: the closed connections' totals and the open ones' counts.

        ``connections`` are the server's (:attr:`Server.connections
        <rapidws.asyncio.server.Server.connections>`); their write buffers and
        receive queues are sampled too.
        """
        routes = {route: list(part.traffic) for route, part in self._routes.items()}
        totals = list(self._traffic)
        for traffic in routes.values():
            totals = list(map(operator.add, totals, traffic))
        deflate = list(self._deflate)
        write_buffer = write_buffer_max = queue = queue_max = 0
        for connection in list(connections):
            response = connection.protocol.response
            if response is None or response.status != 101 or connection._lost:
                continue  # not open yet, or folded into the totals already
            counts = _read_counts(connection)
            totals = list(map(operator.add, totals, counts))
            if connection.route is not None:
                routes[connection.route] = list(map(operator.add, routes[connection.route], counts))
            if _deflated(connection.protocol.extensions):
                _add_deflate(deflate, counts)
            if connection.transport is not None:
                size = connection.transport.get_write_buffer_size()
                write_buffer += size
                write_buffer_max = max(write_buffer_max, size)
            depth = len(connection._messages)
            queue += depth
            queue_max = max(queue_max, depth)
        closed = sum(self._closed.values())
        return Snapshot(
            opened=self._opened,
            open=self._opened - closed,
            closed=dict(self._closed),
            handshakes=dict(self._handshakes),
            traffic=Traffic(*totals),
            deflate=(deflate[0], deflate[1], deflate[2], deflate[3]),
            rtt_buckets=tuple(self._rtt),
            rtt_sum=self._rtt_sum,
            write_buffer=write_buffer,
            write_buffer_max=write_buffer_max,
            receive_queue=queue,
            receive_queue_max=queue_max,
            routes={
                route: RouteSnapshot(
                    opened=part.opened,
                    open=part.opened - part.closed,
                    handshakes={101: part.opened, **part.refused}
                    if part.opened
                    else dict(part.refused),
                    traffic=Traffic(*routes[route]),
                )
                for route, part in self._routes.items()
            },
        )


def _deflated(extensions: Sequence[Extension]) -> bool:
    # Most connections have no extension: no generator for them.
    return bool(extensions) and any(extension.name == _DEFLATE for extension in extensions)


def _add_deflate(deflate: list[int], counts: Iterable[int]) -> None:
    # Payload bytes in and out, wire bytes in and out, of a connection with
    # permessage-deflate.
    traffic = Traffic(*counts)
    deflate[0] += traffic.text_in_bytes + traffic.binary_in_bytes
    deflate[1] += traffic.text_out_bytes + traffic.binary_out_bytes
    deflate[2] += traffic.wire_in
    deflate[3] += traffic.wire_out


def _first_line(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip().split("\n", 1)[0]


def _address(address: Any) -> str | None:
    # "host:port" for TCP, as a log reader expects; a Unix socket's path as is.
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{host}:{address[1]}"
    return None if address is None else str(address)


def _path(connection: ServerConnection) -> str | None:
    request = connection.request
    return None if request is None else request.path
