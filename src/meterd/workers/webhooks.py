"""The webhook delivery worker: claims due deliveries from the notification outbox, POSTs each event to its
channel (signed per Standard Webhooks), and records the outcome; the outbox schedules retries.

`meterd serve` runs one in-process (embedded mode); a cluster runs the same class in `meterd worker`
processes, which share the outbox safely (claims are compare-and-set with a lease). Stopping waits a short
grace for sends in flight; a send cut off by a stop or a crash is retried once its lease expires."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime

import httpx

from meterd import __version__
from meterd.core.timeutil import utcnow
from meterd.notifications.model import Channel, Event
from meterd.notifications.outbox import DeliveryOutbox, SendResult
from meterd.notifications.signing import signature_headers
from meterd.notifications.store import Claim

log = logging.getLogger(__name__)

BODY_EXCERPT_BYTES = 1024


class WebhookSender:
    """One signed POST of an event to a webhook channel. Thread-safe (one pooled httpx client)."""

    def __init__(self, timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        self._timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False)

    def send(self, channel: Channel, event: Event) -> SendResult:
        started = utcnow()
        t0 = time.perf_counter()
        status: int | None = None
        try:
            headers = {
                **channel.custom_headers,
                "content-type": "application/json",
                "user-agent": f"meterd/{__version__}",
                **signature_headers(channel.signing_secret, event.id, started, event.payload),
            }
            with self._client.stream("POST", channel.url, content=event.payload, headers=headers) as response:
                status = response.status_code
                body = _excerpt(response)
        except httpx.TimeoutException:
            body = f"timed out (timeout {self._timeout_s:g}s)"
        except httpx.HTTPError as exc:
            body = f"{type(exc).__name__}: {exc}"[:BODY_EXCERPT_BYTES]
        except Exception as exc:  # a bad URL or secret that slipped through: record it, do not kill the worker
            body = f"could not send: {type(exc).__name__}: {exc}"[:BODY_EXCERPT_BYTES]
        duration_ms = int((time.perf_counter() - t0) * 1000)
        return SendResult(started, status, duration_ms, body, channel.url)

    def close(self) -> None:
        self._client.close()


def _excerpt(response: httpx.Response) -> str:
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= BODY_EXCERPT_BYTES:
            break
    return data[:BODY_EXCERPT_BYTES].decode("utf-8", "replace")


class WebhookWorker:
    def __init__(
        self,
        outbox: DeliveryOutbox,
        sender: WebhookSender,
        *,
        concurrency: int = 8,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._concurrency = concurrency
        self._poll_s = poll_interval_s
        self._queue: queue.Queue[Claim | None] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight = 0
        self._threads: list[threading.Thread] = []
        self.failures = 0  # outbox errors (database down) seen by the claim loop
        self.delivered = 0  # attempts answered 2xx
        self.failed_attempts = 0  # attempts that failed (retried later, or given up after the last)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, name="meterd-webhooks", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"meterd-webhook-send-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """New deliveries are due: look now instead of at the next poll."""
        self._wake.set()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop claiming, give sends in flight up to `grace_s` seconds, then return."""
        self._stop.set()
        self._wake.set()
        for _ in self._threads[1:]:
            self._queue.put(None)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if all(not t.is_alive() for t in self._threads):
            self._sender.close()
        else:
            log.warning("webhook sends still in flight at shutdown; they are retried after their lease")

    def healthy(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def in_flight(self) -> int:
        with self._lock:
            return self._inflight

    # -- one pass, synchronously (tests, tools) ----------------------------------------------------------

    def run_once(self, limit: int = 100) -> int:
        """Claim what is due now and send it in this thread; returns how many attempts were made."""
        claims = self._outbox.claim_due(limit)
        for claim in claims:
            self._deliver(claim)
        return len(claims)

    # -- threads ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self._claim()
            except Exception as exc:  # the database is unreachable: keep going, slower
                self.failures += 1
                log.error("webhook outbox unavailable: %s", exc)
                self._stop.wait(min(5.0, self._poll_s * 5))
                continue
            if claimed:
                continue  # there may be more due right away (or a free sender soon)
            self._wake.wait(self._pause())
            self._wake.clear()

    def _claim(self) -> int:
        with self._lock:
            free = self._concurrency - self._inflight
        if free <= 0:
            return 0
        claims = self._outbox.claim_due(free)
        with self._lock:
            self._inflight += len(claims)
        for claim in claims:
            self._queue.put(claim)
        return len(claims)

    def _pause(self) -> float:
        """Until the next delivery is due, at most one poll interval, at least 10 ms."""
        try:
            due = self._outbox.next_due()
        except Exception:
            due = None
        if due is None:
            return self._poll_s
        return min(self._poll_s, max(0.01, (due - utcnow()).total_seconds()))

    def _send_loop(self) -> None:
        while True:
            claim = self._queue.get()
            if claim is None:
                return
            try:
                self._deliver(claim)
            finally:
                with self._lock:
                    self._inflight -= 1
                self._wake.set()

    def _deliver(self, claim: Claim) -> datetime | None:
        result = self._sender.send(claim.channel, claim.event)
        with self._lock:
            if result.ok:
                self.delivered += 1
            else:
                self.failed_attempts += 1
        if not result.ok:
            log.info(
                "webhook to channel %s for event %s failed: %s",
                claim.channel.id,
                claim.event.id,
                result.describe(),
            )
        try:
            return self._outbox.record(claim, result)
        except Exception:  # the lease expires and the delivery is tried again
            log.exception("could not record the webhook attempt for event %s", claim.event.id)
            return None
