"""Prometheus metrics of rapidws servers (``pip install rapidws[metrics]``).

Each connection counts its messages and bytes where they already pass (in C
with the accelerator), and a server its handshakes, opens and closes (see
:mod:`rapidws.asyncio.stats`); a :class:`Collector` reads those counts only
when Prometheus scrapes. Nothing is counted twice and nothing runs per
message for the metrics. Serve them on an App's own port::

    app.add_route("/metrics", rapidws.metrics.endpoint(hub=app.hub))

or on a port of their own (:func:`exporter`), as ``rapidws serve --metrics
PORT`` does.

The metrics (every name starts with ``rapidws_``):

- ``connections_open{route}`` (gauge), ``connections_opened_total{route}``,
  ``connections_closed_total{code, closed_by}`` (``client``, ``server``, or
  ``none``: no closing handshake);
- ``handshakes_total{route, status}``: answers to upgrade requests (101:
  accepted);
- ``messages_received_total{route, type}``, ``messages_sent_total{route, type}``,
  ``message_bytes_received_total{route, type}``,
  ``message_bytes_sent_total{route, type}`` (``type`` is ``text`` or
  ``binary``; bytes of payload, UTF-8 for text);
- ``wire_bytes_received_total``, ``wire_bytes_sent_total``: on the socket;
- ``deflate_payload_bytes_total{direction}`` and
  ``deflate_wire_bytes_total{direction}``: the connections with
  permessage-deflate, before and after compression (the ratio is theirs);
- ``ping_rtt_seconds`` (histogram): keepalive and application pings;
- ``write_buffer_bytes``, ``write_buffer_max_bytes``,
  ``receive_queue_messages``, ``receive_queue_max_messages``: sampled when
  scraped;
- with a hub: ``hub_published_total``, ``hub_delivered_total``,
  ``hub_dropped_total``, ``hub_coalesced_total``, ``hub_subscribers``.

``route`` is the template of the App route that took the upgrade
(``/ws/{user}``, never the path: one series per route, not per user), or
``unmatched`` for the upgrade requests that no route took (404, 426...) and
any refused before routing. A server without an App has no ``route`` label.

OpenTelemetry: an OpenTelemetry Collector (or Grafana Alloy) scrapes the
same endpoint with its ``prometheus`` receiver and exports OTLP wherever the
pipeline goes; inside one process, ``opentelemetry-exporter-prometheus`` is
the other direction (OpenTelemetry metrics served to Prometheus), so for
rapidws's counts the receiver is the bridge: point it at ``/metrics``, and
the names, labels and types above arrive as OpenTelemetry sums, gauges and a
histogram.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as _Collector
from prometheus_client.registry import CollectorRegistry

from ..app import App, connection_of
from ..asyncio.stats import RTT_BUCKETS, UNMATCHED, RouteSnapshot, Snapshot, Traffic
from ..core.http11 import Request, Response

if TYPE_CHECKING:
    from ..asyncio.server import Server
    from ..pubsub.hub import Hub

__all__ = ["Collector", "endpoint", "exporter"]


class Collector(_Collector):
    """Read the counts of rapidws servers (and of a hub) when scraped.

    Register it with a :class:`prometheus_client.CollectorRegistry` (or the
    default ``REGISTRY``), or let :func:`endpoint` do it. Several servers (an
    app served on two ports) are summed.

    Args:
        servers: the servers to report; :meth:`add` adds more.
        hub: a :class:`~rapidws.Hub` whose topics' counts to report, or a
            callable that returns it (or ``None``) at each scrape.
    """

    def __init__(self, *servers: Server, hub: Hub | Callable[[], Hub | None] | None = None):
        self._servers: weakref.WeakSet[Server] = weakref.WeakSet(servers)
        self._hub = hub

    def add(self, server: Server) -> None:
        """Report ``server`` too (forgotten when the server is)."""
        self._servers.add(server)

    def collect(self) -> Iterator[Metric]:
        """Return the metrics now (called by the registry at each scrape)."""
        snapshots = [server.stats.snapshot(server.connections) for server in list(self._servers)]
        yield from _server_metrics(snapshots)
        hub = self._hub() if callable(self._hub) else self._hub
        if hub is not None:
            yield from _hub_metrics(hub)


def _server_metrics(snapshots: list[Snapshot]) -> Iterator[Metric]:
    def total(read: Callable[[Snapshot], int | float]) -> Any:
        return sum(read(snapshot) for snapshot in snapshots)

    def traffic(field: str) -> int:
        return int(total(lambda snapshot: getattr(snapshot.traffic, field)))

    parts = _route_parts(snapshots)
    route = ("route",) if parts[0][0] else ()
    connections = (
        (GaugeMetricFamily, "open", "WebSocket connections open."),
        (CounterMetricFamily, "opened", "WebSocket connections opened (handshake accepted)."),
    )
    for family, field, text in connections:
        metric = family(f"rapidws_connections_{field}", text, labels=route)
        for labels, part in parts:
            metric.add_metric(labels, getattr(part, field))
        yield metric
    closed = CounterMetricFamily(
        "rapidws_connections_closed",
        "WebSocket connections closed, by close code and by who closed.",
        labels=("code", "closed_by"),
    )
    for (code, closed_by), count in _merged(s.closed for s in snapshots).items():
        closed.add_metric((str(code), closed_by), count)
    yield closed
    handshakes = CounterMetricFamily(
        "rapidws_handshakes",
        "Answers to WebSocket upgrade requests, by HTTP status (101: accepted).",
        labels=(*route, "status"),
    )
    for labels, part in parts:
        for status, count in part.handshakes.items():
            handshakes.add_metric((*labels, str(status)), count)
    yield handshakes
    for direction, way in (("received", "in"), ("sent", "out")):
        messages = CounterMetricFamily(
            f"rapidws_messages_{direction}",
            f"Messages {direction}, by type.",
            labels=(*route, "type"),
        )
        sizes = CounterMetricFamily(
            f"rapidws_message_bytes_{direction}",
            f"Payload bytes of the messages {direction} (UTF-8 for text), by type.",
            labels=(*route, "type"),
        )
        for labels, part in parts:
            for kind in ("text", "binary"):
                messages.add_metric((*labels, kind), getattr(part.traffic, f"{kind}_{way}"))
                sizes.add_metric((*labels, kind), getattr(part.traffic, f"{kind}_{way}_bytes"))
        yield messages
        yield sizes
    yield CounterMetricFamily(
        "rapidws_wire_bytes_received",
        "Bytes received on the connections' sockets.",
        traffic("wire_in"),
    )
    yield CounterMetricFamily(
        "rapidws_wire_bytes_sent",
        "Bytes written to the connections' sockets.",
        traffic("wire_out"),
    )
    payload = CounterMetricFamily(
        "rapidws_deflate_payload_bytes",
        "Message bytes before compression, on connections with permessage-deflate.",
        labels=("direction",),
    )
    wire = CounterMetricFamily(
        "rapidws_deflate_wire_bytes",
        "Bytes on the wire (compressed), on connections with permessage-deflate.",
        labels=("direction",),
    )
    for index, direction in enumerate(("received", "sent")):
        payload.add_metric((direction,), sum(s.deflate[index] for s in snapshots))
        wire.add_metric((direction,), sum(s.deflate[2 + index] for s in snapshots))
    yield payload
    yield wire
    # Prometheus buckets are cumulative: each counts the times up to its bound.
    cumulative, buckets = 0, []
    for index, bound in enumerate((*map(str, RTT_BUCKETS), "+Inf")):
        cumulative += sum(s.rtt_buckets[index] for s in snapshots)
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily(
        "rapidws_ping_rtt_seconds",
        "Round-trip times of pings (keepalive and application), in seconds.",
        buckets=buckets,
        sum_value=total(lambda s: s.rtt_sum),
    )
    for name, field, text in (
        ("write_buffer_bytes", "write_buffer", "Bytes waiting in write buffers."),
        ("write_buffer_max_bytes", "write_buffer_max", "The largest write buffer."),
        ("receive_queue_messages", "receive_queue", "Messages received, not yet taken."),
        ("receive_queue_max_messages", "receive_queue_max", "The longest receive queue."),
    ):
        values = [getattr(s, field) for s in snapshots]
        value = max(values, default=0) if field.endswith("_max") else sum(values)
        yield GaugeMetricFamily(f"rapidws_{name}", f"{text} Sampled when scraped.", value)


def _route_parts(snapshots: list[Snapshot]) -> list[tuple[tuple[str, ...], RouteSnapshot]]:
    """Split the servers' counts by route: ``(label values, counts)`` pairs.

    Without routes (no App), one part with no label. Otherwise one per route,
    what no route counted (refused before routing) going to ``unmatched``.
    """
    whole = _sum_parts(RouteSnapshot(s.opened, s.open, s.handshakes, s.traffic) for s in snapshots)
    routes: dict[str, list[RouteSnapshot]] = {}
    for snapshot in snapshots:
        for name, part in snapshot.routes.items():
            routes.setdefault(name, []).append(part)
    if not routes:
        return [((), whole)]
    parts = {name: _sum_parts(part) for name, part in routes.items()}
    routed = _sum_parts(parts.values())
    rest = RouteSnapshot(
        whole.opened - routed.opened,
        whole.open - routed.open,
        {
            status: count - routed.handshakes.get(status, 0)
            for status, count in whole.handshakes.items()
            if count > routed.handshakes.get(status, 0)
        },
        Traffic(*map(operator.sub, whole.traffic, routed.traffic)),
    )
    if rest.opened or rest.handshakes:
        parts[UNMATCHED] = _sum_parts((parts.get(UNMATCHED, _EMPTY), rest))
    return [((name,), part) for name, part in sorted(parts.items())]


def _sum_parts(parts: Iterable[RouteSnapshot]) -> RouteSnapshot:
    total = _EMPTY
    for part in parts:
        total = RouteSnapshot(
            total.opened + part.opened,
            total.open + part.open,
            _merged((total.handshakes, part.handshakes)),
            Traffic(*map(operator.add, total.traffic, part.traffic)),
        )
    return total


_EMPTY = RouteSnapshot(0, 0, {}, Traffic(*[0] * len(Traffic._fields)))


def _merged(counters: Iterable[dict[Any, int]]) -> dict[Any, int]:
    merged: dict[Any, int] = {}
    for counter in counters:
        for key, count in counter.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def _hub_metrics(hub: Hub) -> Iterator[Metric]:
    # Summed over topics: a label per topic would be one per user or room.
    # (The hub keeps its TopicStats by topic; stats(topic) copies one.)
    stats = list(hub._stats.values())
    for field, text in (
        ("published", "Messages published to this node's topics."),
        ("delivered", "Messages written to subscribers (one per subscriber)."),
        ("dropped", "Messages a slow subscriber's policy dropped."),
        ("coalesced", "Messages replaced by a newer one with the same key."),
    ):
        yield CounterMetricFamily(
            f"rapidws_hub_{field}", text, sum(getattr(s, field) for s in stats)
        )
    yield GaugeMetricFamily(
        "rapidws_hub_subscribers",
        "Subscriptions on this node (a connection counts once per topic).",
        sum(s.subscribers for s in stats),
    )


def endpoint(
    collector: Collector | None = None,
    *,
    hub: Hub | Callable[[], Hub | None] | None = None,
    registry: CollectorRegistry | None = None,
) -> Callable[[Request], Response]:
    """Return an App's HTTP route handler that answers with the metrics.

    ::

        app.add_route("/metrics", rapidws.metrics.endpoint(hub=app.hub))

    Without ``collector``, the server that the scrape reaches is reported
    (and ``hub``). ``registry`` holds other metrics to serve beside
    (``prometheus_client.REGISTRY``: the process's); the collector is
    registered in it.
    """
    follow = collector is None
    collector = collector or Collector(hub=hub)
    registry = registry or CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def metrics(request: Request) -> Response:
        if follow:
            collector.add(connection_of(request).server)
        return Response(200, generate_latest(registry), [("Content-Type", CONTENT_TYPE_LATEST)])

    return metrics


def exporter(collector: Collector, *, path: str = "/metrics") -> App:
    """Return an App that serves ``collector``'s metrics at ``path``, for a port of their own.

    ::

        async with rapidws.metrics.exporter(Collector(server)).serve("0.0.0.0", 9100):
            ...
    """
    app = App()
    app.add_route(path, endpoint(collector))
    return app
