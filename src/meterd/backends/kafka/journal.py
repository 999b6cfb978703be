"""The API node's journal in cluster mode: events go to a Kafka topic, and the 204 waits for the brokers.

Each request's events are produced with an idempotent producer (acks=all) and the request waits for every
delivery report: the events are then on every in-sync replica. Dedup is not decided here: an API node keeps no
state, so a retried event is produced again and the sink drops it (claimed with the store write, see
meterd.backends.kafka.source). Overload is refused up front: a full producer queue is 429 and a consumer group
lagging beyond `sink.max_lag_events` is 503, both with Retry-After."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from meterd.backends.kafka import codec
from meterd.backends.kafka.config import client_config, producer_config
from meterd.core.errors import OverloadedError, UnavailableError
from meterd.core.timeutil import now_us
from meterd.ingest.events import EventRecord
from meterd.ingest.journal import AppendResult
from meterd.settings import KafkaSettings

log = logging.getLogger(__name__)

_LAG_EVERY_S = 2.0


@dataclass
class _Stats:
    events_written: int = 0
    duplicates: int = 0  # always 0 here: the sink drops retries
    delivery_failures: int = 0


class _Waiter:
    """One request's delivery reports, counted down in the producer's poll thread."""

    __slots__ = ("error", "future", "left", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.left = count
        self.error: KafkaError | None = None

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.left -= 1
        if self.left == 0:
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(UnavailableError(f"the event log did not take the events: {self.error.str()}"))


class KafkaJournal:
    def __init__(self, kafka: KafkaSettings, *, max_queued_events: int, max_lag_events: int) -> None:
        self._kafka = kafka
        self._topic = kafka.topic
        self._max_queued = max_queued_events
        self._max_lag = max_lag_events
        self._producer = Producer(producer_config(kafka, max_queued_events), logger=log)
        self._closing = threading.Event()
        self._fatal: str | None = None
        self._lag = 0
        self._lag_checked = 0.0  # monotonic time of the last successful lag reading
        self.stats = _Stats()
        self._poller = threading.Thread(target=self._poll, name="meterd-kafka-producer", daemon=True)
        self._poller.start()
        self._lag_thread = threading.Thread(target=self._watch_lag, name="meterd-kafka-lag", daemon=True)
        self._lag_thread.start()

    # -- the ingest side -------------------------------------------------------------------------

    async def append(self, namespace: str, events: Sequence[EventRecord]) -> AppendResult:
        if self._fatal is not None or self._closing.is_set():
            raise UnavailableError("the event log is not accepting writes", retry_after=5)
        if self._lag > self._max_lag:
            raise UnavailableError("the event store is behind the event log; retry shortly", retry_after=2)
        if len(self._producer) + len(events) > self._max_queued and len(self._producer):
            raise OverloadedError("ingest queue is full; retry shortly", retry_after=1)
        if not events:
            return AppendResult(0, 0)
        waiter = _Waiter(asyncio.get_running_loop(), len(events))
        ingested = now_us()
        produce = self._producer.produce
        for event in events:
            try:
                produce(
                    self._topic,
                    value=codec.encode(namespace, event, ingested),
                    key=codec.message_key(namespace, event.source, event.id),
                    on_delivery=waiter.report,
                )
            except BufferError:
                # the ones produced so far are delivered anyway; the client's retry is deduplicated by the sink
                waiter.future.cancel()
                raise OverloadedError("ingest queue is full; retry shortly", retry_after=1) from None
            except KafkaException as exc:
                waiter.future.cancel()
                raise UnavailableError(f"the event log is not accepting writes: {exc}", retry_after=5) from None
        await waiter.future
        self.stats.events_written += len(events)
        return AppendResult(len(events), 0)

    def depth(self) -> int:
        """Events in the topic not yet in the event store (the sinks' consumer-group lag), as last read."""
        return self._lag

    def waiting(self) -> tuple[int, int | None]:
        return self._lag, None

    def queued(self) -> int:
        """Events produced but not yet acknowledged by the brokers."""
        return len(self._producer)

    def healthy(self) -> bool:
        reachable = time.monotonic() - self._lag_checked < 30
        return self._fatal is None and self._poller.is_alive() and reachable

    def close(self) -> None:
        self._closing.set()
        self._poller.join(timeout=10)
        left = self._producer.flush(self._kafka.delivery_timeout.total_seconds())
        if left:
            log.error("%d events were still unacknowledged at shutdown; their requests got no 204", left)
        self._lag_thread.join(timeout=10)

    # -- threads ---------------------------------------------------------------------------------

    def _poll(self) -> None:
        """Serve delivery reports as they come (poll returns as soon as one is served)."""
        while not self._closing.is_set():
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:  # a fatal producer error: this node stops taking events
                error: Any = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.fatal():
                    self._fatal = error.str()
                    log.error("the Kafka producer failed for good (%s); restart this node", self._fatal)
                    return
                log.warning("Kafka producer: %s", exc)

    def _watch_lag(self) -> None:
        """Every few seconds: how far the sinks' consumer group is behind the topic's end."""
        consumer: Consumer | None = None
        while not self._closing.wait(0 if consumer is None else _LAG_EVERY_S):
            try:
                if consumer is None:
                    consumer = Consumer(
                        {**client_config(self._kafka, "api-lag"), "group.id": self._kafka.consumer_group}
                    )
                self._lag = consumer_lag(consumer, self._topic)
                self._lag_checked = time.monotonic()
            except KafkaException as exc:
                log.warning("reading the sinks' lag failed: %s", exc)
        if consumer is not None:
            consumer.close()


def consumer_lag(consumer: Consumer, topic: str, timeout: float = 5.0) -> int:
    """Messages between the group's committed offsets and the end of each partition of `topic`."""
    metadata = consumer.list_topics(topic, timeout=timeout)
    partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
    if not partitions:
        return 0
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    lag = 0
    for tp in committed:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
        start = tp.offset if tp.offset >= 0 else low
        lag += max(0, high - start)
    return lag
