"""Threshold rules (pure): when each threshold type is active, the most severe per kind, dedupe hashes, the
retry schedule, and input validation."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.core.errors import ValidationError
from meterd.entitlements.snapshot import EntitlementSnapshot
from meterd.notifications.inputs import ChannelInput, RuleInput, new_signing_secret, secret_problem
from meterd.notifications.model import Threshold
from meterd.notifications.outbox import RetryPolicy
from meterd.notifications.payloads import reset_dedupe_hash, threshold_dedupe_hash
from meterd.notifications.thresholds import Reading, is_active, mark, most_severe_active

D = Decimal


def t(value: str | int, type_: str) -> Threshold:
    return Threshold(D(value), type_)


@pytest.mark.parametrize(
    ("threshold", "usage", "balance", "total", "active"),
    [
        (t(100, "usage_value"), 99, 1, 100, False),
        (t(100, "usage_value"), 100, 0, 100, True),  # reaching the mark counts
        (t(100, "NUMBER"), 100, 0, 100, True),
        (t(100, "usage_value"), 150, 0, 0, True),  # no grants: a plain usage mark still applies
        (t(80, "usage_percentage"), 79, 21, 100, False),
        (t(80, "usage_percentage"), 80, 20, 100, True),
        (t(80, "PERCENT"), "0.8", "0.2", 1, True),
        (t(50, "usage_percentage"), 1000, 0, 0, False),  # a percentage of nothing never fires
        (t(120, "usage_percentage"), 119, 0, 100, False),  # above 100% (soft limits)
        (t(120, "usage_percentage"), 120, 0, 100, True),
        (t(10, "balance_value"), 90, 11, 100, False),
        (t(10, "balance_value"), 90, 10, 100, True),
        (t(0, "balance_value"), 100, 0, 100, True),  # exhausted
        (t(0, "balance_value"), 99, "0.0001", 100, False),
    ],
)
def test_when_a_threshold_is_active(threshold: Threshold, usage: int, balance: int, total: int, active: bool) -> None:
    assert is_active(threshold, Reading(D(usage), D(balance), D(total))) is active


def test_percentages_are_exact() -> None:
    reading = Reading(usage=D("0.3"), balance=D("0.7"), total_available=D("1"))
    assert mark(t(30, "usage_percentage"), reading) == D("0.3")
    assert is_active(t(30, "usage_percentage"), reading)  # 0.1 + 0.2 style float error would miss this


def test_most_severe_per_kind() -> None:
    thresholds = [
        t(50, "usage_percentage"),
        t(100, "usage_percentage"),
        t(75, "usage_value"),  # = 75% of 100: active, but 100% is higher
        t(20, "balance_value"),
        t(5, "balance_value"),
        t(0, "balance_value"),
    ]
    reading = Reading(usage=D(100), balance=D(0), total_available=D(100))
    assert most_severe_active(thresholds, reading) == [t(100, "usage_percentage"), t(0, "balance_value")]
    reading = Reading(usage=D(80), balance=D(20), total_available=D(100))
    assert most_severe_active(thresholds, reading) == [t(75, "usage_value"), t(20, "balance_value")]
    assert most_severe_active(thresholds, Reading(D(10), D(90), D(100))) == []


def test_a_tie_keeps_the_first_listed() -> None:
    a, b = t(80, "usage_value"), t(80, "usage_percentage")
    assert most_severe_active([a, b], Reading(D(90), D(10), D(100))) == [a]
    assert most_severe_active([b, a], Reading(D(90), D(10), D(100))) == [b]


_types = st.sampled_from(["balance_value", "usage_percentage", "usage_value", "PERCENT", "NUMBER"])
_amounts = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False)


@given(
    st.lists(st.builds(Threshold, st.decimals(min_value="0.01", max_value=500, places=2), _types), max_size=10),
    _amounts,
    _amounts,
    _amounts,
)
def test_most_severe_property(thresholds: list[Threshold], usage: Decimal, balance: Decimal, total: Decimal) -> None:
    reading = Reading(usage, balance, total)
    chosen = most_severe_active(thresholds, reading)
    assert len({c.kind for c in chosen}) == len(chosen) <= 2
    for c in chosen:
        assert c in thresholds and is_active(c, reading)
        level = mark(c, reading)
        assert level is not None
        for other in thresholds:
            other_level = mark(other, reading)
            if other.kind != c.kind or other_level is None or not is_active(other, reading):
                continue
            assert other_level <= level if c.kind == "usage" else other_level >= level
    active_kinds = {x.kind for x in thresholds if is_active(x, reading)}
    assert active_kinds == {c.kind for c in chosen}


NOW = datetime(2026, 1, 15, tzinfo=UTC)
SNAP = EntitlementSnapshot(
    namespace="ns",
    operation="update",
    calculated_at=NOW,
    entitlement_id="01J00000000000000000000ENT",
    feature_id="01J0000000000000000000FEAT",
    feature_key="tokens",
    customer_id="",
    subject_key="acme",
    period_from=datetime(2026, 1, 1, tzinfo=UTC),
    period_to=datetime(2026, 2, 1, tzinfo=UTC),
    measure_usage_from=datetime(2025, 1, 1, tzinfo=UTC),
    balance=D(10),
    usage=D(90),
    overage=D(0),
    total_available=D(100),
    has_access=True,
    entitlement={},
    feature={},
    customer={},
    subject={"key": "acme"},
    value={},
)


def test_dedupe_hash_scope() -> None:
    base = threshold_dedupe_hash(SNAP, "rule1", t(80, "usage_percentage"))
    assert base == threshold_dedupe_hash(
        replace(SNAP, usage=D(99), calculated_at=NOW + timedelta(hours=1)), "rule1", t("80.0", "PERCENT")
    )  # same mark, deprecated spelling, later reading
    differs = [
        threshold_dedupe_hash(SNAP, "rule2", t(80, "usage_percentage")),
        threshold_dedupe_hash(SNAP, "rule1", t(90, "usage_percentage")),
        threshold_dedupe_hash(SNAP, "rule1", t(80, "usage_value")),
        threshold_dedupe_hash(replace(SNAP, period_from=SNAP.period_to), "rule1", t(80, "usage_percentage")),
        threshold_dedupe_hash(replace(SNAP, measure_usage_from=NOW), "rule1", t(80, "usage_percentage")),
        threshold_dedupe_hash(replace(SNAP, entitlement_id="other"), "rule1", t(80, "usage_percentage")),
        threshold_dedupe_hash(replace(SNAP, namespace="other"), "rule1", t(80, "usage_percentage")),
        reset_dedupe_hash(SNAP, "rule1"),
    ]
    assert len({base, *differs}) == len(differs) + 1


def test_retry_schedule_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=timedelta(seconds=10), max_delay=timedelta(minutes=1))
    assert [policy.delay(n, lambda: 1.0).total_seconds() for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert [policy.delay(n, lambda: 0.0).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]
    rng = random.Random(1)
    assert all(5 <= policy.delay(1, rng.random).total_seconds() <= 10 for _ in range(100))
    assert policy.delay(500, lambda: 1.0) == timedelta(minutes=1)  # no overflow far out
    huge = RetryPolicy(base_delay=timedelta(days=900), max_delay=timedelta(days=1000))
    assert huge.delay(99, lambda: 1.0) == timedelta(days=1000)


def test_generated_secrets_verify() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_") and secret_problem(secret) is None
    assert secret_problem("whsec_short") is not None
    assert secret_problem("a" * 33) is not None  # matches the pattern, but is not base64


def _fields(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {p.field for p in exc.value.problems}


def test_channel_input_reports_every_problem() -> None:
    bad = ChannelInput(
        type="EMAIL",
        name=" ",
        url="ftp://x",
        custom_headers={"bad header": "v", "webhook-id": "x", "X-Ok": "a\nb"},
        signing_secret="nope",
        metadata={"": "x"},
    )
    with pytest.raises(ValidationError) as exc:
        bad.validate()
    assert _fields(exc) == {
        "type",
        "name",
        "url",
        "customHeaders.bad header",
        "customHeaders.webhook-id",
        "customHeaders.X-Ok",
        "signingSecret",
        "metadata",
    }


def test_rule_input_reports_every_problem() -> None:
    bad = RuleInput(
        type="entitlements.balance.threshold",
        name="",
        channels=["a", "a", "b", "c", "d", "e"],
        features=[""],
        thresholds=[t(0, "usage_value"), t(-1, "balance_value"), t(5, "nope"), Threshold(D("NaN"), "PERCENT")],
    )
    with pytest.raises(ValidationError) as exc:
        bad.validate()
    assert _fields(exc) == {
        "name",
        "channels",
        "features[0]",
        "thresholds[0].value",
        "thresholds[1].value",
        "thresholds[2].type",
        "thresholds[3].value",
    }
    with pytest.raises(ValidationError, match="thresholds: must have 1-10"):
        RuleInput(type="entitlements.balance.threshold", name="r", channels=["a"], thresholds=[]).validate()
    with pytest.raises(ValidationError, match="must not repeat a threshold"):
        RuleInput(
            type="entitlements.balance.threshold",
            name="r",
            channels=["a"],
            thresholds=[t(80, "PERCENT"), t("80.00", "usage_percentage")],
        ).validate()
    with pytest.raises(ValidationError, match="invoicing"):
        RuleInput(type="invoice.created", name="r", channels=["a"]).validate()
    RuleInput(type="entitlements.reset", name="r", channels=["a"], features=["tokens"]).validate()
