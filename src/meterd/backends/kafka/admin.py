"""The events topic: created by `meterd migrate`, checked by `meterd config validate --connect`."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from meterd.backends.kafka.config import client_config
from meterd.settings import KafkaSettings

RETENTION_MS = 7 * 24 * 3600 * 1000  # a week: time to bring a stopped sink back without losing events


def topic_partitions(kafka: KafkaSettings, timeout: float = 10.0) -> int | None:
    """The events topic's partition count, or None when it does not exist."""
    admin = AdminClient(client_config(kafka, "admin"))
    metadata = admin.list_topics(timeout=timeout)
    topic = metadata.topics.get(kafka.topic)
    if topic is None or topic.error is not None:
        return None
    return len(topic.partitions)


def ensure_topic(kafka: KafkaSettings, timeout: float = 30.0) -> tuple[bool, int]:
    """Create the events topic if missing: (created, partitions). Two replicas must acknowledge every write
    when there are three or more (min.insync.replicas), so one broker can fail without losing an event."""
    existing = topic_partitions(kafka, timeout)
    if existing is not None:
        return False, existing
    admin = AdminClient(client_config(kafka, "admin"))
    config = {
        "min.insync.replicas": str(2 if kafka.replication_factor >= 3 else 1),
        "retention.ms": str(RETENTION_MS),
        "cleanup.policy": "delete",
    }
    futures = admin.create_topics(
        [
            NewTopic(
                kafka.topic, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor, config=config
            )
        ]
    )
    futures[kafka.topic].result(timeout)
    return True, kafka.partitions
