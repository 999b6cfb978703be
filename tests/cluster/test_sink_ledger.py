"""The sink ledger on a real PostgreSQL: a replayed batch gets the same plan and the same owners, a retry
carried by another message is a duplicate, a stored batch is not inserted again, and the sequence never goes
back below what the event store holds."""

from __future__ import annotations

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
