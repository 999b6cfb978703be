"""The sink's side of the Kafka journal (cluster mode): a consumer-group member handing batches to the Sink.

Batches are runs of one partition's messages. The sink ledger (meterd.backends.sql.ledger) records each
batch's plan before the insert and decides which messages are first claims of their dedup key; offsets are
committed only after the batch is in the event store and marked stored. After a crash, a rebalance or a
broker restart, the partition resumes at its committed offset and the recorded plan is replayed exactly: a
batch marked stored is skipped, an unmarked one is inserted again with the same deduplication token.

Memory is bounded while the event store is down or slow: a partition with `max_buffered` messages buffered is
paused (Kafka keeps the rest) and resumed once half of them are stored. A partition whose recorded plan needs
more messages than that (sink.max_batch was lowered since) is let through until the plan can be replayed."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from meterd.backends.kafka import codec
from meterd.backends.kafka.config import consumer_config
from meterd.backends.sql.ledger import Plan, SinkLedger, dedup_key
from meterd.ingest.journal import JournalBatch, JournalRow
from meterd.settings import KafkaSettings

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 600.0
_LAG_EVERY_S = 2.0
_MAX_POLL = 10_000

# an event's row without its seq: (namespace, id, source, type, subject, time_us, data, ingested_us)
_Row = tuple[str, str, str, str, str, int, bytes, int]


@dataclass(slots=True)
class _Message:
    offset: int
    key: bytes  # the dedup key (16 bytes)
    row: _Row | None  # None: a message meterd cannot read (skipped, counted)
    ingested_us: int


@dataclass
class SourceStats:
    messages: int = 0
    duplicates: int = 0
    undecodable: int = 0
    replayed_batches: int = 0
    lag: int = 0  # of the partitions this sink holds, as last read
    buffered: int = 0  # messages consumed and waiting for the event store
    paused: int = 0  # partitions paused because their buffer is full
    assigned: list[int] = field(default_factory=list)


class KafkaSource:
    """A JournalSource (see meterd.ingest.journal) over a Kafka consumer group. One sink thread uses it."""

    def __init__(
        self, kafka: KafkaSettings, ledger: SinkLedger, *, dedup_window: timedelta, max_buffered: int = 100_000
    ) -> None:
        self._topic = kafka.topic
        self._max_buffered = max_buffered  # per partition, plus at most one poll's worth (as many again)
        self._paused: set[int] = set()
        self._short: set[int] = set()  # partitions whose recorded plan waits for messages not buffered yet
        self._ledger = ledger
        self._window = dedup_window
        self._consumer = Consumer(consumer_config(kafka), logger=log)
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._buffers: dict[int, list[_Message]] = {}
        self._inflight: dict[tuple[int, int], tuple[Plan, int]] = {}  # (first, last seq) -> (plan, messages)
        self._next_prune = time.monotonic() + 30
        self._next_lag = 0.0
        self.stats = SourceStats()

    # -- JournalSource ---------------------------------------------------------------------------

    def waiting(self) -> tuple[int, int | None]:
        self._poll()
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune()
        if now >= self._next_lag:
            self._next_lag = now + _LAG_EVERY_S
            self.stats.lag = self._lag()
        heads = [buf[0].ingested_us for buf in self._buffers.values() if buf]
        self.stats.buffered = sum(len(buf) for buf in self._buffers.values())
        self.stats.paused = len(self._paused)
        return self.stats.buffered, (min(heads) if heads else None)

    def next_batch(self, max_rows: int) -> JournalBatch | None:
        for _ in range(len(self._buffers) + 1):
            part = self._oldest_partition()
            if part is None:
                return None
            messages = self._buffers[part][:max_rows]
            plan = self._ledger.plan(part, [(m.offset, m.key) for m in messages])
            if plan is None:
                self._short.add(part)
                return None  # a recorded batch needs messages not polled yet
            self._short.discard(part)
            count = sum(1 for m in messages if m.offset <= plan.last_offset)
            if plan.stored:  # stored before a crash or a rebalance: only its offsets were left to commit
                self.stats.replayed_batches += 1
                self._finish(plan, count)
                continue
            rows: list[JournalRow] = [
                (plan.seq_of(index), *m.row)
                for index, m in enumerate(messages[:count])
                if m.row is not None and m.offset in plan.winners
            ]
            self.stats.duplicates += sum(1 for m in messages[:count] if m.row is not None) - len(rows)
            self._inflight[(plan.first_seq, plan.last_seq)] = (plan, count)
            return JournalBatch(plan.first_seq, plan.last_seq, rows)
        return None

    def mark_stored(self, batch: JournalBatch) -> None:
        plan, count = self._inflight.pop((batch.first_seq, batch.last_seq))
        self._ledger.stored(plan)
        self._finish(plan, count)

    # -- internals -------------------------------------------------------------------------------

    def _finish(self, plan: Plan, count: int) -> None:
        """Commit the batch's offsets and drop its messages (the ledger's write lock is released)."""
        self._ledger.release()
        buffer = self._buffers.get(plan.part)
        if buffer is not None:
            del buffer[:count]
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, plan.part, plan.last_offset + 1)], asynchronous=False
            )
        except KafkaException as exc:  # the partition moved: its new owner finds the batch marked stored
            log.warning("committing partition %d offset %d failed: %s", plan.part, plan.last_offset + 1, exc)

    def _oldest_partition(self) -> int | None:
        heads = [(buf[0].ingested_us, part) for part, buf in self._buffers.items() if buf]
        return min(heads)[1] if heads else None

    def _poll(self) -> None:
        self._throttle()
        # also while all are paused: consuming keeps this sink in its group (max.poll.interval.ms)
        messages = self._consumer.consume(num_messages=min(_MAX_POLL, self._max_buffered), timeout=0.05)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka consumer: %s", error.str())
                continue
            self._buffer(message)

    def _throttle(self) -> None:
        """Pause partitions with `max_buffered` messages waiting; resume them once half of those are stored."""
        sizes = {part: len(buf) for part, buf in self._buffers.items()}
        full = {p for p, n in sizes.items() if n >= self._max_buffered and p not in self._short} - self._paused
        drained = {p for p in self._paused if sizes.get(p, 0) < self._max_buffered // 2 or p in self._short}
        if full:
            self._consumer.pause([TopicPartition(self._topic, p) for p in sorted(full)])
            self._paused |= full
            log.info("partitions %s paused: %d messages wait for the event store", sorted(full), sum(sizes.values()))
        if drained:
            self._consumer.resume([TopicPartition(self._topic, p) for p in sorted(drained)])
            self._paused -= drained
            log.info("partitions %s resumed", sorted(drained))

    def _buffer(self, message: Message) -> None:
        part, offset = message.partition(), message.offset()
        assert part is not None and offset is not None  # set on every consumed message
        buffer = self._buffers.setdefault(part, [])
        if buffer and offset <= buffer[-1].offset:
            return  # already buffered (a seek back after an error)
        self.stats.messages += 1
        try:
            event = codec.decode(message.value() or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.undecodable += 1
            log.error("partition %d offset %d is not a meterd event, skipped: %s", part, offset, exc)
            key = hashlib.sha256(f"undecodable\0{self._topic}\0{part}\0{offset}".encode()).digest()[:16]
            buffer.append(_Message(offset, key, None, 0))
            return
        row: _Row = (
            event.namespace,
            event.id,
            event.source,
            event.type,
            event.subject,
            event.time,
            bytes(event.data),
            event.ingestedAt,
        )
        buffer.append(_Message(offset, dedup_key(event.namespace, event.source, event.id), row, event.ingestedAt))

    def _on_assign(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._buffers.setdefault(tp.partition, [])
        self.stats.assigned = sorted(self._buffers)
        log.info("assigned partitions %s", [tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        paused = [tp for tp in partitions if tp.partition in self._paused]
        if paused:  # a pause outlives the assignment: were the partition given back, it would stay paused
            try:
                consumer.resume([TopicPartition(self._topic, tp.partition) for tp in paused])
            except KafkaException as exc:  # lost, not revoked: nothing of it is left to resume
                log.debug("resuming revoked partitions failed: %s", exc)
        for tp in partitions:
            self._paused.discard(tp.partition)
            self._short.discard(tp.partition)
            self._buffers.pop(tp.partition, None)  # the next owner resumes at the committed offset
            for key, (plan, _) in list(self._inflight.items()):
                if plan.part == tp.partition:
                    del self._inflight[key]
                    self._ledger.release()
        self.stats.assigned = sorted(self._buffers)
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    def _prune(self) -> None:
        self._next_prune = time.monotonic() + _PRUNE_EVERY_S
        try:
            dropped = self._ledger.prune(self._window)
        except Exception as exc:  # pruning is housekeeping: the next round retries
            log.warning("pruning the sink ledger failed: %s", exc)
            return
        if dropped:
            log.info("forgot %d dedup keys older than the window", dropped)

    def _lag(self) -> int:
        """Messages of this sink's partitions not yet stored: buffered, or not yet consumed."""
        total = sum(len(buf) for buf in self._buffers.values())
        for tp in self._consumer.position([TopicPartition(self._topic, p) for p in self._buffers]):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            if tp.offset >= 0:
                total += max(0, high - tp.offset)
        return total

    def close(self) -> None:
        self._ledger.release()
        self._consumer.close()
        self._ledger.close()
