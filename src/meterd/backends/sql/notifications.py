"""Notification channels, rules, events and the delivery outbox in the metadata database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from meterd.backends.sql.tables import (
    notification_channels,
    notification_deliveries,
    notification_events,
    notification_rules,
)
from meterd.core.timeutil import format_rfc3339, parse_rfc3339
from meterd.notifications.model import Attempt, Channel, Delivery, DeliveryState, Event, Rule, Threshold
from meterd.notifications.store import DeliveryUpdate, EventQuery

channels_t, rules_t, events_t, deliveries_t = (
    notification_channels,
    notification_rules,
    notification_events,
    notification_deliveries,
)


# -- row mapping -------------------------------------------------------------------------------------------


def _channel_row(c: Channel) -> dict[str, Any]:
    return {
        "id": c.id,
        "namespace": c.namespace,
        "type": c.type,
        "name": c.name,
        "url": c.url,
        "custom_headers": c.custom_headers,
        "signing_secret": c.signing_secret,
        "disabled": c.disabled,
        "metadata": c.metadata,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "deleted_at": c.deleted_at,
    }


def _channel(r: Any) -> Channel:
    return Channel(
        id=r.id,
        namespace=r.namespace,
        type=r.type,
        name=r.name,
        url=r.url,
        custom_headers=dict(r.custom_headers or {}),
        signing_secret=r.signing_secret,
        disabled=bool(r.disabled),
        metadata=dict(r.metadata or {}),
        created_at=r.created_at,
        updated_at=r.updated_at,
        deleted_at=r.deleted_at,
    )


def _rule_row(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "namespace": r.namespace,
        "type": r.type,
        "name": r.name,
        "disabled": r.disabled,
        "channels": list(r.channels),
        "features": list(r.features),
        "thresholds": [{"value": str(t.value), "type": t.type} for t in r.thresholds],
        "metadata": r.metadata,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "deleted_at": r.deleted_at,
    }


def _rule(r: Any) -> Rule:
    return Rule(
        id=r.id,
        namespace=r.namespace,
        type=r.type,
        name=r.name,
        disabled=bool(r.disabled),
        channels=tuple(r.channels or ()),
        features=tuple(r.features or ()),
        thresholds=tuple(Threshold(Decimal(t["value"]), t["type"]) for t in r.thresholds or ()),
        metadata=dict(r.metadata or {}),
        created_at=r.created_at,
        updated_at=r.updated_at,
        deleted_at=r.deleted_at,
    )


def _event_row(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "namespace": e.namespace,
        "type": e.type,
        "rule_id": e.rule_id,
        "payload": e.payload.decode(),
        "annotations": e.annotations,
        "dedupe_hash": e.dedupe_hash,
        "entitlement_id": e.entitlement_id,
        "feature_id": e.feature_id,
        "feature_key": e.feature_key,
        "subject_key": e.subject_key,
        "customer_id": e.customer_id,
        "created_at": e.created_at,
    }


def _event(r: Any) -> Event:
    return Event(
        id=r.id,
        namespace=r.namespace,
        type=r.type,
        rule_id=r.rule_id,
        payload=r.payload.encode(),
        created_at=r.created_at,
        annotations=dict(r.annotations or {}),
        dedupe_hash=r.dedupe_hash,
        entitlement_id=r.entitlement_id,
        feature_id=r.feature_id,
        feature_key=r.feature_key,
        subject_key=r.subject_key,
        customer_id=r.customer_id,
    )


def _attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "timestamp": format_rfc3339(a.timestamp),
        "state": a.state.value,
        "statusCode": a.status_code,
        "durationMs": a.duration_ms,
        "body": a.body,
        "url": a.url,
    }


def _attempt(d: dict[str, Any]) -> Attempt:
    return Attempt(
        timestamp=parse_rfc3339(d["timestamp"], "timestamp"),
        state=DeliveryState(d["state"]),
        status_code=d.get("statusCode"),
        duration_ms=int(d.get("durationMs") or 0),
        body=d.get("body") or "",
        url=d.get("url"),
    )


def _delivery_row(d: Delivery) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "channel_id": d.channel_id,
        "namespace": d.namespace,
        "state": d.state.value,
        "reason": d.reason,
        "attempts": [_attempt_json(a) for a in d.attempts],
        "attempt_count": d.attempt_count,
        "next_attempt_at": d.next_attempt_at,
        "claim_token": d.claim_token,
        "claimed_at": d.claimed_at,
        "version": d.version,
        "updated_at": d.updated_at,
    }


def _delivery(r: Any) -> Delivery:
    return Delivery(
        event_id=r.event_id,
        channel_id=r.channel_id,
        namespace=r.namespace,
        state=DeliveryState(r.state),
        reason=r.reason,
        updated_at=r.updated_at,
        attempts=tuple(_attempt(a) for a in r.attempts or ()),
        attempt_count=r.attempt_count,
        next_attempt_at=r.next_attempt_at,
        claim_token=r.claim_token,
        claimed_at=r.claimed_at,
        version=r.version,
    )


def _same_version(d: Delivery) -> Any:
    return and_(
        deliveries_t.c.event_id == d.event_id,
        deliveries_t.c.channel_id == d.channel_id,
        deliveries_t.c.version == d.version,
    )


class SQLNotificationStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- channels ------------------------------------------------------------------------------------------

    def insert_channel(self, channel: Channel) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(channels_t).values(**_channel_row(channel)))

    def update_channel(self, channel: Channel) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(channels_t).where(channels_t.c.id == channel.id).values(**_channel_row(channel)))

    def get_channel(self, namespace: str, channel_id: str) -> Channel | None:
        found = self.channels(namespace, [channel_id])
        return found[0] if found else None

    def channels(self, namespace: str, ids: Sequence[str] | None = None) -> list[Channel]:
        query = select(channels_t).where(channels_t.c.namespace == namespace)
        if ids is not None:
            query = query.where(channels_t.c.id.in_(list(ids)))
        with self._engine.connect() as conn:
            return [_channel(r) for r in conn.execute(query)]

    def delete_channel(self, namespace: str, channel_id: str, at: datetime) -> list[str]:
        with self._engine.begin() as conn:
            users = [r.id for r in self._live_rules(conn, namespace) if channel_id in r.channels]
            if not users:
                conn.execute(
                    update(channels_t)
                    .where(channels_t.c.namespace == namespace, channels_t.c.id == channel_id)
                    .values(deleted_at=at, updated_at=at)
                )
            return users

    # -- rules ---------------------------------------------------------------------------------------------

    def insert_rule(self, rule: Rule) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(rules_t).values(**_rule_row(rule)))

    def update_rule(self, rule: Rule) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(rules_t).where(rules_t.c.id == rule.id).values(**_rule_row(rule)))

    def get_rule(self, namespace: str, rule_id: str) -> Rule | None:
        found = self.rules(namespace, [rule_id])
        return found[0] if found else None

    def rules(self, namespace: str, ids: Sequence[str] | None = None) -> list[Rule]:
        query = select(rules_t).where(rules_t.c.namespace == namespace)
        if ids is not None:
            query = query.where(rules_t.c.id.in_(list(ids)))
        with self._engine.connect() as conn:
            return [_rule(r) for r in conn.execute(query)]

    @staticmethod
    def _live_rules(conn: Connection, namespace: str, types: Sequence[str] | None = None) -> list[Rule]:
        query = select(rules_t).where(rules_t.c.namespace == namespace, rules_t.c.deleted_at.is_(None))
        if types is not None:
            query = query.where(rules_t.c.type.in_(list(types)))
        return [_rule(r) for r in conn.execute(query)]

    def live_rules(self, namespace: str, types: Sequence[str]) -> list[Rule]:
        with self._engine.connect() as conn:
            return [r for r in self._live_rules(conn, namespace, types) if not r.disabled]

    # -- events --------------------------------------------------------------------------------------------

    def has_event(self, namespace: str, dedupe_hash: str) -> bool:
        query = select(events_t.c.id).where(events_t.c.namespace == namespace, events_t.c.dedupe_hash == dedupe_hash)
        with self._engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def insert_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(events_t).values(**_event_row(event)))
                if deliveries:
                    conn.execute(insert(deliveries_t), [_delivery_row(d) for d in deliveries])
        except IntegrityError:
            if event.dedupe_hash is not None and self.has_event(event.namespace, event.dedupe_hash):
                return False
            raise
        return True

    def get_event(self, namespace: str, event_id: str) -> Event | None:
        query = select(events_t).where(events_t.c.namespace == namespace, events_t.c.id == event_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _event(row) if row else None

    def list_events(self, q: EventQuery) -> tuple[list[Event], int]:
        query = select(events_t).where(events_t.c.namespace == q.namespace)
        if q.start is not None:
            query = query.where(events_t.c.created_at >= q.start)
        if q.end is not None:
            query = query.where(events_t.c.created_at <= q.end)
        if q.features:
            query = query.where(or_(events_t.c.feature_id.in_(q.features), events_t.c.feature_key.in_(q.features)))
        if q.subjects:
            query = query.where(events_t.c.subject_key.in_(q.subjects))
        if q.rules:
            query = query.where(events_t.c.rule_id.in_(q.rules))
        if q.channels:
            sent = select(deliveries_t.c.event_id).where(deliveries_t.c.channel_id.in_(q.channels))
            query = query.where(events_t.c.id.in_(sent))
        keys = [events_t.c.id] if q.order_by == "id" else [events_t.c.created_at, events_t.c.id]
        order = [k.desc() if q.descending else k.asc() for k in keys]
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(query.order_by(*order).offset(q.offset).limit(q.limit)).fetchall()
        return [_event(r) for r in rows], int(total)

    def deliveries(self, event_ids: Sequence[str]) -> dict[str, list[Delivery]]:
        if not event_ids:
            return {}
        query = (
            select(deliveries_t)
            .where(deliveries_t.c.event_id.in_(list(event_ids)))
            .order_by(deliveries_t.c.event_id, deliveries_t.c.channel_id)
        )
        out: dict[str, list[Delivery]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                out.setdefault(row.event_id, []).append(_delivery(row))
        return out

    def request_resend(self, namespace: str, event_id: str, channel_ids: Sequence[str], at: datetime) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(
                update(deliveries_t)
                .where(
                    deliveries_t.c.namespace == namespace,
                    deliveries_t.c.event_id == event_id,
                    deliveries_t.c.channel_id.in_(list(channel_ids)),
                )
                .values(
                    state=DeliveryState.RESENDING.value,
                    reason="resend requested",
                    attempt_count=0,
                    next_attempt_at=at,
                    claim_token=None,
                    claimed_at=None,
                    version=deliveries_t.c.version + 1,
                    updated_at=at,
                )
            )
            return int(result.rowcount)

    # -- outbox --------------------------------------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[Delivery]:
        query = (
            select(deliveries_t)
            .where(deliveries_t.c.next_attempt_at <= now)
            .order_by(deliveries_t.c.next_attempt_at)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_delivery(r) for r in conn.execute(query)]

    def claim(
        self, delivery: Delivery, token: str, now: datetime, lease_until: datetime, interrupted: Attempt | None
    ) -> bool:
        attempts = [*delivery.attempts, interrupted] if interrupted else list(delivery.attempts)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(deliveries_t)
                .where(_same_version(delivery))
                .values(
                    state=DeliveryState.SENDING.value,
                    attempts=[_attempt_json(a) for a in attempts],
                    attempt_count=delivery.attempt_count + 1,
                    next_attempt_at=lease_until,
                    claim_token=token,
                    claimed_at=now,
                    version=delivery.version + 1,
                    updated_at=now,
                )
            )
            return int(result.rowcount) == 1

    def give_up(self, delivery: Delivery, reason: str, attempt: Attempt | None, at: datetime) -> bool:
        attempts = [*delivery.attempts, attempt] if attempt else list(delivery.attempts)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(deliveries_t)
                .where(_same_version(delivery))
                .values(
                    state=DeliveryState.FAILED.value,
                    reason=reason,
                    attempts=[_attempt_json(a) for a in attempts],
                    next_attempt_at=None,
                    claim_token=None,
                    claimed_at=None,
                    version=delivery.version + 1,
                    updated_at=at,
                )
            )
            return int(result.rowcount) == 1

    def finish(self, event_id: str, channel_id: str, token: str, change: DeliveryUpdate) -> bool:
        where = and_(deliveries_t.c.event_id == event_id, deliveries_t.c.channel_id == channel_id)
        for _ in range(5):  # compare-and-set: retried if a resend changed the row between read and write
            with self._engine.begin() as conn:
                row = conn.execute(select(deliveries_t).where(where)).first()
                if row is None:
                    return False
                attempts = [*(row.attempts or []), _attempt_json(change.attempt)]
                values: dict[str, Any] = {"attempts": attempts, "version": row.version + 1}
                still_ours = row.claim_token == token
                if still_ours:
                    values |= {
                        "state": change.state.value,
                        "reason": change.reason,
                        "next_attempt_at": change.next_attempt_at,
                        "claim_token": None,
                        "claimed_at": None,
                        "updated_at": change.updated_at,
                    }
                written = conn.execute(
                    update(deliveries_t).where(where, deliveries_t.c.version == row.version).values(**values)
                )
                if written.rowcount == 1:
                    return still_ours
        return False

    def next_due(self) -> datetime | None:
        with self._engine.connect() as conn:
            value: datetime | None = conn.execute(select(func.min(deliveries_t.c.next_attempt_at))).scalar_one()
        return value
