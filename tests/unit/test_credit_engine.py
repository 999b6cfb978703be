"""The credit engine: worked cases with hand-computed numbers, then properties over random scenarios checked
against the minute-by-minute oracle in `tests/credit_oracle.py`.

METERD_PROPERTY_EXAMPLES sets hypothesis' max_examples (default 100)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from meterd.credit.engine import Grant, Recurrence, Reset, RunResult, Snapshot, breakpoints, run
from meterd.credit.periods import Interval, ManualReset, resets_between
from tests.credit_oracle import simulate

D = Decimal
T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def at(minutes: int = 0, *, hours: int = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


class MinuteUsage:
    """Usage from a minute -> amount map; checks that the engine names the right usage period."""

    def __init__(self, per_minute: dict[datetime, Decimal], start: datetime = T0, resets: Iterable[datetime] = ()):
        self.minutes = sorted(per_minute)
        self.prefix = [D(0)]
        for minute in self.minutes:
            self.prefix.append(self.prefix[-1] + per_minute[minute])
        self.period_starts = sorted({start, *resets})

    def total(self, frm: datetime, to: datetime) -> Decimal:
        lo, hi = bisect.bisect_left(self.minutes, frm), bisect.bisect_left(self.minutes, to)
        return self.prefix[hi] - self.prefix[lo]

    def __call__(self, period_start: datetime, frm: datetime, to: datetime) -> Decimal:
        assert frm < to
        assert period_start == self.period_starts[bisect.bisect_right(self.period_starts, frm) - 1]
        assert not any(frm < r < to for r in self.period_starts), "a usage query spans a reset"
        return self.total(frm, to)


def grant(gid: str, amount: int | str, priority: int = 1, effective: datetime = T0, **kw: object) -> Grant:
    kw.setdefault("created_at", T0 - timedelta(days=1))
    return Grant(id=gid, amount=D(amount), priority=priority, effective_at=effective, **kw)  # type: ignore[arg-type]


def run_from_start(
    grants: Sequence[Grant], until: datetime, usage: dict[datetime, Decimal], resets: Sequence[Reset] = ()
) -> RunResult:
    return run(grants, Snapshot.start(T0), until, resets, MinuteUsage(usage, T0, [r.at for r in resets]))


# --- worked cases -----------------------------------------------------------------------------------------------


def test_burn_order_priority_then_expiry_then_created_then_id() -> None:
    later = T0 - timedelta(hours=1)
    grants = [
        grant("a", 100, priority=2),
        grant("b", 50, expires_at=at(hours=240)),
        grant("e", 50, expires_at=at(hours=120), created_at=later),
        grant("d", 50, expires_at=at(hours=120), created_at=later),
        grant("c", 50, expires_at=at(hours=120)),
        grant("z", 50),  # priority 1, no expiry: after every priority-1 grant that expires
    ]
    result = run_from_start(grants, at(hours=1), {at(0): D(170)})
    burnt = [(u.grant_id, u.usage, u.exhausted) for u in result.segments[0].grant_usages]
    assert burnt == [("c", 50, True), ("d", 50, True), ("e", 50, True), ("b", 20, False)]
    assert result.snapshot.balances == {"a": 100, "b": 30, "c": 0, "d": 0, "e": 0, "z": 50}
    assert (result.snapshot.balance, result.snapshot.usage, result.snapshot.overage) == (180, 170, 0)


def test_overage_in_a_period_is_paid_by_a_grant_that_becomes_effective_later() -> None:
    grants = [grant("a", 100), grant("b", 50, effective=at(hours=2))]
    usage = {at(10): D(150), at(150): D(30)}
    before = run_from_start(grants, at(119), usage).snapshot
    assert (before.balances, before.overage, before.grant_usage) == ({"a": 0}, 50, 100)
    effective = run_from_start(grants, at(120), usage).snapshot  # the grant counts at its effective minute
    assert (effective.balances, effective.overage, effective.grant_usage) == ({"a": 0, "b": 0}, 0, 150)
    after = run_from_start(grants, at(180), usage)
    assert (after.snapshot.overage, after.snapshot.usage, after.snapshot.grant_usage) == (30, 180, 150)
    second = after.segments[1]  # the carried 50 is paid by b at the start of its segment
    assert (second.start, second.overage_at_start, second.balances_at_start) == (at(120), 50, {"a": 0, "b": 50})
    assert [(u.grant_id, u.usage) for u in second.grant_usages] == [("b", 50)]
    assert second.overage == 30


def test_expiry_drops_the_remaining_balance() -> None:
    grants = [grant("a", 100, expires_at=at(hours=1)), grant("b", 100)]
    usage = {at(0): D(30), at(90): D(10)}
    assert run_from_start(grants, at(59), usage).snapshot.balances == {"a": 70, "b": 100}
    assert run_from_start(grants, at(60), usage).snapshot.balances == {"b": 100}
    snap = run_from_start(grants, at(120), usage).snapshot
    assert (snap.balances, snap.grant_usage, snap.total_available) == ({"b": 90}, 40, 130)


def test_void_drops_the_balance_and_later_usage_is_overage() -> None:
    grants = [grant("a", 100, voided_at=at(30)), grant("b", 20, priority=2)]
    snap = run_from_start(grants, at(60), {at(5): D(10), at(40): D(25)}).snapshot
    assert (snap.balances, snap.overage, snap.usage) == ({"b": 0}, 5, 35)


def test_recurrence_refills_and_pays_the_carried_overage() -> None:
    hourly = Recurrence("PT1H", anchor=T0)
    grants = [grant("a", 10, recurrence=hourly)]
    usage = {at(0): D(4), at(30): D(8), at(70): D(3)}
    snap = run_from_start(grants, at(59), usage).snapshot
    assert (snap.balances, snap.overage) == ({"a": 0}, 2)
    snap = run_from_start(grants, at(90), usage).snapshot
    assert (snap.balances, snap.overage, snap.usage, snap.grant_usage) == ({"a": 5}, 0, 15, 15)
    assert snap.total_available == 20  # the original 10 and the refill


def test_recurrence_times_start_after_the_effective_time_and_stop_at_expiry() -> None:
    hourly = Recurrence("PT1H", anchor=at(hours=-5))
    g = grant("a", 10, effective=at(hours=1), expires_at=at(hours=3), recurrence=hourly)
    assert g.recurrences(T0, at(hours=5)) == [at(hours=2)]
    other = grant("b", 1, effective=at(10), voided_at=at(200))
    assert breakpoints([g, other], T0, at(hours=3)) == [at(10), at(hours=1), at(hours=2)]


def test_rollover_at_a_period_boundary_caps_and_tops_up() -> None:
    grants = [
        grant("a", 100, min_rollover=D(0), max_rollover=D(30)),  # 50 left, capped at 30
        grant("b", 20, priority=2, min_rollover=D(60), max_rollover=D(100)),  # 20 left, topped up to 60
        grant("c", 10, priority=3),  # default rollover 0/0: nothing carries over
    ]
    result = run_from_start(grants, at(60), {at(0): D(50)}, [Reset(at(60), preserve_overage=False)])
    snap = result.snapshot  # the reset exactly at `until` is applied
    assert (snap.balances, snap.period_start, snap.usage, snap.grant_usage) == (
        {"a": 30, "b": 60, "c": 0},
        at(60),
        0,
        0,
    )
    assert result.segments[-1].reset_at_end
    assert result.segments[-1].balances_at_end == {"a": 50, "b": 20, "c": 10}


@pytest.mark.parametrize(
    ("preserve", "max_rollover", "balance", "overage", "grant_usage"),
    [(True, 100, 70, 0, 30), (False, 100, 100, 0, 0), (True, 20, 0, 10, 20)],
)
def test_preserved_overage_is_paid_from_the_rolled_over_balance(
    preserve: bool, max_rollover: int, balance: int, overage: int, grant_usage: int
) -> None:
    grants = [grant("a", 100, min_rollover=D(max_rollover), max_rollover=D(max_rollover))]
    resets = [Reset(at(60), preserve_overage=preserve)]
    snap = run_from_start(grants, at(90), {at(0): D(130)}, resets).snapshot
    assert (snap.balance, snap.overage, snap.usage, snap.grant_usage) == (balance, overage, 0, grant_usage)


def test_a_reset_and_a_refill_at_the_same_instant_refill_after_the_rollover() -> None:
    grants = [grant("a", 10, recurrence=Recurrence("PT1H", T0), max_rollover=D(3), min_rollover=D(3))]
    snap = run_from_start(grants, at(60), {at(0): D(12)}, [Reset(at(60), preserve_overage=True)]).snapshot
    assert (snap.balances, snap.overage, snap.grant_usage) == ({"a": 8}, 0, 2)


def test_a_snapshot_is_a_valid_start_and_a_missing_active_grant_starts_full() -> None:
    grants = [grant("a", 10, effective=at(-30)), grant("b", 5, priority=2, effective=at(-30))]
    snap = Snapshot(at(0), at(0), {"a": D(0)}, D(0), D(0), D(0))
    result = run(grants, snap, at(10), [], MinuteUsage({at(1): D(2)}))
    assert result.snapshot.balances == {"a": 0, "b": 3}


def test_zero_length_run_and_empty_grants() -> None:
    assert run([], Snapshot.start(T0), T0, [], MinuteUsage({})).snapshot == Snapshot.start(T0)
    snap = run_from_start([], at(30), {at(3): D(7)}).snapshot
    assert (snap.balance, snap.overage, snap.usage, snap.grant_usage) == (0, 7, 7, 0)


@pytest.mark.parametrize(
    ("until", "resets", "message"),
    [
        (at(10), [Reset(T0, False)], "outside"),
        (at(10), [Reset(at(11), False)], "outside"),
        (at(10), [Reset(at(5), False), Reset(at(5), True)], "two resets"),
        (T0 + timedelta(seconds=30), [], "whole minute"),
        (at(-1), [], "before"),
        (datetime(2024, 3, 1, 1), [], "timezone-aware"),
    ],
)
def test_run_rejects_bad_ranges(until: datetime, resets: list[Reset], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run([], Snapshot.start(T0), until, resets, MinuteUsage({}))


def test_run_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="whole minute"):
        grant("a", 1, effective=T0 + timedelta(seconds=1))
    with pytest.raises(TypeError, match="Decimal"):
        Grant("a", 1.5, 1, T0, T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        grant("a", -1)
    with pytest.raises(ValueError, match="whole number of minutes"):
        Recurrence("PT30S", T0)
    with pytest.raises(ValueError, match="unique"):
        run_from_start([grant("a", 1), grant("a", 2)], at(1), {})
    with pytest.raises(ValueError, match="not given"):
        run([], Snapshot(T0, T0, {"x": D(1)}, D(0), D(0), D(0)), at(1), [], MinuteUsage({}))
    with pytest.raises(ValueError, match="finite Decimal"):
        run([], Snapshot.start(T0), at(1), [], lambda ps, frm, to: D("NaN"))


def test_negative_usage_burns_nothing() -> None:
    """A phase whose meter total is negative (corrections) leaves balances as they were."""
    result = run([grant("a", 10)], Snapshot.start(T0), at(5), [], lambda ps, frm, to: D(-3))
    assert result.snapshot.balance == D(10) and result.snapshot.usage == D(0) and result.snapshot.overage == D(0)


# --- properties against the oracle --------------------------------------------------------------------------------

EXAMPLES = settings(max_examples=int(os.environ.get("METERD_PROPERTY_EXAMPLES", "100")), deadline=None)
BASES = [datetime(2024, 2, 28, 22, tzinfo=UTC), datetime(2023, 12, 31, 12, tzinfo=UTC), T0]
PERIODS = ["PT45M", "PT3H", "PT6H", "PT13H", "P1D", "P1DT12H", "P1W", "P1M"]
RECURRENCES = ["PT30M", "PT90M", "PT2H", "PT7H", "P1D", "P1DT12H", "P1M"]
MONTH_END = datetime(2023, 1, 31, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    start: datetime
    end: datetime
    grants: list[Grant]
    usage: dict[datetime, Decimal]
    resets: list[Reset]

    def fn(self) -> MinuteUsage:
        return MinuteUsage(self.usage, self.start, [r.at for r in self.resets])

    def resets_in(self, frm: datetime, to: datetime) -> list[Reset]:
        return [r for r in self.resets if frm < r.at <= to]

    def run(self, until: datetime, start: Snapshot | None = None, grants: Sequence[Grant] | None = None) -> RunResult:
        snap = start or Snapshot.start(self.start)
        resets = self.resets_in(snap.at, until)
        return run(self.grants if grants is None else grants, snap, until, resets, self.fn())


amounts = st.one_of(st.integers(0, 150).map(D), st.decimals("0", "150", places=2))


def times_around(start: datetime, lo: int, hi: int, shared: list[datetime]) -> st.SearchStrategy[datetime]:
    """Minutes in [start + lo, start + hi], or one of a few times shared across the scenario (so that grant
    events, recurrences and resets coincide often)."""
    return st.one_of(st.sampled_from(shared), st.integers(lo, hi).map(lambda n: start + n * MINUTE))


@st.composite
def grants_for(draw: st.DrawFn, start: datetime, horizon: int, shared: list[datetime]) -> list[Grant]:
    ids = draw(st.permutations("abcdef"))[: draw(st.integers(0, 5))]
    times = times_around(start, -120, horizon + 10, shared)
    grants = []
    recurrence = st.builds(Recurrence, st.sampled_from(RECURRENCES), times)
    for gid in ids:
        effective = draw(times)
        later = st.one_of(
            st.sampled_from(shared), st.integers(1, horizon + 1).map(lambda n: n * MINUTE).map(effective.__add__)
        )
        grants.append(
            Grant(
                id=gid,
                amount=draw(amounts),
                priority=draw(st.integers(1, 2)),
                effective_at=effective,
                created_at=start + timedelta(seconds=30 * draw(st.integers(-1, 1))),
                expires_at=draw(st.none() | later),
                voided_at=draw(st.none() | later),
                min_rollover=draw(amounts),
                max_rollover=draw(amounts),
                recurrence=draw(recurrence) if draw(st.integers(0, 2)) else None,  # two in three recur
            )
        )
    return grants


@st.composite
def usage_for(draw: st.DrawFn, start: datetime, horizon: int) -> dict[datetime, Decimal]:
    """Steady blocks (a rate per minute for a while) and single-minute spikes."""
    per_minute: dict[datetime, Decimal] = {}
    if not horizon:
        return per_minute
    offsets = st.integers(0, horizon - 1)
    blocks = st.lists(st.tuples(offsets, st.integers(1, 120), st.decimals("0", "1", places=2)), max_size=4)
    spikes = st.lists(st.tuples(offsets, st.just(1), st.decimals("0", "120", places=2)), max_size=4)
    for offset, length, rate in draw(blocks) + draw(spikes):
        for minute in (start + n * MINUTE for n in range(offset, min(offset + length, horizon))):
            per_minute[minute] = per_minute.get(minute, D(0)) + rate
    return per_minute


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    start = draw(st.sampled_from(BASES))
    horizon = draw(st.integers(0, 2 * 1440))
    end = start + horizon * MINUTE
    shared = sorted({start + (horizon * k // 4) * MINUTE for k in range(5)})
    interval = Interval.parse(draw(st.sampled_from(PERIODS)))
    anchor = draw(st.one_of(times_around(start, -3000, 3000, shared), st.just(MONTH_END)))
    manual_at = times_around(start, 1, max(horizon, 1), shared)
    manual = draw(st.lists(st.builds(ManualReset, manual_at, st.booleans(), st.booleans()), max_size=3))
    resets = resets_between(interval, anchor, manual, start, end, draw(st.booleans()))
    grants = draw(grants_for(start, horizon, shared))
    scenario = Scenario(start, end, grants, draw(usage_for(start, horizon)), resets)
    note(f"{scenario}")
    return scenario


@st.composite
def burn_order_scenarios(draw: st.DrawFn) -> Scenario:
    """Long-lived grants that tie often on priority, expiry and creation: the burn order decides everything."""
    start = draw(st.sampled_from(BASES))
    horizon = draw(st.integers(1, 600))
    expiries = st.none() | st.sampled_from([start + timedelta(days=3), start + timedelta(days=4)])
    grants = [
        Grant(
            id=gid,
            amount=draw(st.integers(1, 100).map(D)),
            priority=draw(st.integers(1, 2)),
            effective_at=start,
            created_at=start - timedelta(seconds=30 * draw(st.integers(0, 1))),
            expires_at=draw(expiries),
        )
        for gid in draw(st.permutations("abcdef"))[: draw(st.integers(2, 6))]
    ]
    scenario = Scenario(start, start + horizon * MINUTE, grants, draw(usage_for(start, horizon)), [])
    note(f"{scenario}")
    return scenario


any_scenario = st.one_of(scenarios(), burn_order_scenarios())


def interesting_times(scenario: Scenario) -> list[datetime]:
    """Grant events, recurrences and resets in the range, and the minutes just before them."""
    times = breakpoints(scenario.grants, scenario.start, scenario.end) + [r.at for r in scenario.resets]
    before = [t - MINUTE for t in times]
    return sorted({scenario.start, scenario.end, *times, *before})


def minutes_in(draw: st.DataObject, scenario: Scenario, count: int) -> list[datetime]:
    horizon = (scenario.end - scenario.start) // MINUTE
    some = st.integers(0, horizon).map(lambda n: scenario.start + n * MINUTE)
    pick = st.one_of(some, st.sampled_from(interesting_times(scenario)))
    return sorted(set(draw.draw(st.lists(pick, max_size=count))))


@EXAMPLES
@given(any_scenario, st.data())
def test_run_equals_the_minute_by_minute_oracle(scenario: Scenario, data: st.DataObject) -> None:
    oracle = simulate(
        scenario.grants,
        scenario.start,
        scenario.end,
        scenario.usage,
        {r.at: r.preserve_overage for r in scenario.resets},
    )
    points = interesting_times(scenario)
    points = data.draw(st.lists(st.sampled_from(points), max_size=20)) if len(points) > 20 else points
    for until in sorted({*points, *minutes_in(data, scenario, 4)}):
        got, want = scenario.run(until).snapshot, oracle[until]
        assert (got.period_start, got.usage, got.overage, got.grant_usage) == (
            want.period_start,
            want.usage,
            want.overage,
            want.grant_usage,
        ), until
        assert got.balances == want.balances, until


@EXAMPLES
@given(any_scenario, st.data())
def test_split_runs_equal_one_run(scenario: Scenario, data: st.DataObject) -> None:
    whole = scenario.run(scenario.end).snapshot
    snap = Snapshot.start(scenario.start)
    for cut in [*minutes_in(data, scenario, 3), scenario.end]:
        snap = scenario.run(cut, start=snap).snapshot
        assert snap == scenario.run(cut).snapshot
    assert snap == whole


@EXAMPLES
@given(any_scenario, st.data())
def test_grant_order_does_not_matter(scenario: Scenario, data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(scenario.grants))
    assert scenario.run(scenario.end, grants=shuffled) == scenario.run(scenario.end)


@EXAMPLES
@given(any_scenario)
def test_usage_and_credit_are_conserved(scenario: Scenario) -> None:
    result = scenario.run(scenario.end)
    assert sum((s.usage for s in result.segments), D(0)) == scenario.fn().total(scenario.start, scenario.end)
    carried = D(0)  # overage carried into the current period
    for segment in result.segments:
        paid = sum((u.usage for u in segment.grant_usages), D(0))
        assert paid + segment.overage == segment.usage + segment.overage_at_start
        for usage in segment.grant_usages:
            before = segment.balances_at_start[usage.grant_id]
            assert segment.balances_at_end[usage.grant_id] == before - usage.usage >= 0
            assert usage.exhausted == (usage.usage == before)
        if segment.overage:
            assert segment.balance_at_end == 0
        if segment.reset_at_end:
            reset = next(r for r in scenario.resets if r.at == segment.end)
            carried = segment.overage if reset.preserve_overage else D(0)
    snap = result.snapshot
    assert snap.grant_usage + snap.overage == snap.usage + carried
    assert snap.overage == 0 or snap.balance == 0
    assert all(b >= 0 for b in snap.balances.values())
    assert set(snap.balances) == {g.id for g in scenario.grants if g.active_at(scenario.end)}
