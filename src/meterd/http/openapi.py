"""meterd's own OpenAPI document, generated from its routes and wire types at request time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import meterd
from meterd.http import entitlement_wire as ew
from meterd.http import notification_wire as nw
from meterd.http import wire
from meterd.ingest.events import NonEmpty


class Event(msgspec.Struct):
    """A CloudEvent as meterd accepts it (the decoder keeps `data` as raw JSON; this is its documented shape)."""

    id: NonEmpty
    source: NonEmpty
    specversion: str
    type: NonEmpty
    subject: NonEmpty
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: dict[str, Any] | None = None


_JSON = "application/json"

# handler name -> (summary, request body type, success status, success media type)
_OPS: dict[str, tuple[str, Any, int, str]] = {
    "ingest": ("Ingest CloudEvents (one, a batch, or JSON)", Event | list[Event], 204, ""),
    "list_events": ("List ingested events (newest first)", None, 200, "application/json"),
    "list_events_v2": ("List ingested events with cursor paging", None, 200, "application/json"),
    "list_meters": ("List meters", None, 200, "application/json"),
    "create_meter": ("Create a meter", wire.MeterCreateBody, 201, "application/json"),
    "get_meter": ("Get a meter by id or slug", None, 200, "application/json"),
    "update_meter": (
        "Replace a meter's name, description, metadata and group-bys",
        wire.MeterUpdateBody,
        200,
        "application/json",
    ),
    "delete_meter": ("Delete a meter (soft)", None, 204, ""),
    "query_meter": (
        "Query a meter (JSON, or CSV with Accept: text/csv)",
        wire.MeterQueryBody,
        200,
        "application/json",
    ),
    "meter_subjects": ("Distinct subjects of a meter's events", None, 200, "application/json"),
    "group_by_values": ("Distinct values of one group-by of a meter", None, 200, "application/json"),
    "list_customers": ("List customers", None, 200, "application/json"),
    "create_customer": ("Create a customer", wire.CustomerBody, 201, "application/json"),
    "get_customer": ("Get a customer by id or key", None, 200, "application/json"),
    "replace_customer": ("Replace a customer", wire.CustomerBody, 200, "application/json"),
    "delete_customer": ("Delete a customer (soft)", None, 204, ""),
    "list_subjects": ("List subjects", None, 200, "application/json"),
    "upsert_subjects": ("Create or update subjects", list[wire.SubjectUpsertBody], 200, "application/json"),
    "get_subject": ("Get a subject", None, 200, "application/json"),
    "delete_subject": ("Delete a subject", None, 204, ""),
    # features, entitlements, grants (the same handlers serve the v1 subject routes and the v2 customer routes)
    "list_features": ("List features (a bare array unless page or pageSize is given)", None, 200, _JSON),
    "create_feature": ("Create a feature", ew.FeatureBody, 201, _JSON),
    "get_feature": ("Get a feature by id or key", None, 200, _JSON),
    "archive_feature": ("Archive a feature", None, 204, ""),
    "create_entitlement": ("Create an entitlement", ew.EntitlementBody, 201, _JSON),
    "list_owner_entitlements": ("List the entitlements of a subject or customer", None, 200, _JSON),
    "get_owner_entitlement": ("Get an entitlement by id or feature key", None, 200, _JSON),
    "delete_owner_entitlement": ("Delete an entitlement", None, 204, ""),
    "override_entitlement": ("Replace an entitlement with a new one", ew.EntitlementBody, 201, _JSON),
    "list_owner_grants": ("List an entitlement's grants", None, 200, _JSON),
    "create_grant": ("Issue a grant", ew.GrantBody, 201, _JSON),
    "entitlement_value": ("An entitlement's value now or at `time`", None, 200, _JSON),
    "entitlement_history": ("Windowed usage and burn-down history", None, 200, _JSON),
    "reset_entitlement": ("Reset an entitlement's usage", ew.ResetBody, 204, ""),
    "customer_access": ("Every entitlement value of a customer", None, 200, _JSON),
    "customer_feature_value": ("A customer's entitlement value for a feature", None, 200, _JSON),
    "list_entitlements": ("List all entitlements", None, 200, _JSON),
    "get_entitlement": ("Get an entitlement by id", None, 200, _JSON),
    "list_grants": ("List all grants", None, 200, _JSON),
    "void_grant": ("Void a grant", None, 204, ""),
    # notifications
    "list_notification_channels": ("List notification channels", None, 200, _JSON),
    "create_notification_channel": ("Create a webhook channel", nw.ChannelBody, 201, _JSON),
    "get_notification_channel": ("Get a notification channel", None, 200, _JSON),
    "update_notification_channel": ("Replace a notification channel", nw.ChannelBody, 200, _JSON),
    "delete_notification_channel": ("Delete a notification channel", None, 204, ""),
    "list_notification_rules": ("List notification rules", None, 200, _JSON),
    "create_notification_rule": ("Create a notification rule", nw.RuleBody, 201, _JSON),
    "get_notification_rule": ("Get a notification rule", None, 200, _JSON),
    "update_notification_rule": ("Replace a notification rule", nw.RuleBody, 200, _JSON),
    "delete_notification_rule": ("Delete a notification rule", None, 204, ""),
    "rule_test_event": ("Send a test event for a rule", None, 201, _JSON),
    "list_notification_events": ("List notification events", None, 200, _JSON),
    "get_notification_event": ("Get a notification event with its delivery status", None, 200, _JSON),
    "resend_notification_event": ("Deliver a notification event again", nw.ResendBody, 202, ""),
    "healthz": ("Liveness", None, 200, "application/json"),
    "readyz": ("Readiness of journal, event store and sink", None, 200, "application/json"),
    "metrics": ("Prometheus metrics", None, 200, "text/plain"),
    "debug_metrics": ("Events per subject since UTC midnight (OpenMetrics)", None, 200, "text/plain"),
}

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "extensions": {"type": "object"},
    },
}


def document(app_routes: list[Any]) -> dict[str, Any]:
    body_types = [spec[1] for spec in _OPS.values() if spec[1] is not None]
    schemas, components = msgspec.json.schema_components(body_types, ref_template="#/components/schemas/{name}")
    components["Problem"] = _PROBLEM
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for route in app_routes:
        if not isinstance(route, Route) or route.endpoint.__name__ not in _OPS:
            continue
        summary, body, status, media = _OPS[route.endpoint.__name__]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op_id = route.endpoint.__name__
            if len(route.methods or ()) > 2:
                op_id = f"{op_id}_{method.lower()}"
            if op_id in used:  # one handler serving v1 and v2 paths
                op_id = f"{op_id}_v2" if route.path.startswith("/api/v2/") else f"{op_id}_{len(used)}"
            used.add(op_id)
            op: dict[str, Any] = {
                "operationId": op_id,
                "summary": summary,
                "responses": {
                    str(status): {
                        "description": "success",
                        **({"content": {media: {"schema": {}}}} if media else {}),
                    },
                    "default": {
                        "description": "problem",
                        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    },
                },
            }
            params = route.param_convertors.keys()
            if params:
                op["parameters"] = [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in params
                ]
            if body is not None and method in ("POST", "PUT"):
                schema = schemas[body_types.index(body)]
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            path = route.path
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meterd",
            "version": meterd.__version__,
            "description": "Usage metering, compatible with OpenMeter's v1 API.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


async def openapi(request: Request) -> Response:
    return wire.json_response(document(request.app.router.routes))


routes = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/swagger.json", openapi, methods=["GET"]),
]
