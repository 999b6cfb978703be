"""Prometheus metrics of the background work: webhook delivery and balance recalculation. `meterd serve`
reports them when it runs that work itself, `meterd worker` on its health port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from meterd.workers.balance import BalanceWorker
    from meterd.workers.webhooks import WebhookWorker


def worker_metrics(webhooks: WebhookWorker | None, balances: BalanceWorker) -> Iterator[Metric]:
    if webhooks is not None:
        attempts = CounterMetricFamily("meterd_webhook_attempts", "Webhook delivery attempts", labels=["result"])
        attempts.add_metric(["ok"], webhooks.delivered)
        attempts.add_metric(["failed"], webhooks.failed_attempts)
        yield attempts
        yield GaugeMetricFamily(
            "meterd_webhook_sends_in_progress", "Webhook deliveries being sent now", value=webhooks.in_flight()
        )
        yield CounterMetricFamily(
            "meterd_webhook_outbox_errors",
            "Times the delivery outbox could not be read (metadata database unreachable)",
            value=webhooks.failures,
        )
    yield GaugeMetricFamily(
        "meterd_balance_recalculations_waiting",
        "Entitlements whose usage changed and whose notification thresholds are not yet checked",
        value=balances.waiting(),
    )
    yield CounterMetricFamily(
        "meterd_balance_recalculations",
        "Entitlement balances recalculated for notification rules",
        value=balances.published,
    )


class WorkerCollector(Collector):
    def __init__(self, webhooks: WebhookWorker | None, balances: BalanceWorker) -> None:
        self._webhooks = webhooks
        self._balances = balances

    def collect(self) -> Iterator[Metric]:
        yield from worker_metrics(self._webhooks, self._balances)
