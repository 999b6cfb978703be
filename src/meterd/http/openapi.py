"""meterd's own OpenAPI document, generated at request time from its routes, the request body structs
(wire.py and friends), the documentation-only response shapes (openapi_types.py) and the query parameters
each handler reads (openapi_params.py). Every operation answers problem+json on error (`default`)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import meterd
from meterd.http import entitlement_wire as ew
from meterd.http import notification_wire as nw
from meterd.http import openapi_types as t
from meterd.http import wire
from meterd.http.openapi_params import QUERY
from meterd.http.openapi_types import Event

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
    "debug_metrics": ("Events per subject since UTC midnight (OpenMetrics)", None, 200, "application/openmetrics-text"),
    "openapi": ("This OpenAPI document", None, 200, _JSON),
}

# handler name (or `<handler>_v2`, for its /api/v2 path where that differs) -> the success response's body type
# (documentation-only structs; `str` for the text bodies)
_RESPONSES: dict[str, Any] = {
    "list_events": list[t.IngestedEvent],
    "list_events_v2": t.EventCursorPage,
    "list_meters": list[t.Meter],
    "create_meter": t.Meter,
    "get_meter": t.Meter,
    "update_meter": t.Meter,
    "query_meter": t.MeterQueryResult,
    "meter_subjects": list[str],
    "group_by_values": list[str],
    "list_customers": t.Page[t.Customer],
    "create_customer": t.Customer,
    "get_customer": t.Customer,
    "replace_customer": t.Customer,
    "list_subjects": list[t.Subject],
    "upsert_subjects": list[t.Subject],
    "get_subject": t.Subject,
    # v1 lists answer a bare array unless page or pageSize is given; v2 lists always answer a page
    "list_features": list[t.Feature] | t.Page[t.Feature],
    "create_feature": t.Feature,
    "get_feature": t.Feature,
    "create_entitlement": t.Entitlement,
    "create_entitlement_v2": t.EntitlementV2,
    "list_owner_entitlements": list[t.Entitlement],
    "list_owner_entitlements_v2": t.Page[t.EntitlementV2],
    "get_owner_entitlement": t.Entitlement,
    "get_owner_entitlement_v2": t.EntitlementV2,
    "override_entitlement": t.Entitlement,
    "override_entitlement_v2": t.EntitlementV2,
    "list_owner_grants": list[t.Grant],
    "list_owner_grants_v2": t.Page[t.Grant],
    "create_grant": t.Grant,
    "entitlement_value": t.EntitlementValue,
    "entitlement_value_v2": t.EntitlementValueV2,
    "entitlement_history": t.EntitlementHistory,
    "customer_access": t.CustomerAccess,
    "customer_feature_value": t.EntitlementValue,
    "list_entitlements": list[t.Entitlement] | t.Page[t.Entitlement],
    "list_entitlements_v2": t.Page[t.EntitlementV2],
    "get_entitlement": t.Entitlement,
    "get_entitlement_v2": t.EntitlementV2,
    "list_grants": list[t.Grant] | t.Page[t.Grant],
    "list_grants_v2": t.Page[t.Grant],
    "list_notification_channels": t.Page[t.Channel],
    "create_notification_channel": t.Channel,
    "get_notification_channel": t.Channel,
    "update_notification_channel": t.Channel,
    "list_notification_rules": t.Page[t.Rule],
    "create_notification_rule": t.Rule,
    "get_notification_rule": t.Rule,
    "update_notification_rule": t.Rule,
    "rule_test_event": t.NotificationEvent,
    "list_notification_events": t.Page[t.NotificationEvent],
    "get_notification_event": t.NotificationEvent,
    "healthz": t.Health,
    "readyz": t.Readiness,
    "metrics": str,
    "debug_metrics": str,
    "openapi": dict[str, Any],
}


# extra request media types: ingest takes CloudEvents' own types besides application/json
_BODY_MEDIA: dict[str, dict[str, Any]] = {
    "ingest": {"application/cloudevents+json": Event, "application/cloudevents-batch+json": list[Event]},
}

_PROBLEM_RESPONSE = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_CSV = {"text/csv": {"schema": {"type": "string", "description": "window_start,window_end[,subject...],value"}}}


def _key(table: dict[str, Any], handler: str, path: str) -> str:
    """The table entry for a handler on a path: `<handler>_v2` on an /api/v2 path if there is one."""
    v2 = f"{handler}_v2"
    return v2 if path.startswith("/api/v2/") and v2 in table else handler


def _responses(handler: str, status: int, media: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if media:
        success["content"] = {media: {"schema": schema or {}}}
    if handler == "query_meter":
        success["content"] |= _CSV
    out = {str(status): success, "default": _PROBLEM_RESPONSE}
    if handler == "readyz":  # not ready: the same body, with 503
        out["503"] = {"description": "a check failed", "content": success["content"]}
    return out


def _parameters(route: Route, handler: str, method: str) -> list[dict[str, Any]]:
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in route.param_convertors]
    if method not in ("POST", "PUT"):  # a POST query takes its parameters in the body
        params += QUERY.get(_key(QUERY, handler, route.path), [])
    return params


def document(app_routes: list[Any]) -> dict[str, Any]:
    body_types = [spec[1] for spec in _OPS.values() if spec[1] is not None]
    extra_bodies = [kind for media in _BODY_MEDIA.values() for kind in media.values()]
    kinds = [*body_types, *extra_bodies, *_RESPONSES.values(), t.Problem]
    schemas, components = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for route in app_routes:
        if not isinstance(route, Route) or route.endpoint.__name__ not in _OPS:
            continue
        handler = route.endpoint.__name__
        summary, body, status, media = _OPS[handler]
        response = _RESPONSES.get(_key(_RESPONSES, handler, route.path))
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op_id = handler
            if len(route.methods or ()) > 2:
                op_id = f"{op_id}_{method.lower()}"
            if op_id in used:  # one handler serving v1 and v2 paths
                op_id = f"{op_id}_v2" if route.path.startswith("/api/v2/") else f"{op_id}_{len(used)}"
            used.add(op_id)
            schema = schemas[kinds.index(response)] if response is not None else None
            op: dict[str, Any] = {
                "operationId": op_id,
                "summary": summary,
                "responses": _responses(handler, status, media, schema),
            }
            params = _parameters(route, handler, method)
            if params:
                op["parameters"] = params
            if body is not None and method in ("POST", "PUT"):
                bodies = {_JSON: body, **_BODY_MEDIA.get(handler, {})}
                content = {name: {"schema": schemas[kinds.index(kind)]} for name, kind in bodies.items()}
                op["requestBody"] = {"required": True, "content": content}
            paths.setdefault(route.path, {})[method.lower()] = op
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
