"""The results of ``rapidws bench``: merged, summarized, exported, compared.

The processes' results merge exactly (counters add up, HDR histograms add
up); the report is a JSON document with every histogram encoded (the
HdrHistogram V2 "histoblob" that HdrHistogram tools decode), so that a later
``rapidws bench compare A.json B.json`` reads the distributions, not only
the percentiles printed at the time. The latency-over-time plot is an HTML
page with an inline SVG drawn here: no plotting library.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from .loadgen import LoadConfig, ProcessResult, Snapshot, new_histogram

__all__ = [
    "PERCENTILES",
    "Report",
    "Threshold",
    "compare",
    "format_duration",
    "load_report",
    "parse_threshold",
    "timeline_row",
]

#: The percentiles of every latency in the report.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# The generator is saturated above this share of one core, or this loop lag
# (p99, seconds): its own queueing then shows up as the server's latency.
SATURATED_CPU = 0.9
SATURATED_LAG = 0.02
# What each histogram is called in the summary, in its order.
LABELS = {
    "latency": "latency",
    "uncorrected": "uncorrected",
    "send_lag": "send lag",
    "handshake": "handshake",
    "tcp_connect": "tcp connect",
    "tls": "tls",
    "upgrade": "upgrade",
    "loop_lag": "loop lag",
}
_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "": 1.0}


def _decode(encoded: str) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode())
    return histogram


def _merge(encoded: Iterable[str]) -> HdrHistogram:
    merged = new_histogram()
    for one in encoded:
        merged.decode_and_add(one.encode())
    return merged


def _stats(histogram: HdrHistogram) -> dict[str, float]:
    # Milliseconds, from microseconds.
    stats: dict[str, float] = {"count": histogram.get_total_count()}
    for percentile in PERCENTILES:
        stats[f"p{percentile:g}"] = histogram.get_value_at_percentile(percentile) / 1e3
    stats["max"] = histogram.get_max_value() / 1e3
    stats["mean"] = histogram.get_mean_value() / 1e3
    return stats


def format_duration(milliseconds: float) -> str:
    """Format a duration in milliseconds with a unit that suits it."""
    if milliseconds < 1:
        return f"{milliseconds * 1e3:.0f} µs"
    if milliseconds < 1000:
        return f"{milliseconds:.3g} ms"
    return f"{milliseconds / 1e3:.3g} s"


class Report:
    """A whole run: its configuration and every process's results, merged."""

    def __init__(self, config: LoadConfig, processes: Sequence[ProcessResult]) -> None:
        self.config = config
        self.processes = len(processes)
        self.seconds = max((p.seconds for p in processes), default=0.0)
        self.cpu_seconds = sum(p.cpu_seconds for p in processes)
        self.sent = sum(p.sent for p in processes)
        self.received = sum(p.received for p in processes)
        self.bytes_sent = sum(p.bytes_sent for p in processes)
        self.bytes_received = sum(p.bytes_received for p in processes)
        self.handshakes = sum(p.handshakes for p in processes)
        self.peak_open = sum(p.peak_open for p in processes)
        self.errors: dict[str, int] = {}
        for process in processes:
            for kind, count in process.errors.items():
                self.errors[kind] = self.errors.get(kind, 0) + count
        names = {name for process in processes for name in process.histograms}
        self.histograms = {
            name: _merge(p.histograms[name] for p in processes if name in p.histograms)
            for name in LABELS
            if name in names
        }
        self.timeline = _timeline(processes)

    @property
    def main(self) -> str:
        """The histogram the thresholds and the plot use: handshakes for churn."""
        return "handshake" if self.config.workload == "churn" else "latency"

    @property
    def rate(self) -> float:
        """Replies (or handshakes, for churn) per second."""
        done = self.handshakes if self.config.workload == "churn" else self.received
        return done / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_second(self) -> float:
        """Bytes sent and received per second."""
        total = self.bytes_sent + self.bytes_received
        return total / self.seconds if self.seconds else 0.0

    def generator(self) -> dict[str, Any]:
        """Return the load generator's own health: CPU, loop lag, whether to trust the run."""
        cpu = self.cpu_seconds / self.seconds / self.processes if self.seconds else 0.0
        lag = self.histograms.get("loop_lag")
        lag_p99 = lag.get_value_at_percentile(99) / 1e6 if lag is not None else 0.0
        warnings = []
        if cpu >= SATURATED_CPU:
            warnings.append(f"the generator used {cpu:.0%} of a core per process")
        if lag_p99 >= SATURATED_LAG:
            warnings.append(f"its event loop ran {lag_p99 * 1e3:.0f} ms late (p99)")
        return {
            "cpu": round(cpu, 3),
            "loop_lag_p99_ms": round(lag_p99 * 1e3, 3),
            "reliable": not warnings,
            "warnings": warnings,
        }

    def metrics(self) -> dict[str, float]:
        """Return the values that thresholds check (latencies in ms)."""
        values: dict[str, float] = {
            "errors": sum(self.errors.values()),
            "rate": self.rate,
            "connections": self.peak_open,
        }
        main = self.histograms.get(self.main)
        if main is not None:
            values.update(_stats(main))
        return values

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-serializable document."""
        config = asdict(self.config)
        del config["process"]
        if self.config.client.auth is not None:
            config["client"]["auth"] = "(hidden)"  # a report is shared; a password is not
        return {
            "rapidws_bench": 1,
            "config": config,
            "processes": self.processes,
            "seconds": self.seconds,
            "sent": self.sent,
            "received": self.received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "handshakes": self.handshakes,
            "peak_open": self.peak_open,
            "rate": self.rate,
            "bytes_per_second": self.bytes_per_second,
            "errors": self.errors,
            "latency_ms": {name: _stats(h) for name, h in self.histograms.items()},
            "generator": self.generator(),
            "histograms": {name: h.encode().decode() for name, h in self.histograms.items()},
            "timeline": [
                {key: value for key, value in row.items() if key != "totals"}
                for row in self.timeline
            ],
        }

    def write_csv(self, path: str) -> None:
        """Write the timeline: one row per second."""
        fields = ["second", "sent", "received", "errors", "open", "p50", "p99", "max"]
        fields += ["cpu", "lag_ms"]
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.timeline)

    def summary(self) -> str:
        """Return the summary table, as plain text."""
        config = self.config
        unit = "handshakes" if config.workload == "churn" else "replies"
        lines = [
            f"rapidws bench {config.url}: {config.workload}, {self.peak_open} connections "
            f"(peak), {self.processes} process{'es' if self.processes > 1 else ''}, "
            f"{self.seconds:.1f} s",
            f"messages   {self.sent:,} sent, {self.received:,} received, "
            f"{self.rate:,.0f} {unit}/s, "
            f"{self.bytes_per_second / 1e6:.2f} MB/s",
            f"handshakes {self.handshakes:,}",
            "",
            f"{'':14}"
            + "".join(f"{f'p{p:g}':>10}" for p in PERCENTILES)
            + f"{'max':>10}"
            + f"{'count':>10}",
        ]
        for name, histogram in self.histograms.items():
            stats = _stats(histogram)
            cells = [format_duration(stats[f"p{p:g}"]) for p in PERCENTILES]
            cells.append(format_duration(stats["max"]))
            lines.append(
                f"{LABELS[name]:14}"
                + "".join(f"{cell:>10}" for cell in cells)
                + f"{histogram.get_total_count():>10,}"
            )
        lines.append("")
        errors = ", ".join(f"{kind} {count:,}" for kind, count in sorted(self.errors.items()))
        lines.append(f"errors     {errors or 'none'}")
        generator = self.generator()
        health = f"CPU {generator['cpu']:.0%} of a core, loop lag p99 "
        health += f"{generator['loop_lag_p99_ms']:.1f} ms"
        if not generator["reliable"]:
            health += (
                "\n           SATURATED: "
                + "; ".join(generator["warnings"])
                + ": results unreliable (the server may be faster; use --processes)"
            )
        lines.append(f"generator  {health}")
        return "\n".join(lines)

    def write_html(self, path: str) -> None:
        """Write an HTML report: latency over time (inline SVG) and the summary."""
        page = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>rapidws bench {html.escape(self.config.url)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;"
            "padding:1em}</style></head><body>\n"
            f"<h1>rapidws bench {html.escape(self.config.url)}</h1>\n"
            f"<h2>{LABELS[self.main]} over time</h2>\n{latency_svg(self.timeline)}\n"
            f"<h2>Summary</h2>\n<pre>{html.escape(self.summary())}</pre>\n</body></html>\n"
        )
        with open(path, "w", encoding="utf-8") as file:
            file.write(page)


def _timeline(processes: Sequence[ProcessResult]) -> list[dict[str, Any]]:
    # Second by second, every process's snapshot of that second merged.
    length = max((len(p.timeline) for p in processes), default=0)
    rows: list[dict[str, Any]] = []
    for index in range(length):
        snapshots = [p.timeline[index] for p in processes if index < len(p.timeline)]
        rows.append(timeline_row(snapshots, rows[-1] if rows else None))
    return rows


def timeline_row(snapshots: Sequence[Snapshot], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Merge the processes' snapshots of one second into a row of the timeline.

    The counters of a snapshot are totals since the start: the row has their
    difference with the ``previous`` row's totals.
    """
    totals = {
        "sent": sum(s.sent for s in snapshots),
        "received": sum(s.received for s in snapshots),
        "errors": sum(s.errors for s in snapshots),
    }
    before = previous["totals"] if previous is not None else dict.fromkeys(totals, 0)
    latency = _merge(s.latency for s in snapshots)
    return {
        "second": snapshots[0].second,
        **{key: totals[key] - before[key] for key in totals},
        "open": sum(s.open for s in snapshots),
        "p50": latency.get_value_at_percentile(50) / 1e3,
        "p99": latency.get_value_at_percentile(99) / 1e3,
        "max": latency.get_max_value() / 1e3,
        "cpu": round(sum(s.cpu for s in snapshots) / len(snapshots), 3),
        "lag_ms": round(max(s.lag for s in snapshots) * 1e3, 3),
        "totals": totals,
    }


def latency_svg(timeline: Sequence[dict[str, Any]], width: int = 720, height: int = 300) -> str:
    """Draw p50, p99 and max latency per second as an SVG line chart."""
    left, bottom, top, right = 60, 30, 20, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max([row["max"] for row in timeline] + [0.001])
    seconds = max(len(timeline), 1)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"font-size='11' font-family='sans-serif'>",
        # Opaque: readable on a dark page too (a README, an image viewer).
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='none' "
        "stroke='#999'/>",
        f"<text x='4' y='{top + 10}'>{html.escape(format_duration(top_value))}</text>",
        f"<text x='4' y='{top + plot_h}'>0</text>",
        f"<text x='{left + plot_w - 60}' y='{height - 8}'>{seconds} s</text>",
    ]
    for key, colour, offset in (
        ("p50", "#1b7837", 0),
        ("p99", "#d95f02", 1),
        ("max", "#7570b3", 2),
    ):
        points = " ".join(
            f"{left + plot_w * (i + 1) / seconds:.1f},"
            f"{top + plot_h * (1 - row[key] / top_value):.1f}"
            for i, row in enumerate(timeline)
        )
        parts.append(
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{points}'/>"
        )
        parts.append(
            f"<text x='{left + 10 + 50 * offset}' y='{height - 8}' fill='{colour}'>{key}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Threshold:
    """A condition that fails the run when it holds: ``p99>50ms``, ``errors>0``."""

    metric: str
    operator: str
    value: float
    text: str

    def crossed(self, metrics: dict[str, float]) -> bool:
        """Whether the condition holds for these metrics."""
        actual = metrics.get(self.metric, 0.0)
        return {
            ">": actual > self.value,
            ">=": actual >= self.value,
            "<": actual < self.value,
            "<=": actual <= self.value,
        }[self.operator]


_THRESHOLD = re.compile(
    r"^\s*(p50|p90|p99|p99\.9|max|mean|errors|rate|connections)\s*(>=|<=|>|<)\s*"
    r"([0-9]+(?:\.[0-9]*)?)\s*(us|µs|ms|s)?\s*$"
)


def parse_threshold(text: str) -> Threshold:
    """Parse ``METRIC OP VALUE[UNIT]``: ``p99>50ms``, ``errors>0``, ``rate<1000``.

    Latencies (``p50``, ``p90``, ``p99``, ``p99.9``, ``max``, ``mean``) are in
    milliseconds unless a unit (``us``, ``ms``, ``s``) says otherwise.

    Raises:
        ValueError: for anything else.
    """
    match = _THRESHOLD.match(text)
    if match is None:
        raise ValueError(
            f"invalid threshold {text!r}: expected METRIC OP VALUE, e.g. 'p99>50ms' or "
            "'errors>0' (metrics: p50 p90 p99 p99.9 max mean errors rate connections)"
        )
    metric, operator, value, unit = match.groups()
    if unit and metric in ("errors", "rate", "connections"):
        raise ValueError(f"invalid threshold {text!r}: {metric} has no unit")
    return Threshold(metric, operator, float(value) * _UNITS[unit or ""], text.strip())


def compare(first: dict[str, Any], second: dict[str, Any]) -> str:
    """Compare two JSON reports: rate, errors and latency percentiles, with changes."""
    rows = [("rate /s", first["rate"], second["rate"])]
    rows.append(("errors", sum(first["errors"].values()), sum(second["errors"].values())))
    for name, label in LABELS.items():
        if name in first["histograms"] and name in second["histograms"]:
            a = _stats(_decode(first["histograms"][name]))
            b = _stats(_decode(second["histograms"][name]))
            for key in [f"p{p:g}" for p in PERCENTILES] + ["max"]:
                rows.append((f"{label} {key} ms", a[key], b[key]))
    lines = [f"{'':24}{'A':>14}{'B':>14}{'change':>10}"]
    for label, a, b in rows:
        change = f"{(b - a) / a:+.1%}" if a else "-"
        lines.append(f"{label:24}{a:>14,.3f}{b:>14,.3f}{change:>10}")
    return "\n".join(lines)


def load_report(path: str) -> dict[str, Any]:
    """Read a JSON report written by ``--json``.

    Raises:
        ValueError: when the file is not a ``rapidws bench`` report.
    """
    with open(path, encoding="utf-8") as file:
        report: Any = json.load(file)
    if not isinstance(report, dict) or report.get("rapidws_bench") != 1:
        raise ValueError(f"{path} is not a rapidws bench JSON report")
    return report
