"""The sink ledger on a real PostgreSQL: a replayed batch gets the same plan and the same owners, a retry
carried by another message is a duplicate, a stored batch is not inserted again, and the sequence never goes
back below what the event store holds."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import psycopg
from sqlalchemy import create_engine

from meterd.backends.sql.ledger import SinkLedger, conninfo, dedup_key
from meterd.backends.sql.migrate import upgrade
from tests.services.postgres import Databases


def _ledger(postgres: Databases) -> tuple[SinkLedger, str]:
    url = postgres.create_database()
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return SinkLedger(url, "t.events"), url


def _messages(offsets: range, ids: list[str]) -> list[tuple[int, bytes]]:
    return [(offset, dedup_key("ns", "src", id_)) for offset, id_ in zip(offsets, ids, strict=True)]


def test_a_replay_repeats_the_plan_and_its_owners(postgres: Databases) -> None:
    ledger, _ = _ledger(postgres)
    batch = _messages(range(10, 14), ["a", "b", "a", "c"])  # offset 12 retries "a"
    first = ledger.plan(0, batch)
    assert first is not None and (first.first_seq, first.last_seq) == (1, 4)
    assert first.winners == {10, 11, 13}
    again = ledger.plan(0, batch)  # the sink died before its insert: the same batch is replayed
    assert again == first
    ledger.stored(first)
    assert ledger.plan(0, batch[:2] + batch[2:]).stored  # after the stored mark: only the commit is left


def test_a_retry_in_a_later_batch_or_another_partition_is_a_duplicate(postgres: Databases) -> None:
    ledger, _ = _ledger(postgres)
    first = ledger.plan(0, _messages(range(0, 2), ["a", "b"]))
    assert first is not None
    ledger.stored(first)
    later = ledger.plan(0, _messages(range(2, 4), ["b", "c"]))
    assert later is not None and later.winners == {3} and later.first_seq == 3
    ledger.stored(later)
    elsewhere = ledger.plan(1, _messages(range(0, 1), ["a"]))  # partitions were added: "a" routed elsewhere
    assert elsewhere is not None and elsewhere.winners == frozenset()


def test_a_recorded_plan_waits_for_all_its_messages(postgres: Databases) -> None:
    ledger, _ = _ledger(postgres)
    planned = ledger.plan(0, _messages(range(0, 5), list("abcde")))
    assert planned is not None
    assert ledger.plan(0, _messages(range(0, 3), list("abc"))) is None  # fewer polled after a restart: wait
    longer = ledger.plan(0, _messages(range(0, 8), list("abcdefgh")))
    assert longer == planned  # more polled: the recorded batch, no more


def test_the_sequence_never_reuses_what_the_store_holds(postgres: Databases) -> None:
    ledger, _ = _ledger(postgres)
    ledger.ensure_sequence_above(100)  # e.g. the metadata database was restored from an older backup
    ledger.ensure_sequence_above(50)
    plan = ledger.plan(0, _messages(range(0, 1), ["a"]))
    assert plan is not None and plan.first_seq == 101


def test_pruning_keeps_plans_as_long_as_claims(postgres: Databases) -> None:
    ledger, url = _ledger(postgres)
    plan = ledger.plan(0, _messages(range(0, 2), ["a", "b"]))
    assert plan is not None
    ledger.stored(plan)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("UPDATE sink_batches SET created_at = now() - interval '2 days'")
        conn.execute("UPDATE dedup_claims SET claimed_at = now() - interval '2 days'")
    assert ledger.prune(timedelta(days=32)) == 0
    assert ledger.plan(0, _messages(range(0, 2), ["a", "b"])).stored  # type: ignore[union-attr]
    assert ledger.prune(timedelta(days=1)) == 2
    with psycopg.connect(conninfo(url)) as conn:
        assert conn.execute("SELECT count(*) FROM sink_batches").fetchone() == (0,)


def test_a_claim_stays_fast_after_the_claims_table_grew_under_a_warm_connection(postgres: Databases) -> None:
    """A sink's first batches meet a small claims table; later ones a large one. A prepared claim statement
    kept the generic plan made early (a scan of the partition's claims per message): a 10,000-message claim
    took a minute instead of a fraction of a second until the next ANALYZE, and every sink waited behind it.
    Autovacuum is off on the table so no ANALYZE rescues the plan by chance."""
    warm, url = _ledger(postgres)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("ALTER TABLE dedup_claims SET (autovacuum_enabled = false)")

    def batch(ledger: SinkLedger, part: int, first: int, size: int) -> float:
        started = time.perf_counter()
        plan = ledger.plan(part, [(first + i, os.urandom(16)) for i in range(size)])
        assert plan is not None and len(plan.winners) == size
        ledger.stored(plan)
        return time.perf_counter() - started

    for k in range(15):  # a sink's first batches, on a small table
        batch(warm, 0, k * 100, 100)
    other = SinkLedger(url, "t.events")
    for k in range(20):  # the table grows to 200,000 claims
        batch(other, k % 4, 10**6 + k * 10_000, 10_000)
    fresh = batch(SinkLedger(url, "t.events"), 1, 10**8, 10_000)
    assert batch(warm, 0, 10_000, 10_000) < max(10.0, 20 * fresh)
