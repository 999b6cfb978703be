"""The credit engine: grants burnt down by metered usage, period by period. Pure: values and a usage callable in,
values out; no clock, no I/O.

Resolution is one minute: every time the engine is given (snapshot, until, resets, grant times, recurrence
anchors) must be a whole minute in UTC, else ValueError. Amounts are `Decimal`.

State at an instant `t` (a `Snapshot`) is the state after everything that happens at `t`, in this order:
1. a reset at `t`: each grant still active at `t` keeps `min(max_rollover, max(min_rollover, balance))`, the
   others drop out; the overage is kept if the reset preserves it, else forgotten; usage restarts at 0;
2. grant events at `t`: a grant that is not active at `t` (expired, voided) drops out; one that becomes
   effective at `t`, or recurs at `t`, gets its full `amount`;
3. the carried overage is burnt from the balances (it is paid by grants as soon as they have credit).
So the balance at `t` is what usage in the minute starting at `t` burns, and a grant effective at `t` counts at
`t`. Between two such instants the grants' activity is constant; the usage of the whole span plus the carried
overage is burnt through the active grants in burn order (priority ascending, then the earliest expiry, no
expiry last, then `created_at`, then id), and what no grant covers becomes overage. Greedy burning in a fixed
order is additive, so the result never depends on where a range is split (the property tests hold it to that).

`Snapshot.balances` holds exactly the grants active at `at`, exhausted ones included with 0. A grant that is
active at a run's start but missing from the starting snapshot's balances starts with its full amount (as a
grant does at activation); that is how `Snapshot.start` works for grants effective before measurement starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import takewhile
from types import MappingProxyType

from meterd.credit.periods import Interval, Reset, require_utc

__all__ = [
    "Grant",
    "GrantUsage",
    "Recurrence",
    "Reset",
    "RunResult",
    "Segment",
    "Snapshot",
    "UsageFn",
    "breakpoints",
    "run",
]

UsageFn = Callable[[datetime, datetime, datetime], Decimal]
"""(period_start, frm, to) -> usage in [frm, to), which lies inside the usage period that started at period_start."""

_ZERO = Decimal(0)


def _require_minute(t: datetime, what: str) -> None:
    require_utc(t, what)
    if t.second or t.microsecond:
        raise ValueError(f"{what} must be a whole minute (the credit engine's resolution), got {t.isoformat()}")


def _require_amount(value: Decimal, what: str) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative Decimal, got {value}")


def _frozen(balances: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(balances))


@dataclass(frozen=True, slots=True)
class Recurrence:
    """The grant's balance is set back to its amount at every `anchor + k * interval` while it is active."""

    interval: str  # DAY | WEEK | MONTH | YEAR or an ISO 8601 duration
    anchor: datetime

    def __post_init__(self) -> None:
        Interval.parse(self.interval)
        _require_minute(self.anchor, "recurrence anchor")

    def times(self, after: datetime, until: datetime) -> Iterable[datetime]:
        """Recurrence times in `(after, until]`, ascending."""
        interval = Interval.parse(self.interval)
        k = interval.index_at(self.anchor, after) + 1
        while (t := interval.add(self.anchor, k)) <= until:
            yield t
            k += 1


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    amount: Decimal
    priority: int
    effective_at: datetime
    created_at: datetime
    expires_at: datetime | None = None
    voided_at: datetime | None = None
    min_rollover: Decimal = _ZERO
    max_rollover: Decimal = _ZERO
    recurrence: Recurrence | None = None

    def __post_init__(self) -> None:
        for what in ("amount", "min_rollover", "max_rollover"):
            _require_amount(getattr(self, what), f"grant {self.id}: {what}")
        for what in ("effective_at", "expires_at", "voided_at"):
            if (t := getattr(self, what)) is not None:
                _require_minute(t, f"grant {self.id}: {what}")
        require_utc(self.created_at, f"grant {self.id}: created_at")

    @property
    def ends_at(self) -> datetime | None:
        """The first instant the grant is no longer active (expiry or void), None if never."""
        ends = [t for t in (self.expires_at, self.voided_at) if t is not None]
        return min(ends) if ends else None

    def active_at(self, t: datetime) -> bool:
        return self.effective_at <= t and (self.ends_at is None or t < self.ends_at)

    def rollover(self, balance: Decimal) -> Decimal:
        """The balance carried over a reset."""
        return min(self.max_rollover, max(self.min_rollover, balance))

    def recurrences(self, after: datetime, until: datetime) -> list[datetime]:
        """Times in `(after, until]` at which the grant is active and refilled (never its effective time)."""
        if self.recurrence is None:
            return []
        return list(takewhile(self.active_at, self.recurrence.times(max(after, self.effective_at), until)))


def _burn_key(grant: Grant) -> tuple[int, bool, datetime, datetime, str]:
    expires = grant.expires_at
    return (grant.priority, expires is None, expires or grant.created_at, grant.created_at, grant.id)


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: datetime
    period_start: datetime  # start of the usage period that contains `at`
    balances: Mapping[str, Decimal]  # grants active at `at`
    overage: Decimal
    usage: Decimal  # usage in [period_start, at)
    grant_usage: Decimal  # what grants paid since period_start (usage and carried overage)

    def __post_init__(self) -> None:
        _require_minute(self.at, "snapshot time")
        _require_minute(self.period_start, "snapshot period start")
        if self.period_start > self.at:
            raise ValueError("snapshot period start is after the snapshot time")
        for grant_id, balance in self.balances.items():
            _require_amount(balance, f"snapshot balance of grant {grant_id}")
        _require_amount(self.overage, "snapshot overage")
        _require_amount(self.usage, "snapshot usage")
        _require_amount(self.grant_usage, "snapshot grant usage")
        object.__setattr__(self, "balances", _frozen(self.balances))

    @property
    def balance(self) -> Decimal:
        return sum(self.balances.values(), _ZERO)

    @property
    def total_available(self) -> Decimal:
        """totalAvailableGrantAmount: what grants paid in the period plus what they still hold."""
        return self.grant_usage + self.balance

    @staticmethod
    def start(at: datetime) -> Snapshot:
        """The state at measurement start: a new usage period, nothing used, grants at their full amounts."""
        return Snapshot(at=at, period_start=at, balances={}, overage=_ZERO, usage=_ZERO, grant_usage=_ZERO)


@dataclass(frozen=True, slots=True)
class GrantUsage:
    grant_id: str
    usage: Decimal
    exhausted: bool  # the burn took the grant's balance to 0


@dataclass(frozen=True, slots=True)
class Segment:
    """A span `[start, end)` with constant grant activity. `balances_at_start` and `overage_at_start` are after
    the events at `start` and before the carried overage is burnt; `grant_usages` pay `usage + overage_at_start`
    (in burn order); `overage` is what remains unpaid at `end`, before the events at `end`."""

    start: datetime
    end: datetime
    period_start: datetime
    usage: Decimal
    overage_at_start: Decimal
    overage: Decimal
    balances_at_start: Mapping[str, Decimal]
    balances_at_end: Mapping[str, Decimal]
    grant_usages: tuple[GrantUsage, ...]
    reset_at_end: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "balances_at_start", _frozen(self.balances_at_start))
        object.__setattr__(self, "balances_at_end", _frozen(self.balances_at_end))

    @property
    def balance_at_start(self) -> Decimal:
        return sum(self.balances_at_start.values(), _ZERO)

    @property
    def balance_at_end(self) -> Decimal:
        return sum(self.balances_at_end.values(), _ZERO)


@dataclass(frozen=True, slots=True)
class RunResult:
    snapshot: Snapshot
    segments: tuple[Segment, ...]


@dataclass(slots=True)
class _State:
    period_start: datetime
    balances: dict[str, Decimal]  # grants active now
    overage: Decimal
    usage: Decimal
    grant_usage: Decimal
    grants: Sequence[Grant]  # the relevant grants, in burn order

    def burn(self, demand: Decimal) -> tuple[GrantUsage, ...]:
        """Burn `demand` through the active grants in burn order; what is left becomes the overage."""
        usages = []
        for grant in self.grants:
            if demand <= 0:
                break
            balance = self.balances.get(grant.id, _ZERO)
            if balance <= 0:
                continue
            taken = min(balance, demand)
            self.balances[grant.id] = balance - taken
            demand -= taken
            self.grant_usage += taken
            usages.append(GrantUsage(grant.id, taken, exhausted=taken == balance))
        self.overage = demand
        return tuple(usages)

    def reset(self, reset: Reset, by_id: Mapping[str, Grant]) -> None:
        self.balances = {
            grant_id: by_id[grant_id].rollover(balance)
            for grant_id, balance in self.balances.items()
            if by_id[grant_id].active_at(reset.at)
        }
        self.overage = self.overage if reset.preserve_overage else _ZERO
        self.usage = self.grant_usage = _ZERO
        self.period_start = reset.at

    def grant_events(self, at: datetime, recurring: set[str]) -> None:
        self.balances = {
            grant.id: grant.amount if grant.effective_at == at or grant.id in recurring else self.balances[grant.id]
            for grant in self.grants
            if grant.active_at(at)
        }

    def snapshot(self, at: datetime) -> Snapshot:
        return Snapshot(at, self.period_start, self.balances, self.overage, self.usage, self.grant_usage)


def _activity_times(grants: Iterable[Grant], after: datetime, until: datetime) -> set[datetime]:
    times = {t for g in grants for t in (g.effective_at, g.expires_at, g.voided_at) if t is not None}
    return {t for t in times if after < t <= until}


def _recurrences(grants: Iterable[Grant], after: datetime, until: datetime) -> dict[datetime, set[str]]:
    by_time: dict[datetime, set[str]] = {}
    for grant in grants:
        for t in grant.recurrences(after, until):
            by_time.setdefault(t, set()).add(grant.id)
    return by_time


def breakpoints(grants: Sequence[Grant], frm: datetime, to: datetime) -> list[datetime]:
    """Every time in `(frm, to)` at which a grant becomes effective, expires, is voided or recurs, ascending."""
    times = _activity_times(grants, frm, to) | set(_recurrences(grants, frm, to))
    return sorted(t for t in times if t < to)


def _relevant(grants: Sequence[Grant], start: datetime, until: datetime) -> list[Grant]:
    """The grants active at some instant of `[start, until]`, in burn order; ValueError on duplicate ids."""
    ids = [g.id for g in grants]
    if len(set(ids)) != len(ids):
        raise ValueError("grant ids must be unique")
    relevant = [g for g in grants if g.effective_at <= until and (g.ends_at is None or g.ends_at > start)]
    return sorted(relevant, key=_burn_key)


def _validated_resets(resets: Sequence[Reset], start: datetime, until: datetime) -> dict[datetime, Reset]:
    by_time: dict[datetime, Reset] = {}
    for reset in resets:
        _require_minute(reset.at, "reset time")
        if not start < reset.at <= until:
            raise ValueError(f"reset at {reset.at.isoformat()} is outside ({start.isoformat()}, {until.isoformat()}]")
        if reset.at in by_time:
            raise ValueError(f"two resets at {reset.at.isoformat()}")
        by_time[reset.at] = reset
    return by_time


def _initial_state(grants: Sequence[Grant], relevant: Sequence[Grant], start: Snapshot) -> _State:
    """Balances from the snapshot; grants active at its time that it does not mention start at their amount."""
    by_id = {g.id: g for g in grants}
    for grant_id, balance in start.balances.items():
        if grant_id not in by_id:
            raise ValueError(f"the starting snapshot holds a balance for grant {grant_id}, which is not given")
        if balance and not by_id[grant_id].active_at(start.at):
            raise ValueError(f"the starting snapshot holds a balance for grant {grant_id}, inactive at its time")
    balances = {g.id: start.balances.get(g.id, g.amount) for g in relevant if g.active_at(start.at)}
    return _State(start.period_start, balances, start.overage, start.usage, start.grant_usage, relevant)


def _usage(usage: UsageFn, period_start: datetime, frm: datetime, to: datetime) -> Decimal:
    """A phase's usage. A negative total (a meter summing corrections) burns nothing and credits nothing back:
    grants are never refilled by usage, only by their own rules."""
    amount = usage(period_start, frm, to)
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"usage in [{frm.isoformat()}, {to.isoformat()}) must be a finite Decimal: {amount!r}")
    return max(amount, _ZERO)


def _segment(state: _State, frm: datetime, to: datetime, usage: UsageFn, reset_at_end: bool) -> Segment:
    used = _usage(usage, state.period_start, frm, to)
    balances_at_start, overage_at_start = dict(state.balances), state.overage
    grant_usages = state.burn(used + state.overage)
    state.usage += used
    return Segment(
        start=frm,
        end=to,
        period_start=state.period_start,
        usage=used,
        overage_at_start=overage_at_start,
        overage=state.overage,
        balances_at_start=balances_at_start,
        balances_at_end=state.balances,
        grant_usages=grant_usages,
        reset_at_end=reset_at_end,
    )


def run(
    grants: Sequence[Grant], start: Snapshot, until: datetime, resets: Sequence[Reset], usage: UsageFn
) -> RunResult:
    """Burn the grants down from the `start` snapshot to `until`, applying `resets` (every reset in
    `(start.at, until]`; one exactly at `until` is applied). `grants` may hold grants irrelevant to the range."""
    _require_minute(until, "until")
    if until < start.at:
        raise ValueError("until is before the starting snapshot")
    reset_at = _validated_resets(resets, start.at, until)
    relevant = _relevant(grants, start.at, until)
    by_id = {g.id: g for g in relevant}
    recurring = _recurrences(relevant, start.at, until)
    state = _initial_state(grants, relevant, start)
    segments = []
    frm = start.at
    for to in sorted(_activity_times(relevant, start.at, until) | set(recurring) | set(reset_at) | {until}):
        if to == frm:  # a zero-length run
            continue
        segments.append(_segment(state, frm, to, usage, reset_at_end=to in reset_at))
        if to in reset_at:
            state.reset(reset_at[to], by_id)
        state.grant_events(to, recurring.get(to, set()))
        frm = to
    state.burn(state.overage)
    return RunResult(state.snapshot(until), tuple(segments))
