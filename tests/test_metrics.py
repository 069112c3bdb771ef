"""rapidws.metrics: the exposition scraped over HTTP from real servers, read by
prometheus_client's own parser; ``rapidws serve --metrics`` in a subprocess.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rapidws
import rapidws.metrics
from rapidws.asyncio.stats import RTT_BUCKETS

from .asyncio.utils import TIMEOUT, until, wait
from .test_cli import run_cli
from .test_logging import LISTENING, serve_echo, stderr_match

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int, path: str = "/metrics") -> tuple[str, Samples]:
    """GET the metrics with urllib (a real HTTP client); return the content type and samples."""

    def get() -> tuple[str, str]:
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.headers["Content-Type"], response.read().decode()

    content_type, text = await asyncio.to_thread(get)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


async def echo(ws: rapidws.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def echo_app(**endpoint: Any) -> rapidws.App:
    app = rapidws.App()
    app.add_websocket("/echo", echo)
    app.add_route("/metrics", rapidws.metrics.endpoint(**endpoint))
    return app


async def test_scraped_from_an_app_route_after_traffic() -> None:
    app = echo_app()
    async with app.serve("127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.port}/echo"
        async with rapidws.connect(url, compression=None) as ws:
            for _ in range(3):
                await ws.send("hé")  # 3 bytes
                assert await wait(ws.recv()) == "hé"
            await ws.send(b"\x00" * 10)
            assert await wait(ws.recv()) == b"\x00" * 10
            await ws.ping()
            content_type, open_samples = await scrape(server.port)
        async with rapidws.connect(url, compression=None) as ws:
            pass
        with pytest.raises(rapidws.InvalidStatus):
            await rapidws.connect(f"ws://127.0.0.1:{server.port}/nowhere")
        await until(lambda: server.stats.snapshot(server.connections).open == 0)
        _, samples = await scrape(server.port)
    assert content_type.startswith("text/plain; version=")  # the text exposition format
    # While open: the open connection's counts, read when scraped, by route.
    assert value(open_samples, "rapidws_connections_open", route="/echo") == 1
    assert value(open_samples, "rapidws_messages_received_total", route="/echo", type="text") == 3
    # Once closed: folded into the totals; the scrapes themselves are not handshakes.
    assert value(samples, "rapidws_connections_open", route="/echo") == 0
    assert value(samples, "rapidws_connections_opened_total", route="/echo") == 2
    assert value(samples, "rapidws_connections_closed_total", code="1000", closed_by="client") == 2
    assert value(samples, "rapidws_handshakes_total", route="/echo", status="101") == 2
    assert value(samples, "rapidws_handshakes_total", route="unmatched", status="404") == 1
    for direction in ("received", "sent"):
        for kind, count, size in (("text", 3, 9), ("binary", 1, 10)):
            labels = {"route": "/echo", "type": kind}
            assert value(samples, f"rapidws_messages_{direction}_total", **labels) == count
            assert value(samples, f"rapidws_message_bytes_{direction}_total", **labels) == size
        assert value(samples, f"rapidws_wire_bytes_{direction}_total") > 19
        assert value(samples, "rapidws_deflate_payload_bytes_total", direction=direction) == 0
    # The client pinged; the server's histogram counts the server's own pings.
    assert value(samples, "rapidws_ping_rtt_seconds_count") == 0
    assert value(samples, "rapidws_ping_rtt_seconds_bucket", le="+Inf") == 0
    assert {le for name, ((_, le),) in _labelled(samples, "rapidws_ping_rtt_seconds_bucket")} == {
        *map(str, RTT_BUCKETS),
        "+Inf",
    }
    for gauge in ("write_buffer_bytes", "receive_queue_messages", "receive_queue_max_messages"):
        assert value(samples, f"rapidws_{gauge}") == 0


def _labelled(samples: Samples, name: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [key for key in samples if key[0] == name]


async def test_ping_histogram_and_compression() -> None:
    async def ping_then_echo(ws: rapidws.ServerConnection) -> None:
        await ws.ping()
        await echo(ws)

    app = rapidws.App()
    app.add_websocket("/", ping_then_echo)
    app.add_route("/metrics", rapidws.metrics.endpoint())
    message = "squeeze me " * 500
    async with (
        app.serve("127.0.0.1", 0) as server,
        rapidws.connect(f"ws://127.0.0.1:{server.port}/") as ws,
    ):
        await ws.send(message)
        assert await wait(ws.recv()) == message
        _, samples = await scrape(server.port)
    assert value(samples, "rapidws_ping_rtt_seconds_count") == 1
    assert value(samples, "rapidws_ping_rtt_seconds_bucket", le="+Inf") == 1
    assert 0 < value(samples, "rapidws_ping_rtt_seconds_sum") < RTT_BUCKETS[-1]
    raw = value(samples, "rapidws_deflate_payload_bytes_total", direction="sent")
    wire = value(samples, "rapidws_deflate_wire_bytes_total", direction="sent")
    assert raw == len(message)
    assert 0 < wire < raw / 4


async def test_hub_counts_and_a_registry_of_ones_own() -> None:
    registry = CollectorRegistry()
    mine = Counter("app_logins", "Logins.", registry=registry)
    mine.inc()
    app = rapidws.App()

    async def subscriber(ws: rapidws.ServerConnection) -> None:
        await app.hub.subscribe(ws, "news")
        await ws.send("subscribed")
        await ws.wait_closed()

    app.add_websocket("/news", subscriber)
    app.add_route("/metrics", rapidws.metrics.endpoint(hub=app.hub, registry=registry))
    async with app.serve("127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/news"
        async with rapidws.connect(url) as first, rapidws.connect(url) as second:
            assert await wait(first.recv()) == "subscribed"
            assert await wait(second.recv()) == "subscribed"
            await app.hub.publish("news", "extra!")
            assert await wait(first.recv()) == "extra!"
            assert await wait(second.recv()) == "extra!"
            _, samples = await scrape(server.port)
    assert value(samples, "app_logins_total") == 1
    assert value(samples, "rapidws_hub_published_total") == 1
    assert value(samples, "rapidws_hub_delivered_total") == 2
    assert value(samples, "rapidws_hub_dropped_total") == 0
    assert value(samples, "rapidws_hub_subscribers") == 2


async def test_route_label_is_the_template_never_the_path() -> None:
    # Bounded cardinality: two users share their route's series; a mounted
    # route's template has its prefix; unmatched requests share one label.

    async def echo_with(ws: rapidws.ServerConnection, **params: object) -> None:
        await echo(ws)

    app = rapidws.App()
    app.add_websocket("/ws/{user}", echo_with)
    chat = rapidws.App()
    chat.add_websocket("/{room:int}", echo_with)
    app.mount("/chat", chat)
    app.add_route("/metrics", rapidws.metrics.endpoint())
    async with app.serve("127.0.0.1", 0, compression=None) as server:
        base = f"ws://127.0.0.1:{server.port}"
        for path in ("/ws/ada", "/ws/bob", "/chat/7"):
            async with rapidws.connect(base + path, compression=None) as ws:
                await ws.send(path)
                assert await wait(ws.recv()) == path
        for path in ("/nowhere", "/ws/ada/more", "/chat/x"):
            with pytest.raises(rapidws.InvalidStatus):
                await rapidws.connect(base + path)
        async with rapidws.connect(base + "/ws/cy", compression=None) as ws:
            await ws.send("é")
            assert await wait(ws.recv()) == "é"
            _, samples = await scrape(server.port)
    routes = {dict(labels)["route"] for _, labels in _labelled(samples, "rapidws_handshakes_total")}
    assert routes == {"/ws/{user}", "/chat/{room:int}", "unmatched"}
    assert value(samples, "rapidws_connections_open", route="/ws/{user}") == 1
    assert value(samples, "rapidws_connections_open", route="/chat/{room:int}") == 0
    assert value(samples, "rapidws_connections_opened_total", route="/ws/{user}") == 3
    assert value(samples, "rapidws_connections_opened_total", route="/chat/{room:int}") == 1
    assert value(samples, "rapidws_handshakes_total", route="unmatched", status="404") == 3
    # The open connection's messages count under its route as they pass.
    received = "rapidws_message_bytes_received_total"
    assert value(samples, received, route="/ws/{user}", type="text") == 7 + 7 + 2
    assert value(samples, received, route="/chat/{room:int}", type="text") == 7
    # The routes' parts add up to the server's totals (nothing counted twice).
    snapshot = server.stats.snapshot(())
    assert sum(part.opened for part in snapshot.routes.values()) == snapshot.opened == 4
    assert sum(sum(part.handshakes.values()) for part in snapshot.routes.values()) == sum(
        snapshot.handshakes.values()
    )


async def test_a_server_without_an_app_has_no_route_label() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        async with rapidws.connect(f"ws://127.0.0.1:{server.port}/a/b") as ws:
            await ws.send("x")
            assert await wait(ws.recv()) == "x"
        assert server.stats.snapshot(server.connections).routes == {}
        registry = CollectorRegistry()
        registry.register(rapidws.metrics.Collector(server))
        text = generate_latest(registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for sample in families["rapidws_handshakes"].samples:
        assert "route" not in sample.labels


async def test_exporter_on_a_port_of_its_own() -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0) as server:
        collector = rapidws.metrics.Collector(server)
        async with (
            rapidws.metrics.exporter(collector).serve("127.0.0.1", 0) as metrics_server,
            rapidws.connect(f"ws://127.0.0.1:{server.port}/") as ws,
        ):
            await ws.send(b"abc")
            assert await wait(ws.recv()) == b"abc"
            _, samples = await scrape(metrics_server.port)
    assert value(samples, "rapidws_connections_open") == 1
    assert value(samples, "rapidws_messages_received_total", type="binary") == 1
    # The exporter's own server is not reported.
    assert value(samples, "rapidws_handshakes_total", status="101") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_metrics_flag() -> None:
    async with serve_echo("--metrics", "0") as process:
        # The exporter listens first.
        port = (await stderr_match(process, r"metrics on http://127\.0\.0\.1:(\d+)/metrics$"))[1]
        url = (await stderr_match(process, LISTENING))[1]
        async with rapidws.connect(url) as ws:
            await ws.send("ping?")
            assert await wait(ws.recv()) == "ping?"
            _, samples = await scrape(int(port))
    route = "/"  # of the reference server's two routes, the one for "/"
    assert value(samples, "rapidws_connections_open", route=route) == 1
    assert value(samples, "rapidws_messages_sent_total", route=route, type="text") == 1


def test_serve_metrics_with_workers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "--echo", "--port", "0", "--metrics", "0", "--workers", "2"]) == 2
    assert "--metrics reports one process" in capsys.readouterr().err
