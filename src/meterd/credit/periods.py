"""Usage periods and recurrence intervals: calendar arithmetic in UTC, at whole-minute resolution.

An `Interval` is one of OpenMeter's enum names (DAY, WEEK, MONTH, YEAR) or an ISO 8601 duration of at least
one minute made of whole minutes. Time `k` of a series is always computed from the anchor, never by
stepping from the previous time, so month ends do not drift: Jan 31 + 1 month is Feb 28 (29), + 2 months
is Mar 31. The calendar part (years, months) is applied first, clamping the day to the month's length,
then the fixed part (weeks, days, hours, minutes).

Usage periods partition time by `anchor + k * interval`. A manual reset starts a new period at its time;
unless it retains the anchor, the anchor becomes the reset time from then on. When several manual resets
share a time, the last one in the sequence is the one that counts.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import isodate

__all__ = ["Interval", "ManualReset", "Reset", "period_at", "require_utc", "resets_between"]

_NAMED = {"DAY": "P1D", "WEEK": "P1W", "MONTH": "P1M", "YEAR": "P1Y"}
_AVERAGE_MONTH_SECONDS = 30.436875 * 86_400  # 365.2425 / 12 days


def require_utc(t: datetime, what: str = "time") -> None:
    """Raise ValueError unless `t` is timezone-aware with a zero UTC offset."""
    if t.tzinfo is None or t.utcoffset() != timedelta(0):
        raise ValueError(f"{what} must be a timezone-aware UTC datetime, got {t!r}")


@dataclass(frozen=True, slots=True)
class Interval:
    """A positive calendar interval: `months` (years count as 12) plus a fixed `seconds` part."""

    months: int
    days: int
    seconds: int  # the time-of-day part (hours, minutes), a whole number of minutes

    @classmethod
    def parse(cls, text: str) -> Interval:
        """DAY | WEEK | MONTH | YEAR, or an ISO 8601 duration; ValueError names what is wrong."""
        return _parse(text)

    @property
    def iso(self) -> str:
        """The canonical ISO 8601 form: P1D, P1W, P1M, P1Y, P1DT12H, PT90M -> PT1H30M, P7D -> P1W."""
        years, months = divmod(self.months, 12)
        if not (years or months or self.seconds) and self.days % 7 == 0:
            return f"P{self.days // 7}W"
        hours, rest = divmod(self.seconds, 3600)
        date = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (self.days, "D")) if n)
        time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (rest // 60, "M")) if n)
        return "P" + date + ("T" + time if time else "")

    @property
    def name(self) -> str | None:
        """OpenMeter's enum name (DAY, WEEK, MONTH, YEAR) when the interval is one of them."""
        return next((name for name, iso in _NAMED.items() if iso == self.iso), None)

    def add(self, anchor: datetime, k: int) -> datetime:
        """`anchor + k * interval`, computed from the anchor (k may be negative)."""
        year, month0 = divmod(anchor.month - 1 + k * self.months, 12)
        year += anchor.year
        day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
        shifted = anchor.replace(year=year, month=month0 + 1, day=day)
        return shifted + timedelta(days=k * self.days, seconds=k * self.seconds)

    def index_at(self, anchor: datetime, t: datetime) -> int:
        """The k with `add(anchor, k) <= t < add(anchor, k + 1)`."""
        approx = self.months * _AVERAGE_MONTH_SECONDS + self.days * 86_400 + self.seconds
        k = int((t - anchor).total_seconds() // approx)
        while self.add(anchor, k) > t:
            k -= 1
        while self.add(anchor, k + 1) <= t:
            k += 1
        return k


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> Interval:
    raw = text.strip()
    iso = _NAMED.get(raw.upper(), raw)
    try:
        parsed = isodate.parse_duration(iso)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise ValueError(f"interval {text!r}: not DAY, WEEK, MONTH, YEAR or an ISO 8601 duration ({exc})") from None
    if isinstance(parsed, isodate.Duration):
        calendar_part = Decimal(parsed.years) * 12 + Decimal(parsed.months)
        fixed = parsed.tdelta
    else:
        calendar_part, fixed = Decimal(0), parsed
    return _build(text, calendar_part, fixed)


def _build(text: str, calendar_part: Decimal, fixed: timedelta) -> Interval:
    if calendar_part != calendar_part.to_integral_value():
        raise ValueError(f"interval {text!r}: years and months must be whole numbers")
    if calendar_part < 0 or fixed < timedelta(0):
        raise ValueError(f"interval {text!r}: must be positive, not negative")
    if fixed.microseconds or fixed.seconds % 60:
        raise ValueError(f"interval {text!r}: must be a whole number of minutes (the engine's resolution)")
    if calendar_part == 0 and fixed == timedelta(0):
        raise ValueError(f"interval {text!r}: must be positive, not zero")
    # timedelta(minutes>=1) is guaranteed here: the fixed part is whole minutes and not zero
    return Interval(months=int(calendar_part), days=fixed.days, seconds=fixed.seconds)


@dataclass(frozen=True, slots=True)
class Reset:
    """A usage reset the engine applies at `at` (re-exported as `meterd.credit.engine.Reset`)."""

    at: datetime
    preserve_overage: bool


@dataclass(frozen=True, slots=True)
class ManualReset:
    at: datetime
    retain_anchor: bool
    preserve_overage: bool


def _latest_by_time(manual: Sequence[ManualReset]) -> list[ManualReset]:
    by_time: dict[datetime, ManualReset] = {}
    for reset in manual:
        require_utc(reset.at, "manual reset time")
        by_time[reset.at] = reset
    return [by_time[at] for at in sorted(by_time)]


def period_at(
    interval: Interval, anchor: datetime, manual: Sequence[ManualReset], t: datetime
) -> tuple[datetime, datetime]:
    """The usage period `[from, to)` that contains `t`."""
    require_utc(anchor, "anchor")
    require_utc(t)
    current_anchor, started, following = anchor, None, None
    for reset in _latest_by_time(manual):
        if reset.at > t:
            following = reset.at
            break
        started = reset.at
        if not reset.retain_anchor:
            current_anchor = reset.at
    k = interval.index_at(current_anchor, t)
    start, end = interval.add(current_anchor, k), interval.add(current_anchor, k + 1)
    if started is not None and started > start:
        start = started
    if following is not None and following < end:
        end = following
    return start, end


def resets_between(
    interval: Interval,
    anchor: datetime,
    manual: Sequence[ManualReset],
    frm: datetime,
    to: datetime,
    preserve_overage_at_reset: bool,
) -> list[Reset]:
    """Every reset in `(frm, to]`: the automatic period boundaries and the manual resets.

    An automatic reset preserves overage iff `preserve_overage_at_reset`; a manual reset (also one that falls
    on an automatic boundary) uses its own flag."""
    manual_at = {reset.at: reset for reset in _latest_by_time(manual)}
    resets: list[Reset] = []
    t = frm
    while True:
        _, end = period_at(interval, anchor, manual, t)
        if end > to:
            return resets
        reset = manual_at.get(end)
        resets.append(Reset(end, reset.preserve_overage if reset else preserve_overage_at_reset))
        t = end
