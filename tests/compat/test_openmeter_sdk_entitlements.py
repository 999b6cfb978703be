"""The official OpenMeter Python SDK (openmeter==1.0.0b236) against a running meterd: features, v2 customer
entitlements, grants, values, access, history, resets, and the global entitlement and grant lists.

The SDK raises on any status other than the exact one it expects and deserializes every response into its models,
so each call checks the status contract and the wire shape; the assertions check the values (to the unit).

This SDK hands back union-typed results as the raw JSON (a dict with camelCase keys): every entitlement
(`EntitlementV2`, `Entitlement`, also inside paginated items) and `features.list` (array or page object). It never
resolves its own string-named union aliases; that is the SDK, not the server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Server, wait_for

openmeter = pytest.importorskip("openmeter")

from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError  # noqa: E402
from openmeter import Client  # noqa: E402
from openmeter.models import (  # noqa: E402
    CustomerCreate,
    CustomerUsageAttribution,
    EntitlementBooleanCreateInputs,
    EntitlementBooleanV2,
    EntitlementGrantCreateInputV2,
    EntitlementMeteredV2,
    EntitlementMeteredV2CreateInputs,
    EntitlementStaticCreateInputs,
    EntitlementStaticV2,
    Event,
    ExpirationPeriod,
    FeatureCreateInputs,
    MeterCreate,
    RecurringPeriodCreateInput,
    ResetEntitlementUsageInput,
)

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(endpoint=server.url) as sdk:
        yield sdk


@dataclass
class Shop:
    """A SUM meter of tokens by model, a feature for model=gpt, and a customer with two subjects whose gpt usage
    is 100 at T0+10m and 200 at T0+70m (plus 5000 claude tokens the feature does not count)."""

    meter: str
    feature: str
    feature_id: str
    customer: str
    customer_id: str
    subjects: tuple[str, str]
    t0: datetime

    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)


def _event(etype: str, subject: str, at: datetime, model: str, tokens: int) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        source="sdk-entitlements",
        specversion="1.0",
        type=etype,
        subject=subject,
        time=at,
        data={"model": model, "tokens": tokens},
    )


@pytest.fixture(scope="module")
def shop(client: Client) -> Shop:
    suffix = uuid.uuid4().hex[:8]
    meter, etype = f"sdk_ent_{suffix}", f"sdk_ent_type_{suffix}"
    s1, s2 = f"sdk-ent-s1-{suffix}", f"sdk-ent-s2-{suffix}"
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    client.meters.create(
        MeterCreate(
            slug=meter, aggregation="SUM", event_type=etype, value_property="$.tokens", group_by={"model": "$.model"}
        )
    )
    client.events.ingest_events(
        [
            _event(etype, s1, t0 + timedelta(minutes=10), "gpt", 100),
            _event(etype, s2, t0 + timedelta(minutes=70), "gpt", 200),
            _event(etype, s1, t0 + timedelta(minutes=30), "claude", 5000),
        ]
    )
    wait_for(lambda: sum(r.value for r in client.meters.query_json(meter).data) == 5300)
    feature = client.features.create(
        FeatureCreateInputs(
            key=f"sdk_gpt_{suffix}", name="GPT tokens", meter_slug=meter, meter_group_by_filters={"model": "gpt"}
        )
    )
    customer = client.customers.create(
        CustomerCreate(
            name="SDK shop", key=f"sdk-shop-{suffix}", usage_attribution=CustomerUsageAttribution(subject_keys=[s1, s2])
        )
    )
    return Shop(meter, feature.key, feature.id, customer.key, customer.id, (s1, s2), t0)


def _metered(shop: Shop, **extra: Any) -> EntitlementMeteredV2CreateInputs:
    return EntitlementMeteredV2CreateInputs(
        type="metered",
        feature_key=shop.feature,
        usage_period=RecurringPeriodCreateInput(interval="DAY"),
        measure_usage_from=shop.t0,
        **extra,
    )


def _rfc3339(t: datetime) -> str:
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{t.microsecond:06d}".rstrip("0") + "Z" if t.microsecond else text + "Z"


def _value(value: Any) -> tuple[bool, float | None, float | None, float | None, float | None]:
    return value.has_access, value.balance, value.usage, value.overage, value.total_available_grant_amount


# -- features ----------------------------------------------------------------------------------------


def test_features(client: Client, shop: Shop) -> None:
    suffix = uuid.uuid4().hex[:8]
    created = client.features.create(
        FeatureCreateInputs(
            key=f"sdk_feature_{suffix}",
            name="Claude tokens",
            meter_slug=shop.meter,
            meter_group_by_filters={"model": "claude"},
            metadata={"team": "ai"},
        )
    )
    assert created.id and created.created_at is not None and created.archived_at is None
    assert created.meter_slug == shop.meter and created.meter_group_by_filters == {"model": "claude"}
    assert created.metadata == {"team": "ai"}
    assert client.features.get(created.id).key == created.key
    assert client.features.get(created.key).id == created.id

    bare = client.features.list(meter_slug=[shop.meter])
    assert isinstance(bare, list) and [f["key"] for f in bare] == [shop.feature, created.key]
    paged = client.features.list(meter_slug=[shop.meter], page=1, page_size=1)
    assert isinstance(paged, dict)
    assert paged["totalCount"] == 2 and paged["page"] == 1 and paged["pageSize"] == 1
    assert [f["key"] for f in paged["items"]] == [shop.feature]

    with pytest.raises((ResourceExistsError, HttpResponseError)) as conflict:
        client.features.create(FeatureCreateInputs(key=created.key, name="again"))
    assert conflict.value.status_code == 409
    with pytest.raises(HttpResponseError) as bad:
        client.features.create(FeatureCreateInputs(key="Not A Key", name="bad"))
    assert bad.value.status_code == 400

    assert client.features.delete(created.key) is None
    archived = client.features.get(created.id)
    assert archived.archived_at is not None
    assert created.key not in {f["key"] for f in client.features.list(meter_slug=[shop.meter])}
    with_archived = client.features.list(meter_slug=[shop.meter], include_archived=True)
    assert isinstance(with_archived, list) and created.key in {f["key"] for f in with_archived}
    with pytest.raises(ResourceNotFoundError):
        client.features.get(f"sdk_missing_{suffix}")


# -- v2 customer entitlements ------------------------------------------------------------------------


def test_metered_entitlement_grants_values_history(client: Client, shop: Shop) -> None:
    entitlements, entitlement_v2 = client.customer_entitlements_v2, client.customer_entitlement_v2
    raw = entitlements.post(shop.customer, _metered(shop, metadata={"plan": "pro"}))
    created = EntitlementMeteredV2(raw)  # the SDK's own model over the raw union result
    assert created.type == "metered" and created.customer_id == shop.customer_id
    assert created.customer_key == shop.customer and created.feature_id == shop.feature_id
    assert created.measure_usage_from == shop.t0 and created.last_reset == shop.t0
    assert created.usage_period.interval == "DAY" and created.usage_period.anchor == shop.t0
    assert created.usage_period.interval_iso == timedelta(days=1)
    assert created.current_usage_period.from_property == shop.t0
    assert created.current_usage_period.to == shop.t0 + timedelta(days=1)
    assert created.is_soft_limit is False and created.metadata == {"plan": "pro"} and created.deleted_at is None
    assert entitlements.get(shop.customer, shop.feature) == raw
    assert entitlements.get(shop.customer_id, created.id) == raw

    with pytest.raises((ResourceExistsError, HttpResponseError)) as conflict:
        entitlements.post(shop.customer, _metered(shop))
    assert conflict.value.status_code == 409

    # grants: a low-priority number burns first
    big = entitlement_v2.create_customer_entitlement_grant(
        shop.customer,
        shop.feature,
        EntitlementGrantCreateInputV2(amount=1000, priority=2, effective_at=shop.t0),
    )
    small = entitlement_v2.create_customer_entitlement_grant(
        shop.customer,
        created.id,
        EntitlementGrantCreateInputV2(
            amount=150,
            priority=1,
            effective_at=shop.t0,
            expiration=ExpirationPeriod(duration="YEAR", count=1),
            metadata={"reason": "promo"},
        ),
    )
    assert big.entitlement_id == created.id and big.amount == 1000 and big.effective_at == shop.t0
    assert big.max_rollover_amount == 1000 and big.expires_at is None and big.voided_at is None
    assert small.expires_at == shop.t0.replace(year=shop.t0.year + 1) and small.metadata == {"reason": "promo"}
    grants = entitlement_v2.get_grants(shop.customer, shop.feature)
    assert grants.total_count == 2 and [g.id for g in grants.items_property] == [big.id, small.id]

    value = entitlement_v2.get_customer_entitlement_value(shop.customer, shop.feature)
    assert _value(value) == (True, 850, 300, 0, 1150)
    assert value.grant_balances == {small.id: 0, big.id: 850}
    past = entitlement_v2.get_customer_entitlement_value(shop.customer, created.id, time=shop.at(30))
    assert _value(past) == (True, 1050, 100, 0, 1150)
    v1 = client.customer_entitlement.get_customer_entitlement_value(shop.customer_id, shop.feature)
    assert _value(v1) == (True, 850, 300, 0, 1150)
    access = client.customer.get_customer_access(shop.customer)
    assert access.entitlements[shop.feature].has_access is True and access.entitlements[shop.feature].balance == 850

    history = entitlement_v2.get_customer_entitlement_history(
        shop.customer, shop.feature, window_size="HOUR", from_parameter=shop.t0, to=shop.at(90)
    )
    assert sum(w.usage for w in history.windowed_history) == 300
    assert history.windowed_history[0].balance_at_start == 1150
    # only windows with usage are listed: the first holds the first event (t0 + 10 min), clipped to `from`
    first_hour = shop.at(10).replace(minute=0)
    assert history.windowed_history[0].period.from_property == max(shop.t0, first_hour)
    [segment] = history.burndown_history
    assert segment.period.from_property == shop.t0 and segment.period.to == shop.at(90)
    assert segment.usage == 300 and segment.overage == 0 and segment.balance_at_end == 850
    assert segment.grant_balances_at_end == {small.id: 0, big.id: 850}
    assert [(u.grant_id, u.usage) for u in segment.grant_usages] == [(small.id, 150), (big.id, 150)]

    # void the big grant: its balance is gone from now on
    assert client.grants.delete(big.id) is None
    assert _value(entitlement_v2.get_customer_entitlement_value(shop.customer, shop.feature)) == (
        False,
        0,
        300,
        0,
        300,
    )
    with pytest.raises((ResourceExistsError, HttpResponseError)) as voided:
        client.grants.delete(big.id)
    assert voided.value.status_code == 409

    # a reset an hour in: both grants roll their balances over (v2 defaults the max rollover to the amount), the
    # 200 used since burn the small grant's 50 and 150 of the big one, which is voided now
    assert (
        entitlement_v2.reset_customer_entitlement(
            shop.customer, shop.feature, ResetEntitlementUsageInput(effective_at=shop.at(60))
        )
        is None
    )
    after = entitlement_v2.get_customer_entitlement_value(shop.customer, shop.feature)
    assert _value(after) == (False, 0, 200, 0, 200)
    assert entitlements.get(shop.customer, shop.feature)["lastReset"] == _rfc3339(shop.at(60))
    with pytest.raises(HttpResponseError) as future:
        entitlement_v2.reset_customer_entitlement(
            shop.customer, shop.feature, ResetEntitlementUsageInput(effective_at=shop.at(600))
        )
    assert future.value.status_code == 400

    # the global lists
    listed = client.entitlements_v2.list(customer_keys=[shop.customer])
    assert listed.total_count == 1 and listed.items_property[0]["id"] == created.id
    assert client.entitlements_v2.get(created.id)["customerId"] == shop.customer_id
    all_grants = client.grants_v2.list(customer=[shop.customer])
    assert {g.id for g in all_grants.items_property} == {big.id, small.id}
    assert [g.voided_at is not None for g in all_grants.items_property] == [True, False]
    v1_grants = client.grants.list(subject=[shop.subjects[0]])
    assert isinstance(v1_grants, list) and {g.id for g in v1_grants} == {big.id, small.id}
    v1_paged = client.grants.list(subject=[shop.subjects[0]], page=1, page_size=1)
    assert not isinstance(v1_paged, list) and v1_paged.total_count == 2 and len(v1_paged.items_property) == 1
    v1_entitlements = client.entitlements.list(subject=[shop.subjects[1]])
    assert isinstance(v1_entitlements, list) and [e["id"] for e in v1_entitlements] == [created.id]
    v1_one = client.entitlements.get(created.id)
    assert v1_one["featureKey"] == shop.feature and v1_one["subjectKey"] == shop.subjects[0]

    # override: a new entitlement replaces this one (its grants stay with the old one)
    replaced = EntitlementMeteredV2(
        entitlements.override(shop.customer, shop.feature, _metered(shop, is_soft_limit=True, issue_after_reset=500))
    )
    assert replaced.id != created.id and replaced.is_soft_limit is True and replaced.issue_after_reset == 500
    assert entitlements.get(shop.customer, shop.feature)["id"] == replaced.id
    assert client.entitlements_v2.get(created.id)["deletedAt"] == _rfc3339(replaced.created_at)
    assert _value(entitlement_v2.get_customer_entitlement_value(shop.customer, shop.feature)) == (
        True,
        200,
        300,
        0,
        500,
    )

    assert entitlements.delete(shop.customer, shop.feature) is None
    with pytest.raises(ResourceNotFoundError):
        entitlements.get(shop.customer, shop.feature)
    with pytest.raises(ResourceNotFoundError):
        entitlement_v2.get_customer_entitlement_value(shop.customer, shop.feature)


def test_boolean_and_static(client: Client, shop: Shop) -> None:
    suffix = uuid.uuid4().hex[:8]
    flag = client.features.create(FeatureCreateInputs(key=f"sdk_flag_{suffix}", name="Flag"))
    seats = client.features.create(FeatureCreateInputs(key=f"sdk_seats_{suffix}", name="Seats"))
    customer = client.customers.create(CustomerCreate(name="SDK flags", key=f"sdk-flags-{suffix}"))
    entitlements = client.customer_entitlements_v2
    boolean = EntitlementBooleanV2(
        entitlements.post(customer.key, EntitlementBooleanCreateInputs(type="boolean", feature_key=flag.key))
    )
    static = EntitlementStaticV2(
        entitlements.post(
            customer.id, EntitlementStaticCreateInputs(type="static", feature_key=seats.key, config='{"seats": 3}')
        )
    )
    assert boolean.type == "boolean" and boolean.customer_id == customer.id
    assert static.type == "static" and static.config == '{"seats": 3}'

    listed = entitlements.list(customer.key)
    assert listed.total_count == 2 and [e["type"] for e in listed.items_property] == ["boolean", "static"]
    page = entitlements.list(customer.key, page=2, page_size=1)
    assert page.page == 2 and [e["id"] for e in page.items_property] == [static.id]

    value = client.customer_entitlement_v2.get_customer_entitlement_value(customer.key, flag.key)
    assert value.has_access is True and value.balance is None
    config = client.customer_entitlement.get_customer_entitlement_value(customer.key, seats.key)
    assert config.has_access is True and config.config == '{"seats": 3}'
    access = client.customer.get_customer_access(customer.id)
    assert set(access.entitlements) == {flag.key, seats.key}
    assert access.entitlements[seats.key].config == '{"seats": 3}'

    overridden = entitlements.override(
        customer.key, static.id, EntitlementStaticCreateInputs(type="static", feature_key=seats.key, config="{}")
    )
    assert overridden["config"] == "{}" and overridden["id"] != static.id

    with pytest.raises(HttpResponseError) as bad_config:
        entitlements.post(
            customer.key, EntitlementStaticCreateInputs(type="static", feature_key=flag.key, config="[1]")
        )
    assert bad_config.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        entitlements.post(
            customer.key, EntitlementBooleanCreateInputs(type="boolean", feature_key=f"sdk_nothing_{suffix}")
        )
    with pytest.raises(ResourceNotFoundError):
        client.customer.get_customer_access(f"sdk-nobody-{suffix}")
