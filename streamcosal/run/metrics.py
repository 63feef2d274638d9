"""Live health: per-source numbers in Prometheus' text format, the run report and a log line.

    metrics = LiveMetrics()
    stats = metrics.add(reader, run)             # a live source of the run
    stats.record(latency_s)                      # by the sink, per result row
    with metrics.serving(9108): ...              # http://127.0.0.1:9108/metrics meanwhile
    metrics.log()                                # INFO "live: cam: 250 received, 120 processed, ..."
    run.live = stats.summary()                   # into runs/<run_id>.json

Exported (labels source and group): streamcosal_frames_received_total, _processed_total,
_dropped_total, streamcosal_reconnects_total, streamcosal_buffer_frames,
streamcosal_window_frames (the source's frames in the latest window, sized for the latency target),
streamcosal_processing_fps (results per second over the last 10 s),
streamcosal_latency_seconds{quantile="0.5"|"0.95"} (capture to result, over the last 512
results) and streamcosal_last_frame_timestamp_seconds (Unix time the last frame arrived).
The numbers are read from the readers and runs when scraped: nothing is counted twice. The run
report's latency p50/p95/max cover the whole run in bounded memory (`LatencyHistogram`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamcosal.run.live import LiveReader
from streamcosal.run.records import LiveSummary

if TYPE_CHECKING:
    from streamcosal.run.records import SourceRun

logger = logging.getLogger(__name__)

RECENT = 512  # results the latency quantiles are computed over
FPS_SPAN_S = 10.0  # seconds the processing rate is measured over


class LatencyHistogram:
    """Latencies of a whole run in bounded memory: counts in log-spaced buckets, each 2% wider than
    the one before, from 1 ms to a day (923 buckets, plus one below and one above), and the exact
    maximum. A quantile is its bucket's geometric middle: within 1% of the exact one (Prometheus'
    histograms work the same way, with fewer buckets)."""

    LOW_S, HIGH_S, GROWTH = 1e-3, 86400.0, 1.02
    EDGES = LOW_S * GROWTH ** np.arange(math.ceil(math.log(HIGH_S / LOW_S, GROWTH)) + 1)

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)  # [< LOW_S, buckets, >= the last edge]
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.counts[np.searchsorted(self.EDGES, seconds, side="right")] += 1
        self.max = max(self.max, seconds)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q <= 1) of what was added; not before the first."""
        bucket = int(np.searchsorted(np.cumsum(self.counts), q * self.count))
        if bucket == 0:
            return min(self.LOW_S, self.max)
        if bucket == len(self.EDGES):
            return self.max
        return min(math.sqrt(self.EDGES[bucket - 1] * self.EDGES[bucket]), self.max)


@dataclass
class LiveStats:
    """One live source: its reader, its run record, the latencies of its results (the recent ones,
    and the whole run's in a `LatencyHistogram`)."""

    reader: LiveReader
    run: SourceRun
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)
    recent: collections.deque[tuple[float, float]] = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    started: float = field(default_factory=time.monotonic)

    def record(self, latency_s: float) -> None:
        """A result of this source was written `latency_s` seconds after its frame arrived."""
        self.latencies.add(latency_s)
        self.recent.append((time.monotonic(), latency_s))

    def quantiles(self, recent: bool = True) -> tuple[float, float, float] | None:
        """(p50, p95, max) latency of the recent results (exact) or of all (`LatencyHistogram`: within
        1%), None before the first."""
        if not recent:
            whole = self.latencies
            return (whole.quantile(0.5), whole.quantile(0.95), whole.max) if whole.count else None
        values = np.array([v for _, v in list(self.recent)])  # list(): one step, while the sink thread appends
        if not len(values):
            return None
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95), float(values.max())

    @property
    def fps(self) -> float:
        """Results per second over the last FPS_SPAN_S seconds (or since the source started)."""
        now = time.monotonic()
        span = min(FPS_SPAN_S, now - self.started)
        recent = sum(1 for t, _ in list(self.recent) if t > now - FPS_SPAN_S)
        return recent / span if span > 0 else 0.0

    def summary(self, max_latency_s: float | None = None) -> LiveSummary:
        """The source's numbers for the run report; ``max_latency_s``: the latency target its windows kept to."""
        q = self.quantiles(recent=False)
        c = self.reader.counters
        return LiveSummary(self.reader.policy, c.received, self.run.frames, c.dropped,
                           self.reader.source.report.reconnects, *(q if q else (None, None, None)), max_latency_s)


class LiveMetrics(Collector):
    """Every live source of a run; a Prometheus collector of their numbers."""

    def __init__(self) -> None:
        self.stats: list[LiveStats] = []
        self.url: str | None = None
        """Where the metrics are served while :meth:`serving` (``http://127.0.0.1:PORT/metrics``, the port
        the system chose for port 0), else None."""

    def add(self, reader: LiveReader, run: SourceRun) -> LiveStats:
        stats = LiveStats(reader, run)
        self.stats.append(stats)
        return stats

    @contextlib.contextmanager
    def serving(self, port: int | None, host: str = "127.0.0.1") -> Iterator[None]:
        """While inside, serve /metrics on host:port from a daemon thread (nothing when port is None);
        port 0 takes a free port the system chooses. Logs where (INFO ``metrics at
        http://127.0.0.1:PORT/metrics``, the port actually bound) and keeps it in ``url``.

        Raises OSError naming the port when it cannot be bound (e.g. in use)."""
        if port is None:
            yield
            return
        registry = CollectorRegistry()
        registry.register(self)
        try:
            server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            raise OSError(f"metrics port {port} on {host} cannot be used ({error.strerror or error}); "
                          "choose another --metrics-port (a camera file's metrics: {port: ...}), or stop what "
                          "listens there") from error
        bound = server.server_address[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/metrics"
        logger.info("metrics at %s%s", self.url, " (a free port, as --metrics-port 0 asks)" if port == 0 else "")
        try:
            yield
        finally:
            self.url = None
            server.shutdown()
            server.server_close()

    def collect(self) -> Iterator[Metric]:
        labels = ["source", "group"]
        families = {
            "received": CounterMetricFamily("streamcosal_frames_received", "Frames decoded from the source.", labels=labels),
            "processed": CounterMetricFamily("streamcosal_frames_processed", "Frames segmented, results written.", labels=labels),
            "dropped": CounterMetricFamily("streamcosal_frames_dropped", "Frames dropped by the drop policy.", labels=labels),
            "reconnects": CounterMetricFamily("streamcosal_reconnects", "Reconnections after a drop.", labels=labels),
            "buffer": GaugeMetricFamily("streamcosal_buffer_frames", "Frames waiting in the reader's buffer.", labels=labels),
            "window": GaugeMetricFamily("streamcosal_window_frames", "Frames of the source in the latest window.",
                                        labels=labels),
            "fps": GaugeMetricFamily("streamcosal_processing_fps", "Results per second, recent.", labels=labels),
            "latency": GaugeMetricFamily("streamcosal_latency_seconds", "Capture to result, recent results.",
                                         labels=[*labels, "quantile"]),
            "last": GaugeMetricFamily("streamcosal_last_frame_timestamp_seconds", "Unix time the last frame arrived.",
                                      labels=labels),
        }
        for s in self.stats:
            key = [s.reader.name, s.run.group]
            c = s.reader.counters
            families["received"].add_metric(key, c.received)
            families["processed"].add_metric(key, s.run.frames)
            families["dropped"].add_metric(key, c.dropped)
            families["reconnects"].add_metric(key, s.reader.source.report.reconnects)
            families["buffer"].add_metric(key, s.reader.depth)
            families["window"].add_metric(key, s.reader.window)
            families["fps"].add_metric(key, s.fps)
            q = s.quantiles()
            if q is not None:
                families["latency"].add_metric([*key, "0.5"], q[0])
                families["latency"].add_metric([*key, "0.95"], q[1])
            if c.last_captured is not None:
                families["last"].add_metric(key, c.last_captured)
        yield from families.values()

    def log(self) -> None:
        """Log (INFO, logger streamcosal.run.metrics) the status of every live source on one line."""
        logger.info("live: %s", self.log_line())

    def log_line(self) -> str:
        """One part per live source: counts, rate, latency, window, buffer, reconnects."""
        lines = []
        for s in self.stats:
            c, q = s.reader.counters, s.quantiles()
            latency = f"latency p50 {q[0]:.2f} s p95 {q[1]:.2f} s" if q else "no result yet"
            lines.append(f"{s.reader.name}: {c.received} received, {s.run.frames} processed, {c.dropped} dropped "
                         f"({s.reader.policy}), {s.fps:.1f} frames/s, {latency}, window {s.reader.window}, "
                         f"buffer {s.reader.depth}, {s.reader.source.report.reconnects} reconnects")
        return "; ".join(lines)
