"""Notification rules: channel and rule management, the events rules raise from entitlement snapshots,
rule tests and resends. Delivery itself is the outbox's (meterd.notifications.outbox) and the worker's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from meterd.core.errors import ConflictError, NotFoundError, Problem, ValidationError
from meterd.core.ids import new_ulid
from meterd.core.timeutil import utcnow
from meterd.entitlements.snapshot import EntitlementSnapshot
from meterd.notifications import payloads
from meterd.notifications.inputs import ChannelInput, RuleInput, new_signing_secret
from meterd.notifications.model import (
    ANNOTATION_DEDUPE_HASH,
    ANNOTATION_RULE_TEST,
    BALANCE_THRESHOLD,
    ENTITLEMENT_RESET,
    RULE_TYPES,
    Channel,
    Delivery,
    DeliveryState,
    Event,
    EventView,
    Rule,
    Threshold,
)
from meterd.notifications.store import EventQuery, NotificationStore
from meterd.notifications.thresholds import Reading, most_severe_active

log = logging.getLogger(__name__)

T = TypeVar("T", Channel, Rule)
# (namespace, feature ids or keys) -> {given id or key: (feature id, feature key)} for the features that exist
FeatureLookup = Callable[[str, Sequence[str]], dict[str, tuple[str, str]]]


@dataclass(frozen=True)
class ListQuery:
    page: int = 1
    page_size: int = 100
    include_deleted: bool = False
    include_disabled: bool = False
    order_by: str = "id"  # id | type | createdAt | updatedAt
    descending: bool = False


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int


_SORT: dict[str, Callable[[Any], Any]] = {
    "id": lambda x: x.id,
    "type": lambda x: (x.type, x.id),
    "createdAt": lambda x: (x.created_at, x.id),
    "updatedAt": lambda x: (x.updated_at, x.id),
}


def _page(items: list[T], query: ListQuery) -> Page[T]:
    shown = [
        x
        for x in items
        if (query.include_deleted or x.deleted_at is None) and (query.include_disabled or not x.disabled)
    ]
    shown.sort(key=_SORT[query.order_by], reverse=query.descending)
    start = (query.page - 1) * query.page_size
    return Page(shown[start : start + query.page_size], len(shown))


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        *,
        features: FeatureLookup | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._features = features
        self._clock = clock
        self._listeners: list[Callable[[], None]] = []
        self.rules_changed: list[Callable[[str], None]] = []  # (namespace) after a rule is created, changed, deleted

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever deliveries become due now (new events, resends): wakes a worker."""
        self._listeners.append(callback)

    def _rules_changed(self, namespace: str) -> None:
        for callback in self.rules_changed:
            callback(namespace)

    def _due_now(self) -> None:
        for callback in self._listeners:
            callback()

    # -- channels ------------------------------------------------------------------------------------

    def create_channel(self, namespace: str, data: ChannelInput) -> Channel:
        data.validate()
        now = self._clock()
        channel = Channel(
            id=new_ulid(),
            namespace=namespace,
            name=data.name,
            url=data.url,
            signing_secret=data.signing_secret or new_signing_secret(),
            custom_headers=dict(data.custom_headers),
            disabled=data.disabled,
            metadata=dict(data.metadata),
            created_at=now,
            updated_at=now,
        )
        self._store.insert_channel(channel)
        return channel

    def get_channel(self, namespace: str, channel_id: str) -> Channel:
        channel = self._store.get_channel(namespace, channel_id)
        if channel is None:
            raise NotFoundError(f"notification channel not found: {channel_id}")
        return channel

    def replace_channel(self, namespace: str, channel_id: str, data: ChannelInput) -> Channel:
        data.validate()
        current = self.get_channel(namespace, channel_id)
        if current.deleted_at is not None:
            raise ConflictError(f"notification channel {channel_id} is deleted and cannot be updated")
        channel = replace(
            current,
            name=data.name,
            url=data.url,
            signing_secret=data.signing_secret or current.signing_secret,
            custom_headers=dict(data.custom_headers),
            disabled=data.disabled,
            metadata=dict(data.metadata),
            updated_at=self._clock(),
        )
        self._store.update_channel(channel)
        return channel

    def delete_channel(self, namespace: str, channel_id: str) -> None:
        channel = self.get_channel(namespace, channel_id)
        if channel.deleted_at is not None:
            raise NotFoundError(f"notification channel not found: {channel_id}")
        rules = self._store.delete_channel(namespace, channel_id, self._clock())
        if rules:
            raise ConflictError(
                f"notification channel {channel_id} is used by rules {', '.join(rules)}: "
                "remove it from them (or delete them) first",
                rules=rules,
            )

    def list_channels(self, namespace: str, query: ListQuery) -> Page[Channel]:
        return _page(self._store.channels(namespace), query)

    # -- rules -----------------------------------------------------------------------------------------

    def _check_references(self, namespace: str, data: RuleInput) -> None:
        problems = []
        live = {c.id for c in self._store.channels(namespace, data.channels) if c.deleted_at is None}
        for index, channel_id in enumerate(data.channels):
            if channel_id not in live:
                problems.append(Problem(f"channels[{index}]", f"no such notification channel: {channel_id}"))
        if data.features and self._features is not None:
            known = self._features(namespace, data.features)
            for index, feature in enumerate(data.features):
                if feature not in known:
                    problems.append(Problem(f"features[{index}]", f"no such feature: {feature}"))
        if problems:
            raise ValidationError(problems)

    def create_rule(self, namespace: str, data: RuleInput) -> Rule:
        data.validate()
        self._check_references(namespace, data)
        now = self._clock()
        rule = Rule(
            id=new_ulid(),
            namespace=namespace,
            type=data.type,
            name=data.name,
            channels=tuple(data.channels),
            features=tuple(data.features),
            thresholds=tuple(data.thresholds or ()),
            disabled=data.disabled,
            metadata=dict(data.metadata),
            created_at=now,
            updated_at=now,
        )
        self._store.insert_rule(rule)
        self._rules_changed(namespace)
        return rule

    def get_rule(self, namespace: str, rule_id: str) -> Rule:
        rule = self._store.get_rule(namespace, rule_id)
        if rule is None:
            raise NotFoundError(f"notification rule not found: {rule_id}")
        return rule

    def _live_rule(self, namespace: str, rule_id: str) -> Rule:
        rule = self.get_rule(namespace, rule_id)
        if rule.deleted_at is not None:
            raise ConflictError(f"notification rule {rule_id} is deleted")
        return rule

    def replace_rule(self, namespace: str, rule_id: str, data: RuleInput) -> Rule:
        data.validate()
        current = self._live_rule(namespace, rule_id)
        self._check_references(namespace, data)
        rule = replace(
            current,
            type=data.type,
            name=data.name,
            channels=tuple(data.channels),
            features=tuple(data.features),
            thresholds=tuple(data.thresholds or ()),
            disabled=data.disabled,
            metadata=dict(data.metadata),
            updated_at=self._clock(),
        )
        self._store.update_rule(rule)
        self._rules_changed(namespace)
        return rule

    def delete_rule(self, namespace: str, rule_id: str) -> None:
        rule = self.get_rule(namespace, rule_id)
        if rule.deleted_at is not None:
            raise NotFoundError(f"notification rule not found: {rule_id}")
        now = self._clock()
        self._store.update_rule(replace(rule, deleted_at=now, updated_at=now))
        self._rules_changed(namespace)

    def list_rules(
        self, namespace: str, query: ListQuery, features: Sequence[str] = (), channels: Sequence[str] = ()
    ) -> Page[Rule]:
        rules = self._store.rules(namespace)
        if channels:
            rules = [r for r in rules if set(r.channels) & set(channels)]
        if features:
            wanted = set(features)
            if self._features is not None:  # a rule naming a feature by key matches a filter by its id
                for feature_id, feature_key in self._features(namespace, list(features)).values():
                    wanted |= {feature_id, feature_key}
            rules = [r for r in rules if set(r.features) & wanted]
        return _page(rules, query)

    def feature_refs(self, namespace: str, rules: Sequence[Rule]) -> dict[str, tuple[str, str]]:
        """{id or key a rule names: (feature id, feature key)} for the features that still exist."""
        names = sorted({f for r in rules for f in r.features})
        if not names or self._features is None:
            return {}
        return self._features(namespace, names)

    def test_rule(self, namespace: str, rule_id: str) -> EventView:
        """Raise a real event with a sample payload, annotated notification.rule.test, delivered like any other."""
        rule = self._live_rule(namespace, rule_id)
        now = self._clock()
        event_id = new_ulid()
        event = Event(
            id=event_id,
            namespace=namespace,
            type=rule.type,
            rule_id=rule.id,
            payload=payloads.payload(event_id, rule.type, now, payloads.sample_data(rule, now)),
            created_at=now,
            annotations={ANNOTATION_RULE_TEST: True},
        )
        deliveries = self._new_deliveries(rule, event_id, now)
        self._store.insert_event(event, deliveries)
        self._due_now()
        return EventView(event, rule, tuple(deliveries))

    # -- events ------------------------------------------------------------------------------------------

    def _views(self, namespace: str, events: list[Event]) -> list[EventView]:
        rules = {r.id: r for r in self._store.rules(namespace, sorted({e.rule_id for e in events}))}
        deliveries = self._store.deliveries([e.id for e in events])
        return [EventView(e, rules[e.rule_id], tuple(deliveries.get(e.id, ()))) for e in events]

    def list_events(self, query: EventQuery) -> tuple[list[EventView], int]:
        events, total = self._store.list_events(query)
        return self._views(query.namespace, events), total

    def get_event(self, namespace: str, event_id: str) -> EventView:
        event = self._store.get_event(namespace, event_id)
        if event is None:
            raise NotFoundError(f"notification event not found: {event_id}")
        return self._views(namespace, [event])[0]

    def resend(self, namespace: str, event_id: str, channels: Sequence[str] | None = None) -> None:
        """Deliver the event again to these of its channels (all of them by default), with a fresh retry budget."""
        view = self.get_event(namespace, event_id)
        sent_to = [d.channel_id for d in view.deliveries]
        if channels:
            problems = [
                Problem(f"channels[{index}]", f"event {event_id} was not sent to channel {channel}")
                for index, channel in enumerate(channels)
                if channel not in sent_to
            ]
            if problems:
                raise ValidationError(problems)
            sent_to = list(dict.fromkeys(channels))
        if sent_to:
            self._store.request_resend(namespace, event_id, sent_to, self._clock())
            self._due_now()

    # -- from the balance worker -----------------------------------------------------------------------

    def on_snapshot(self, snapshot: EntitlementSnapshot) -> list[Event]:
        """Raise the events the namespace's rules call for after an entitlement's value was (re)computed.

        Safe to call from any thread and to call again with the same snapshot (events are deduplicated in
        the database); a storage error propagates, and retrying the call is the way to recover."""
        if snapshot.entitlement.get("type", "metered") != "metered":
            return []
        reading = Reading(snapshot.usage, snapshot.balance, snapshot.total_available)
        created = []
        for rule in self._store.live_rules(snapshot.namespace, RULE_TYPES):
            if not rule.covers_feature(snapshot.feature_id, snapshot.feature_key):
                continue
            if rule.type == BALANCE_THRESHOLD:
                for threshold in most_severe_active(rule.thresholds, reading):
                    dedupe = payloads.threshold_dedupe_hash(snapshot, rule.id, threshold)
                    created.append(self._raise(rule, snapshot, threshold, dedupe))
            elif rule.type == ENTITLEMENT_RESET and snapshot.operation == "reset":
                created.append(self._raise(rule, snapshot, None, payloads.reset_dedupe_hash(snapshot, rule.id)))
        events = [e for e in created if e is not None]
        if events:
            log.info("notification events raised: %s", ", ".join(f"{e.type} {e.id}" for e in events))
            self._due_now()
        return events

    def _raise(
        self, rule: Rule, snapshot: EntitlementSnapshot, threshold: Threshold | None, dedupe: str
    ) -> Event | None:
        if self._store.has_event(snapshot.namespace, dedupe):
            return None
        now = self._clock()
        event_id = new_ulid()
        data = payloads.snapshot_data(snapshot, threshold)
        annotations: dict[str, Any] = {
            "event.subject.key": snapshot.subject_key,
            "event.feature.id": snapshot.feature_id,
            "event.feature.key": snapshot.feature_key,
            "event.entitlement.id": snapshot.entitlement_id,
            ANNOTATION_DEDUPE_HASH: dedupe,
        }
        if snapshot.customer_id:
            annotations["event.customer.id"] = snapshot.customer_id
        if snapshot.customer.get("key"):
            annotations["event.customer.key"] = snapshot.customer["key"]
        event = Event(
            id=event_id,
            namespace=snapshot.namespace,
            type=rule.type,
            rule_id=rule.id,
            payload=payloads.payload(event_id, rule.type, now, data),
            created_at=now,
            annotations=annotations,
            dedupe_hash=dedupe,
            entitlement_id=snapshot.entitlement_id,
            feature_id=snapshot.feature_id,
            feature_key=snapshot.feature_key,
            subject_key=snapshot.subject_key,
            customer_id=snapshot.customer_id or None,
        )
        stored = self._store.insert_event(event, self._new_deliveries(rule, event_id, now))
        return event if stored else None

    def _new_deliveries(self, rule: Rule, event_id: str, now: datetime) -> list[Delivery]:
        """One PENDING delivery per channel of the rule that is live and enabled."""
        channels = self._store.channels(rule.namespace, rule.channels)
        usable = {c.id for c in channels if c.deleted_at is None and not c.disabled}
        return [
            Delivery(event_id, cid, rule.namespace, DeliveryState.PENDING, "", now, next_attempt_at=now)
            for cid in rule.channels
            if cid in usable
        ]
