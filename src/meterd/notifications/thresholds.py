"""Which of a balance-threshold rule's thresholds are crossed by an entitlement's value (pure).

* usage_value (and the deprecated NUMBER): usage >= value.
* usage_percentage (and the deprecated PERCENT): usage >= value% of the total available grant amount; never
  active while that total is 0 (a percentage of nothing is meaningless).
* balance_value: balance <= value.

Usage thresholds and balance thresholds are two kinds; of each kind only the most severe active threshold
is reported (the highest usage mark, the lowest balance mark), so a jump from 10% to 100% raises one
notification for 100%, not one for each mark passed on the way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from meterd.notifications.model import Threshold

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Reading:
    """The numbers of an entitlement value that thresholds compare with."""

    usage: Decimal
    balance: Decimal
    total_available: Decimal


def mark(threshold: Threshold, reading: Reading) -> Decimal | None:
    """The threshold in credits (a percentage resolved against the total available); None when it cannot
    be resolved."""
    if threshold.canonical_type == "usage_percentage":
        if reading.total_available <= 0:
            return None
        return reading.total_available * threshold.value / _HUNDRED
    return threshold.value


def is_active(threshold: Threshold, reading: Reading) -> bool:
    level = mark(threshold, reading)
    if level is None:
        return False
    if threshold.kind == "balance":
        return reading.balance <= level
    return reading.usage >= level


def most_severe_active(thresholds: Iterable[Threshold], reading: Reading) -> list[Threshold]:
    """At most one threshold per kind (usage first, then balance); the first listed wins a tie."""
    best: dict[str, tuple[Threshold, Decimal]] = {}
    for threshold in thresholds:
        level = mark(threshold, reading)
        if level is None or not is_active(threshold, reading):
            continue
        current = best.get(threshold.kind)
        if current is None or _more_severe(threshold.kind, level, current[1]):
            best[threshold.kind] = (threshold, level)
    return [best[kind][0] for kind in ("usage", "balance") if kind in best]


def _more_severe(kind: str, level: Decimal, than: Decimal) -> bool:
    return level > than if kind == "usage" else level < than
