"""A sink's Kafka source holds a bounded number of messages while the event store does not take them: a
partition with a full buffer is paused (Kafka keeps the rest) and resumed as batches are stored, and the pause
neither skips nor repeats a message."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from confluent_kafka import Producer
from sqlalchemy import create_engine

from meterd.backends.kafka import codec
from meterd.backends.kafka.source import KafkaSource
from meterd.backends.sql.ledger import SinkLedger
from meterd.backends.sql.migrate import upgrade
from meterd.ingest.events import EventRecord
from meterd.settings import KafkaSettings
from tests.services.kafka import KafkaService
from tests.services.postgres import Databases

EVENTS = 6_000
CAP = 500


def _produce(bootstrap: str, topic: str, partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})  # keeps order
    for i in range(EVENTS):
        event = EventRecord(f"e{i}", "src", "t", "u", 1_700_000_000_000_000 + i, b'{"i":%d}' % i)
        producer.produce(topic, codec.encode("ns", event, 1_700_000_000_000_000), partition=i % partitions)
    assert producer.flush(30) == 0


def test_a_stalled_store_pauses_partitions_and_the_resume_loses_nothing(
    kafka: KafkaService, postgres: Databases
) -> None:
    topic, partitions = f"src-{uuid.uuid4().hex[:8]}", 2
    kafka.create_topic(topic, partitions)
    _produce(kafka.bootstrap, topic, partitions)
    url = postgres.create_database()
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap, topic=topic, consumer_group=f"g-{uuid.uuid4().hex}")
    source = KafkaSource(settings, SinkLedger(url, topic), dedup_window=timedelta(days=1), max_buffered=CAP)
    try:
        # the event store is down: the sink keeps asking what waits, and stores nothing
        deadline, most = time.monotonic() + 20, 0
        while time.monotonic() < deadline:
            depth, _ = source.waiting()
            most = max(most, depth)
            assert depth <= partitions * 2 * CAP
            if len(source._paused) == partitions:
                break
        assert len(source._paused) == partitions, "every partition reached its cap and was paused"
        for _ in range(20):  # paused: nothing more arrives
            assert source.waiting()[0] == most

        # the store is back: every message comes through once, in order per partition
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < EVENTS and time.monotonic() < deadline:
            source.waiting()
            batch = source.next_batch(CAP)
            if batch is None:
                continue
            seen.extend(int(row[2][1:]) for row in batch.rows)
            source.mark_stored(batch)
            assert source.waiting()[0] <= partitions * 2 * CAP
        assert sorted(seen) == list(range(EVENTS))
        for part in range(partitions):
            mine = [i for i in seen if i % partitions == part]
            assert mine == sorted(mine)
        assert not source._paused
    finally:
        source.close()
