"""The test Kafka broker (tests/services/kafka.py) is a real one: an idempotent acks=all producer's messages come
back exactly through a consumer group, and a graceful restart or a SIGKILL keeps acknowledged messages and
committed offsets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.services.kafka import ExternalKafka, KafkaService

Record = tuple[int | None, bytes | None, bytes | None]  # (partition, key, value)


@pytest.fixture
def broker(kafka: KafkaService) -> Iterator[KafkaService]:
    """The session broker, running again after the test whatever the test did to it."""
    yield kafka
    kafka.start()


def produce(kafka: KafkaService, topic: str, count: int, start: int = 0) -> list[Record]:
    """Send `count` messages with an idempotent acks=all producer; return those acknowledged, in order."""
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    acked: list[Record] = []
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.key(), msg.value()))

    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i % 7}".encode(), value=f"m{i}".encode(), on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    return acked


def consume(kafka: KafkaService, topic: str, group: str, count: int, commit: bool = True) -> list[Record]:
    """Read `count` messages in consumer group `group` (from the committed offsets, else the beginning)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    got: list[Record] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(got), timeout=0.5):
                assert msg.error() is None, msg.error()
                got.append((msg.partition(), msg.key(), msg.value()))
        if commit and got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def end_offsets(kafka: KafkaService, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "watermarks"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def committed(kafka: KafkaService, topic: str, group: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def by_partition(records: list[Record]) -> dict[int | None, list[Record]]:
    out: dict[int | None, list[Record]] = {}
    for record in records:
        out.setdefault(record[0], []).append(record)
    return out


def new_topic(kafka: KafkaService, partitions: int) -> str:
    name = f"test-{uuid.uuid4().hex[:10]}"
    kafka.create_topic(name, partitions)
    return name


def test_messages_come_back_exactly_through_a_consumer_group(kafka: KafkaService) -> None:
    topic = new_topic(kafka, 3)
    sent = produce(kafka, topic, 3000)
    assert len(sent) == 3000

    got = consume(kafka, topic, "exact", 3000)

    assert by_partition(got) == by_partition(sent)  # same messages, same order in each partition
    assert sum(end_offsets(kafka, topic, 3)) == 3000  # and nothing else in the log: no duplicates
    assert committed(kafka, topic, "exact", 3) == end_offsets(kafka, topic, 3)  # and the group is at the end


def test_a_restart_keeps_messages_and_committed_offsets(broker: KafkaService) -> None:
    topic = new_topic(broker, 2)
    sent = produce(broker, topic, 200)
    first = consume(broker, topic, "restart", 200)
    more = produce(broker, topic, 50, start=200)
    positions = committed(broker, topic, "restart", 2)

    broker.restart()

    assert committed(broker, topic, "restart", 2) == positions
    assert by_partition(consume(broker, topic, "restart", 50)) == by_partition(more)  # resumes where it committed
    assert by_partition(consume(broker, topic, "after-restart", 250)) == by_partition(sent + more)
    assert first and sum(end_offsets(broker, topic, 2)) == 250


def test_a_killed_broker_keeps_acknowledged_messages_and_offsets(broker: KafkaService) -> None:
    topic = new_topic(broker, 2)
    read = produce(broker, topic, 1200)
    assert len(consume(broker, topic, "kill", 1200)) == 1200
    positions = committed(broker, topic, "kill", 2)
    unread = produce(broker, topic, 800, start=1200)

    broker.kill()  # SIGKILL the moment the last acknowledgement arrived: no shutdown work at all
    broker.start()

    assert committed(broker, topic, "kill", 2) == positions
    assert sum(end_offsets(broker, topic, 2)) == 2000
    assert by_partition(consume(broker, topic, "after-kill", 2000)) == by_partition(read + unread)
    assert by_partition(consume(broker, topic, "kill", 800)) == by_partition(unread)  # resumes at its offsets


def test_an_external_broker_is_used_but_never_stopped(kafka: KafkaService) -> None:
    external = ExternalKafka(kafka.bootstrap)
    external.wait_ready(timeout=10)
    topic = new_topic(external, 1)
    assert len(produce(external, topic, 10)) == 10
    with pytest.raises(pytest.skip.Exception):
        external.restart()
    with pytest.raises(pytest.skip.Exception):
        external.kill()
