"""Small helpers shared by the API tests: problem+json assertions, ingest and read shortcuts."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

import httpx
import msgspec

from tests.conftest import event, wait_for

PROBLEM = "application/problem+json"
CE_SINGLE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


def assert_problem(
    response: httpx.Response, status: int, *, field: str | None = None, detail: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 7807 problem with this status; `detail` is a substring of its detail, `field` one of
    the fields its validationErrors name."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == HTTPStatus(status).phrase
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["instance"].startswith("urn:request:")
    if detail is not None:
        assert detail in body["detail"], body["detail"]
    if field is not None:
        fields = [e["field"] for e in body.get("extensions", {}).get("validationErrors", [])]
        assert field in fields, body
        assert field in body["detail"], body["detail"]
    return body


def post_events(
    api: httpx.Client, body: Any, content_type: str = CE_BATCH, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return api.post("/api/v1/events", content=content, headers={"Content-Type": content_type, **(headers or {})})


def ingest_ok(api: httpx.Client, body: Any, content_type: str = CE_BATCH) -> None:
    response = post_events(api, body, content_type)
    assert response.status_code == 204, response.text
    assert response.content == b""


def list_events(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    items: list[dict[str, Any]] = response.json()
    assert isinstance(items, list)
    return items


def barrier(api: httpx.Client) -> None:
    """Ingest a marker event and wait until it is listed: the journal is drained in order, so every event
    accepted before it is stored by then."""
    subject = f"barrier_{uuid.uuid4().hex[:8]}"
    ingest_ok(api, [event(type_="barrier", subject=subject)])
    wait_for(lambda: list_events(api, subject=subject), timeout=10)


def create_meter(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/meters", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    meter: dict[str, Any] = response.json()
    return meter


def query_rows(api: httpx.Client, slug: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/meters/{slug}/query", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def total(api: httpx.Client, slug: str, **params: Any) -> float:
    """The sum of a meter's values over all rows (0 when there are none)."""
    return sum(row["value"] for row in query_rows(api, slug, **params))
