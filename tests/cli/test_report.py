"""Tests of rapidws.cli.report: merging, thresholds, exports and comparisons."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rapidws.cli.loadgen import LoadConfig, ProcessResult, Recorder, Snapshot
from rapidws.cli.options import ClientFlags
from rapidws.cli.report import (
    Report,
    compare,
    format_duration,
    load_report,
    parse_threshold,
)


def process(latencies_ms: list[float], errors: dict[str, int] | None = None) -> ProcessResult:
    recorder = Recorder()
    for value in latencies_ms:
        recorder.record(value / 1e3)
    interval = recorder.flush()
    snapshot = Snapshot(
        1, len(latencies_ms), len(latencies_ms), 0, 0, 0, 2, interval.encode().decode(), 0.001, 0.5
    )
    return ProcessResult(
        seconds=1.0,
        cpu_seconds=0.5,
        sent=len(latencies_ms),
        received=len(latencies_ms),
        bytes_sent=16 * len(latencies_ms),
        bytes_received=16 * len(latencies_ms),
        handshakes=2,
        peak_open=2,
        errors=errors or {},
        histograms={"latency": recorder.total.encode().decode()},
        timeline=[snapshot],
    )


def test_merge_is_exact() -> None:
    first, second = [1.0] * 90, [100.0] * 10
    report = Report(
        LoadConfig("ws://x/"),
        [process(first, {"refused": 1}), process(second, {"refused": 2, "timeout": 1})],
    )
    whole = Report(LoadConfig("ws://x/"), [process(first + second)])
    assert report.metrics()["p99"] == whole.metrics()["p99"] == pytest.approx(100.0, rel=1e-3)
    assert report.metrics()["p50"] == pytest.approx(1.0, rel=1e-3)
    assert report.errors == {"refused": 3, "timeout": 1}
    assert report.received == 100
    assert report.rate == 100.0
    assert report.timeline[0]["received"] == 100
    assert report.timeline[0]["p99"] == pytest.approx(100.0, rel=1e-3)
    assert report.peak_open == 4


def test_generator_saturation() -> None:
    busy = process([1.0])
    busy.cpu_seconds = 0.99
    report = Report(LoadConfig("ws://x/"), [busy])
    assert report.generator()["reliable"] is False
    assert "SATURATED" in report.summary()
    assert Report(LoadConfig("ws://x/"), [process([1.0])]).generator()["reliable"] is True


@pytest.mark.parametrize(
    ("text", "metric", "value", "crossed"),
    [
        ("p99>50ms", "p99", 50.0, True),
        ("p99 > 0.2 s", "p99", 200.0, False),
        ("p50>=500us", "p50", 0.5, True),
        ("errors>0", "errors", 0.0, True),
        ("rate<1000", "rate", 1000.0, True),
        ("p99.9<=1", "p99.9", 1.0, False),
    ],
)
def test_thresholds(text: str, metric: str, value: float, crossed: bool) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.value) == (metric, value)
    report = Report(LoadConfig("ws://x/"), [process([100.0], {"refused": 1})])
    assert threshold.crossed(report.metrics()) is crossed


@pytest.mark.parametrize("text", ["p98>1ms", "errors>1ms", "p99", "latency>5"])
def test_invalid_thresholds(text: str) -> None:
    with pytest.raises(ValueError, match="invalid threshold"):
        parse_threshold(text)


def test_json_hides_the_password() -> None:
    config = LoadConfig("ws://x/", client=ClientFlags(auth="ann:secret", header=("X-A: 1",)))
    document = Report(config, [process([1.0])]).to_json()
    assert "secret" not in json.dumps(document)
    assert json.loads(json.dumps(document))["config"]["client"]["header"] == ["X-A: 1"]


def test_json_csv_html_and_compare(tmp_path: Path) -> None:
    fast = Report(LoadConfig("ws://x/"), [process([1.0] * 10)])
    slow = Report(LoadConfig("ws://x/"), [process([2.0] * 10, {"timeout": 1})])
    paths = []
    for name, report in (("a", fast), ("b", slow)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report.to_json()))
        paths.append(path)
    first, second = load_report(str(paths[0])), load_report(str(paths[1]))
    assert first["latency_ms"]["latency"]["p50"] == pytest.approx(1.0, rel=1e-3)
    table = compare(first, second)
    assert "latency p50 ms" in table
    assert "+100.0%" in table
    fast.write_csv(str(tmp_path / "a.csv"))
    with open(tmp_path / "a.csv") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["received"] == "10"
    fast.write_html(str(tmp_path / "a.html"))
    page = (tmp_path / "a.html").read_text()
    assert "<svg" in page and "<polyline" in page and "p99" in page


def test_load_report_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a rapidws bench JSON report"):
        load_report(str(path))


def test_format_duration() -> None:
    assert format_duration(0.25) == "250 µs"
    assert format_duration(12.5) == "12.5 ms"
    assert format_duration(2500) == "2.5 s"
