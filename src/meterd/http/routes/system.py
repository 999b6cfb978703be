"""Health, readiness, metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from meterd.http.deps import call, namespace, services
from meterd.http.wire import json_response


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks = {
        "journal": svc.ingest.healthy(),
        "store": await call(svc.store.healthy),
        "balances": svc.balance_worker.healthy(),
    }
    if svc.sink is not None:
        checks["sink"] = svc.sink.healthy()
    if svc.webhooks is not None:
        checks["webhooks"] = svc.webhooks.healthy()
    ok = all(checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks, "journalDepth": svc.ingest.depth()}
    return json_response(body, 200 if ok else 503)


async def debug_metrics(request: Request) -> Response:
    """OpenMeter's debug endpoint: events per subject since UTC midnight, in OpenMetrics text."""
    svc = services(request)
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    counts = await call(svc.store.count_events, namespace(request), midnight)
    lines = ["# TYPE openmeter_events counter", "# HELP openmeter_events Number of ingested events"]
    for subject, count in counts.items():
        escaped = subject.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'openmeter_events_total{{subject="{escaped}"}} {count}')
    lines.append("# EOF")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="application/openmetrics-text; version=1.0.0")


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/v1/debug/metrics", debug_metrics, methods=["GET"]),
]
