"""Cluster mode end to end: two API nodes, two sinks, concurrent clients whose retries reuse event ids, and
faults (a sink SIGKILLed mid-batch, an API node SIGKILLed with requests in flight, the broker restarted).
Meter totals must equal an independent count of the acknowledged events, exactly."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.cluster.processes import Cluster
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

BATCH = "application/cloudevents-batch+json"


@dataclass
class Ledger:
    """What the clients know: every event acknowledged with a 204, by id (a retry acknowledges the same id)."""

    acked: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    refused: int = 0  # 429/503 and connection errors, each retried

    def ack(self, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            for event in batch:
                self.acked[event["id"]] = event["data"]["tokens"]

    @property
    def tokens(self) -> int:
        return sum(self.acked.values())


def _batch(type_: str, size: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "e2e",
            "type": type_,
            "subject": f"customer-{rng.randrange(20)}",
            "data": {"tokens": rng.randrange(1, 1000), "model": rng.choice(["gpt-4o", "claude", "llama"])},
        }
        for _ in range(size)
    ]


def _client(
    urls: Callable[[], list[str]], type_: str, ledger: Ledger, stop: threading.Event, seed: int, size: int = 50
) -> None:
    """Send batches to the nodes in turn. A batch that was not acknowledged is sent again, same ids, to the next
    node; one batch in ten is sent again even after its 204 (a client that missed the answer)."""
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            batch = _batch(type_, rng.choice([1, size]), rng)
            resend = rng.random() < 0.1
            attempt = 0
            while True:
                url = urls()[(seed + attempt) % len(urls())]
                attempt += 1
                try:
                    response = http.post(f"{url}/api/v1/events", json=batch, headers={"content-type": BATCH})
                except httpx.HTTPError:
                    ledger.refused += 1
                    time.sleep(0.2)
                    continue
                ledger.requests += 1
                if response.status_code == 204:
                    ledger.ack(batch)
                    if resend:
                        resend = False
                        continue
                    break
                assert response.status_code in (429, 503), response.text
                ledger.refused += 1
                time.sleep(float(response.headers.get("retry-after", "1")) / 4)


def _meter(node: str, slug: str, type_: str, aggregation: str = "SUM") -> None:
    body: dict[str, Any] = {
        "slug": slug,
        "eventType": type_,
        "aggregation": aggregation,
        "groupBy": {"model": "$.model"},
    }
    if aggregation != "COUNT":
        body["valueProperty"] = "$.tokens"
    response = httpx.post(f"{node}/api/v1/meters", json=body, timeout=30)
    assert response.status_code == 201, response.text


def _total(node: str, slug: str) -> float:
    response = httpx.get(f"{node}/api/v1/meters/{slug}/query", timeout=30)
    assert response.status_code == 200, response.text
    return sum(row["value"] for row in response.json()["data"])


def _settled(cluster: Cluster, slug: str, expected: float, timeout: float = 60.0) -> None:
    """Every node reports exactly `expected`, and still does a moment later (nothing arrives twice late)."""
    nodes = [node.url for node in cluster.nodes if node.process and node.process.poll() is None]
    wait_for(lambda: all(_total(url, slug) == expected for url in nodes), timeout=timeout, interval=0.5)
    time.sleep(1.5)
    assert [_total(url, slug) for url in nodes] == [expected] * len(nodes)


def _run_load(cluster: Cluster, type_: str, clients: int, during: Callable[[], None]) -> Ledger:
    ledger, stop = Ledger(), threading.Event()

    def live() -> list[str]:
        return [node.url for node in cluster.nodes if node.process and node.process.poll() is None]

    threads = [
        threading.Thread(target=_client, args=(live, type_, ledger, stop, seed), daemon=True) for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        during()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return ledger


def test_two_nodes_and_two_sinks_count_every_acknowledged_event_once(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(partitions=4)
    cluster.migrate()
    a, b = cluster.serve(), cluster.serve()
    cluster.sink(), cluster.sink()
    _meter(a.url, "tokens", "prompt")
    _meter(b.url, "calls", "prompt", "COUNT")
    ledger = _run_load(cluster, "prompt", clients=6, during=lambda: time.sleep(8))
    assert len(ledger.acked) > 500
    _settled(cluster, "tokens", ledger.tokens)
    _settled(cluster, "calls", len(ledger.acked))
    # the sinks dropped every resent event as a duplicate, and shared the partitions
    metrics = [sink.metrics() for sink in cluster.sinks]
    assert sum(m["meterd_sink_events_stored_total"] for m in metrics) == len(ledger.acked)
    assert sorted(m["meterd_sink_partitions"] for m in metrics) == [2, 2]
    assert [(m["meterd_sink_buffered_events"], m["meterd_sink_paused_partitions"]) for m in metrics] == [(0, 0)] * 2
    worker = cluster.worker().metrics()  # webhook delivery and balance recalculation
    assert worker['meterd_webhook_attempts_total{result="ok"}'] == 0
    assert worker["meterd_balance_recalculations_waiting"] == 0


def test_faults_lose_nothing_and_count_nothing_twice(cluster_factory: Callable[..., Cluster]) -> None:
    """A sink SIGKILLed mid-batch, an API node SIGKILLed with requests in flight, the broker restarted: every
    acknowledged event counts once. Each fault happens under load; the killed processes come back."""
    cluster = cluster_factory(partitions=4, METERD_SINK__MIN_BATCH="2000", METERD_SINK__MAX_WAIT="0.5")
    cluster.migrate()
    cluster.serve(), cluster.serve()
    cluster.sink(), cluster.sink()
    _meter(cluster.nodes[0].url, "tokens", "fault")

    def faults() -> None:
        rng = random.Random(7)
        for _ in range(2):
            time.sleep(rng.uniform(1.0, 2.5))
            victim = cluster.sinks[0]
            victim.kill()
            time.sleep(0.5)
            victim.start()
        time.sleep(1.5)
        node = cluster.nodes[1]
        node.kill()
        time.sleep(1.0)
        node.start()
        time.sleep(1.5)
        cluster.kafka.restart()
        time.sleep(3.0)

    ledger = _run_load(cluster, "fault", clients=6, during=faults)
    assert len(ledger.acked) > 500 and ledger.refused > 0
    _settled(cluster, "tokens", ledger.tokens, timeout=120)
