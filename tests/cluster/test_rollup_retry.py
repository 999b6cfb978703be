"""A rollup build that fails is tried again without a restart. In a cluster the build takes the write lock
shared with the sinks (PostgreSQL); while a crashed sink's batch waits to be replayed, the lock is refused.
Before, that build was given up until the node restarted, and the meter's queries read raw events meanwhile."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine

from meterd.backends.clickhouse.rollups import RollupManager
from meterd.backends.sql.ledger import RollupWriteLock, SinkLedger, dedup_key
from meterd.backends.sql.migrate import upgrade
from meterd.ingest.journal import JournalBatch
from meterd.meters.model import Aggregation, Meter
from tests.conftest import JOURNAL_SEQ, wait_for
from tests.services.postgres import Databases


def test_a_failed_build_is_retried_until_the_lock_is_free(
    postgres: Databases, event_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres.create_database()
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    ledger = SinkLedger(url, "t.events")
    messages = [(0, dedup_key("ns", "src", "a"))]
    assert ledger.plan(0, messages) is not None
    ledger.close()  # the sink died between its plan and its insert: its session and shared lock are gone

    namespace, etype = f"retry_{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:8]}"
    seq = next(JOURNAL_SEQ)
    data = [json.dumps({"v": v}).encode() for v in (1, 2, 4)]
    rows = [(seq + i, namespace, f"e{i}", "s", etype, "u", 10**15, d, 10**15) for i, d in enumerate(data)]
    event_store.write(JournalBatch(seq, seq + len(rows) - 1, rows))

    lock = RollupWriteLock(url, timeout=timedelta(seconds=0.2))
    manager = RollupManager(event_store._writer, lock, event_store.database)
    meter = Meter(
        id=f"01RETRY{uuid.uuid4().hex[:19].upper()}",
        namespace=namespace,
        slug="m",
        name="m",
        aggregation=Aggregation.SUM,
        event_type=etype,
        value_property="$.v",
        group_by={},
        event_from=None,
        description=None,
    )
    try:
        manager.ensure(meter)
        wait_for(
            lambda: "building the rollup of meter m failed" in caplog.text, timeout=10
        )  # the first try was refused
        assert manager.ready(meter) is None
        restarted = SinkLedger(url, "t.events")  # the sink is back and replays its batch
        replay = restarted.plan(0, messages)
        assert replay is not None
        restarted.stored(replay)
        restarted.close()
        rollup = wait_for(lambda: manager.ready(meter), timeout=15)
        total = event_store._writer.query(f"SELECT sumMerge(value) FROM {rollup.table}").result_rows[0][0]
        assert total == 7  # backfilled after the retry
    finally:
        manager.stop(timeout=30)
