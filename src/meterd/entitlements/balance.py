"""Entitlement values and history: the credit engine fed with the feature's meter usage, made fast.

Speed comes from two caches, both exact:
- period-start snapshots: the engine's state right after each reset, so a value replays one period, not all;
- values: the value "now" of each metered entitlement, valid until the next time it could change by
  itself (a reset, a grant activation, expiry or recurrence, a future-dated event) or until something
  changes it: new events for its meter and subjects (told by the sink after each batch is stored), a
  grant, a reset, the entitlement or the customer's subjects.

Every invalidation bumps the entitlement's generation; a computation caches its results only if the
generation did not move while it ran, so a late event can never be hidden by a stale cache."""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from meterd.core.timeutil import ceil_minute, floor_minute, from_us, utcnow
from meterd.credit.engine import Grant, RunResult, Segment, Snapshot, breakpoints, run
from meterd.credit.periods import Interval, ManualReset, period_at, resets_between
from meterd.customers.model import Customer
from meterd.entitlements.model import Entitlement, EntitlementType, Feature
from meterd.entitlements.service import EntitlementService
from meterd.ingest.journal import JournalRow
from meterd.meters.model import Aggregation, Meter
from meterd.usage.query import FilterString
from meterd.usage.service import UsageService

log = logging.getLogger(__name__)

ADDITIVE = frozenset({Aggregation.SUM, Aggregation.COUNT})  # usage that adds up minute by minute
REBASE_AFTER = timedelta(hours=1)  # a base older than this is rebuilt (its tail would grow)
KEEP_PERIOD_STARTS = 100  # of a long replay, the latest period starts are kept (older values replay again)

_FOREVER = datetime.max.replace(tzinfo=from_us(0).tzinfo)


@dataclass(frozen=True)
class Value:
    """An entitlement's value at `at` (minute-ceiled for metered entitlements)."""

    has_access: bool
    at: datetime
    balance: Decimal | None = None
    usage: Decimal | None = None
    overage: Decimal | None = None
    total_available: Decimal | None = None
    config: str | None = None
    period: tuple[datetime, datetime] | None = None
    grant_balances: dict[str, Decimal] | None = None  # metered: each active grant's balance (v2 grantBalances)


@dataclass(frozen=True)
class Terms:
    """Everything about a metered entitlement the engine needs, loaded once per computation."""

    entitlement: Entitlement
    feature: Feature
    meter: Meter
    subjects: tuple[str, ...]
    grants: tuple[Grant, ...]
    interval: Interval
    manual: tuple[ManualReset, ...]
    filters: dict[str, tuple[str, FilterString]]

    @property
    def start(self) -> datetime:
        assert self.entitlement.measure_usage_from is not None
        return self.entitlement.measure_usage_from

    @property
    def anchor(self) -> datetime:
        assert self.entitlement.usage_period_anchor is not None
        return self.entitlement.usage_period_anchor


@dataclass
class _Base:
    """The exact state at a minute boundary plus the usage of every minute since: enough to compute the
    value at any later time in Python, as new batches add their increments to the tail."""

    terms: Terms
    snapshot: Snapshot
    tail: dict[datetime, Decimal]
    applied: int = 0  # the last journal seq whose increments are in the tail (a replayed batch is skipped)


@dataclass
class _State:
    generation: int = 0
    base: _Base | None = None
    snapshots: list[Snapshot] = field(default_factory=list)  # period starts, sorted by `at`
    loaded: bool = False  # the stored period starts were read
    value: Value | None = None
    valid_until: datetime = _FOREVER


@dataclass(frozen=True)
class WindowRow:
    start: datetime
    end: datetime
    usage: Decimal
    balance_at_start: Decimal


class BalanceService:
    def __init__(
        self,
        entitlements: EntitlementService,
        usage: UsageService,
        meters: Callable[[str, str], Meter],
        snapshots: SnapshotStore | None = None,
        caching: bool = True,
    ):
        # caching=False (cluster-mode API nodes until the stored-batch feed reaches them): every value is computed
        # from the event store, and no period start is kept, since a late event stored by another process
        # could spoil it unseen
        self._caching = caching
        self._entitlements = entitlements
        self._usage = usage
        self._meter = meters
        self._saved = snapshots
        self._persisted: dict[str, datetime] = snapshots.latest() if snapshots is not None else {}
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._names: dict[tuple[str, ...], Entitlement] = {}  # see remember()
        self._future: list[tuple[datetime, str]] = []  # (event time, entitlement id): invalidate when due
        self._epoch = 0  # batches whose store began
        self._inflight = 0  # batches being stored now

    # -- reads ---------------------------------------------------------------------------------------

    def value(self, entitlement: Entitlement, at: datetime | None = None) -> Value:
        now = utcnow()
        moment = at or now
        if not entitlement.active_at(moment):
            return Value(has_access=False, at=moment)
        if entitlement.type is EntitlementType.BOOLEAN:
            return Value(has_access=True, at=moment)
        if entitlement.type is EntitlementType.STATIC:
            return Value(has_access=True, at=moment, config=entitlement.config)
        if at is None and self._caching:
            cached = self._cached(entitlement, now)
            if cached is not None:
                return cached
        return self._compute(entitlement, moment, cache=at is None and self._caching)

    def _cached(self, entitlement: Entitlement, now: datetime) -> Value | None:
        """The cached value, or one computed from the entitlement's base (no query), or None."""
        self._expire_future(now)
        with self._lock:
            state = self._states.get(entitlement.id)
            if state is None:
                return None
            if state.value is not None and ceil_minute(now) < state.valid_until:
                return state.value
            generation, base = state.generation, state.base
        if base is None or now - base.snapshot.at >= REBASE_AFTER:
            return None
        value, valid_until = self._from_base(base, now)
        self._store(entitlement.id, generation, value, valid_until)
        return value

    def cached_value(self, key: tuple[str, ...]) -> Value | None:
        """The value now of the entitlement a caller named by `key` (e.g. namespace, customer, feature), when
        both the name and the value are cached: no database, no engine (the hot path of access checks)."""
        entitlement = self._names.get(key) if self._caching else None
        if entitlement is None:
            return None
        now = utcnow()
        if not entitlement.active_at(now) or entitlement.type is not EntitlementType.METERED:
            return None
        return self._cached(entitlement, now)

    def remember(self, key: tuple[str, ...], entitlement: Entitlement) -> None:
        """Name -> live entitlement, forgotten whenever any entitlement or customer changes."""
        if entitlement.deleted_at is None:
            with self._lock:
                if len(self._names) > 200_000:
                    self._names.clear()
                self._names[key] = entitlement

    def _load(self, entitlement_id: str) -> None:
        """Read the stored period starts once per entitlement (after a restart)."""
        with self._lock:
            state = self._states.setdefault(entitlement_id, _State())
            if state.loaded or self._saved is None or entitlement_id not in self._persisted:
                state.loaded = True
                return
            generation = state.generation
        stored = self._saved.load(entitlement_id)
        with self._lock:
            if state.generation == generation and not state.loaded:
                known = {s.at for s in state.snapshots}
                state.snapshots = sorted([*state.snapshots, *(s for s in stored if s.at not in known)], key=_at)
                state.loaded = True

    def _compute(self, entitlement: Entitlement, moment: datetime, cache: bool) -> Value:
        if not self._caching:
            terms = self.terms(entitlement)
            start, _ = self._start(terms, [], ceil_minute(moment))
            result = run(terms.grants, start, ceil_minute(moment), [], self._usage_fn(terms))
            return self._value(terms, result.snapshot, moment)
        self._load(entitlement.id)
        with self._lock:
            state = self._states.setdefault(entitlement.id, _State())
            generation, epoch, quiet = state.generation, self._epoch, self._inflight == 0
            snapshots, base = list(state.snapshots), state.base
        if cache and base is not None and moment - base.snapshot.at < REBASE_AFTER:
            value, valid_until = self._from_base(base, moment)
            self._store(entitlement.id, generation, value, valid_until)
            return value
        terms = self.terms(entitlement)
        t = ceil_minute(moment)
        start, new_snapshots = self._start(terms, snapshots, t)
        at_minute = floor_minute(moment)
        if cache and quiet and terms.meter.aggregation in ADDITIVE and start.at <= at_minute:
            # a new base: the state at the start of this minute, and the usage of every minute from there
            mid = run(terms.grants, start, at_minute, [], self._usage_fn(terms)).snapshot
            rows = self._usage.per_minute(terms.meter, at_minute, terms.subjects, terms.filters)
            base = _Base(terms, mid, _add_minutes({}, rows))
            value, valid_until = self._from_base(base, moment)
        else:
            base = None
            result = run(terms.grants, start, t, [], self._usage_fn(terms))
            value = self._value(terms, result.snapshot, moment)
            valid_until = self._valid_until(terms, t)
        with self._lock:
            state = self._states.setdefault(entitlement.id, _State())
            if state.generation == generation:
                for snapshot in new_snapshots:
                    index = bisect.bisect_left([s.at for s in state.snapshots], snapshot.at)
                    if index == len(state.snapshots) or state.snapshots[index].at != snapshot.at:
                        state.snapshots.insert(index, snapshot)
                if new_snapshots and self._saved is not None:  # under the lock: no invalidation in between
                    self._saved.save(entitlement.id, new_snapshots, utcnow())
                    latest = max(s.at for s in new_snapshots)
                    self._persisted[entitlement.id] = max(latest, self._persisted.get(entitlement.id, latest))
                # a base is exact only if no batch was being stored while its queries ran: a batch stored
                # later adds its own increments (on_stored); one stored earlier is in the queries
                if base is not None and self._epoch == epoch and self._inflight == 0:
                    state.base = base
        if cache:
            self._store(entitlement.id, generation, value, valid_until)
        return value

    def _store(self, entitlement_id: str, generation: int, value: Value, valid_until: datetime) -> None:
        with self._lock:
            state = self._states.setdefault(entitlement_id, _State())
            if state.generation == generation:
                state.value = value
                state.valid_until = valid_until

    @staticmethod
    def _value(terms: Terms, snap: Snapshot, moment: datetime) -> Value:
        return Value(
            has_access=terms.entitlement.is_soft_limit or snap.balance > 0,
            at=snap.at,
            balance=snap.balance,
            usage=snap.usage,
            overage=snap.overage,
            total_available=snap.grant_usage + snap.balance,
            period=period_at(terms.interval, terms.anchor, terms.manual, moment),
            grant_balances=dict(snap.balances),
        )

    def _from_base(self, base: _Base, moment: datetime) -> tuple[Value, datetime]:
        """The value from a base: pure Python, no query (the tail holds every minute's usage since the base)."""
        terms, t = base.terms, ceil_minute(moment)
        tail = dict(base.tail)
        usage = _from_minutes(tail)
        preserve = terms.entitlement.preserve_overage_at_reset
        resets = resets_between(terms.interval, terms.anchor, terms.manual, base.snapshot.at, t, preserve)
        snap = run(terms.grants, base.snapshot, t, resets, usage).snapshot
        valid_until = self._valid_until(terms, t)
        later = [m for m in tail if m >= t]  # future-dated events count when their minute comes
        if later:
            valid_until = min(valid_until, min(later))
        return self._value(terms, snap, moment), valid_until

    # -- the sink's side -----------------------------------------------------------------------------

    def begin_write(self) -> None:
        with self._lock:
            self._epoch += 1
            self._inflight += 1

    def end_write(self) -> None:
        with self._lock:
            self._inflight -= 1

    def on_stored(self, seq_range: tuple[int, int], hits: Sequence[tuple[str, datetime, datetime]]) -> None:
        """A batch is in the store: (entitlement id, earliest, latest event time) for the entitlements its
        events touch. Entitlements with a base get the batch's per-minute increments (one query per meter
        and filter set, bounded by the batch's journal range); the others are recomputed on next read."""
        groups: dict[tuple[str, str], list[tuple[str, _Base, datetime]]] = {}
        with self._lock:
            plain = []
            for entitlement_id, earliest, latest in hits:
                state = self._states.get(entitlement_id)
                base = state.base if state is not None else None
                if base is None or floor_minute(earliest) < base.snapshot.at:
                    plain.append((entitlement_id, earliest, latest))
                    continue
                key = (base.terms.meter.id, repr(sorted(base.terms.filters.items())))
                groups.setdefault(key, []).append((entitlement_id, base, earliest))
        self.on_events(plain)
        for members in groups.values():
            self._apply(seq_range, members)

    def _apply(self, seq_range: tuple[int, int], members: list[tuple[str, _Base, datetime]]) -> None:
        terms = members[0][1].terms
        subjects = sorted({s for _, base, _ in members for s in base.terms.subjects})
        start = min(earliest for _, _, earliest in members)
        try:
            rows = self._usage.per_minute(
                terms.meter, floor_minute(start), subjects, terms.filters, seq_range=seq_range
            )
        except Exception:
            log.exception("balance increments failed; the entitlements will be recomputed")
            self.on_events([(e, earliest, earliest) for e, _, earliest in members])
            return
        with self._lock:
            for entitlement_id, base, _ in members:
                state = self._states.get(entitlement_id)
                if state is None or state.base is not base or seq_range[1] <= base.applied:
                    continue
                base.applied = seq_range[1]
                mine = set(base.terms.subjects)
                _add_minutes(base.tail, (row for row in rows if row[1] in mine))
                state.generation += 1
                state.value = None

    def _start(self, terms: Terms, snapshots: list[Snapshot], t: datetime) -> tuple[Snapshot, list[Snapshot]]:
        """The state at the start of the period containing `t`: from the latest cached period start,
        replaying whole periods (and caching their starts) up to it."""
        earlier = [s for s in snapshots if s.at <= t]
        snap = earlier[-1] if earlier else Snapshot.start(min(terms.start, t))
        new: list[Snapshot] = []
        preserve = terms.entitlement.preserve_overage_at_reset
        resets = resets_between(terms.interval, terms.anchor, terms.manual, snap.at, t, preserve)
        usage = self._usage_fn(terms)
        if len(resets) > 2 and terms.meter.aggregation in ADDITIVE:  # many periods: one query, not one each
            usage = self._minute_usage(terms, snap.at, resets[-1].at)
        for reset in resets:
            snap = run(terms.grants, snap, reset.at, [reset], usage).snapshot
            new.append(snap)
        return snap, new[-KEEP_PERIOD_STARTS:]

    def _valid_until(self, terms: Terms, t: datetime) -> datetime:
        horizon = t + timedelta(days=400)
        candidates = [horizon]
        resets = resets_between(terms.interval, terms.anchor, terms.manual, t, horizon, False)
        if resets:
            candidates.append(resets[0].at)
        points = breakpoints(terms.grants, t, horizon)
        if points:
            candidates.append(points[0])
        if terms.entitlement.active_to is not None:
            candidates.append(terms.entitlement.active_to)
        return min(candidates)

    def terms(self, entitlement: Entitlement) -> Terms:
        feature = self._entitlements.features.get(entitlement.namespace, entitlement.feature_id)
        assert feature.meter_slug is not None and entitlement.usage_period_interval is not None
        meter = self._meter(entitlement.namespace, feature.meter_slug)
        customer = self._customer(entitlement)
        grants = tuple(g.engine() for g in self._entitlements.grants(entitlement, include_deleted=True))
        return Terms(
            entitlement=entitlement,
            feature=feature,
            meter=meter,
            subjects=tuple(customer.attributed_subjects()) if customer is not None else (),
            grants=grants,
            interval=Interval.parse(entitlement.usage_period_interval),
            manual=tuple(self._entitlements.manual_resets(entitlement)),
            filters=feature_filters(feature, meter),
        )

    def _customer(self, entitlement: Entitlement) -> Customer | None:
        try:
            return self._entitlements.customers.get(entitlement.namespace, entitlement.customer_id)
        except Exception:  # a deleted customer: no subjects, no usage
            return None

    def _usage_fn(self, terms: Terms) -> Callable[[datetime, datetime, datetime], Decimal]:
        """Usage in [frm, to) inside the period that began at `period_start`. UNIQUE_COUNT is not additive,
        so it is counted from the period start and differenced; usage before measurement start is ignored."""
        meter, start = terms.meter, terms.start

        def total(frm: datetime, to: datetime) -> Decimal:
            frm = max(frm, start)
            if frm >= to:
                return Decimal(0)
            return _decimal(self._usage.total(meter, frm, to, terms.subjects, terms.filters))

        def usage(period_start: datetime, frm: datetime, to: datetime) -> Decimal:
            if meter.aggregation is Aggregation.UNIQUE_COUNT and frm > period_start:
                return total(period_start, to) - total(period_start, frm)
            return total(frm, to)

        return usage

    def history(
        self, entitlement: Entitlement, frm: datetime, to: datetime, windows: Sequence[tuple[datetime, datetime]]
    ) -> tuple[list[WindowRow], tuple[Segment, ...]]:
        """The burn-down segments over [frm, to) and the balance at the start of each window."""
        terms = self.terms(entitlement)
        frm, to = floor_minute(frm), ceil_minute(to)
        with self._lock:
            snapshots = list(self._states.get(entitlement.id, _State()).snapshots)
        start, _ = self._start(terms, snapshots, frm)
        usage = self._usage_fn(terms)
        if start.at < frm:  # bring the state to `frm` itself
            start = run(terms.grants, start, frm, [], usage).snapshot
        if terms.meter.aggregation in ADDITIVE:  # one query for the range, not two per window
            usage = self._minute_usage(terms, frm, to)
        preserve = entitlement.preserve_overage_at_reset
        resets = resets_between(terms.interval, terms.anchor, terms.manual, frm, to, preserve)
        result: RunResult = run(terms.grants, start, to, resets, usage)
        rows = []
        for w_start, w_end in windows:
            w_usage = usage(_period_start(result, start, w_start), w_start, w_end)
            rows.append(WindowRow(w_start, w_end, w_usage, self._balance_at(usage, result, start, w_start)))
        return rows, result.segments

    def _minute_usage(
        self, terms: Terms, frm: datetime, to: datetime
    ) -> Callable[[datetime, datetime, datetime], Decimal]:
        """Usage in [a, b) from every minute's usage in [frm, to), fetched once (additive meters only)."""
        rows = self._usage.per_minute(terms.meter, max(frm, terms.start), terms.subjects, terms.filters, end=to)
        return _from_minutes(_add_minutes({}, rows))

    @staticmethod
    def _balance_at(
        usage: Callable[[datetime, datetime, datetime], Decimal], result: RunResult, start: Snapshot, t: datetime
    ) -> Decimal:
        """The balance at `t`: inside a segment, usage burns the balance down until it is gone."""
        t = floor_minute(t)
        for segment in result.segments:
            if segment.start <= t < segment.end:
                used = usage(segment.period_start, segment.start, t) if t > segment.start else 0
                burnt = min(segment.balance_at_start, segment.overage_at_start + used)
                return segment.balance_at_start - burnt
        return result.snapshot.balance if t >= result.snapshot.at else start.balance

    # -- invalidation --------------------------------------------------------------------------------

    def invalidate(self, entitlement_id: str, since: datetime | None = None) -> None:
        """Forget the cached value, and the period starts after `since` (all of them when None)."""
        with self._lock:
            if since is None:
                self._names.clear()
            persisted = self._persisted.get(entitlement_id)
            if persisted is not None and self._saved is not None and (since is None or persisted > since):
                self._saved.delete_after(entitlement_id, since)
                if since is None:
                    del self._persisted[entitlement_id]
                else:
                    self._persisted[entitlement_id] = since  # an upper bound is enough
            state = self._states.get(entitlement_id)
            if state is None:
                return
            state.generation += 1
            state.value = None
            state.base = None
            if since is None:
                state.snapshots.clear()
            else:
                state.snapshots = [s for s in state.snapshots if s.at <= since]

    def on_events(self, hits: Iterable[tuple[str, datetime, datetime]]) -> None:
        """Events were stored: (entitlement id, earliest, latest event time) for each entitlement they touch."""
        now = utcnow()
        for entitlement_id, earliest, latest in hits:
            self.invalidate(entitlement_id, floor_minute(earliest))
            if latest > now:
                with self._lock:
                    heapq.heappush(self._future, (latest, entitlement_id))

    def _expire_future(self, now: datetime) -> None:
        if not self._future or self._future[0][0] > now:
            return
        due = []
        with self._lock:
            while self._future and self._future[0][0] <= now:
                due.append(heapq.heappop(self._future)[1])
        for entitlement_id in due:
            self.invalidate(entitlement_id, None)

    def forget_all(self) -> None:
        with self._lock:
            ids = list(self._states)
        for entitlement_id in ids:
            self.invalidate(entitlement_id, None)


class SnapshotStore(Protocol):
    def latest(self) -> dict[str, datetime]: ...

    def load(self, entitlement_id: str) -> list[Snapshot]: ...

    def save(self, entitlement_id: str, snapshots: Sequence[Snapshot], now: datetime) -> None: ...

    def delete_after(self, entitlement_id: str, since: datetime | None) -> None: ...


def _at(snapshot: Snapshot) -> datetime:
    return snapshot.at


def _add_minutes(
    minutes: dict[datetime, Decimal], rows: Iterable[tuple[datetime, str, float]]
) -> dict[datetime, Decimal]:
    """Add per-minute meter rows (minute, subject, value) into `minutes`, summing the subjects."""
    for minute, _, amount in rows:
        minutes[minute] = minutes.get(minute, Decimal(0)) + _decimal(amount)
    return minutes


def _from_minutes(minutes: Mapping[datetime, Decimal]) -> Callable[[datetime, datetime, datetime], Decimal]:
    """Usage in [a, b) from each minute's usage (additive meters), by prefix sums."""
    keys = sorted(minutes)
    sums = [Decimal(0)]
    for key in keys:
        sums.append(sums[-1] + minutes[key])

    def usage(period_start: datetime, a: datetime, b: datetime) -> Decimal:
        return sums[bisect.bisect_left(keys, b)] - sums[bisect.bisect_left(keys, a)] if a < b else Decimal(0)

    return usage


def _decimal(value: float) -> Decimal:
    """A meter total as a Decimal: the shortest text that reads back as the same float (an empty total
    may arrive as the int 0, which has no is_integer() before Python 3.12)."""
    value = float(value)
    return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))


def _period_start(result: RunResult, start: Snapshot, t: datetime) -> datetime:
    for segment in result.segments:
        if segment.start <= t < segment.end:
            return segment.period_start
    return result.snapshot.period_start if t >= result.snapshot.at else start.period_start


def feature_filters(feature: Feature, meter: Meter) -> dict[str, tuple[str, FilterString]]:
    """The feature's group-by filters as meter-query filters (keys the meter no longer has match nothing)."""
    filters: dict[str, tuple[str, FilterString]] = {}
    for key, value in (feature.meter_group_by_filters or {}).items():
        path = meter.group_by.get(key, "$.__meterd_removed_group_by__")
        filters[key] = (path, {"$eq": value})
    for key, spec in (feature.advanced_filters or {}).items():
        path = meter.group_by.get(key, "$.__meterd_removed_group_by__")
        filters[key] = (path, spec) if key not in filters else (path, {"$and": [filters[key][1], spec]})
    return filters


class EventRouter:
    """Which metered entitlements a stored event touches: (namespace, event type, subject) -> entitlements.
    Rebuilt lazily after any change to entitlements, features, meters or customers."""

    def __init__(self, load: Callable[[], list[tuple[str, str, str, str]]]) -> None:
        self._load = load  # -> [(namespace, event type, subject, entitlement id)]
        self._index: dict[tuple[str, str, str], list[str]] | None = None
        self._version = 0  # bumped by stale(): an index loaded before a change must not be kept after it
        self._lock = threading.Lock()

    def stale(self) -> None:
        with self._lock:
            self._index = None
            self._version += 1

    def route(self, rows: Sequence[JournalRow]) -> list[tuple[str, datetime, datetime]]:
        with self._lock:
            index, version = self._index, self._version
        if index is None:
            index = {}
            for namespace, event_type, subject, entitlement_id in self._load():
                index.setdefault((namespace, event_type, subject), []).append(entitlement_id)
            with self._lock:
                if self._version == version:  # else a change raced the load: use it once, load again next time
                    self._index = index
        if not index:
            return []
        spans: dict[str, tuple[int, int]] = {}
        for row in rows:
            targets = index.get((row[1], row[4], row[5]))
            if not targets:
                continue
            t = row[6]
            for entitlement_id in targets:
                low, high = spans.get(entitlement_id, (t, t))
                spans[entitlement_id] = (min(low, t), max(high, t))
        return [(e, from_us(low), from_us(high)) for e, (low, high) in spans.items()]
