"""A 204 means durable and counted once: SIGKILL the server while clients ingest with retries that reuse
event ids, restart it, and check that every event is counted exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, event, wait_for

pytestmark = pytest.mark.slow

BATCH = 50


def _count(client: httpx.Client, slug: str) -> float:
    rows = client.get(f"/api/v1/meters/{slug}/query").json()["data"]
    return rows[0]["value"] if rows else 0.0


class Clients:
    """Concurrent ingesting clients. A batch is retried (same ids) until it gets a 204."""

    def __init__(self, etype: str, batches: int, threads: int) -> None:
        self.etype = etype
        self.queue = [
            [event(uuid.uuid4().hex, type_=etype, subject=f"c{i % 7}", data={"n": 1}) for _ in range(BATCH)]
            for i in range(batches)
        ]
        self.acked = 0
        self.acked_before_kill: list[int] = []
        self.lock = threading.Lock()
        self.url = ""
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]
        self.stop = False

    def _next(self) -> list[dict[str, object]] | None:
        with self.lock:
            return self.queue.pop() if self.queue else None

    def _work(self) -> None:
        while not self.stop:
            batch = self._next()
            if batch is None:
                return
            while not self.stop:
                try:
                    response = httpx.post(f"{self.url}/api/v1/events", json=batch, timeout=10)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down: retry the same batch
                    continue
                if response.status_code == 204:
                    with self.lock:
                        self.acked += len(batch)
                    break
                time.sleep(0.05)

    def start(self, url: str) -> None:
        self.url = url
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
        self.stop = True


def test_sigkill_during_ingest_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    etype, slug = f"dur_{uuid.uuid4().hex[:8]}", "durable_count"
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url) as api:
            assert (
                api.post("/api/v1/meters", json={"slug": slug, "eventType": etype, "aggregation": "COUNT"}).status_code
                == 201
            )
        clients = Clients(etype, batches=120, threads=4)
        clients.start(server.url)
        for _ in range(3):  # kill at three moments while clients keep sending
            start = clients.acked
            wait_for(lambda s=start: clients.acked >= s + 500, timeout=30)
            acked_before = clients.acked
            server.kill()
            clients.acked_before_kill.append(acked_before)
            server.start()
            with httpx.Client(base_url=server.url) as api:
                # everything acknowledged before the kill is there after the restart
                wait_for(lambda n=acked_before: _count(api, slug) >= n, timeout=30)
        clients.join(timeout=120)
        assert not clients.queue
        total = 120 * BATCH
        with httpx.Client(base_url=server.url) as api:
            wait_for(lambda: _count(api, slug) >= total, timeout=30)
            time.sleep(0.5)  # let anything extra (a double count) arrive too
            assert _count(api, slug) == total
    finally:
        server.stop()


def test_duplicates_across_a_restart_count_once(tmp_path: Path) -> None:
    etype = f"dup_{uuid.uuid4().hex[:8]}"
    events = [event(f"e{i}", type_=etype, data={"n": 1}) for i in range(20)]
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url) as api:
            api.post("/api/v1/meters", json={"slug": "dups", "eventType": etype, "aggregation": "COUNT"})
            assert api.post("/api/v1/events", json=events + events[:5]).status_code == 204
        server.stop()
        server.start()
        with httpx.Client(base_url=server.url) as api:
            assert api.post("/api/v1/events", json=events).status_code == 204
            wait_for(lambda: _count(api, "dups") == 20, timeout=10)
            time.sleep(0.5)
            assert _count(api, "dups") == 20
    finally:
        server.stop()
