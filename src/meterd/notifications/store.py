"""The storage protocol of notifications (implemented in meterd.backends.sql.notifications)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meterd.notifications.model import Attempt, Channel, Delivery, DeliveryState, Event, Rule


@dataclass(frozen=True)
class EventQuery:
    namespace: str
    start: datetime | None = None  # created at or after (inclusive)
    end: datetime | None = None  # created at or before (inclusive)
    features: Sequence[str] = ()  # feature ids or keys
    subjects: Sequence[str] = ()
    rules: Sequence[str] = ()
    channels: Sequence[str] = ()
    order_by: str = "createdAt"  # or "id"
    descending: bool = True
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True)
class DeliveryUpdate:
    """The outcome of a claimed delivery attempt."""

    state: DeliveryState
    reason: str
    attempt: Attempt
    next_attempt_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Claim:
    delivery: Delivery
    token: str
    event: Event
    channel: Channel


class ChannelStore(Protocol):
    def insert_channel(self, channel: Channel) -> None: ...

    def update_channel(self, channel: Channel) -> None: ...

    def get_channel(self, namespace: str, channel_id: str) -> Channel | None:
        """Deleted channels too (they carry deleted_at)."""
        ...

    def channels(self, namespace: str, ids: Sequence[str] | None = None) -> list[Channel]:
        """Every channel of the namespace (deleted ones too), or those with the given ids."""
        ...

    def delete_channel(self, namespace: str, channel_id: str, at: datetime) -> list[str]:
        """Soft-delete the channel unless a live rule names it; returns the ids of such rules (nothing
        deleted) or an empty list (deleted)."""
        ...


class RuleStore(Protocol):
    def insert_rule(self, rule: Rule) -> None: ...

    def update_rule(self, rule: Rule) -> None: ...

    def get_rule(self, namespace: str, rule_id: str) -> Rule | None: ...

    def rules(self, namespace: str, ids: Sequence[str] | None = None) -> list[Rule]:
        """Every rule of the namespace (deleted ones too), or those with the given ids."""
        ...

    def live_rules(self, namespace: str, types: Sequence[str]) -> list[Rule]:
        """Enabled, not deleted rules of these types."""
        ...


class EventStore(Protocol):
    def has_event(self, namespace: str, dedupe_hash: str) -> bool: ...

    def insert_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """Store an event and its deliveries in one transaction; False (nothing stored) when an event with
        the same dedupe hash exists in the namespace."""
        ...

    def get_event(self, namespace: str, event_id: str) -> Event | None: ...

    def list_events(self, query: EventQuery) -> tuple[list[Event], int]: ...

    def deliveries(self, event_ids: Sequence[str]) -> dict[str, list[Delivery]]: ...

    def request_resend(self, namespace: str, event_id: str, channel_ids: Sequence[str], at: datetime) -> int:
        """Make these deliveries RESENDING and due now, with a fresh attempt budget."""
        ...


class Outbox(Protocol):
    def due(self, now: datetime, limit: int) -> list[Delivery]:
        """Deliveries whose next attempt (or expired lease) is at or before now, soonest first."""
        ...

    def claim(
        self, delivery: Delivery, token: str, now: datetime, lease_until: datetime, interrupted: Attempt | None
    ) -> bool:
        """Take a due delivery for one attempt if nobody changed it since it was read (compare-and-set);
        `interrupted` is added to its history (the earlier claim that never reported back)."""
        ...

    def give_up(self, delivery: Delivery, reason: str, attempt: Attempt | None, at: datetime) -> bool:
        """Mark a delivery FAILED without an attempt of ours (compare-and-set, like claim)."""
        ...

    def finish(self, event_id: str, channel_id: str, token: str, update: DeliveryUpdate) -> bool:
        """Record an attempt's outcome. If the claim was lost meanwhile (lease expired, resend asked), the
        attempt is still added to the history but the state is left alone; returns False then."""
        ...

    def next_due(self) -> datetime | None: ...


class NotificationStore(ChannelStore, RuleStore, EventStore, Outbox, Protocol):
    pass
