"""The crash suites' clients (bench.reliability_cluster): threads ingesting batches of events into meterd nodes,
sending every batch until it gets a 204 (same ids each time), resending some after their 204, and keeping
what was acknowledged. A copy of an acknowledged event must never count twice."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["BATCH", "Acks", "Clients"]

BATCH = 50


@dataclass
class Acks:
    """What the clients know: every event acknowledged with a 204, by id (a copy acknowledges the same id)."""

    tokens: dict[str, int] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)  # per request: status code or exception name
    unexpected: list[str] = field(default_factory=list)  # the first bodies of statuses other than 204/429/503
    resent: int = 0  # events sent again after their 204
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            for event in batch:
                self.tokens[event["id"]] = event["data"]["tokens"]

    def note(self, outcome: str, body: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if body and len(self.unexpected) < 5:
                self.unexpected.append(f"{outcome}: {body[:300]}")

    def resend(self, events: int) -> None:
        with self.lock:
            self.resent += events

    @property
    def count(self) -> int:
        return len(self.tokens)


def _batch(etype: str, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "crash",
            "type": etype,
            "subject": f"customer-{rng.randrange(20)}",
            "data": {"tokens": rng.randrange(1, 1000), "model": rng.choice(["gpt-4o", "claude", "llama"])},
        }
        for _ in range(BATCH if rng.random() < 0.8 else 1)
    ]


class Clients:
    """Threads sending batches until stopped. A batch in doubt is sent until it gets a 204, even after stop():
    an event that may have reached Kafka must end acknowledged, or it would count without being owed."""

    def __init__(
        self,
        urls: Callable[[], list[str]],
        etype: str,
        threads: int,
        seed: int,
        before_send: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.acks = Acks()
        self._urls, self._etype, self._seed, self._before_send = urls, etype, seed, before_send
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> int:
        """Stop sending new batches; returns how many threads are still stuck on one after `timeout`."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def _run(self, index: int) -> None:
        rng = random.Random(self._seed * 1000 + index)
        history: list[list[dict[str, Any]]] = []
        turn = index
        with httpx.Client(timeout=45) as http:
            while not self._stop.is_set():
                if history and rng.random() < 0.03:  # an old batch replayed
                    batch = rng.choice(history)
                    self.acks.resend(len(batch))
                    turn = self._deliver(http, batch, turn)
                    continue
                batch = _batch(self._etype, rng)
                if self._before_send is not None:
                    self._before_send(batch)
                turn = self._deliver(http, batch, turn)
                if rng.random() < 0.1:  # the 204 went missing: sent again at once, to the other node
                    self.acks.resend(len(batch))
                    turn = self._deliver(http, batch, turn)
                history = [*history[-99:], batch]

    def _deliver(self, http: httpx.Client, batch: list[dict[str, Any]], turn: int) -> int:
        """Send `batch` until a 204, to the next node on each try; returns the next node's turn."""
        while True:
            urls = self._urls() or ["http://127.0.0.1:1"]
            url, turn = urls[turn % len(urls)], turn + 1
            try:
                response = http.post(f"{url}/api/v1/events", json=batch)
            except httpx.HTTPError as exc:
                self.acks.note(type(exc).__name__)
                time.sleep(0.1)
                continue
            code = response.status_code
            self.acks.note(str(code), "" if code in (204, 429, 503) else response.text)
            if code == 204:
                self.acks.ack(batch)
                return turn
            time.sleep(min(float(response.headers.get("retry-after", "1")), 2.0) / 4)
