"""The delivery side of notifications: which deliveries are due, claiming one for an attempt (with a
lease, so a process that dies mid-attempt does not strand it), and recording how the attempt went.

Retry schedule: after the n-th failed attempt the next one waits base_delay * 2^(n-1), capped at
max_delay, with "equal jitter" (a random point between half and all of that wait) so many failing
deliveries do not retry in lockstep. After max_attempts failed attempts the delivery is FAILED."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from meterd.core.timeutil import utcnow
from meterd.notifications.model import Attempt, Channel, Delivery, DeliveryState
from meterd.notifications.store import Claim, DeliveryUpdate, NotificationStore


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    base_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=6)
    lease: timedelta = timedelta(minutes=5)  # an attempt not reported back by then is retried

    def delay(self, failed_attempts: int, rand: Callable[[], float] = random.random) -> timedelta:
        """The wait after the `failed_attempts`-th failure."""
        exponent = min(max(failed_attempts - 1, 0), 60)
        ceiling = min(self.max_delay.total_seconds(), self.base_delay.total_seconds() * 2.0**exponent)
        return timedelta(seconds=ceiling * (0.5 + rand() / 2))


@dataclass(frozen=True)
class SendResult:
    """What one HTTP attempt produced."""

    started_at: datetime
    status_code: int | None  # None: no response (connection refused, timeout, ...)
    duration_ms: int
    body: str  # response body excerpt, or the error
    url: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.status_code is None:
            return self.body
        return f"HTTP {self.status_code}"


_INTERRUPTED = "no outcome recorded: the sending process stopped or lost its lease during the attempt"


def _unusable(channel: Channel | None) -> str | None:
    if channel is None or channel.deleted_at is not None:
        return "the channel was deleted"
    if channel.disabled:
        return "the channel is disabled"
    return None


class DeliveryOutbox:
    def __init__(
        self,
        store: NotificationStore,
        policy: RetryPolicy,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self.policy = policy
        self._clock = clock
        self._rand = rand

    def claim_due(self, limit: int) -> list[Claim]:
        """Claim up to `limit` due deliveries, each with what is needed to send it."""
        now = self._clock()
        claims = []
        for delivery in self._store.due(now, limit):
            claim = self._claim(delivery, now)
            if claim is not None:
                claims.append(claim)
        return claims

    def _claim(self, delivery: Delivery, now: datetime) -> Claim | None:
        interrupted = None
        if delivery.claim_token is not None:  # an earlier claim never reported back
            interrupted = Attempt(delivery.claimed_at or now, DeliveryState.FAILED, None, 0, _INTERRUPTED)
            if delivery.attempt_count >= self.policy.max_attempts:
                reason = f"gave up after {delivery.attempt_count} attempts: {_INTERRUPTED}"
                self._store.give_up(delivery, reason, interrupted, now)
                return None
        channel = self._store.get_channel(delivery.namespace, delivery.channel_id)
        problem = _unusable(channel)
        if problem is not None:
            self._store.give_up(delivery, problem, interrupted, now)
            return None
        assert channel is not None
        event = self._store.get_event(delivery.namespace, delivery.event_id)
        if event is None:  # pragma: no cover - deliveries reference their event (foreign key)
            self._store.give_up(delivery, "the event is gone", interrupted, now)
            return None
        token = secrets.token_hex(16)
        if not self._store.claim(delivery, token, now, now + self.policy.lease, interrupted):
            return None  # another worker took it first
        return Claim(delivery, token, event, channel)

    def record(self, claim: Claim, result: SendResult) -> datetime | None:
        """Store the attempt's outcome; returns when the next attempt is due, if one was scheduled."""
        now = self._clock()
        count = claim.delivery.attempt_count + 1
        state = DeliveryState.SUCCESS if result.ok else DeliveryState.FAILED
        attempt = Attempt(result.started_at, state, result.status_code, result.duration_ms, result.body, result.url)
        next_at = None
        if result.ok:
            update = DeliveryUpdate(DeliveryState.SUCCESS, "", attempt, None, now)
        elif count >= self.policy.max_attempts:
            reason = f"gave up after {count} attempts; last: {result.describe()}"
            update = DeliveryUpdate(DeliveryState.FAILED, reason, attempt, None, now)
        else:
            next_at = now + self.policy.delay(count, self._rand)
            reason = f"attempt {count} failed ({result.describe()}); will retry"
            update = DeliveryUpdate(DeliveryState.SENDING, reason, attempt, next_at, now)
        self._store.finish(claim.delivery.event_id, claim.delivery.channel_id, claim.token, update)
        return next_at

    def next_due(self) -> datetime | None:
        return self._store.next_due()
