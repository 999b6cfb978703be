"""A full disk: meterd answers 503 with Retry-After (never 500), damages nothing, and recovers by itself once
space is freed. The data directory is a small tmpfs; a ballast file fills it, deleting the ballast frees it.

Mounting needs root (CAP_SYS_ADMIN), which CI machines have; elsewhere the tests skip and say why."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, event, wait_for

DISK_MB = 48


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Write a ballast file that leaves about `leave_bytes` free."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return ballast


def _count(api: httpx.Client, slug: str) -> int:
    rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
    return int(sum(r["value"] for r in rows))


def _batch(n: int) -> list[dict[str, Any]]:
    return [event(uuid.uuid4().hex, type_="disk", data={"pad": "x" * 400}) for _ in range(n)]


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1


def test_a_full_disk_answers_503_corrupts_nothing_and_recovers(small_disk: Path) -> None:
    server = Server(small_disk, env={"METERD_STORAGE__MIN_FREE_DISK_MB": "0"}).start()
    acked: set[str] = set()
    refused: list[list[dict[str, Any]]] = []
    try:
        api = httpx.Client(base_url=server.url, timeout=30)
        assert api.post("/api/v1/meters", json={"slug": "disk", "eventType": "disk", "aggregation": "COUNT"}).is_success
        first = _batch(100)
        assert api.post("/api/v1/events", json=first).status_code == 204
        acked.update(e["id"] for e in first)

        ballast = _fill(small_disk, leave_bytes=1_000_000)
        for _ in range(200):  # keep sending until the disk is full and requests are refused
            batch = _batch(100)
            response = api.post("/api/v1/events", json=batch)
            if response.status_code == 204:
                acked.update(e["id"] for e in batch)
                continue
            _unavailable(response)
            assert "disk is full" in response.json()["detail"]
            refused.append(batch)
            if len(refused) >= 5:
                break
        assert len(refused) >= 5, "the disk never filled up"

        # while full: metadata writes are 503 too, reads still answer, the server stays up
        created = api.post("/api/v1/customers", json={"key": "c-full", "name": "full", "usageAttribution": {}})
        assert created.status_code in (201, 503), created.text
        if created.status_code == 503:
            _unavailable(created)
        assert api.get("/api/v1/meters/disk/query").status_code == 200
        assert api.get("/healthz").status_code == 200

        ballast.unlink()  # space is back: the same batches (same ids) go through, nothing needs a restart
        for batch in refused:
            wait_for(lambda b=batch: api.post("/api/v1/events", json=b).status_code == 204, timeout=30)  # type: ignore[misc]
            acked.update(e["id"] for e in batch)
        wait_for(lambda: _count(api, "disk") >= len(acked), timeout=60)
        assert _count(api, "disk") == len(acked)
        listed = api.get("/api/v1/events", params={"limit": 100}).json()
        assert listed and all(e["event"]["id"] in acked for e in listed)
    finally:
        server.stop()

    for name in ("journal.db", "metadata.db"):  # nothing damaged on disk
        with sqlite3.connect(small_disk / name) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), name
    server.start()  # and the event store opens and agrees after a restart
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            assert _count(api, "disk") == len(acked)
    finally:
        server.stop()


def test_below_the_free_space_reserve_ingest_is_refused_before_the_disk_fills(small_disk: Path) -> None:
    server = Server(small_disk, env={"METERD_STORAGE__MIN_FREE_DISK_MB": "16"}).start()
    try:
        api = httpx.Client(base_url=server.url, timeout=30)
        assert api.post("/api/v1/meters", json={"slug": "disk", "eventType": "disk", "aggregation": "COUNT"}).is_success
        ballast = _fill(small_disk, leave_bytes=8 * 2**20)
        wait_for(lambda: api.get("/readyz").status_code == 503, timeout=5)
        assert api.get("/readyz").json()["checks"]["journal"] is False
        response = api.post("/api/v1/events", json=_batch(10))
        _unavailable(response)
        assert "storage.min_free_disk_mb" in response.json()["detail"]
        assert "meterd_data_dir_free_bytes" in api.get("/metrics").text

        ballast.unlink()
        wait_for(lambda: api.get("/readyz").status_code == 200, timeout=5)
        batch = _batch(10)
        assert api.post("/api/v1/events", json=batch).status_code == 204
        wait_for(lambda: _count(api, "disk") == 10, timeout=30)
    finally:
        server.stop()
