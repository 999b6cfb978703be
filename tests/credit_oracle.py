"""A brute-force reference for the credit engine: it walks time one minute at a time.

It shares no code with `meterd.credit.engine` (it reads grants by attribute name only, so the engine's
`Grant` works, as does any object with the same fields) and uses `meterd.credit.periods.Interval` only for
calendar arithmetic (`add`). It restates the rules directly, per minute:

* at the start every grant active then holds its amount;
* in minute `m` the minute's usage plus the carried overage is burnt through the grants active at `m`, lowest
  priority number first, then earliest expiry (none last), then oldest, then id; what is left is the overage;
* at the instant `m + 1`: a reset rolls every grant still active over to `min(max, max(min, balance))` (others
  to 0), keeps the overage only if it preserves it, and starts a new usage period; then every grant that is not
  active has 0, and one that becomes effective or recurs at that instant has its amount; then the overage is
  burnt from whatever grants now hold credit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from meterd.credit.periods import Interval

MINUTE = timedelta(minutes=1)
ZERO = Decimal(0)


class GrantLike(Protocol):
    """What the oracle reads of a grant (the engine's `Grant` has these fields)."""

    @property
    def id(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def priority(self) -> int: ...
    @property
    def effective_at(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def voided_at(self) -> datetime | None: ...
    @property
    def min_rollover(self) -> Decimal: ...
    @property
    def max_rollover(self) -> Decimal: ...
    @property
    def recurrence(self) -> Any: ...  # None, or an object with `interval` (str) and `anchor` (datetime)


@dataclass(frozen=True)
class OracleState:
    at: datetime
    period_start: datetime
    balances: dict[str, Decimal]  # the grants active at `at`
    overage: Decimal
    usage: Decimal  # in [period_start, at)
    grant_usage: Decimal  # paid by grants since period_start

    @property
    def balance(self) -> Decimal:
        return sum(self.balances.values(), ZERO)


def _active(grant: GrantLike, t: datetime) -> bool:
    if t < grant.effective_at:
        return False
    if grant.expires_at is not None and t >= grant.expires_at:
        return False
    return grant.voided_at is None or t < grant.voided_at


def _order(grants: Iterable[GrantLike]) -> list[GrantLike]:
    def key(g: GrantLike) -> tuple[int, int, datetime, datetime, str]:
        never = datetime.max.replace(tzinfo=g.created_at.tzinfo)
        return (g.priority, 0 if g.expires_at else 1, g.expires_at or never, g.created_at, g.id)

    return sorted(grants, key=key)


def _refills(grant: GrantLike, start: datetime, end: datetime) -> set[datetime]:
    """The instants in (effective_at, end] at which the active grant recurs, found by walking k both ways."""
    if grant.recurrence is None:
        return set()
    interval, anchor = Interval.parse(grant.recurrence.interval), grant.recurrence.anchor
    times = set()
    k = 0
    while interval.add(anchor, k) > start:
        k -= 1
    while (t := interval.add(anchor, k)) <= end:
        if t > grant.effective_at and _active(grant, t):
            times.add(t)
        k += 1
    return times


class _Sim:
    def __init__(self, grants: list[GrantLike], start: datetime) -> None:
        self.grants = _order(grants)
        self.balances = {g.id: (g.amount if _active(g, start) else ZERO) for g in self.grants}
        self.overage = self.usage = self.grant_usage = ZERO
        self.period_start = start

    def burn(self, demand: Decimal, at: datetime) -> None:
        for grant in self.grants:
            if _active(grant, at) and demand > 0:
                taken = min(self.balances[grant.id], demand)
                self.balances[grant.id] -= taken
                self.grant_usage += taken
                demand -= taken
        self.overage = demand

    def reset(self, at: datetime, preserve_overage: bool) -> None:
        for grant in self.grants:
            keep = max(grant.min_rollover, self.balances[grant.id])
            self.balances[grant.id] = min(grant.max_rollover, keep) if _active(grant, at) else ZERO
        if not preserve_overage:
            self.overage = ZERO
        self.usage = self.grant_usage = ZERO
        self.period_start = at

    def grant_events(self, at: datetime, refills: Mapping[str, set[datetime]]) -> None:
        for grant in self.grants:
            if not _active(grant, at):
                self.balances[grant.id] = ZERO
            elif grant.effective_at == at or at in refills[grant.id]:
                self.balances[grant.id] = grant.amount

    def state(self, at: datetime) -> OracleState:
        active = {g.id: self.balances[g.id] for g in self.grants if _active(g, at)}
        return OracleState(at, self.period_start, active, self.overage, self.usage, self.grant_usage)


def simulate(
    grants: Iterable[GrantLike],
    start: datetime,
    end: datetime,
    usage: Mapping[datetime, Decimal],
    resets: Mapping[datetime, bool],
) -> dict[datetime, OracleState]:
    """The state at every minute of `[start, end]`, starting from measurement start at `start`.

    `usage` maps a minute to the usage in it; `resets` maps a reset time in `(start, end]` to whether it
    preserves overage."""
    sim = _Sim(list(grants), start)
    refills = {g.id: _refills(g, start, end) for g in sim.grants}
    states = {start: sim.state(start)}
    minute = start
    while minute < end:
        used = usage.get(minute, ZERO)
        sim.usage += used
        sim.burn(used + sim.overage, minute)
        minute += MINUTE
        if minute in resets:
            sim.reset(minute, resets[minute])
        sim.grant_events(minute, refills)
        sim.burn(sim.overage, minute)
        states[minute] = sim.state(minute)
    return states
