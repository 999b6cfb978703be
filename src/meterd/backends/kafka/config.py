"""librdkafka configuration from meterd's settings: connection and security shared by every client."""

from __future__ import annotations

import socket
from typing import Any

from meterd.settings import KafkaSettings


def client_config(kafka: KafkaSettings, role: str) -> dict[str, Any]:
    """Connection, TLS and SASL settings, plus the user's extra `kafka.properties` (which win over all)."""
    return {**_connection(kafka, role), **kafka.properties}


def _connection(kafka: KafkaSettings, role: str) -> dict[str, Any]:
    if not kafka.bootstrap_servers:
        raise ValueError("kafka.bootstrap_servers is not set")
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": f"meterd-{role}-{socket.gethostname()}",
        "security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    for key, path in (
        ("ssl.ca.location", kafka.ssl_ca_location),
        ("ssl.certificate.location", kafka.ssl_certificate_location),
        ("ssl.key.location", kafka.ssl_key_location),
    ):
        if path is not None:
            config[key] = str(path)
    if kafka.ssl_key_password:
        config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return config


def producer_config(kafka: KafkaSettings, max_queued_events: int) -> dict[str, Any]:
    """Durable and idempotent: acks from every in-sync replica, no duplicates from the producer's own retries.
    The partitioner is murmur2, as Java clients use, so every producer sends a key to the same partition."""
    return {
        **_connection(kafka, "api"),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": kafka.linger.total_seconds() * 1000,
        "message.timeout.ms": int(kafka.delivery_timeout.total_seconds() * 1000),
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": max_queued_events,
        **kafka.properties,
    }


def consumer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Offsets are committed by the sink itself, after the event store has a batch; a partition moving between
    sinks moves without stopping the others (cooperative rebalancing). A sink that died gives up its partitions
    after 10 s without a heartbeat, not librdkafka's default 45 s (heartbeats come from librdkafka's own thread,
    so a long flush does not miss them; a stuck sink is caught by max.poll.interval.ms)."""
    return {
        **_connection(kafka, "sink"),
        "group.id": kafka.consumer_group,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": False,
        **kafka.properties,
    }
