"""Golden tests of the pure query builder: the SQL text is part of the contract (review changes to it),
and nothing a caller chooses ever appears in it; it travels as bound parameters."""

from __future__ import annotations

from datetime import UTC, datetime

from meterd.meters.model import Aggregation, WindowSize
from meterd.usage.builder import build
from meterd.usage.query import MeterQuery


def test_windowed_sum_grouped_by_subject_and_model() -> None:
    query = MeterQuery(
        namespace="default",
        event_type="litellm_tokens",
        aggregation=Aggregation.SUM,
        value_property="$.total_tokens",
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        window_size=WindowSize.DAY,
        time_zone="Europe/Budapest",
        subjects=("user-1",),
        group_by_subject=True,
        group_by={"model": "$.model"},
        filters={"model": ("$.model", {"$in": ["gpt-4o", "gpt-4o-mini"]})},
    )
    compiled = build(query)
    assert compiled.sql == (
        "SELECT toUnixTimestamp(toStartOfDay(time, {p0:String})) AS ws, "
        "toUnixTimestamp(toStartOfDay(toDateTime(ws, {p0:String}) + INTERVAL 36 HOUR, {p0:String})) AS we, "
        "subject, JSON_VALUE(data, {p1:String}) AS g0, "
        "sum(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, {p2:String})), NULL)) AS value\n"
        "FROM events\n"
        "WHERE namespace = {p3:String} AND type = {p4:String} "
        "AND time >= fromUnixTimestamp64Micro({p5:Int64}, 'UTC') "
        "AND time < fromUnixTimestamp64Micro({p6:Int64}, 'UTC') "
        "AND subject IN {p7:Array(String)} "
        "AND (JSON_VALUE(data, {p8:String}) IN {p9:Array(String)})\n"
        "GROUP BY ws, subject, g0\n"
        "HAVING count() > 0 AND value IS NOT NULL\n"
        "ORDER BY ws, subject, g0"
    )
    assert compiled.params == {
        "p0": "Europe/Budapest",
        "p1": "$.model",
        "p2": "$.total_tokens",
        "p3": "default",
        "p4": "litellm_tokens",
        "p5": 1767225600000000,
        "p6": 1769904000000000,
        "p7": ["user-1"],
        "p8": "$.model",
        "p9": ["gpt-4o", "gpt-4o-mini"],
    }


def test_unwindowed_count_has_no_value_path() -> None:
    compiled = build(MeterQuery("ns", "request", Aggregation.COUNT, None))
    assert compiled.sql == (
        "SELECT toUnixTimestamp(toStartOfMinute(min(time))) AS ws, "
        "toUnixTimestamp(toStartOfMinute(max(time))) + 60 AS we, toFloat64(count()) AS value\n"
        "FROM events\n"
        "WHERE namespace = {p1:String} AND type = {p2:String}\n"
        "HAVING count() > 0 AND value IS NOT NULL"
    )


def test_hostile_strings_only_travel_as_parameters() -> None:
    hostile = "x'); DROP TABLE events; --"
    compiled = build(
        MeterQuery(
            hostile,
            hostile,
            Aggregation.UNIQUE_COUNT,
            hostile,
            subjects=(hostile,),
            group_by={"k": hostile},
            filters={"k": (hostile, {"$or": [{"$like": hostile}, {"$ne": hostile}]})},
        )
    )
    assert hostile not in compiled.sql
    assert "DROP" not in compiled.sql
    assert hostile in compiled.params.values()


def test_latest_breaks_ties_by_arrival() -> None:
    compiled = build(MeterQuery("ns", "t", Aggregation.LATEST, "$.v", window_size=WindowSize.MONTH))
    assert "argMax(ifNotFinite(toFloat64OrNull(JSON_VALUE(data, {p1:String})), NULL), (time, seq))" in compiled.sql
    assert "toDateTime(toStartOfMonth(time, {p0:String}), {p0:String})" in compiled.sql
