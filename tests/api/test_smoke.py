"""The quickstart path: create a meter, ingest an event, see it in a query within a second."""

from __future__ import annotations

import time

import httpx

from tests.conftest import event, wait_for


def test_ingest_then_query(api: httpx.Client, unique) -> None:
    slug, etype = unique("tokens"), unique("llm")
    created = api.post(
        "/api/v1/meters",
        json={
            "slug": slug,
            "eventType": etype,
            "aggregation": "SUM",
            "valueProperty": "$.total_tokens",
            "groupBy": {"model": "$.model"},
        },
    )
    assert created.status_code == 201, created.text
    sent = time.monotonic()
    response = api.post(
        "/api/v1/events",
        json=event(type_=etype, data={"total_tokens": 30, "model": "m1"}),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert response.status_code == 204 and response.content == b""

    def total() -> float | None:
        rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
        return rows[0]["value"] if rows else None

    assert wait_for(total, timeout=5) == 30
    assert time.monotonic() - sent < 5
