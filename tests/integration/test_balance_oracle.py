"""Balances over real HTTP never drift from a brute-force recomputation over the raw events.

For several seeds: random grants (priorities, expiries, rollovers, recurrences), random events from the
customer's two subjects, another customer's subject and a feature filter that excludes some of them, a
manual reset that moves the anchor, late events that land before cached state, a voided grant. After every
step the API's value (now, and at past `time=`s) equals tests/credit_oracle.py walking the raw events minute
by minute, with the usage periods restated here from their definition."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from meterd.core.timeutil import ceil_minute, floor_minute, format_rfc3339, parse_rfc3339
from tests.api.helpers import ingest_ok
from tests.conftest import event, wait_for
from tests.credit_oracle import OracleState, simulate

MINUTE = timedelta(minutes=1)
PERIOD = timedelta(hours=6)
FRESHNESS_S = 1.0


@dataclass(frozen=True)
class Recurrence:
    interval: str
    anchor: datetime


@dataclass(frozen=True)
class G:
    id: str
    amount: Decimal
    priority: int
    effective_at: datetime
    created_at: datetime
    expires_at: datetime | None
    voided_at: datetime | None
    min_rollover: Decimal
    max_rollover: Decimal
    recurrence: Recurrence | None


def _time(value: str | None) -> datetime | None:
    return parse_rfc3339(value, "t") if value else None


def _grants(api: httpx.Client, customer: str, feature: str) -> list[G]:
    response = api.get(f"/api/v2/customers/{customer}/entitlements/{feature}/grants", params={"includeDeleted": True})
    assert response.status_code == 200, response.text
    out = []
    for g in response.json()["items"]:
        recurrence = g.get("recurrence")
        out.append(
            G(
                id=g["id"],
                amount=Decimal(str(g["amount"])),
                priority=g["priority"],
                effective_at=parse_rfc3339(g["effectiveAt"], "t"),
                created_at=parse_rfc3339(g["createdAt"], "t"),
                expires_at=_time(g["expiresAt"]),
                voided_at=_time(g["voidedAt"]),
                min_rollover=Decimal(str(g["minRolloverAmount"])),
                max_rollover=Decimal(str(g["maxRolloverAmount"])),
                recurrence=Recurrence(recurrence["intervalISO"], parse_rfc3339(recurrence["anchor"], "t"))
                if recurrence
                else None,
            )
        )
    return out


def _resets(anchor: datetime, manual: datetime | None, start: datetime, end: datetime) -> dict[datetime, bool]:
    """Usage-period boundaries in (start, end]: every 6 hours from the anchor, and from a manual reset on
    (it moves the anchor, retainAnchor being false). None preserves overage."""
    out: dict[datetime, bool] = {}
    t = anchor
    while t > start:
        t -= PERIOD
    while t <= end:
        if t > start and (manual is None or t < manual):
            out[t] = False
        t += PERIOD
    if manual is not None:
        t = manual
        while t <= end:
            out[t] = False
            t += PERIOD
    return out


class Scenario:
    def __init__(self, api: httpx.Client, unique: Callable[[str], str], seed: int) -> None:
        self.api, self.rng = api, random.Random(seed)
        self.now = datetime.now(UTC)
        self.start = floor_minute(self.now) - timedelta(hours=30)  # measureUsageFrom
        self.anchor = self.start + timedelta(minutes=17)
        self.type = unique("oracle")
        self.meter = unique("oracle_meter")
        self.feature = unique("oracle_feature")
        self.customer = unique("oracle-customer")
        self.subjects = [unique("s1"), unique("s2")]
        self.stranger = unique("s3")
        self.events: list[tuple[datetime, str, str, int]] = []
        self.manual: datetime | None = None
        self.acked = 0.0

    def setup(self) -> None:
        api = self.api
        meter = {
            "slug": self.meter,
            "eventType": self.type,
            "aggregation": "SUM",
            "valueProperty": "$.n",
            "groupBy": {"kind": "$.kind"},
        }
        assert api.post("/api/v1/meters", json=meter).status_code == 201
        feature = {"key": self.feature, "name": "f", "meterSlug": self.meter, "meterGroupByFilters": {"kind": "a"}}
        assert api.post("/api/v1/features", json=feature).status_code == 201
        customer = {"name": "c", "key": self.customer, "usageAttribution": {"subjectKeys": self.subjects}}
        assert api.post("/api/v1/customers", json=customer).status_code == 201
        assert api.post("/api/v1/customers", json={"name": "x", "key": self.stranger}).status_code == 201
        entitlement = {
            "type": "metered",
            "featureKey": self.feature,
            "usagePeriod": {"interval": "PT6H", "anchor": format_rfc3339(self.anchor)},
            "measureUsageFrom": format_rfc3339(self.start),
        }
        response = api.post(f"/api/v2/customers/{self.customer}/entitlements", json=entitlement)
        assert response.status_code == 201, response.text

    def grant(self) -> None:
        rng = self.rng
        amount = rng.choice([0, 50, 200, 1000, 5000])
        effective = self.start + timedelta(minutes=rng.randint(-60, 30 * 60 - 10))
        body: dict[str, Any] = {
            "amount": amount,
            "priority": rng.randint(1, 3),
            "effectiveAt": format_rfc3339(effective + timedelta(seconds=rng.randint(0, 59))),
        }
        if rng.random() < 0.7:
            body["expiration"] = {"duration": rng.choice(["HOUR", "DAY"]), "count": rng.randint(1, 20)}
        high = rng.choice([0, amount // 2, amount])
        body["maxRolloverAmount"] = high
        body["minRolloverAmount"] = rng.choice([0, high // 2, high])
        if rng.random() < 0.3:
            body["recurrence"] = {"interval": "PT4H", "anchor": format_rfc3339(effective + timedelta(minutes=7))}
        url = f"/api/v2/customers/{self.customer}/entitlements/{self.feature}/grants"
        response = self.api.post(url, json=body)
        assert response.status_code == 201, response.text

    def ingest(self, count: int, earliest: datetime, latest: datetime) -> None:
        rng, batch = self.rng, []
        span = int((latest - earliest).total_seconds())
        for _ in range(count):
            t = earliest + timedelta(seconds=rng.randint(0, span), microseconds=rng.randint(0, 999_999))
            subject = rng.choice([*self.subjects, self.stranger])
            kind = rng.choice(["a", "a", "b"])
            n = rng.randint(1, 120)
            self.events.append((t, subject, kind, n))
            data = {"n": n, "kind": kind}
            batch.append(event(type_=self.type, subject=subject, time_=format_rfc3339(t), data=data))
        ingest_ok(self.api, batch)
        self.acked = time.monotonic()
        total = sum(n for _, s, k, n in self.events if k == "a" and s in self.subjects)
        wait_for(lambda: self._meter_total() == total, timeout=20)

    def _meter_total(self) -> float:
        params = {"filterGroupBy[kind]": "a", "subject": self.subjects}
        rows = self.api.get(f"/api/v1/meters/{self.meter}/query", params=params).json()["data"]
        return sum(r["value"] for r in rows)

    def oracle(self, end: datetime) -> dict[datetime, OracleState]:
        usage: dict[datetime, Decimal] = {}
        for t, subject, kind, n in self.events:
            if kind == "a" and subject in self.subjects and t >= self.start:
                minute = floor_minute(t)
                usage[minute] = usage.get(minute, Decimal(0)) + n
        grants = _grants(self.api, self.customer, self.feature)
        return simulate(grants, self.start, end, usage, _resets(self.anchor, self.manual, self.start, end))

    def value(self, at: datetime | None = None) -> tuple[dict[str, Any], datetime, datetime]:
        params = {"time": format_rfc3339(at)} if at is not None else {}
        before = datetime.now(UTC)
        response = self.api.get(f"/api/v2/customers/{self.customer}/entitlements/{self.feature}/value", params=params)
        after = datetime.now(UTC)
        assert response.status_code == 200, response.text
        return response.json(), (at or before), (at or after)

    def check(self, at: datetime | None = None) -> None:
        # the contract: a value reflects every event acknowledged at least a second earlier (the meter shows
        # a batch as soon as it is stored, a moment before the balances have taken it in)
        time.sleep(max(0.0, self.acked + FRESHNESS_S - time.monotonic()))
        value, low, high = self.value(at)
        states = self.oracle(ceil_minute(high))
        candidates = [states[ceil_minute(low)], states[ceil_minute(high)]]
        got = {k: Decimal(str(value[k])) for k in ("balance", "usage", "overage", "totalAvailableGrantAmount")}
        wanted = [
            {
                "balance": s.balance,
                "usage": s.usage,
                "overage": s.overage,
                "totalAvailableGrantAmount": s.grant_usage + s.balance,
            }
            for s in candidates
        ]
        assert got in wanted, f"at {at}: api {got} != oracle {wanted[-1]}"
        assert value["hasAccess"] == (got["balance"] > 0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_balances_equal_a_minute_by_minute_oracle(api: httpx.Client, unique: Callable[[str], str], seed: int) -> None:
    s = Scenario(api, unique, seed)
    s.setup()
    for _ in range(s.rng.randint(2, 5)):
        s.grant()
    s.ingest(150, s.start - timedelta(minutes=30), s.now - timedelta(minutes=2))
    s.check()
    for hours in (3, 11, 20, 29):
        s.check(s.start + timedelta(hours=hours, seconds=s.rng.randint(0, 3599)))

    # a manual reset a few hours ago (the anchor moves), then values again
    s.manual = floor_minute(s.now - timedelta(hours=s.rng.randint(2, 5), minutes=s.rng.randint(0, 59)))
    url = f"/api/v2/customers/{s.customer}/entitlements/{s.feature}/reset"
    response = api.post(url, json={"effectiveAt": format_rfc3339(s.manual)})
    assert response.status_code == 204, response.text
    s.check()

    # late events land before every cached state; fresh ones land now; both count, once
    s.check()  # cache the value (and its base)
    s.ingest(40, s.start, s.now - timedelta(hours=1))
    s.check()
    s.ingest(30, datetime.now(UTC) - timedelta(seconds=50), datetime.now(UTC))
    s.check()
    # events of this very minute extend the cached base (no recomputation): they count too
    if datetime.now(UTC).second > 50:
        time.sleep(61 - datetime.now(UTC).second)
    s.check()
    s.ingest(20, floor_minute(datetime.now(UTC)), datetime.now(UTC))
    s.check()
    s.check(s.manual + timedelta(minutes=30))

    # a backdated grant, then a voided grant
    s.grant()
    s.check()
    grants = _grants(api, s.customer, s.feature)
    victim = s.rng.choice([g for g in grants if g.voided_at is None])
    assert api.delete(f"/api/v1/grants/{victim.id}").status_code == 204
    s.check()
