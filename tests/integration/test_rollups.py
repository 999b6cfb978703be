"""Rollups answer exactly what the raw events answer: the same queries, built both ways, on the real
engine, over random events whose times fall inside, at and around hour edges (microsecond precision)."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meterd.core.timeutil import to_us
from meterd.ingest.journal import JournalBatch
from meterd.meters.model import Aggregation, Meter, WindowSize
from meterd.usage.builder import EVENTS_TABLE, build
from meterd.usage.query import MeterQuery
from meterd.usage.rollup import build_rollup
from tests.conftest import JOURNAL_SEQ

_SEQ = JOURNAL_SEQ  # shared with every test writing to the shared store: seqs only grow
BASE = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # spans the Budapest DST change of 2026-03-29
VALUES: list[Any] = [1, 2.5, -3, "4", "1e3", "x", "", None, True, {"a": 1}, 0, 7, 12.25]


def _events(namespace: str, etype: str, n: int, rng: random.Random, seq0: int) -> JournalBatch:
    rows = []
    for i in range(n):
        moment = BASE + timedelta(microseconds=rng.randrange(0, 60 * 3600 * 1_000_000))
        if i % 7 == 0:  # exactly on an hour edge
            moment = moment.replace(minute=0, second=0, microsecond=0)
        data: dict[str, Any] = {"model": rng.choice(["a", "b", "c"]), "region": rng.choice(["eu", "us"])}
        if i % 11:
            data["v"] = rng.choice(VALUES)
        if i % 13 == 0:
            del data["model"]
        us = to_us(moment)
        rows.append(
            (
                seq0 + i,
                namespace,
                uuid.uuid4().hex,
                "s",
                etype,
                rng.choice(["u1", "u2", "u3"]),
                us,
                json.dumps(data).encode(),
                us,
            )
        )
    return JournalBatch(seq0, seq0 + n - 1, rows)


def _meter(namespace: str, etype: str, aggregation: Aggregation) -> Meter:
    return Meter(
        id=f"01TEST{uuid.uuid4().hex[:20].upper()}",
        namespace=namespace,
        slug="m",
        name="m",
        aggregation=aggregation,
        event_type=etype,
        value_property=None if aggregation is Aggregation.COUNT else "$.v",
        group_by={"model": "$.model", "region": "$.region"},
        event_from=None,
        description=None,
    )


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b, strict=True):
        if row_a[:-1] != row_b[:-1]:
            return False
        if not math.isclose(row_a[-1], row_b[-1], rel_tol=1e-12, abs_tol=1e-12):
            return False
    return True


@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_rollup_equals_raw(event_store: Any, aggregation: Aggregation) -> None:
    rng = random.Random(hash(aggregation.value) % 1000)
    namespace, etype = f"ns_{uuid.uuid4().hex[:6]}", "usage"
    meter = _meter(namespace, etype, aggregation)
    event_store.write(_events(namespace, etype, 1500, rng, next(_SEQ)))  # before the rollup: backfill
    event_store.rollups.ensure(meter, wait=True)
    event_store.write(_events(namespace, etype, 1500, rng, next(_SEQ)))  # through the view
    rollup = event_store.rollup_for(meter)
    assert rollup is not None
    checked = 0
    for _ in range(60):
        start = BASE + timedelta(microseconds=rng.randrange(-3600 * 10**6, 40 * 3600 * 10**6))
        if rng.random() < 0.3:
            start = start.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(microseconds=rng.randrange(1, 30 * 3600 * 10**6))
        query = MeterQuery(
            namespace=namespace,
            event_type=etype,
            aggregation=aggregation,
            value_property=meter.value_property,
            start=start if rng.random() < 0.9 else None,
            end=end if rng.random() < 0.9 else None,
            window_size=rng.choice([None, WindowSize.HOUR, WindowSize.DAY, WindowSize.MONTH]),
            time_zone=rng.choice(["UTC", "Europe/Budapest", "America/New_York"]),
            subjects=("u1", "u3") if rng.random() < 0.3 else None,
            group_by_subject=rng.random() < 0.5,
            group_by={k: meter.group_by[k] for k in rng.sample(["model", "region"], rng.randrange(0, 3))},
            filters=rng.choice(
                [{}, {}, {"region": ("$.region", {"$eq": "eu"})}, {"model": ("$.model", {"$in": ["a", "c"]})}]
            ),
        )
        fast = build_rollup(query, rollup, EVENTS_TABLE)
        if fast is None:
            continue
        raw = event_store.run(build(query))
        assert _same(event_store.run(fast), raw), (query, fast.sql)
        checked += 1
    assert checked >= 30


def test_rollup_queries_refuse_minute_windows_and_half_hour_zones(event_store: Any) -> None:
    meter = _meter("ns_x", "usage", Aggregation.SUM)
    event_store.rollups.ensure(meter, wait=True)
    rollup = event_store.rollup_for(meter)
    base = MeterQuery("ns_x", "usage", Aggregation.SUM, "$.v")
    assert build_rollup(MeterQuery(**{**base.__dict__, "window_size": WindowSize.MINUTE}), rollup, "events") is None
    kolkata = MeterQuery(**{**base.__dict__, "window_size": WindowSize.DAY, "time_zone": "Asia/Kolkata"})
    assert build_rollup(kolkata, rollup, "events") is None
    assert build_rollup(MeterQuery(**{**base.__dict__, "window_size": WindowSize.DAY}), rollup, "events") is not None
    # a filter on a group-by the rollup has no column for (dropped from the meter since a feature named it)
    dropped = MeterQuery(**{**base.__dict__, "filters": {"gone": ("$.__meterd_removed_group_by__", {"$eq": "a"})}})
    assert build_rollup(dropped, rollup, "events") is None


def test_a_batch_replayed_after_a_rollup_was_built_counts_once(event_store: Any) -> None:
    """A crash between a batch's insert and the sink's position replays it: the events table drops the copy
    (same token), and a rollup built in between (its backfill has the batch) must not take it again."""
    rng = random.Random(5)
    namespace, etype = f"ns_{uuid.uuid4().hex[:6]}", "replay"
    meter = _meter(namespace, etype, Aggregation.SUM)
    batch = _events(namespace, etype, 300, rng, next(_SEQ))
    event_store.write(batch)
    event_store.rollups.ensure(meter, wait=True)
    event_store.write(batch)  # the replay
    event_store.write(_events(namespace, etype, 200, rng, next(_SEQ)))  # and a new batch, through the view
    query = MeterQuery(namespace=namespace, event_type=etype, aggregation=Aggregation.SUM, value_property="$.v")
    fast = build_rollup(query, event_store.rollup_for(meter), EVENTS_TABLE)
    assert fast is not None
    assert _same(event_store.run(fast), event_store.run(build(query)))


def test_hostile_meter_strings_cannot_escape_the_rollup_ddl(event_store: Any) -> None:
    hostile = "x' OR 1=1) ; DROP TABLE meterd.events; --\\"
    meter = Meter(
        id="01HOSTILE" + uuid.uuid4().hex[:17].upper(),
        namespace=hostile,
        slug="h",
        name="h",
        aggregation=Aggregation.SUM,
        event_type=hostile,
        value_property="$.v",
        group_by={"k": "$['it''s']"},
        event_from=None,
        description=None,
    )
    rows = [(7, hostile, "id1", "s", hostile, "u", to_us(BASE), b'{"v": 5}', to_us(BASE))]
    event_store.write(JournalBatch(7, 7, rows))
    event_store.rollups.ensure(meter, wait=True)
    query = MeterQuery(namespace=hostile, event_type=hostile, aggregation=Aggregation.SUM, value_property="$.v")
    fast = build_rollup(query, event_store.rollup_for(meter), EVENTS_TABLE)
    assert fast is not None
    assert [row[-1] for row in event_store.run(fast)] == [5.0]
    assert event_store.run(build(MeterQuery("default", "none", Aggregation.COUNT, None))) == []  # table still there
