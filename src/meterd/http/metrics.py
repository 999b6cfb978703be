"""Prometheus metrics for ingest rate, journal depth and sink lag."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meterd.backends.sqlite.journal import SQLiteJournal
from meterd.workers.worker_metrics import worker_metrics

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.core import Metric

    from meterd.bootstrap import Services
    from meterd.workers.sink import SinkStats


class _State(Collector):
    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        svc = self._services
        depth, oldest = svc.ingest.waiting()
        yield GaugeMetricFamily(
            "meterd_journal_depth_events", "Events in the journal not yet in the event store", value=depth
        )
        lag = max(0.0, time.time() - oldest / 1e6) if oldest else 0.0
        yield GaugeMetricFamily(
            "meterd_sink_lag_seconds", "Age of the oldest event not yet in the event store", value=lag
        )
        yield GaugeMetricFamily(
            "meterd_ingest_queue_events",
            "Events waiting for the journal's group commit",
            value=svc.ingest.queued(),
        )
        yield GaugeMetricFamily(
            "meterd_journal_events_written",
            "Events written to the journal since start",
            value=svc.ingest.stats.events_written,
        )
        yield GaugeMetricFamily(
            "meterd_journal_duplicates",
            "Duplicate events dropped since start",
            value=svc.ingest.stats.duplicates,
        )
        if isinstance(svc.ingest, SQLiteJournal):
            yield GaugeMetricFamily(
                "meterd_data_dir_free_bytes", "Free space for the data directory", value=svc.ingest.free_bytes()
            )
        yield from worker_metrics(svc.webhooks, svc.balance_worker)
        if svc.sink is None:  # cluster mode: the sinks are `meterd sink` processes with their own metrics
            return
        yield from sink_metrics(svc.sink.stats)


def sink_metrics(stats: SinkStats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "meterd_sink_events_stored", "Events moved into the event store since start", value=stats.events
    )
    yield GaugeMetricFamily(
        "meterd_sink_last_flush_seconds", "Duration of the last sink flush", value=stats.last_flush_s
    )


class Metrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meterd_http_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "meterd_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested = Counter(
            "meterd_ingest_events", "Events acknowledged by the ingest endpoint", ["outcome"], registry=self.registry
        )
        self.registry.register(_State(services))
