"""Prometheus metrics of a `meterd sink` process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from meterd.bootstrap import SinkProcess


class SinkCollector(Collector):
    def __init__(self, process: SinkProcess) -> None:
        self._process = process

    def collect(self) -> Iterator[Metric]:
        sink, source = self._process.sink.stats, self._process.source.stats
        yield CounterMetricFamily(
            "meterd_sink_events_stored", "Events inserted into the event store", value=sink.events
        )
        yield CounterMetricFamily("meterd_sink_batches", "Batches inserted into the event store", value=sink.batches)
        yield GaugeMetricFamily(
            "meterd_sink_last_flush_seconds", "Duration of the last insert", value=sink.last_flush_s
        )
        yield GaugeMetricFamily("meterd_sink_failures", "Consecutive failed inserts", value=sink.failures)
        yield CounterMetricFamily("meterd_sink_messages", "Messages consumed from Kafka", value=source.messages)
        yield CounterMetricFamily(
            "meterd_sink_duplicates", "Events dropped as retries of an event already claimed", value=source.duplicates
        )
        yield CounterMetricFamily(
            "meterd_sink_undecodable", "Messages that were not meterd events (skipped)", value=source.undecodable
        )
        yield CounterMetricFamily(
            "meterd_sink_replayed_batches",
            "Batches found already stored after a restart or rebalance",
            value=source.replayed_batches,
        )
        yield GaugeMetricFamily(
            "meterd_sink_lag_events", "Events of this sink's partitions not yet stored", value=source.lag
        )
        yield GaugeMetricFamily(
            "meterd_sink_partitions", "Partitions assigned to this sink", value=len(source.assigned)
        )
        yield GaugeMetricFamily(
            "meterd_sink_buffered_events", "Events consumed and waiting for the event store", value=source.buffered
        )
        yield GaugeMetricFamily(
            "meterd_sink_paused_partitions",
            "Partitions not consumed because sink.max_batch events of theirs wait for the event store",
            value=source.paused,
        )
