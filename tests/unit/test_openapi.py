"""The OpenAPI document, without a server: every route is documented with a success schema, the query
parameters are there, and what the wire encoders write is what the documented shapes say (they are
`additionalProperties: false`, so a field added to an encoder and not to meterd.http.openapi_types fails)."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from starlette.routing import Route

import meterd.http.routes
from meterd.customers.model import Customer, Subject
from meterd.entitlements.balance import Value
from meterd.entitlements.model import Entitlement, EntitlementType, Feature, GrantRecord
from meterd.http import entitlement_wire as ew
from meterd.http import notification_wire as nw
from meterd.http import openapi, wire
from meterd.http import openapi_types as t
from meterd.meters.model import Aggregation, Meter
from meterd.notifications.model import (
    BALANCE_THRESHOLD,
    Attempt,
    Channel,
    Delivery,
    DeliveryState,
    Event,
    EventView,
    Rule,
    Threshold,
)
from meterd.usage.query import UsageRow
from meterd.usage.service import QueryResult

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
NON_JSON = ("text/plain", "application/openmetrics-text", "text/csv")


def _routes() -> list[Route]:
    """Every route of every routes module (a new module is picked up too) and the document's own."""
    routes: list[Route] = list(openapi.routes)
    for info in pkgutil.iter_modules(meterd.http.routes.__path__):
        module = importlib.import_module(f"meterd.http.routes.{info.name}")
        routes += [r for r in getattr(module, "routes", []) if isinstance(r, Route)]
    return routes


DOCUMENT = openapi.document(_routes())


def _operation(path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = DOCUMENT["paths"][path][method]
    return operation


def test_every_route_is_documented_with_a_success_schema() -> None:
    routes = _routes()
    assert len(routes) > 60
    for route in routes:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            where = (route.path, method)
            assert method.lower() in DOCUMENT["paths"].get(route.path, {}), f"undocumented route {where}"
            responses = _operation(route.path, method.lower())["responses"]
            assert responses["default"]["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
            [success] = [code for code in responses if code.startswith("2")]
            content = responses[success].get("content", {})
            if success in ("202", "204"):  # accepted (a resend) and no content answer an empty body
                assert not content, where
                continue
            assert content, f"{where}: {success} documents no body"
            for media, spec in content.items():
                assert media in NON_JSON or spec["schema"], f"{where}: {success} {media} has an empty schema"
    ids = [op["operationId"] for ops in DOCUMENT["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_every_schema_reference_resolves() -> None:
    names = set(DOCUMENT["components"]["schemas"])
    text = msgspec.json.encode(DOCUMENT).decode()
    prefix = '"$ref":"#/components/schemas/'
    refs = {part.split('"', 1)[0] for part in text.split(prefix)[1:]}
    assert refs <= names, refs - names
    assert all(name.replace("_", "").replace(".", "").isalnum() for name in names), names


def _query(path: str, method: str = "get") -> dict[str, dict[str, Any]]:
    params = _operation(path, method).get("parameters", [])
    return {p["name"]: p for p in params if p["in"] == "query"}


def test_query_parameters_are_documented_as_the_handlers_read_them() -> None:
    query = _query("/api/v1/meters/{meter}/query")
    assert query["windowSize"]["schema"]["enum"] == ["MINUTE", "HOUR", "DAY", "MONTH"]
    assert query["from"]["schema"] == {"type": "string", "format": "date-time"}
    assert query["subject"]["schema"]["type"] == "array" and query["subject"]["explode"] is True
    assert query["filterGroupBy"]["style"] == "deepObject" and query["filterGroupBy"]["explode"] is True
    assert query["filterGroupBy"]["schema"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert _query("/api/v1/meters/{meter}/query", "post") == {}  # a POST query takes them in its body
    csv = _operation("/api/v1/meters/{meter}/query", "get")["responses"]["200"]["content"]
    assert set(csv) == {"application/json", "text/csv"}

    history = _query("/api/v2/customers/{customer}/entitlements/{entitlement}/history")
    assert history["windowSize"]["required"] is True
    assert history["windowSize"]["schema"]["enum"] == ["MINUTE", "HOUR", "DAY"]
    page = _query("/api/v1/customers")["pageSize"]["schema"]
    assert (page["minimum"], page["maximum"], page["default"]) == (1, 1000, 100)
    # the v1 subject routes list everything; their v2 customer twins page
    assert "page" not in _query("/api/v1/subjects/{subject}/entitlements")
    assert "page" in _query("/api/v2/customers/{customer}/entitlements")
    assert _query("/api/v1/grants/{grant}", "delete")["at"]["schema"]["format"] == "date-time"
    assert _query("/api/v2/events")["limit"]["schema"]["maximum"] == 100


def test_list_responses_follow_the_version() -> None:
    def schema(path: str) -> Any:
        return _operation(path, "get")["responses"]["200"]["content"]["application/json"]["schema"]

    assert schema("/api/v1/meters") == {"type": "array", "items": {"$ref": "#/components/schemas/Meter"}}
    v1 = schema("/api/v1/features")["anyOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/Feature"}} in v1
    assert schema("/api/v2/entitlements") == {"$ref": "#/components/schemas/Page_EntitlementV2_"}
    assert schema("/api/v1/entitlements/{entitlement}") == {"$ref": "#/components/schemas/Entitlement"}
    assert schema("/api/v2/entitlements/{entitlement}") == {"$ref": "#/components/schemas/EntitlementV2"}


# -- the encoders against the documented shapes ---------------------------------------------------------------


def _conforms(encoded: Any, kind: Any) -> None:
    """Decode what the server would write into the documented type: required fields, types, nulls and no
    undocumented field."""
    msgspec.json.decode(msgspec.json.Encoder(decimal_format="number").encode(encoded), type=kind)


METER = Meter("m1", "ns", "tokens", "Tokens", Aggregation.SUM, "t", "$.n", {"model": "$.m"}, None, None, {}, T0, T0)
CUSTOMER = Customer("c1", "ns", "Acme", "acme", ("s1",), created_at=T0, updated_at=T0)
FEATURE = Feature("f1", "ns", "gpt", "GPT", created_at=T0, updated_at=T0)


@pytest.mark.parametrize("full", [False, True])
def test_metering_encoders_match_the_document(full: bool) -> None:
    meter, customer = METER, CUSTOMER
    subject = Subject("s1", "ns", "s1", created_at=T0, updated_at=T0)
    row = UsageRow(1.5, T0, T0 + timedelta(hours=1), None, None, {})
    result = QueryResult(None, None, None, [], [row])
    if full:
        meter = Meter(**{**meter.__dict__, "description": "d", "event_from": T0, "deleted_at": T0})
        extra = {"description": "d", "primary_email": "a@b.c", "currency": "USD", "billing_address": {"c": "US"}}
        customer = Customer(**{**customer.__dict__, **extra, "deleted_at": T0})
        subject = Subject("s1", "ns", "s1", "S", {"a": 1}, "cus_1", T0, T0, T0, T0)
        row = UsageRow(2.0, T0, T0 + timedelta(hours=1), "s1", "c1", {"model": "gpt"})
        result = QueryResult(T0, T0 + timedelta(days=1), "HOUR", ["model"], [row])
    _conforms(wire.meter_json(meter), t.Meter)
    _conforms(wire.customer_json(customer), t.Customer)
    _conforms(wire.subject_json(subject), t.Subject)
    _conforms(wire.usage_json(result), t.MeterQueryResult)


def _entitlement(kind: EntitlementType, **extra: Any) -> Entitlement:
    return Entitlement("e1", "ns", kind, "f1", "gpt", "c1", "s1", T0, T0, T0, **extra)


@pytest.mark.parametrize("v2", [False, True])
def test_entitlement_encoders_match_the_document(v2: bool) -> None:
    documented = t.EntitlementV2 if v2 else t.Entitlement
    metered = _entitlement(
        EntitlementType.METERED,
        measure_usage_from=T0,
        usage_period_interval="P1D",
        usage_period_anchor=T0,
        issue_after_reset=Decimal("10"),
        issue_after_reset_priority=1,
    )
    period = (T0, T0 + timedelta(days=1))
    for entitlement, current in (
        (metered, period),
        (metered, None),
        (_entitlement(EntitlementType.STATIC, config='{"a": 1}'), None),
        (_entitlement(EntitlementType.BOOLEAN, deleted_at=T0), None),
    ):
        _conforms(ew.entitlement_json(entitlement, CUSTOMER, current, v2), documented)
    _conforms(ew.entitlement_json(metered, None, period, v2), documented)

    grant = GrantRecord("g1", "ns", "e1", Decimal("100.5"), 1, T0, T0, T0)
    _conforms(ew.grant_json(grant), t.Grant)
    recurring = GrantRecord(
        "g2", "ns", "e1", Decimal(5), 2, T0, T0, T0, expiration={"duration": "DAY", "count": 3}, expires_at=T0
    )
    recurring = GrantRecord(**{**recurring.__dict__, "recurrence_interval": "P1M", "recurrence_anchor": T0})
    _conforms(ew.grant_json(recurring, T0), t.Grant)

    value = Value(True, T0, Decimal(1), Decimal(2), Decimal(0), Decimal(3), grant_balances={"g1": Decimal(1)})
    for one in (value, Value(False, T0), Value(True, T0, config='{"a": 1}')):
        _conforms(ew.value_json(one, v2), t.EntitlementValueV2 if v2 else t.EntitlementValue)
    _conforms(ew.feature_json(FEATURE), t.Feature)


def test_notification_encoders_match_the_document() -> None:
    channel = Channel("ch1", "ns", "hook", "http://x", "whsec_x", created_at=T0, updated_at=T0)
    _conforms(nw.channel_json(channel), t.Channel)
    _conforms(nw.channel_json(Channel(**{**_fields(channel), "deleted_at": T0})), t.Channel)
    rule = Rule("r1", "ns", BALANCE_THRESHOLD, "alerts", ("ch1",), ("f1", "gone"), (Threshold(Decimal(80), "PERCENT"),))
    rule = Rule(**{**_fields(rule), "created_at": T0, "updated_at": T0})
    _conforms(nw.rule_json(rule, {"f1": ("f1", "gpt")}), t.Rule)
    attempt = Attempt(T0, DeliveryState.FAILED, 500, 12, "oops", "http://x")
    delivery = Delivery("n1", "ch1", "ns", DeliveryState.SENDING, "retrying", T0, (attempt,), next_attempt_at=T0)
    event = Event("n1", "ns", BALANCE_THRESHOLD, "r1", b'{"id": "n1"}', T0, annotations={"a": 1})
    _conforms(nw.event_json(EventView(event, rule, (delivery,))), t.NotificationEvent)
    plain = Attempt(T0, DeliveryState.FAILED, None, 0, "refused")
    bare = Delivery("n1", "ch1", "ns", DeliveryState.FAILED, "gave up", T0, (plain,))
    _conforms(
        nw.event_json(EventView(Event(**{**_fields(event), "annotations": {}}), rule, (bare,))), t.NotificationEvent
    )


def _fields(value: Any) -> dict[str, Any]:
    """A slotted dataclass's fields (no __dict__)."""
    return {name: getattr(value, name) for name in value.__dataclass_fields__}
