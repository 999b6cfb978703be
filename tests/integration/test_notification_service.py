"""NotificationService.on_snapshot and the delivery outbox in-process, on the real SQLite metadata database
(the engine `meterd serve` uses): which snapshots raise events, once per threshold and usage period, and how
claims, leases and resends behave. A real receiver checks that each event is delivered exactly once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from standardwebhooks import Webhook

from meterd.backends.sql.notifications import SQLNotificationStore
from meterd.bootstrap import metadata_engine
from meterd.entitlements.snapshot import EntitlementSnapshot
from meterd.notifications.inputs import ChannelInput, RuleInput
from meterd.notifications.model import Channel, DeliveryState, Event, Rule, Threshold
from meterd.notifications.outbox import DeliveryOutbox, RetryPolicy, SendResult
from meterd.notifications.service import NotificationService
from meterd.notifications.store import EventQuery
from meterd.settings import load_settings
from meterd.workers.webhooks import WebhookSender, WebhookWorker
from tests.integration.webhook_receiver import Receiver, receiving

D = Decimal
NS = "tenant"
START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = metadata_engine(load_settings(storage={"data_dir": tmp_path}))
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> SQLNotificationStore:
    return SQLNotificationStore(engine)


@pytest.fixture
def service(store: SQLNotificationStore) -> NotificationService:
    return NotificationService(store)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def snapshot(usage: str | int, balance: str | int, total: str | int = 100, **changes: Any) -> EntitlementSnapshot:
    value = {
        "hasAccess": D(balance) > 0,
        "balance": D(balance),
        "usage": D(usage),
        "overage": D(0),
        "totalAvailableGrantAmount": D(total),
    }
    base = EntitlementSnapshot(
        namespace=NS,
        operation="update",
        calculated_at=START + timedelta(days=3),
        entitlement_id="01J00000000000000000000ENT",
        feature_id="01J0000000000000000000FEAT",
        feature_key="tokens",
        customer_id="01J0000000000000000000CVST",
        subject_key="acme",
        period_from=START,
        period_to=START + timedelta(days=31),
        measure_usage_from=START - timedelta(days=90),
        balance=D(balance),
        usage=D(usage),
        overage=D(0),
        total_available=D(total),
        has_access=D(balance) > 0,
        entitlement={"id": "01J00000000000000000000ENT", "type": "metered", "featureKey": "tokens"},
        feature={"id": "01J0000000000000000000FEAT", "key": "tokens", "name": "Tokens"},
        customer={"id": "01J0000000000000000000CVST", "key": "acme_inc", "name": "Acme"},
        subject={"key": "acme"},
        value=value,
    )
    return replace(base, **changes)


def channel(service: NotificationService, url: str = "http://127.0.0.1:9/none", **kw: Any) -> Channel:
    return service.create_channel(NS, ChannelInput(type="WEBHOOK", name="hook", url=url, **kw))


def threshold_rule(service: NotificationService, channels: list[str], *thresholds: Threshold, **kw: Any) -> Rule:
    data = RuleInput(
        type="entitlements.balance.threshold", name="alerts", channels=channels, thresholds=list(thresholds), **kw
    )
    return service.create_rule(NS, data)


def fired(events: list[Event]) -> list[tuple[str, Any]]:
    out = []
    for e in events:
        data = json.loads(e.payload)["data"]
        threshold = data.get("threshold")
        out.append((e.type, (threshold["type"], threshold["value"]) if threshold else None))
    return out


def test_thresholds_fire_once_per_usage_period(service: NotificationService) -> None:
    ch = channel(service)
    rule = threshold_rule(
        service,
        [ch.id],
        Threshold(D(50), "usage_percentage"),
        Threshold(D(80), "usage_percentage"),
        Threshold(D(100), "PERCENT"),
        Threshold(D(0), "balance_value"),
    )
    assert service.on_snapshot(snapshot(10, 90)) == []
    assert fired(service.on_snapshot(snapshot(60, 40))) == [(rule.type, ("usage_percentage", 50))]
    assert service.on_snapshot(snapshot(60, 40)) == []  # the same reading again
    assert service.on_snapshot(snapshot(65, 35)) == []  # still the 50% mark
    assert fired(service.on_snapshot(snapshot(85, 15))) == [(rule.type, ("usage_percentage", 80))]
    assert service.on_snapshot(snapshot(70, 130, total=200)) == []  # a new grant: 35%, nothing new
    assert fired(service.on_snapshot(snapshot(200, 0, total=200))) == [
        (rule.type, ("PERCENT", 100)),
        (rule.type, ("balance_value", 0)),
    ]
    assert service.on_snapshot(snapshot(250, 0, total=200)) == []
    next_period = {"period_from": START + timedelta(days=31), "period_to": START + timedelta(days=59)}
    assert fired(service.on_snapshot(snapshot(85, 15, **next_period))) == [(rule.type, ("usage_percentage", 80))]
    events, total = service.list_events(EventQuery(NS, rules=[rule.id]))
    assert total == 5
    assert all(len(v.deliveries) == 1 and v.deliveries[0].state == DeliveryState.PENDING for v in events)


def test_event_payload_and_annotations(service: NotificationService) -> None:
    ch = channel(service)
    rule = threshold_rule(service, [ch.id], Threshold(D("33.3"), "usage_value"))
    [event] = service.on_snapshot(snapshot("33.3", "0.1", total="33.4"))
    text = event.payload.decode()
    assert '"balance":0.1' in text and '"value":33.3' in text  # exact decimals, not floats
    payload = json.loads(text)
    assert payload["id"] == event.id and payload["type"] == "entitlements.balance.threshold"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {
        "entitlement": {"id": "01J00000000000000000000ENT", "type": "metered", "featureKey": "tokens"},
        "feature": {"id": "01J0000000000000000000FEAT", "key": "tokens", "name": "Tokens"},
        "customer": {"id": "01J0000000000000000000CVST", "key": "acme_inc", "name": "Acme"},
        "subject": {"key": "acme"},
        "value": {
            "hasAccess": True,
            "balance": 0.1,
            "usage": 33.3,
            "overage": 0,
            "totalAvailableGrantAmount": 33.4,
        },
        "threshold": {"value": 33.3, "type": "usage_value"},
    }
    assert event.annotations["event.subject.key"] == "acme"
    assert event.annotations["event.feature.key"] == "tokens"
    assert event.annotations["event.customer.key"] == "acme_inc"
    assert event.annotations["event.balance.dedupe.hash"] == event.dedupe_hash
    view = service.get_event(NS, event.id)
    assert view.rule == rule and view.event == event
    for flt in ({"features": ["tokens"]}, {"features": [event.feature_id]}, {"subjects": ["acme"]}):
        assert [v.event.id for v in service.list_events(EventQuery(NS, **flt))[0]] == [event.id]
    assert service.list_events(EventQuery(NS, subjects=["someone_else"]))[1] == 0


def test_reset_rules_fire_on_resets_only(service: NotificationService) -> None:
    ch = channel(service)
    reset_rule = service.create_rule(NS, RuleInput(type="entitlements.reset", name="resets", channels=[ch.id]))
    assert service.on_snapshot(snapshot(50, 50)) == []
    reset = snapshot(0, 100, operation="reset", period_from=START + timedelta(days=10))
    [event] = service.on_snapshot(reset)
    assert event.rule_id == reset_rule.id and event.type == "entitlements.reset"
    assert "threshold" not in json.loads(event.payload)["data"]
    assert service.on_snapshot(reset) == []  # the balance worker retried: still one event
    later = snapshot(0, 100, operation="reset", period_from=START + timedelta(days=20))
    assert len(service.on_snapshot(later)) == 1


def test_which_rules_apply(service: NotificationService, store: SQLNotificationStore) -> None:
    ch = channel(service)
    mark = Threshold(D(10), "usage_value")
    by_id = threshold_rule(service, [ch.id], mark, features=["01J0000000000000000000FEAT"])
    by_key = threshold_rule(service, [ch.id], mark, features=["tokens"])
    threshold_rule(service, [ch.id], mark, features=["other_feature"])
    threshold_rule(service, [ch.id], mark, disabled=True)
    deleted = threshold_rule(service, [ch.id], mark)
    service.delete_rule(NS, deleted.id)
    assert service.on_snapshot(snapshot(20, 80, entitlement={"type": "boolean"})) == []
    assert {e.rule_id for e in service.on_snapshot(snapshot(20, 80))} == {by_id.id, by_key.id}
    assert service.on_snapshot(snapshot(20, 80, namespace="elsewhere")) == []


def test_no_usable_channel_still_records_the_event(service: NotificationService) -> None:
    off = channel(service, disabled=True)
    threshold_rule(service, [off.id], Threshold(D(1), "usage_value"))
    [event] = service.on_snapshot(snapshot(5, 95))
    assert service.get_event(NS, event.id).deliveries == ()


def test_concurrent_snapshots_raise_one_event(service: NotificationService) -> None:
    ch = channel(service)
    rule = threshold_rule(service, [ch.id], Threshold(D(50), "usage_percentage"))
    results: list[list[Event]] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        results.append(service.on_snapshot(snapshot(90, 10)))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(r) for r in results) == 1
    assert service.list_events(EventQuery(NS, rules=[rule.id]))[1] == 1


def test_each_event_is_delivered_once(
    service: NotificationService, store: SQLNotificationStore, receiver: Receiver
) -> None:
    ch = channel(service, url=receiver.url("/once"))
    threshold_rule(service, [ch.id], Threshold(D(50), "usage_percentage"), Threshold(D(90), "usage_percentage"))
    worker = WebhookWorker(DeliveryOutbox(store, RetryPolicy()), WebhookSender(5.0))
    woken: list[bool] = []
    service.subscribe(lambda: woken.append(True))
    events = []
    for usage in (10, 55, 60, 55, 95, 99, 95, 100):
        events += service.on_snapshot(snapshot(usage, 100 - usage))
        while worker.run_once():
            pass
    assert len(events) == 2 and len(woken) == 2
    got = receiver.at("/once")
    assert [r.headers["webhook-id"] for r in got] == [e.id for e in events]
    for request, event in zip(got, events, strict=True):
        assert request.body == event.payload
        Webhook(ch.signing_secret).verify(request.body, request.headers)
    assert {v.deliveries[0].state for v in service.list_events(EventQuery(NS))[0]} == {DeliveryState.SUCCESS}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)  # after the events the service stamps now

    def __call__(self) -> datetime:
        return self.now


def _result(clock: Clock, status: int | None) -> SendResult:
    return SendResult(clock.now, status, 3, "" if status else "ConnectError: refused")


def test_claims_leases_and_resends(service: NotificationService, store: SQLNotificationStore) -> None:
    clock = Clock()
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=10), lease=timedelta(seconds=60))
    outbox, rival = DeliveryOutbox(store, policy, clock), DeliveryOutbox(store, policy, clock)
    rule = threshold_rule(service, [channel(service).id], Threshold(D(1), "usage_value"))
    view = service.test_rule(NS, rule.id)

    [claim] = outbox.claim_due(10)
    assert rival.claim_due(10) == []  # claimed: not due for anyone else until the lease ends
    clock.now += timedelta(seconds=61)  # the claimer died
    [again] = rival.claim_due(10)
    assert again.token != claim.token
    outbox.record(claim, _result(clock, 200))  # the dead claim's late answer does not change the state
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.SENDING and status.claim_token == again.token
    assert [a.state for a in status.attempts] == [DeliveryState.FAILED, DeliveryState.SUCCESS]
    assert "no outcome recorded" in status.attempts[0].body

    next_at = rival.record(again, _result(clock, 500))
    # the second failed attempt (the lost one counts): 20 s, jittered down to no less than half
    assert next_at is not None and clock.now + timedelta(seconds=10) <= next_at <= clock.now + timedelta(seconds=20)
    assert outbox.claim_due(10) == []  # backing off
    clock.now = next_at
    [third] = outbox.claim_due(10)
    assert outbox.record(third, _result(clock, None)) is None  # third attempt: the last one
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.FAILED and status.next_attempt_at is None
    assert "gave up after 3 attempts" in status.reason

    service.resend(NS, view.event.id)
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.RESENDING and status.attempt_count == 0
    [fourth] = outbox.claim_due(10)
    outbox.record(fourth, _result(clock, 204))
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.SUCCESS and len(status.attempts) == 5


def test_a_claim_lost_at_the_last_attempt_fails(service: NotificationService, store: SQLNotificationStore) -> None:
    clock = Clock()
    outbox = DeliveryOutbox(store, RetryPolicy(max_attempts=1, lease=timedelta(seconds=30)), clock)
    rule = threshold_rule(service, [channel(service).id], Threshold(D(1), "usage_value"))
    view = service.test_rule(NS, rule.id)
    assert len(outbox.claim_due(10)) == 1
    clock.now += timedelta(seconds=31)
    assert outbox.claim_due(10) == []
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.FAILED and "no outcome recorded" in status.reason


def test_a_channel_disabled_after_the_event_fails_the_delivery(
    service: NotificationService, store: SQLNotificationStore
) -> None:
    ch = channel(service)
    rule = threshold_rule(service, [ch.id], Threshold(D(1), "usage_value"))
    view = service.test_rule(NS, rule.id)
    service.replace_channel(NS, ch.id, ChannelInput(type="WEBHOOK", name="hook", url=ch.url, disabled=True))
    assert DeliveryOutbox(store, RetryPolicy()).claim_due(10) == []
    [status] = service.get_event(NS, view.event.id).deliveries
    assert status.state == DeliveryState.FAILED and status.reason == "the channel is disabled"
