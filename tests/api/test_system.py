"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.conftest import event, wait_for


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    checks = {"journal": True, "store": True, "sink": True, "balances": True, "webhooks": True}
    assert ready["status"] == "ok" and ready["checks"] == checks


def test_prometheus_metrics_report_ingest_and_lag(api: httpx.Client, unique) -> None:
    etype = unique("metrics")
    assert api.post("/api/v1/events", json=[event(type_=etype), event(type_=etype)]).status_code == 204
    text = api.get("/metrics").text
    for name in (
        "meterd_journal_depth_events",
        "meterd_sink_lag_seconds",
        "meterd_ingest_queue_events",
        "meterd_journal_events_written",
        "meterd_http_requests_total",
        "meterd_http_request_seconds",
    ):
        assert name in text
    assert 'route="/api/v1/events",status="204"' in text
    stored = next(line for line in text.splitlines() if line.startswith('meterd_ingest_events_total{outcome="stored"}'))
    assert float(stored.split()[-1]) >= 2
    dup = event(type_=etype)
    api.post("/api/v1/events", json=[dup, dup])
    text = api.get("/metrics").text
    assert 'meterd_ingest_events_total{outcome="duplicate"}' in text


def test_debug_metrics_counts_events_per_subject_since_midnight(api: httpx.Client, unique) -> None:
    subject = unique("debug_subject")
    api.post("/api/v1/events", json=[event(type_="debug", subject=subject) for _ in range(3)])

    def line() -> str | None:
        body = api.get("/api/v1/debug/metrics").text
        return next((x for x in body.splitlines() if f'subject="{subject}"' in x), None)

    assert wait_for(line, timeout=5) == f'openmeter_events_total{{subject="{subject}"}} 3'


def test_openapi_documents_every_route(api: httpx.Client) -> None:
    spec = api.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path, method in (
        ("/api/v1/events", "post"),
        ("/api/v1/events", "get"),
        ("/api/v2/events", "get"),
        ("/api/v1/meters", "post"),
        ("/api/v1/meters/{meter}/query", "post"),
        ("/api/v1/customers/{customer}", "put"),
        ("/api/v1/subjects", "post"),
    ):
        assert method in paths[path], (path, method)
    from meterd.http.routes import customers, entitlements, events, meters, notifications, system

    for module in (customers, entitlements, events, meters, notifications, system):
        for route in module.routes:
            for method in route.methods - {"HEAD"}:
                assert method.lower() in paths.get(route.path, {}), (route.path, method)
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    body = paths["/api/v1/meters"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MeterCreateBody"}
    assert "slug" in spec["components"]["schemas"]["MeterCreateBody"]["required"]
