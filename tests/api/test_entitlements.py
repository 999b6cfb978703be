"""Entitlements, grants, values, history and resets over real HTTP: the v2 customer routes, the v1 subject routes
and the global lists (compat reference 1.2, 5.1, 5.2).

Values are checked to the unit. The credit engine has minute resolution, so every fixture lives in the past on
whole minutes: `T0` is three hours ago, rounded down to the minute; usage is measured from T0 in DAY periods
anchored at T0, so the current period started at T0. Events are ingested (and waited for) before the
entitlement exists unless a test is about a value changing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, barrier, create_meter, ingest_ok
from tests.conftest import wait_for

Unique = Callable[[str], str]
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def iso(t: datetime) -> str:
    """How meterd writes a time: UTC, Z, fractions only when not zero."""
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{t.microsecond:06d}".rstrip("0") + "Z" if t.microsecond else text + "Z"


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


@dataclass
class World:
    """A SUM meter of `tokens` grouped by model, a feature on it for model=gpt, and a customer with two subjects;
    `stranger` is a subject of another customer."""

    api: httpx.Client
    unique: Unique
    meter: str
    etype: str
    feature: str
    customer: str
    customer_id: str
    s1: str
    s2: str
    stranger: str
    t0: datetime

    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)

    def event(self, subject: str, tokens: float, minutes: float, model: str = "gpt", etype: str = "") -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "entitlement-tests",
            "type": etype or self.etype,
            "subject": subject,
            "time": iso(self.at(minutes)),
            "data": {"tokens": tokens, "model": model},
        }

    def ingest(self, *events: dict[str, Any]) -> None:
        """Send the events and wait until they are stored."""
        ingest_ok(self.api, list(events))
        barrier(self.api)

    def add_feature(self, prefix: str, **body: Any) -> str:
        key = self.unique(prefix)
        filters = {"meterGroupByFilters": {"model": "gpt"}}
        body = {"key": key, "name": key, "meterSlug": self.meter, **filters, **body}
        response = self.api.post("/api/v1/features", json=body)
        assert response.status_code == 201, response.text
        return key

    def metered(self, **extra: Any) -> dict[str, Any]:
        body = {
            "type": "metered",
            "featureKey": self.feature,
            "usagePeriod": {"interval": "DAY"},
            "measureUsageFrom": iso(self.t0),
        }
        return {**body, **extra}

    @property
    def base(self) -> str:
        return f"/api/v2/customers/{self.customer}/entitlements"

    def entitle(self, **body: Any) -> dict[str, Any]:
        response = self.api.post(self.base, json=body or self.metered())
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        entitlement: dict[str, Any] = response.json()
        return entitlement

    def grant(self, ref: str, **body: Any) -> dict[str, Any]:
        response = self.api.post(f"{self.base}/{ref}/grants", json=body)
        assert response.status_code == 201, response.text
        grant: dict[str, Any] = response.json()
        return grant

    def value(self, ref: str | None = None, **params: Any) -> dict[str, Any]:
        """The v2 value without `grantBalances` (checked to add up to the balance; see `grant_balances`)."""
        response = self.api.get(f"{self.base}/{ref or self.feature}/value", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        value: dict[str, Any] = response.json()
        if "balance" in value:
            assert sum(value.pop("grantBalances").values()) == value["balance"], value
        return value

    def grant_balances(self, ref: str | None = None, **params: Any) -> dict[str, Any]:
        response = self.api.get(f"{self.base}/{ref or self.feature}/value", params=params)
        assert response.status_code == 200, response.text
        balances: dict[str, Any] = response.json()["grantBalances"]
        return balances

    def history(self, ref: str | None = None, **params: Any) -> dict[str, Any]:
        response = self.api.get(f"{self.base}/{ref or self.feature}/history", params=params)
        assert response.status_code == 200, response.text
        history: dict[str, Any] = response.json()
        return history


@pytest.fixture
def world(api: httpx.Client, unique: Unique) -> World:
    meter = unique("ent_meter")
    etype = f"{meter}_type"
    create_meter(
        api, slug=meter, eventType=etype, aggregation="SUM", valueProperty="$.tokens", groupBy={"model": "$.model"}
    )
    feature = unique("ent_feature")
    response = api.post(
        "/api/v1/features",
        json={"key": feature, "name": "GPT tokens", "meterSlug": meter, "meterGroupByFilters": {"model": "gpt"}},
    )
    assert response.status_code == 201, response.text
    customer, s1, s2, stranger = unique("ent_cust"), unique("ent_s1"), unique("ent_s2"), unique("ent_stranger")
    created = api.post(
        "/api/v1/customers", json={"name": customer, "key": customer, "usageAttribution": {"subjectKeys": [s1, s2]}}
    )
    assert created.status_code == 201, created.text
    other = api.post("/api/v1/customers", json={"name": stranger, "usageAttribution": {"subjectKeys": [stranger]}})
    assert other.status_code == 201, other.text
    t0 = floor_minute(datetime.now(UTC)) - timedelta(hours=3)
    return World(api, unique, meter, etype, feature, customer, created.json()["id"], s1, s2, stranger, t0)


def metered_value(balance: float, usage: float, overage: float, total: float, access: bool) -> dict[str, Any]:
    return {
        "hasAccess": access,
        "balance": balance,
        "usage": usage,
        "overage": overage,
        "totalAvailableGrantAmount": total,
    }


# -- create and the entitlement's shape ---------------------------------------------------------------


def test_metered_entitlement_shape(world: World) -> None:
    entitlement = world.entitle()
    assert ULID.match(entitlement["id"]) and STAMP.match(entitlement["createdAt"])
    assert entitlement["activeFrom"] == entitlement["createdAt"] == entitlement["updatedAt"]
    feature = world.api.get(f"/api/v1/features/{world.feature}").json()
    assert {k: v for k, v in entitlement.items() if k not in ("id", "createdAt", "updatedAt", "activeFrom")} == {
        "type": "metered",
        "featureId": feature["id"],
        "featureKey": world.feature,
        "customerId": world.customer_id,
        "customerKey": world.customer,
        "metadata": {},
        "annotations": {},
        "activeTo": None,
        "deletedAt": None,
        "usagePeriod": {"interval": "DAY", "intervalISO": "P1D", "anchor": iso(world.t0)},
        "currentUsagePeriod": {"from": iso(world.t0), "to": iso(world.t0 + timedelta(days=1))},
        "measureUsageFrom": iso(world.t0),
        "lastReset": iso(world.t0),
        "isSoftLimit": False,
        "issueAfterReset": None,
        "issueAfterResetPriority": None,
        "preserveOverageAtReset": False,
    }
    for ref in (entitlement["id"], world.feature):
        got = world.api.get(f"{world.base}/{ref}")
        assert got.status_code == 200 and got.json() == entitlement
    assert world.api.get(f"/api/v2/entitlements/{entitlement['id']}").json() == entitlement
    by_customer_id = world.api.get(f"/api/v2/customers/{world.customer_id}/entitlements/{world.feature}")
    assert by_customer_id.json() == entitlement


def test_boolean_and_static_entitlements(world: World) -> None:
    boolean_key = world.add_feature("flag", meterSlug=None, meterGroupByFilters=None)
    static_key = world.add_feature("seats", meterSlug=None, meterGroupByFilters=None)
    boolean = world.entitle(type="boolean", featureKey=boolean_key)
    static = world.entitle(type="static", featureKey=static_key, config='{"seats": 5}', metadata={"plan": "pro"})
    assert boolean["type"] == "boolean" and "usagePeriod" not in boolean and "config" not in boolean
    assert static["config"] == '{"seats": 5}' and static["metadata"] == {"plan": "pro"}
    assert world.value(boolean_key) == {"hasAccess": True}
    assert world.value(static["id"]) == {"hasAccess": True, "config": '{"seats": 5}'}
    v1 = world.api.get(f"/api/v1/customers/{world.customer}/entitlements/{static_key}/value")
    assert v1.status_code == 200 and v1.json() == {"hasAccess": True, "config": '{"seats": 5}'}

    # a boolean entitlement may carry a usage period (for display), never grants or history
    periodic = world.add_feature("periodic", meterSlug=None, meterGroupByFilters=None)
    with_period = world.entitle(type="boolean", featureKey=periodic, usagePeriod={"interval": "MONTH"})
    assert with_period["usagePeriod"]["interval"] == "MONTH"
    assert "currentUsagePeriod" in with_period
    no_grants = world.api.post(f"{world.base}/{boolean_key}/grants", json={"amount": 10, "effectiveAt": iso(world.t0)})
    assert_problem(no_grants, 400, detail="metered")
    no_history = world.api.get(f"{world.base}/{boolean_key}/history", params={"windowSize": "HOUR"})
    assert_problem(no_history, 400, detail="metered")
    no_reset = world.api.post(f"{world.base}/{boolean_key}/reset", json={})
    assert_problem(no_reset, 400, detail="metered")


def test_one_active_entitlement_per_feature(world: World) -> None:
    first = world.entitle()
    again = world.api.post(world.base, json=world.metered())
    assert_problem(again, 409, detail=world.feature)
    boolean = world.api.post(world.base, json={"type": "boolean", "featureKey": world.feature})
    assert_problem(boolean, 409)
    # by feature id too, and through the v1 subject routes of one of the customer's subjects
    by_id = world.api.post(world.base, json={"type": "boolean", "featureId": first["featureId"]})
    assert_problem(by_id, 409)
    v1 = world.api.post(f"/api/v1/subjects/{world.s2}/entitlements", json=world.metered())
    assert_problem(v1, 409)


def _metered_body(world: World, **changes: Any) -> dict[str, Any]:
    body = world.metered()
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("changes", "field", "detail"),
    [
        ({"usagePeriod": None}, "usagePeriod", "usage period"),
        ({"usagePeriod": {"interval": "FORTNIGHT"}}, "usagePeriod.interval", "FORTNIGHT"),
        ({"usagePeriod": {"interval": "PT30S"}}, "usagePeriod.interval", "whole number of minutes"),
        ({"usagePeriod": {"interval": "PT59M"}}, "usagePeriod.interval", "at least 1 hour"),
        ({"measureUsageFrom": "2100-01-01T00:00:00Z"}, "measureUsageFrom", "2100-01-01"),
        ({"measureUsageFrom": "1969-12-31T23:59:00Z"}, "measureUsageFrom", "1970-01-01"),
        ({"usagePeriod": {"interval": "DAY", "anchor": "9999-12-31T23:59:59Z"}}, "usagePeriod.anchor", "2100"),
        ({"usagePeriod": {}}, "usagePeriod.interval", "is required"),
        ({"usagePeriod": {"interval": "DAY", "anchor": "2024-01-01T00:00:00"}}, "usagePeriod.anchor", ""),
        ({"measureUsageFrom": "yesterday"}, "measureUsageFrom", "CURRENT_PERIOD_START"),
        ({"measureUsageFrom": "2024-01-01T00:00:00"}, "measureUsageFrom", "offset"),
        ({"type": "unlimited"}, "type", "metered, boolean, static"),
        ({"type": None}, "type", "is required"),
        ({"featureKey": None}, "featureKey", "featureKey or featureId"),
        ({"issueAfterReset": -5}, "issueAfterReset", "between 0"),
        ({"issueAfterReset": 10, "issueAfterResetPriority": 0}, "issueAfterResetPriority", "1 and 255"),
        ({"issue": {"amount": 10, "priority": 300}}, "issue.priority", "<= 255"),
        ({"isUnlimited": True}, "isUnlimited", "not supported"),
        ({"grants": [{"amount": -1, "effectiveAt": "2024-01-01T00:00:00Z"}]}, "grants[0].amount", "between 0"),
        ({"grants": [{"amount": 1}]}, "grants[0].effectiveAt", "is required"),
        ({"metadata": {"a": 1}}, "metadata[...]", "str"),
    ],
)
def test_create_metered_bad_input(world: World, changes: dict[str, Any], field: str, detail: str) -> None:
    response = world.api.post(world.base, json=_metered_body(world, **changes))
    assert_problem(response, 400, field=field, detail=detail)
    assert world.api.get(world.base).json()["items"] == []


def test_create_static_bad_config(world: World) -> None:
    static_key = world.add_feature("static_cfg", meterSlug=None, meterGroupByFilters=None)
    for config in ("[1, 2]", "not json", '"text"', "5"):
        response = world.api.post(world.base, json={"type": "static", "featureKey": static_key, "config": config})
        assert_problem(response, 400, field="config", detail="JSON object")
    missing = world.api.post(world.base, json={"type": "static", "featureKey": static_key})
    assert_problem(missing, 400, field="config", detail="needs a config")


def test_create_refers_to_things_that_exist(world: World, unique: Unique) -> None:
    unknown = world.api.post(world.base, json=world.metered(featureKey=unique("no_feature")))
    assert_problem(unknown, 404, detail="feature not found")
    nobody = world.api.post(f"/api/v2/customers/{unique('nobody')}/entitlements", json=world.metered())
    assert_problem(nobody, 404, detail="customer not found")

    no_meter = world.add_feature("meterless", meterSlug=None, meterGroupByFilters=None)
    meterless = world.api.post(world.base, json=world.metered(featureKey=no_meter))
    assert_problem(meterless, 400, field="featureKey", detail="has no meter")

    max_meter = unique("max_meter")
    create_meter(world.api, slug=max_meter, eventType=f"{max_meter}_t", aggregation="MAX", valueProperty="$.tokens")
    max_feature = world.add_feature("max_feature", meterSlug=max_meter, meterGroupByFilters=None)
    on_max = world.api.post(world.base, json=world.metered(featureKey=max_feature))
    assert_problem(on_max, 400, field="featureKey", detail="MAX")
    # a boolean entitlement does not care about the meter's aggregation
    assert world.api.post(world.base, json={"type": "boolean", "featureKey": max_feature}).status_code == 201

    feature = world.api.get(f"/api/v1/features/{world.feature}").json()
    mismatch = world.api.post(world.base, json=world.metered(featureId=feature["id"], featureKey=max_feature))
    assert_problem(mismatch, 400, field="featureKey")


def test_times_with_an_offset_mean_the_same_instant(world: World) -> None:
    """Every input time may carry any offset; it is the same instant in UTC (and the engine runs in UTC)."""

    def shifted(t: datetime, hours: float) -> str:
        return t.astimezone(timezone(timedelta(hours=hours))).isoformat()

    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    body = world.metered(
        measureUsageFrom=shifted(world.t0, 2), usagePeriod={"interval": "DAY", "anchor": shifted(world.t0, -3)}
    )
    entitlement = world.entitle(**body)
    assert entitlement["measureUsageFrom"] == entitlement["usagePeriod"]["anchor"] == iso(world.t0)
    grant = world.grant(world.feature, amount=1000, effectiveAt=shifted(world.t0, 5.5), maxRolloverAmount=0)
    assert grant["effectiveAt"] == iso(world.t0)
    assert world.value() == metered_value(700, 300, 0, 1000, True)
    assert world.value(time=shifted(world.at(30), -8)) == metered_value(900, 100, 0, 1000, True)
    reset = world.api.post(f"{world.base}/{world.feature}/reset", json={"effectiveAt": shifted(world.at(60), 9)})
    assert reset.status_code == 204, reset.text
    assert world.api.get(f"{world.base}/{world.feature}").json()["lastReset"] == iso(world.at(60))
    assert world.value() == metered_value(0, 200, 200, 0, False)


def test_malformed_bodies(world: World) -> None:
    for content in (b"", b"{", b"[]"):
        response = world.api.post(world.base, content=content, headers={"Content-Type": "application/json"})
        assert_problem(response, 400)


# -- values -------------------------------------------------------------------------------------------


def test_value_counts_only_the_features_usage(world: World) -> None:
    world.ingest(
        world.event(world.s1, 100, 10.5),  # counted from T0+11m (values are ceiled to the minute)
        world.event(world.s2, 200, 70),  # the customer's second subject
        world.event(world.s1, 5000, 30, model="claude"),  # excluded by the feature's group-by filter
        world.event(world.stranger, 7000, 20),  # another customer's subject
        world.event(world.s1, 50000, -30),  # before usage is measured
        world.event(world.s1, 9999, 40, etype=world.unique("other_type")),  # another meter's event type
    )
    entitlement = world.entitle()
    world.grant(world.feature, amount=1000, effectiveAt=iso(world.t0))

    expected = metered_value(balance=700, usage=300, overage=0, total=1000, access=True)
    assert world.value() == expected
    assert world.value(entitlement["id"]) == expected
    v1 = world.api.get(f"/api/v1/customers/{world.customer}/entitlements/{world.feature}/value")
    assert v1.status_code == 200 and v1.json() == expected
    access = world.api.get(f"/api/v1/customers/{world.customer_id}/access")
    assert access.status_code == 200 and access.json() == {"entitlements": {world.feature: expected}}

    # historical values: `time` is ceiled to the minute, usage counts in [period start, time)
    for minutes, usage in ((0, 0), (10, 0), (10.5, 100), (11, 100), (70, 100), (70.01, 300), (120, 300)):
        value = world.value(time=iso(world.at(minutes)))
        assert value == metered_value(1000 - usage, usage, 0, 1000, True), minutes
    for bad in ("9999-12-31T23:59:30Z", "1900-01-01T00:00:00Z"):
        assert_problem(world.api.get(f"{world.base}/{world.feature}/value", params={"time": bad}), 400, field="time")
    v1_at = world.api.get(
        f"/api/v1/customers/{world.customer}/entitlements/{world.feature}/value", params={"time": iso(world.at(30))}
    )
    assert v1_at.json() == metered_value(900, 100, 0, 1000, True)

    # new usage shows up in the (cached) current value once it is stored
    recent = 178  # T0 + 178m is two minutes ago
    ingest_ok(world.api, [world.event(world.s1, 250, recent), world.event(world.s2, 1, recent, model="claude")])
    wait_for(lambda: world.value()["usage"] == 550, timeout=15)
    assert world.value() == metered_value(450, 550, 0, 1000, True)


def test_late_events_and_new_subjects_change_the_value(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10))
    world.entitle()
    world.grant(world.feature, amount=1000, effectiveAt=iso(world.t0))
    assert world.value() == metered_value(900, 100, 0, 1000, True)
    assert world.value(time=iso(world.at(30))) == metered_value(900, 100, 0, 1000, True)

    # an event for the past arrives after the value was computed (and cached)
    ingest_ok(world.api, [world.event(world.s2, 20, 25)])
    wait_for(lambda: world.value()["usage"] == 120, timeout=15)
    assert world.value() == metered_value(880, 120, 0, 1000, True)
    assert world.value(time=iso(world.at(30))) == metered_value(880, 120, 0, 1000, True)

    # a subject joins the customer: its past usage counts from then on
    newcomer = world.unique("ent_newcomer")
    world.ingest(world.event(newcomer, 7, 40))
    assert world.value()["usage"] == 120
    body = {"name": world.customer, "key": world.customer, "usageAttribution": {"subjectKeys": [world.s1, newcomer]}}
    replaced = world.api.put(f"/api/v1/customers/{world.customer}", json=body)
    assert replaced.status_code == 200, replaced.text
    assert world.value() == metered_value(893, 107, 0, 1000, True)  # s2 left, the newcomer came
    ingest_ok(world.api, [world.event(newcomer, 3, 170)])
    wait_for(lambda: world.value()["usage"] == 110, timeout=15)


def test_advanced_filters_count_and_unique_count(world: World) -> None:
    advanced = world.add_feature(
        "advanced", meterGroupByFilters=None, advancedMeterGroupByFilters={"model": {"$in": ["gpt", "o1"]}}
    )
    count_meter, unique_meter = world.unique("ent_count"), world.unique("ent_unique")
    etype = world.unique("ent_calls")
    create_meter(world.api, slug=count_meter, eventType=etype, aggregation="COUNT")
    create_meter(world.api, slug=unique_meter, eventType=etype, aggregation="UNIQUE_COUNT", valueProperty="$.user")
    calls = world.add_feature("calls", meterSlug=count_meter, meterGroupByFilters=None)
    users = world.add_feature("users", meterSlug=unique_meter, meterGroupByFilters=None)

    def call(subject: str, user: str, minutes: float) -> dict[str, Any]:
        return {**world.event(subject, 0, minutes, etype=etype), "data": {"user": user}}

    world.ingest(
        world.event(world.s1, 100, 10),
        world.event(world.s2, 10, 20, model="o1"),
        world.event(world.s1, 5000, 30, model="claude"),
        call(world.s1, "ann", 10),
        call(world.s2, "bob", 20),
        call(world.s1, "ann", 70),
        call(world.s2, "cid", 75),
    )
    for key in (advanced, calls, users):
        world.entitle(**world.metered(featureKey=key))
        world.grant(key, amount=10 if key != advanced else 1000, effectiveAt=iso(world.t0))
    assert world.value(advanced) == metered_value(890, 110, 0, 1000, True)
    assert world.value(calls) == metered_value(6, 4, 0, 10, True)
    # distinct users over the period, across both subjects
    assert world.value(users) == metered_value(7, 3, 0, 10, True)
    assert world.value(users, time=iso(world.at(71))) == metered_value(8, 2, 0, 10, True)

    # after a reset, distinct users are counted again from the reset
    assert world.api.post(f"{world.base}/{users}/reset", json={"effectiveAt": iso(world.at(60))}).is_success
    assert world.value(users) == metered_value(6, 2, 0, 8, True)
    history = world.history(users, **{"windowSize": "HOUR", "from": iso(world.at(60)), "to": iso(world.at(90))})
    assert sum(w["usage"] for w in history["windowedHistory"]) == 2


def test_measure_usage_from_presets(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    period = world.entitle(
        **world.metered(
            measureUsageFrom="CURRENT_PERIOD_START", usagePeriod={"interval": "DAY", "anchor": iso(world.t0)}
        )
    )
    assert period["measureUsageFrom"] == iso(world.t0)
    assert world.value()["usage"] == 300

    now_feature = world.add_feature("from_now")
    before = floor_minute(datetime.now(UTC))
    from_now = world.entitle(**world.metered(featureKey=now_feature, measureUsageFrom="NOW"))
    measured = datetime.fromisoformat(from_now["measureUsageFrom"])
    assert before <= measured <= floor_minute(datetime.now(UTC))
    assert from_now["usagePeriod"]["anchor"] == from_now["measureUsageFrom"]
    assert world.value(now_feature)["usage"] == 0

    default_feature = world.add_feature("default_measure")
    default = world.entitle(**_metered_body(world, featureKey=default_feature, measureUsageFrom=None))
    assert before <= datetime.fromisoformat(default["measureUsageFrom"]) <= floor_minute(datetime.now(UTC))


def test_concurrent_creates_leave_one_entitlement(world: World, server: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post(world.base, json=world.metered()).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(create, range(8)))
    assert statuses == [201] + [409] * 7
    assert world.api.get(world.base).json()["totalCount"] == 1


def test_overage_and_soft_limit(world: World) -> None:
    soft_feature = world.add_feature("soft")
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    world.entitle(**world.metered(featureKey=soft_feature, isSoftLimit=True))
    world.grant(world.feature, amount=250, effectiveAt=iso(world.t0))
    world.grant(soft_feature, amount=250, effectiveAt=iso(world.t0))

    hard = metered_value(balance=0, usage=300, overage=50, total=250, access=False)
    soft = metered_value(balance=0, usage=300, overage=50, total=250, access=True)
    assert world.value() == hard
    assert world.value(soft_feature) == soft
    access = world.api.get(f"/api/v1/customers/{world.customer}/access").json()
    assert access == {"entitlements": {world.feature: hard, soft_feature: soft}}
    # before the overage, the hard limit still had access
    assert world.value(time=iso(world.at(60))) == metered_value(150, 100, 0, 250, True)
    # no grant at all: everything is overage
    bare = world.add_feature("bare")
    world.entitle(**world.metered(featureKey=bare))
    assert world.value(bare) == metered_value(0, 300, 300, 0, False)


def test_grants_burn_in_priority_order(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    second = world.grant(world.feature, amount=1000, priority=2, effectiveAt=iso(world.t0))
    first = world.grant(world.feature, amount=150, priority=1, effectiveAt=iso(world.t0))
    assert world.value() == metered_value(balance=850, usage=300, overage=0, total=1150, access=True)
    assert world.grant_balances() == {first["id"]: 0, second["id"]: 850}
    assert world.grant_balances(time=iso(world.at(30))) == {first["id"]: 50, second["id"]: 1000}

    history = world.history(**{"windowSize": "HOUR", "from": iso(world.t0), "to": iso(world.at(90))})
    assert history["burndownHistory"] == [
        {
            "period": {"from": iso(world.t0), "to": iso(world.at(90))},
            "usage": 300,
            "overage": 0,
            "balanceAtStart": 1150,
            "grantBalancesAtStart": {first["id"]: 150, second["id"]: 1000},
            "balanceAtEnd": 850,
            "grantBalancesAtEnd": {first["id"]: 0, second["id"]: 850},
            "grantUsages": [{"grantId": first["id"], "usage": 150}, {"grantId": second["id"], "usage": 150}],
        }
    ]

    def hour(minutes: float) -> datetime:
        return world.at(minutes).replace(minute=0)

    # hourly windows in UTC, only those with usage; each starts at the later of its hour and `from`
    assert history["windowedHistory"] == [
        {
            "period": {"from": iso(max(hour(10), world.t0)), "to": iso(hour(10) + timedelta(hours=1))},
            "usage": 100,
            "balanceAtStart": 1150,
        },
        {
            "period": {"from": iso(hour(70)), "to": iso(min(hour(70) + timedelta(hours=1), world.at(90)))},
            "usage": 200,
            "balanceAtStart": 1050,
        },
    ]
    minutes = world.history(**{"windowSize": "MINUTE", "from": iso(world.t0), "to": iso(world.at(90))})
    assert minutes["windowedHistory"] == [
        {"period": {"from": iso(world.at(10)), "to": iso(world.at(11))}, "usage": 100, "balanceAtStart": 1150},
        {"period": {"from": iso(world.at(70)), "to": iso(world.at(71))}, "usage": 200, "balanceAtStart": 1050},
    ]


def test_grants_effective_later_and_in_the_future(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    early = world.grant(world.feature, amount=50, priority=1, effectiveAt=iso(world.t0))
    late = world.grant(world.feature, amount=1000, priority=5, effectiveAt=iso(world.at(59.5)))
    assert late["effectiveAt"] == iso(world.at(60))  # ceiled to the minute
    future = world.grant(world.feature, amount=500, effectiveAt=iso(world.at(240)))  # an hour from now

    # before the late grant: the early one is gone, the rest is overage
    assert world.value(time=iso(world.at(30))) == metered_value(0, 100, 50, 50, False)
    # the late grant pays the carried overage as soon as it is effective
    assert world.value(time=iso(world.at(65))) == metered_value(950, 100, 0, 1050, True)
    assert world.value() == metered_value(750, 300, 0, 1050, True)
    # the future grant counts once it is effective
    assert world.value(time=iso(world.at(300))) == metered_value(1250, 300, 0, 1550, True)
    assert world.grant_balances() == {early["id"]: 0, late["id"]: 750}  # only grants active now
    assert world.grant_balances(time=iso(world.at(300))) == {early["id"]: 0, late["id"]: 750, future["id"]: 500}

    history = world.history(**{"windowSize": "DAY", "from": iso(world.t0), "to": iso(world.at(90))})
    assert history["burndownHistory"] == [
        {
            "period": {"from": iso(world.t0), "to": iso(world.at(60))},
            "usage": 100,
            "overage": 50,
            "balanceAtStart": 50,
            "grantBalancesAtStart": {early["id"]: 50},
            "balanceAtEnd": 0,
            "grantBalancesAtEnd": {early["id"]: 0},
            "grantUsages": [{"grantId": early["id"], "usage": 50}],
        },
        {
            "period": {"from": iso(world.at(60)), "to": iso(world.at(90))},
            "usage": 200,
            "overage": 0,
            "balanceAtStart": 1000,
            "grantBalancesAtStart": {early["id"]: 0, late["id"]: 1000},
            "balanceAtEnd": 750,
            "grantBalancesAtEnd": {early["id"]: 0, late["id"]: 750},
            "grantUsages": [{"grantId": late["id"], "usage": 250}],
        },
    ]
    assert future["id"] not in str(history)


def test_recurring_grant_refills(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    grant = world.grant(
        world.feature, amount=100, effectiveAt=iso(world.t0), recurrence={"interval": "PT1H", "anchor": iso(world.t0)}
    )
    assert grant["recurrence"] == {"interval": "PT1H", "intervalISO": "PT1H", "anchor": iso(world.t0)}
    assert grant["nextRecurrence"] == iso(world.at(240))
    # +10: 100 used; +60: refilled to 100; +70: 200 used, 100 over; +120: refilled, pays the overage; +180: refilled
    assert world.value(time=iso(world.at(90))) == metered_value(0, 300, 100, 200, False)
    assert world.value(time=iso(world.at(150))) == metered_value(0, 300, 0, 300, False)
    assert world.value() == metered_value(100, 300, 0, 400, True)


def test_expired_and_voided_grants(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    expiring = world.grant(
        world.feature, amount=150, priority=1, effectiveAt=iso(world.t0), expiration={"duration": "HOUR", "count": 1}
    )
    assert expiring["expiresAt"] == iso(world.at(60))
    voided = world.grant(world.feature, amount=1000, priority=2, effectiveAt=iso(world.t0))
    # the expiring grant paid 100 of its 150, then expired; the other paid 200
    assert world.value() == metered_value(800, 300, 0, 1100, True)

    response = world.api.delete(f"/api/v1/grants/{voided['id']}")
    assert response.status_code == 204 and response.content == b""
    # voided now: the usage it paid stays paid, its balance is gone
    assert world.value() == metered_value(0, 300, 0, 300, False)
    assert world.value(time=iso(world.at(90))) == metered_value(800, 300, 0, 1100, True)
    assert_problem(world.api.delete(f"/api/v1/grants/{voided['id']}"), 409, detail="already voided")
    assert_problem(world.api.delete(f"/api/v1/grants/{world.unique('nogrant')}"), 404, detail="grant not found")
    listed = world.api.get(f"{world.base}/{world.feature}/grants").json()["items"]
    by_id = {g["id"]: g for g in listed}
    assert STAMP.match(by_id[voided["id"]]["voidedAt"]) and by_id[expiring["id"]]["voidedAt"] is None


def test_void_at_a_past_time(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    first = world.grant(world.feature, amount=1000, priority=1, effectiveAt=iso(world.t0))
    world.grant(world.feature, amount=500, priority=2, effectiveAt=iso(world.t0))
    assert_problem(
        world.api.delete(f"/api/v1/grants/{first['id']}", params={"at": iso(world.at(240))}), 400, field="at"
    )
    response = world.api.delete(f"/api/v1/grants/{first['id']}", params={"at": iso(world.at(40))})
    assert response.status_code == 204
    # the first grant paid the 100 at +10 and is gone from +40 on; the second paid the 200 at +70
    assert world.value() == metered_value(300, 300, 0, 600, True)
    assert world.value(time=iso(world.at(30))) == metered_value(1400, 100, 0, 1500, True)


# -- resets -------------------------------------------------------------------------------------------


def test_reset_restarts_usage_and_rolls_balances_over(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    world.grant(world.feature, amount=1000, effectiveAt=iso(world.t0), maxRolloverAmount=500)
    assert world.value() == metered_value(700, 300, 0, 1000, True)

    response = world.api.post(f"{world.base}/{world.feature}/reset", json={"effectiveAt": iso(world.at(60))})
    assert response.status_code == 204 and response.content == b""
    # 900 left at the reset, 500 rolled over; 200 used since
    assert world.value() == metered_value(300, 200, 0, 500, True)
    assert world.value(time=iso(world.at(30))) == metered_value(900, 100, 0, 1000, True)
    assert world.value(time=iso(world.at(65))) == metered_value(500, 0, 0, 500, True)
    entitlement = world.api.get(f"{world.base}/{world.feature}").json()
    assert entitlement["lastReset"] == iso(world.at(60))
    day = timedelta(days=1)
    assert entitlement["currentUsagePeriod"] == {"from": iso(world.at(60)), "to": iso(world.at(60) + day)}

    for when, status, detail in (
        (world.at(240), 400, "future"),
        (world.at(30), 409, "after the last reset"),
        (world.at(-10), 400, "started measuring"),
        (datetime(1960, 1, 1, tzinfo=UTC), 400, "1970"),
    ):
        bad = world.api.post(f"{world.base}/{world.feature}/reset", json={"effectiveAt": iso(when)})
        assert_problem(bad, status, detail=detail)
    naive = world.api.post(f"{world.base}/{world.feature}/reset", json={"effectiveAt": "2024-01-01T00:00:00"})
    assert_problem(naive, 400, field="effectiveAt")

    # retainAnchor keeps the period boundaries of the previous anchor (the first reset's time)
    retained = world.api.post(
        f"{world.base}/{world.feature}/reset", json={"effectiveAt": iso(world.at(80)), "retainAnchor": True}
    )
    assert retained.status_code == 204
    entitlement = world.api.get(f"{world.base}/{world.feature}").json()
    assert entitlement["currentUsagePeriod"] == {"from": iso(world.at(80)), "to": iso(world.at(60) + day)}
    assert world.value() == metered_value(300, 0, 0, 300, True)


def test_reset_preserving_overage(world: World) -> None:
    forgiving = world.add_feature("forgiving")
    world.ingest(world.event(world.s1, 150, 10))
    world.entitle(**world.metered(preserveOverageAtReset=True))
    world.entitle(**world.metered(featureKey=forgiving))
    for key in (world.feature, forgiving):
        world.grant(key, amount=100, effectiveAt=iso(world.t0), minRolloverAmount=100, maxRolloverAmount=100)
        assert world.value(key) == metered_value(0, 150, 50, 100, False)

    for key in (world.feature, forgiving):
        response = world.api.post(f"{world.base}/{key}/reset", json={"effectiveAt": iso(world.at(60))})
        assert response.status_code == 204
    # the entitlement's default: the carried overage is paid from the refilled grant
    assert world.value() == metered_value(50, 0, 0, 100, True)
    assert world.value(forgiving) == metered_value(100, 0, 0, 100, True)

    # the reset's own flag wins over the entitlement's default
    override = world.add_feature("override_flag")
    world.entitle(**world.metered(featureKey=override))
    world.grant(override, amount=100, effectiveAt=iso(world.t0), minRolloverAmount=100, maxRolloverAmount=100)
    body = {"effectiveAt": iso(world.at(60)), "preserveOverage": True}
    assert world.api.post(f"{world.base}/{override}/reset", json=body).status_code == 204
    assert world.value(override) == metered_value(50, 0, 0, 100, True)


def test_issue_after_reset(world: World) -> None:
    world.ingest(world.event(world.s1, 30, 10), world.event(world.s2, 20, 70))
    entitlement = world.entitle(**world.metered(issue={"amount": 100, "priority": 3}))
    assert entitlement["issue"] == {"amount": 100, "priority": 3}
    assert entitlement["issueAfterReset"] == 100 and entitlement["issueAfterResetPriority"] == 3
    grants = world.api.get(f"{world.base}/{world.feature}/grants").json()["items"]
    assert [(g["amount"], g["priority"], g["effectiveAt"]) for g in grants] == [(100, 3, iso(world.t0))]
    assert grants[0]["minRolloverAmount"] == grants[0]["maxRolloverAmount"] == 100
    assert world.value() == metered_value(50, 50, 0, 100, True)

    assert world.api.post(f"{world.base}/{world.feature}/reset", json={"effectiveAt": iso(world.at(60))}).is_success
    assert world.value() == metered_value(80, 20, 0, 100, True)


def test_inline_grants(world: World) -> None:
    world.ingest(world.event(world.s1, 30, 10), world.event(world.s2, 20, 70))
    inline = [
        {"amount": 40, "priority": 1, "effectiveAt": iso(world.t0)},
        {"amount": 500, "priority": 2, "effectiveAt": iso(world.at(60)), "expiration": {"duration": "DAY", "count": 1}},
    ]
    world.entitle(**world.metered(grants=inline, issue={"amount": 5, "priority": 9}))
    grants = world.api.get(f"{world.base}/{world.feature}/grants").json()["items"]
    assert sorted((g["amount"], g["priority"], g["maxRolloverAmount"], g["expiresAt"]) for g in grants) == [
        (5, 9, 5, None),
        (40, 1, 40, None),  # v2: the max rollover defaults to the amount
        (500, 2, 500, iso(world.at(60 + 24 * 60))),
    ]
    # 30 from the priority-1 grant at +10; at +70 its 10 left, then 10 from the priority-2 one
    assert world.value() == metered_value(495, 50, 0, 545, True)
    bad = world.api.post(world.base, json=world.metered(featureKey=world.add_feature("bad_inline"), grants=[{}]))
    assert_problem(bad, 400, field="grants[0].amount")


# -- get, list, delete, override ----------------------------------------------------------------------


def test_list_get_delete(world: World) -> None:
    keys = [world.add_feature(f"listed_{i}", meterSlug=None, meterGroupByFilters=None) for i in range(3)]
    created = [world.entitle(type="boolean", featureKey=k) for k in keys]

    listed = world.api.get(world.base)
    assert listed.status_code == 200
    assert listed.json() == {"items": created, "page": 1, "pageSize": 100, "totalCount": 3}
    page = world.api.get(world.base, params={"page": 2, "pageSize": 2}).json()
    assert page == {"items": created[2:], "page": 2, "pageSize": 2, "totalCount": 3}

    response = world.api.delete(f"{world.base}/{keys[0]}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(world.api.get(f"{world.base}/{keys[0]}"), 404, detail="entitlement not found")
    assert_problem(world.api.delete(f"{world.base}/{keys[0]}"), 404)
    assert_problem(world.api.delete(f"{world.base}/{created[0]['id']}"), 404)
    assert_problem(world.api.get(f"{world.base}/{keys[0]}/value"), 404)
    # by id, a deleted entitlement is still there, with its deletion time
    gone = world.api.get(f"{world.base}/{created[0]['id']}").json()
    assert STAMP.match(gone["deletedAt"]) and gone["id"] == created[0]["id"]
    assert world.api.get(f"/api/v2/entitlements/{created[0]['id']}").json()["deletedAt"] == gone["deletedAt"]

    live = world.api.get(world.base).json()
    assert [e["id"] for e in live["items"]] == [e["id"] for e in created[1:]] and live["totalCount"] == 2
    everything = world.api.get(world.base, params={"includeDeleted": "true"}).json()
    assert [e["id"] for e in everything["items"]] == [e["id"] for e in created]

    # the feature is free again
    again = world.entitle(type="boolean", featureKey=keys[0])
    assert again["id"] != created[0]["id"]

    unknown = world.unique("no_entitlement")
    assert_problem(world.api.get(f"{world.base}/{unknown}"), 404, detail="entitlement not found")
    assert_problem(world.api.get(f"/api/v2/entitlements/{unknown}"), 404)
    assert_problem(world.api.get(f"/api/v1/entitlements/{unknown}"), 404)
    nobody = f"/api/v2/customers/{world.unique('nobody')}/entitlements"
    assert_problem(world.api.get(nobody), 404, detail="customer not found")
    assert_problem(world.api.get(f"{nobody}/{keys[1]}/value"), 404)


def test_a_deleted_entitlement_outlives_its_features_group_by(world: World) -> None:
    """Once the entitlement is deleted and its feature archived, the meter may drop the group-by the feature
    filtered on; the deleted entitlement's past values and history then count nothing (found by the OpenAPI
    fuzz test: the hourly rollups had no column for the filter, and the value answered 500)."""
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s1, 50, 90))
    entitlement = world.entitle()
    one = f"{world.base}/{entitlement['id']}"
    assert world.api.delete(one).status_code == 204
    assert world.api.delete(f"/api/v1/features/{world.feature}").status_code == 204
    assert world.api.put(f"/api/v1/meters/{world.meter}", json={"groupBy": {}}).status_code == 200
    deadline = time.monotonic() + 3  # the meter's new rollup builds in the background: ask until it has
    while time.monotonic() < deadline:
        value = world.api.get(f"{one}/value", params={"time": iso(world.at(120))})
        assert value.status_code == 200, value.text
        assert value.json() == metered_value(0, 0, 0, 0, False) | {"grantBalances": {}}
        history = world.api.get(f"{one}/history", params={"windowSize": "HOUR", "from": iso(world.t0)})
        assert history.status_code == 200, history.text
        assert history.json()["windowedHistory"] == []
        time.sleep(0.2)


def test_an_entitlement_is_owned_by_its_customer(world: World, unique: Unique) -> None:
    entitlement = world.entitle()
    other = unique("other_owner")
    assert world.api.post("/api/v1/customers", json={"name": other, "key": other}).status_code == 201
    for path in ("", "/value", "/grants"):
        assert_problem(world.api.get(f"/api/v2/customers/{other}/entitlements/{entitlement['id']}{path}"), 404)
    assert_problem(world.api.delete(f"/api/v2/customers/{other}/entitlements/{entitlement['id']}"), 404)
    assert world.api.get(f"{world.base}/{entitlement['id']}").status_code == 200


def test_override_replaces_the_entitlement(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10))
    old = world.entitle()
    world.grant(world.feature, amount=1000, effectiveAt=iso(world.t0))
    assert world.value()["balance"] == 900

    body = world.metered(usagePeriod={"interval": "WEEK"}, isSoftLimit=True, issueAfterReset=40)
    response = world.api.put(f"{world.base}/{world.feature}/override", json=body)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old["id"] and new["usagePeriod"]["interval"] == "WEEK" and new["isSoftLimit"] is True
    assert world.api.get(f"{world.base}/{world.feature}").json() == new
    old_now = world.api.get(f"/api/v2/entitlements/{old['id']}").json()
    assert old_now["deletedAt"] == new["createdAt"]
    # the value is the new one's: its own grants (only the issueAfterReset one), not the old one's
    assert world.value() == metered_value(0, 100, 60, 40, True)
    grants = world.api.get(f"{world.base}/{world.feature}/grants").json()["items"]
    assert [g["entitlementId"] for g in grants] == [new["id"]]

    # override by id, to another type
    boolean = world.api.put(f"{world.base}/{new['id']}/override", json={"type": "boolean", "featureKey": world.feature})
    assert boolean.status_code == 201 and boolean.json()["type"] == "boolean"
    assert world.value() == {"hasAccess": True}
    live = world.api.get(world.base).json()["items"]
    assert [e["id"] for e in live] == [boolean.json()["id"]]

    assert_problem(world.api.put(f"{world.base}/{world.unique('none')}/override", json=body), 404)
    assert_problem(world.api.put(f"{world.base}/{world.feature}/override", json={"type": "metered"}), 400)
    # the feature stays (OpenMeter: "Feature in path and body do not match"); a replaced one is gone
    other = world.add_feature("other_feature")
    switched = world.api.put(f"{world.base}/{world.feature}/override", json=world.metered(featureKey=other))
    assert_problem(switched, 400, field="featureKey", detail=world.feature)
    assert_problem(world.api.put(f"{world.base}/{old['id']}/override", json=body), 404, detail="deleted")
    assert world.api.get(f"/api/v2/entitlements/{old['id']}").json()["deletedAt"] == new["createdAt"]


# -- grants -------------------------------------------------------------------------------------------


def test_grant_shapes_and_lists(world: World) -> None:
    entitlement = world.entitle()
    grant = world.grant(
        world.feature,
        amount=120.5,
        priority=7,
        effectiveAt=iso(world.at(5.25)),
        expiration={"duration": "DAY", "count": 30},
        minRolloverAmount=10,
        metadata={"reason": "promo"},
        recurrence={"interval": "WEEK", "anchor": iso(world.t0)},
    )
    assert ULID.match(grant["id"]) and STAMP.match(grant["createdAt"])
    assert {k: v for k, v in grant.items() if k not in ("id", "createdAt", "updatedAt", "nextRecurrence")} == {
        "entitlementId": entitlement["id"],
        "amount": 120.5,
        "priority": 7,
        "effectiveAt": iso(world.at(6)),
        "expiration": {"duration": "DAY", "count": 30},
        "expiresAt": iso(world.at(6) + timedelta(days=30)),
        "maxRolloverAmount": 120.5,  # v2: defaults to the amount
        "minRolloverAmount": 10,
        "metadata": {"reason": "promo"},
        "annotations": {},
        "deletedAt": None,
        "voidedAt": None,
        "recurrence": {"interval": "WEEK", "intervalISO": "P1W", "anchor": iso(world.t0)},
    }
    assert grant["nextRecurrence"] == iso(world.t0 + timedelta(weeks=1))
    plain = world.grant(entitlement["id"], amount=5, effectiveAt=iso(world.t0))
    assert plain["expiration"] is None and plain["expiresAt"] is None and plain["priority"] == 1
    assert "recurrence" not in plain

    owner = world.api.get(f"{world.base}/{world.feature}/grants")
    assert owner.status_code == 200
    assert owner.json() == {"items": [grant, plain], "page": 1, "pageSize": 100, "totalCount": 2}
    paged = world.api.get(f"{world.base}/{world.feature}/grants", params={"page": 2, "pageSize": 1}).json()
    assert paged == {"items": [plain], "page": 2, "pageSize": 1, "totalCount": 2}
    v2 = world.api.get("/api/v2/grants", params={"customer": world.customer}).json()
    assert v2 == {"items": [grant, plain], "page": 1, "pageSize": 100, "totalCount": 2}
    by_feature = world.api.get("/api/v2/grants", params={"customer": world.customer_id, "feature": world.feature})
    assert by_feature.json()["items"] == [grant, plain]
    v1 = world.api.get("/api/v1/grants", params={"subject": world.s2})
    assert v1.status_code == 200 and v1.json() == [grant, plain]
    v1_paged = world.api.get("/api/v1/grants", params={"subject": world.s1, "pageSize": 1}).json()
    assert v1_paged == {"items": [grant], "page": 1, "pageSize": 1, "totalCount": 2}

    assert world.api.delete(f"/api/v1/grants/{plain['id']}").status_code == 204
    # a voided grant is still listed, with its void time
    after = world.api.get(f"{world.base}/{world.feature}/grants").json()["items"]
    assert [g["id"] for g in after] == [grant["id"], plain["id"]] and STAMP.match(after[1]["voidedAt"])


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"amount": -1}, "amount", "between 0"),
        ({"amount": "lots"}, "amount", "decimal"),
        ({"priority": 0}, "priority", "1 and 255"),
        ({"priority": 256}, "priority", "1 and 255"),
        ({"effectiveAt": None}, "effectiveAt", "is required"),
        ({"effectiveAt": "2024-01-01T00:00:00"}, "effectiveAt", "UTC offset"),
        ({"effectiveAt": "soon"}, "effectiveAt", ""),
        ({"expiration": {"duration": "FORTNIGHT", "count": 1}}, "expiration.duration", "HOUR, DAY"),
        ({"expiration": {"duration": "DAY", "count": 0}}, "expiration.count", "1 and 1000"),
        ({"expiration": {"duration": "DAY"}}, "expiration.count", "is required"),
        ({"minRolloverAmount": 20, "maxRolloverAmount": 10}, "minRolloverAmount", "greater than"),
        ({"maxRolloverAmount": -1}, "maxRolloverAmount", "between 0"),
        ({"recurrence": {"interval": "SOMETIMES"}}, "recurrence.interval", "SOMETIMES"),
        ({"recurrence": {"interval": "PT1M"}}, "recurrence.interval", "at least 1 hour"),
        ({"recurrence": {"interval": "DAY", "anchor": "1960-01-01T00:00:00Z"}}, "recurrence.anchor", "1970"),
        ({"effectiveAt": "9999-12-31T23:59:30Z"}, "effectiveAt", "2100"),
    ],
)
def test_grant_bad_input(world: World, body: dict[str, Any], field: str, detail: str) -> None:
    world.entitle()
    full = {"amount": 10, "effectiveAt": iso(world.t0), **body}
    full = {k: v for k, v in full.items() if v is not None}
    response = world.api.post(f"{world.base}/{world.feature}/grants", json=full)
    assert_problem(response, 400, field=field, detail=detail)
    assert world.api.get(f"{world.base}/{world.feature}/grants").json()["items"] == []


def test_grant_needs_a_live_entitlement(world: World) -> None:
    entitlement = world.entitle()
    assert world.api.delete(f"{world.base}/{world.feature}").status_code == 204
    body = {"amount": 10, "effectiveAt": iso(world.t0)}
    assert_problem(world.api.post(f"{world.base}/{entitlement['id']}/grants", json=body), 404)
    assert_problem(world.api.post(f"{world.base}/{world.feature}/grants", json=body), 404)


# -- history ------------------------------------------------------------------------------------------


def test_history_bad_input(world: World) -> None:
    world.entitle()
    path = f"{world.base}/{world.feature}/history"
    assert_problem(world.api.get(path), 400, field="windowSize", detail="windowSize")
    assert_problem(world.api.get(path, params={"windowSize": "WEEK"}), 400, field="windowSize")
    zone = {"windowSize": "HOUR", "windowTimeZone": "Mars/Olympus"}
    assert_problem(world.api.get(path, params=zone), 400, field="windowTimeZone", detail="Mars/Olympus")
    backwards = {"windowSize": "HOUR", "from": iso(world.at(60)), "to": iso(world.at(30))}
    assert_problem(world.api.get(path, params=backwards), 400, field="from")
    assert_problem(world.api.get(path, params={"windowSize": "HOUR", "from": "yesterday"}), 400, detail="from")
    beyond = {"windowSize": "HOUR", "to": "9999-12-31T23:59:59Z"}
    assert_problem(world.api.get(path, params=beyond), 400, field="to", detail="2100")
    too_many = {"windowSize": "MINUTE", "from": iso(world.t0), "to": iso(world.t0 + timedelta(days=30))}
    assert_problem(world.api.get(path, params=too_many), 400, field="windowSize")


def test_history_defaults_to_the_current_period_and_a_time_zone(world: World) -> None:
    world.ingest(world.event(world.s1, 100, 10), world.event(world.s2, 200, 70))
    world.entitle()
    grant = world.grant(world.feature, amount=1000, effectiveAt=iso(world.t0))
    history = world.history(windowSize="DAY")
    # UTC days from T0 (the period start) to now ceiled to the minute, one burn-down segment
    assert sum(w["usage"] for w in history["windowedHistory"]) == 300
    # only windows with usage are listed: the first holds the first event (T0 + 10 min), clipped to `from`
    first_day = world.at(10).replace(hour=0, minute=0)
    assert history["windowedHistory"][0]["period"]["from"] == iso(max(world.t0, first_day))
    assert history["windowedHistory"][0]["balanceAtStart"] == 1000
    [segment] = history["burndownHistory"]
    assert segment["period"]["from"] == iso(world.t0) and segment["grantBalancesAtEnd"] == {grant["id"]: 700}
    assert segment["usage"] == 300 and segment["balanceAtEnd"] == 700

    # hours in a zone with a 30-minute offset: windows start at :30 UTC
    span = {"from": iso(world.t0), "to": iso(world.at(120)), "windowSize": "HOUR", "windowTimeZone": "Asia/Kolkata"}
    zoned = world.history(**span)["windowedHistory"]
    assert sum(w["usage"] for w in zoned) == 300
    for window in zoned:
        start = datetime.fromisoformat(window["period"]["from"])
        assert start == world.t0 or start.minute == 30, window


def test_long_minute_history_is_one_query(world: World) -> None:
    """Six days of MINUTE windows (8,640) answer at once: usage is fetched per minute in one query, not
    twice per window (that took two minutes)."""
    days_ago = [world.event(world.s1, 1, -60 * 24 * d) for d in (1, 2, 3, 4, 5)]
    world.ingest(*days_ago, world.event(world.s2, 2, 10))
    start = world.t0 - timedelta(days=6)
    world.entitle(**world.metered(measureUsageFrom=iso(start), usagePeriod={"interval": "MONTH"}))
    world.grant(world.feature, amount=100, effectiveAt=iso(start))
    began = time.monotonic()
    history = world.history(windowSize="MINUTE", **{"from": iso(start)})
    assert time.monotonic() - began < 10
    assert [w["usage"] for w in history["windowedHistory"]] == [1, 1, 1, 1, 1, 2]
    assert [w["balanceAtStart"] for w in history["windowedHistory"]] == [100, 99, 98, 97, 96, 95]
    assert history["burndownHistory"][-1]["balanceAtEnd"] == 93


# -- the v1 subject routes and the global lists -------------------------------------------------------


def test_v1_subject_routes(world: World, unique: Unique) -> None:
    subject = unique("v1_subject")
    meter_event = world.event(subject, 40, 10)
    world.ingest(meter_event, world.event(subject, 25, 70))
    base = f"/api/v1/subjects/{subject}/entitlements"
    assert_problem(world.api.get(base), 404, detail=subject)

    body = {**world.metered(), "issueAfterReset": 100}
    response = world.api.post(base, json=body)
    assert response.status_code == 201, response.text
    entitlement = response.json()
    assert entitlement["subjectKey"] == subject and "customerId" not in entitlement
    assert entitlement["isUnlimited"] is False and "issue" not in entitlement
    # the subject had no customer: one was created for it
    customer = world.api.get(f"/api/v1/customers/{subject}").json()
    assert customer["usageAttribution"] == {"subjectKeys": [subject]} and customer["key"] == subject

    listed = world.api.get(base)
    assert listed.status_code == 200 and listed.json() == [entitlement]
    assert world.api.get(f"{base}/{entitlement['id']}").json() == entitlement
    assert world.api.get(f"/api/v1/entitlements/{entitlement['id']}").json() == entitlement

    value = world.api.get(f"{base}/{world.feature}/value")
    assert value.status_code == 200 and value.json() == metered_value(35, 65, 0, 100, True)
    by_id = world.api.get(f"{base}/{entitlement['id']}/value", params={"time": iso(world.at(30))})
    assert by_id.json() == metered_value(60, 40, 0, 100, True)

    # v1 grants need an expiration and default to no rollover
    grant_body = {"amount": 50, "effectiveAt": iso(world.t0)}
    assert_problem(world.api.post(f"{base}/{world.feature}/grants", json=grant_body), 400, field="expiration")
    grant_body["expiration"] = {"duration": "YEAR", "count": 1}
    grant = world.api.post(f"{base}/{world.feature}/grants", json=grant_body)
    assert grant.status_code == 201, grant.text
    assert grant.json()["maxRolloverAmount"] == 0 and grant.json()["minRolloverAmount"] == 0
    grants = world.api.get(f"{base}/{entitlement['id']}/grants")
    assert grants.status_code == 200 and isinstance(grants.json(), list) and len(grants.json()) == 2
    # both priority 1: the grant that expires burns before the issueAfterReset one, which never does
    assert world.api.get(f"{base}/{world.feature}/value").json() == metered_value(85, 65, 0, 150, True)

    history_path = f"{base}/{entitlement['id']}/history"
    assert_problem(world.api.get(history_path), 400, field="windowSize")
    minutes = {"windowSize": "MINUTE", "from": iso(world.t0), "to": iso(world.at(90))}
    history = world.api.get(history_path, params=minutes)
    assert history.status_code == 200
    assert [(w["period"]["from"], w["usage"]) for w in history.json()["windowedHistory"]] == [
        (iso(world.at(10)), 40),
        (iso(world.at(70)), 25),
    ]

    # a reset with no body resets now: the issueAfterReset grant refills, the other one rolls nothing over
    reset = world.api.post(f"{base}/{entitlement['id']}/reset")
    assert reset.status_code == 204, reset.text
    assert world.api.get(f"{base}/{world.feature}/value").json() == metered_value(100, 0, 0, 100, True)

    override = world.api.put(f"{base}/{world.feature}/override", json={**world.metered(), "issueAfterReset": 7})
    assert override.status_code == 201, override.text
    replacement = override.json()
    assert replacement["subjectKey"] == subject and replacement["issueAfterReset"] == 7
    assert world.api.get(base).json() == [replacement]
    assert world.api.get(f"{base}/{world.feature}/value").json() == metered_value(0, 65, 58, 7, False)

    assert world.api.delete(f"{base}/{replacement['id']}").status_code == 204
    assert world.api.get(base).json() == []
    assert_problem(world.api.get(f"/api/v1/subjects/{unique('nobody')}/entitlements"), 404)


def test_global_lists(world: World) -> None:
    boolean_key = world.add_feature("global_flag", meterSlug=None, meterGroupByFilters=None)
    metered = world.entitle()
    boolean = world.entitle(type="boolean", featureKey=boolean_key)

    v2 = world.api.get("/api/v2/entitlements", params={"customerKeys": world.customer})
    assert v2.status_code == 200
    assert v2.json() == {"items": [metered, boolean], "page": 1, "pageSize": 100, "totalCount": 2}
    by_id = world.api.get("/api/v2/entitlements", params={"customerIds": world.customer_id, "feature": boolean_key})
    assert by_id.json()["items"] == [boolean]
    typed = world.api.get("/api/v2/entitlements", params={"customerKeys": world.customer, "entitlementType": "metered"})
    assert typed.json()["items"] == [metered]

    v1 = world.api.get("/api/v1/entitlements", params={"subject": world.s1})
    assert v1.status_code == 200 and isinstance(v1.json(), list)
    assert [e["id"] for e in v1.json()] == [metered["id"], boolean["id"]]
    assert all(e["subjectKey"] == world.s1 and "customerId" not in e for e in v1.json())
    paged = world.api.get("/api/v1/entitlements", params={"subject": world.s2, "page": 1, "pageSize": 1}).json()
    assert paged["totalCount"] == 2 and [e["id"] for e in paged["items"]] == [metered["id"]]
    one = world.api.get(f"/api/v1/entitlements/{boolean['id']}").json()
    assert one["subjectKey"] in (world.s1, world.s2) and one["featureKey"] == boolean_key

    assert world.api.delete(f"{world.base}/{boolean_key}").status_code == 204
    active = world.api.get("/api/v2/entitlements", params={"customerKeys": world.customer, "excludeInactive": "true"})
    assert [e["id"] for e in active.json()["items"]] == [metered["id"]]
    # a filter naming nobody matches nothing (it is not a 404, and not "no filter")
    nobody = world.unique("nobody")
    for path, params in (
        ("/api/v2/entitlements", {"customerKeys": nobody}),
        ("/api/v2/entitlements", {"customerIds": world.customer}),  # a key is not an id
        ("/api/v2/grants", {"customer": nobody}),
    ):
        assert world.api.get(path, params=params).json() == {"items": [], "page": 1, "pageSize": 100, "totalCount": 0}
    assert world.api.get("/api/v1/entitlements", params={"subject": nobody}).json() == []
    assert world.api.get("/api/v1/grants", params={"subject": nobody}).json() == []
    both = world.api.get("/api/v2/entitlements", params=[("customerKeys", nobody), ("customerKeys", world.customer)])
    assert [e["id"] for e in both.json()["items"]] == [metered["id"]]
