"""The sink: moves journal batches into the event store, then lets the journal forget them.

It flushes when `min_batch` events wait or the oldest has waited `max_wait`, whichever comes first. A
batch's range is recorded before its insert, so after a crash the same range is replayed with the same
deduplication token and the store keeps one copy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meterd.core.timeutil import now_us
from meterd.ingest.journal import JournalBatch, JournalSource
from meterd.usage.store import EventWriter

log = logging.getLogger(__name__)

_POLL_S = 0.01


class WriteGuard(Protocol):
    def begin_write(self) -> None: ...

    def end_write(self) -> None: ...


@dataclass
class SinkStats:
    batches: int = 0
    events: int = 0
    failures: int = 0
    last_flush_s: float = 0.0
    last_error: str | None = None
    last_success_mono: float = 0.0


class Sink:
    def __init__(
        self,
        source: JournalSource,
        writer: EventWriter,
        *,
        min_batch: int = 5_000,
        max_wait_s: float = 0.2,
        max_batch: int = 100_000,
    ) -> None:
        self._source = source
        self._writer = writer
        self._min_batch = min_batch
        self._max_wait_us = int(max_wait_s * 1_000_000)
        self._max_batch = max_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # told after each batch is in the store (again if it is replayed: listeners must be idempotent)
        self.on_stored: list[Callable[[JournalBatch], None]] = []
        self.guards: list[WriteGuard] = []  # told before a batch's write begins and after its listeners ran
        self.stats = SinkStats(last_success_mono=time.monotonic())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="meterd-sink", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if drain:
            try:
                while self.flush_once(force=True):
                    pass
            except Exception as exc:  # the store is down: the journal keeps the events for the next start
                log.error("sink drain at shutdown failed, the next start stores the rest: %s", exc)

    def healthy(self) -> bool:
        """Running, and either not failing or failing for less than 30 seconds (a store blip)."""
        alive = self._thread is not None and self._thread.is_alive()
        return alive and (self.stats.failures == 0 or time.monotonic() - self.stats.last_success_mono < 30)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                flushed = self.flush_once()
            except Exception as exc:  # the store is down or broken: keep the batch, retry later
                self.stats.failures += 1
                self.stats.last_error = str(exc)[:500]
                log.error("sink flush failed (will retry in %.1fs): %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            if not flushed:
                self._stop.wait(_POLL_S)

    def flush_once(self, force: bool = False) -> bool:
        """Flush one batch if one is due. True when something was written."""
        depth, oldest_us = self._source.waiting()
        if depth == 0:
            return False
        due = force or depth >= self._min_batch or (oldest_us is not None and now_us() - oldest_us >= self._max_wait_us)
        if not due:
            return False
        batch = self._source.next_batch(self._max_batch)
        if batch is None:
            return False
        started = time.perf_counter()
        for guard in self.guards:
            guard.begin_write()
        try:
            self._writer.write(batch)
            # listeners before the position moves: a crash in between replays the batch, and them with it
            for listener in self.on_stored:
                try:
                    listener(batch)
                except Exception:  # a listener's failure must not replay a stored batch
                    log.exception("sink listener failed")
            self._source.mark_stored(batch)
        finally:
            for guard in self.guards:
                guard.end_write()
        self.stats.batches += 1
        self.stats.events += len(batch.rows)
        self.stats.last_flush_s = time.perf_counter() - started
        self.stats.failures = 0
        self.stats.last_success_mono = time.monotonic()
        return True
