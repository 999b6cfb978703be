"""The query parameters of meterd's operations, for the OpenAPI document: what each handler reads from the
query string, with the types, bounds and enums it accepts (meterd.http.deps parses them).

Keys are handler names; `<handler>_v2` describes the handler on its /api/v2 path where that differs."""

from __future__ import annotations

from typing import Any

Parameter = dict[str, Any]


def _param(name: str, schema: dict[str, Any], description: str = "", **extra: Any) -> Parameter:
    out: Parameter = {"name": name, "in": "query", "schema": schema, **extra}
    if description:
        out["description"] = description
    return out


def _time(name: str, description: str = "") -> Parameter:
    return _param(name, {"type": "string", "format": "date-time"}, description or "RFC 3339, with an offset or Z")


def _int(name: str, low: int, high: int, default: int, description: str = "") -> Parameter:
    return _param(name, {"type": "integer", "minimum": low, "maximum": high, "default": default}, description)


def _bool(name: str, description: str = "") -> Parameter:
    return _param(name, {"type": "boolean", "default": False}, description)


def _str(name: str, description: str = "", **schema: Any) -> Parameter:
    return _param(name, {"type": "string", **schema}, description)


def _list(name: str, description: str = "", **items: Any) -> Parameter:
    """A repeated parameter: `name=a&name=b`."""
    schema = {"type": "array", "items": {"type": "string", **items}}
    return _param(name, schema, description, style="form", explode=True)


def _enum(name: str, values: tuple[str, ...], default: str, description: str = "") -> Parameter:
    return _param(name, {"type": "string", "enum": list(values), "default": default}, description)


_PAGE = [_int("page", 1, 1_000_000, 1, "page number, from 1"), _int("pageSize", 1, 1000, 100)]
_OFFSET = [
    _int("offset", 0, 10_000_000, 0, "used when neither page nor pageSize is given"),
    _int("limit", 1, 1000, 100, "used when neither page nor pageSize is given"),
]
_SUBJECTS = _list("subject", "only these subjects")
_WINDOW_ZONE = _str("windowTimeZone", "IANA time zone of the window edges (default UTC)")
_ORDER = _enum("order", ("ASC", "DESC"), "ASC", "case-insensitive")

QUERY: dict[str, list[Parameter]] = {
    "list_events": [
        _time("from", "event time from (inclusive); within the last 32 days, the default"),
        _time("to", "event time to (exclusive)"),
        _time("ingestedAtFrom"),
        _time("ingestedAtTo"),
        _str("id", "events whose id contains this"),
        _SUBJECTS,
        _list("customerId", "events of these customers' subjects"),
        _int("limit", 1, 100, 100),
    ],
    "list_events_v2": [
        _str("cursor", "nextCursor of the previous page"),
        _int("limit", 1, 100, 100),
        _str(
            "filter",
            'a JSON object: {"id"|"source"|"subject"|"type": FilterString, "time": {"$gt"|"$gte"|"$lt"|"$lte": '
            "date-time}}",
        ),
    ],
    "list_meters": [_bool("includeDeleted")],
    "query_meter": [
        _time("from", "inclusive"),
        _time("to", "exclusive"),
        _param(
            "windowSize",
            {"type": "string", "enum": ["MINUTE", "HOUR", "DAY", "MONTH"]},
            "one row per window; without it, one row per group for the whole range",
        ),
        _WINDOW_ZONE,
        _list("subject", "only these subjects (adds subject to groupBy)"),
        _list("filterCustomerId", "only these customers' subjects (adds customer_id to groupBy)"),
        _list("groupBy", "subject, customer_id or a group-by key of the meter"),
        _param(
            "filterGroupBy",
            {"type": "object", "additionalProperties": {"type": "string"}},
            "filterGroupBy[key]=value: only rows whose group-by `key` has one of the values given",
            style="deepObject",
            explode=True,
        ),
        _str("advancedMeterGroupByFilters", "a JSON object: group-by key -> FilterString"),
    ],
    "meter_subjects": [_time("from"), _time("to")],
    "group_by_values": [_time("from", "default: 24 hours ago"), _time("to")],
    "list_customers": [
        *_PAGE,
        _bool("includeDeleted"),
        _str("key", "exact key"),
        _str("name", "name contains (case-insensitive)"),
        _str("subject", "a subject key contains (case-insensitive)"),
    ],
    "list_features": [_list("meterSlug"), _bool("includeArchived"), *_PAGE, *_OFFSET],
    "list_owner_entitlements": [_bool("includeDeleted")],
    "list_owner_entitlements_v2": [_bool("includeDeleted"), *_PAGE, *_OFFSET],
    "list_owner_grants": [_bool("includeDeleted")],
    "list_owner_grants_v2": [_bool("includeDeleted"), *_PAGE, *_OFFSET],
    "entitlement_value": [_time("time", "the value at this time (default now)")],
    "customer_feature_value": [_time("time", "the value at this time (default now)")],
    "entitlement_history": [
        _param("windowSize", {"type": "string", "enum": ["MINUTE", "HOUR", "DAY"]}, required=True),
        _WINDOW_ZONE,
        _time("from", "default: the start of the current usage period"),
        _time("to", "default: now"),
    ],
    "list_entitlements": [
        _list("customerIds"),
        _list("customerKeys"),
        _SUBJECTS,
        _list("feature", "feature ids or keys"),
        _list("entitlementType", enum=["metered", "static", "boolean"]),
        _bool("excludeInactive"),
        *_PAGE,
        *_OFFSET,
    ],
    "list_grants": [
        _list("feature", "feature ids or keys"),
        _SUBJECTS,
        _list("customer", "customer ids or keys"),
        _bool("includeDeleted"),
        *_PAGE,
        *_OFFSET,
    ],
    "void_grant": [_time("at", "void from this time (default now)")],
    "list_notification_channels": [
        *_PAGE,
        _bool("includeDeleted"),
        _bool("includeDisabled"),
        _enum("orderBy", ("id", "type", "createdAt", "updatedAt"), "id", "case-insensitive"),
        _ORDER,
    ],
    "list_notification_rules": [
        *_PAGE,
        _bool("includeDeleted"),
        _bool("includeDisabled"),
        _list("feature", "rules naming these feature ids or keys"),
        _list("channel", "rules sending to these channels"),
        _enum("orderBy", ("id", "type", "createdAt", "updatedAt"), "id", "case-insensitive"),
        _ORDER,
    ],
    "list_notification_events": [
        *_PAGE,
        _time("from"),
        _time("to"),
        _list("feature"),
        _list("subject"),
        _list("rule"),
        _list("channel"),
        _enum("orderBy", ("id", "createdAt"), "createdAt", "case-insensitive"),
        _enum("order", ("ASC", "DESC"), "DESC", "case-insensitive"),
    ],
}
