"""Features, entitlements, grants, values, history and resets: the v1 subject-scoped and global routes
OpenMeter still serves and the v2 customer-scoped ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core.errors import NotFoundError, Problem, ValidationError
from meterd.core.timeutil import ceil_minute, floor_minute, utcnow, zone
from meterd.customers.model import Customer
from meterd.entitlements.features import FeatureInput
from meterd.entitlements.model import Entitlement, EntitlementType, GrantRecord
from meterd.http.deps import call, namespace, query_bool, query_int, query_time, services
from meterd.http.entitlement_wire import (
    EntitlementBody,
    FeatureBody,
    GrantBody,
    ResetBody,
    entitlement_input,
    entitlement_json,
    feature_json,
    grant_input,
    grant_json,
    history_json,
    in_range,
    reset_input,
    value_json,
)
from meterd.http.wire import json_response, read_json

Handler = Callable[[Request], Awaitable[Response]]
MAX_WINDOWS = 10_000


def _time(request: Request, name: str) -> datetime | None:
    at = query_time(request, name)
    return in_range(at, name) if at is not None else None


def _limit(request: Request) -> int:
    return services(request).settings.server.max_body_bytes


def _paging(request: Request) -> tuple[int, int, bool]:
    """(offset, limit, paginated): `page`/`pageSize` answer a page object; otherwise offset/limit, a bare array."""
    params = request.query_params
    if "page" in params or "pageSize" in params:
        page = query_int(request, "page", 1, 1, 1_000_000)
        size = query_int(request, "pageSize", 100, 1, 1000)
        return (page - 1) * size, size, True
    return query_int(request, "offset", 0, 0, 10_000_000), query_int(request, "limit", 100, 1, 1000), False


def _page_response(request: Request, items: list[Any], total: int, always_paged: bool = False) -> Response:
    offset, size, paged = _paging(request)
    if paged or always_paged:
        page = offset // size + 1
        return json_response({"items": items, "page": page, "pageSize": size, "totalCount": total})
    return json_response(items)


# -- features -----------------------------------------------------------------------------------------


async def create_feature(request: Request) -> Response:
    body = await read_json(request, FeatureBody, _limit(request))
    data = FeatureInput(
        key=body.key,
        name=body.name,
        meter_slug=body.meterSlug,
        meter_group_by_filters=body.meterGroupByFilters,
        advanced_filters=body.advancedMeterGroupByFilters,
        unit_cost=body.unitCost,
        metadata=body.metadata,
    )
    feature = await call(services(request).features.create, namespace(request), data)
    return json_response(feature_json(feature), 201)


async def list_features(request: Request) -> Response:
    offset, limit, _ = _paging(request)
    items, total = await call(
        services(request).features.list,
        namespace(request),
        meter_slugs=request.query_params.getlist("meterSlug"),
        include_archived=query_bool(request, "includeArchived"),
        offset=offset,
        limit=limit,
    )
    return _page_response(request, [feature_json(f) for f in items], total)


async def get_feature(request: Request) -> Response:
    feature = await call(services(request).features.get, namespace(request), request.path_params["feature"])
    return json_response(feature_json(feature))


async def archive_feature(request: Request) -> Response:
    await call(services(request).features.archive, namespace(request), request.path_params["feature"])
    return Response(status_code=204)


# -- owners: a v1 subject or a v2 customer --------------------------------------------------------------


def _owner(request: Request, create: bool = False) -> Customer:
    svc = services(request).entitlements
    ns = namespace(request)
    if "subject" in request.path_params:
        return svc.customer_for_subject(ns, request.path_params["subject"], create=create)
    return svc.customer(ns, request.path_params["customer"])


def _v2(request: Request) -> bool:
    return request.url.path.startswith("/api/v2/")


def _entitlement_json(request: Request, e: Entitlement, customer: Customer | None = None) -> dict[str, Any]:
    svc = services(request).entitlements
    if customer is None and _v2(request):
        try:
            customer = svc.customers.get(e.namespace, e.customer_id)
        except Exception:
            customer = None
    period = svc.current_period(e) if e.deleted_at is None else None
    return entitlement_json(e, customer, period, _v2(request))


def _resolve(request: Request, key: str = "entitlement") -> tuple[Customer, Entitlement]:
    customer = _owner(request)
    entitlement = services(request).entitlements.get_for(namespace(request), customer, request.path_params[key])
    return customer, entitlement


async def create_entitlement(request: Request) -> Response:
    body = await read_json(request, EntitlementBody, _limit(request))
    data = entitlement_input(body, _v2(request))

    def create() -> dict[str, Any]:
        customer = _owner(request, create=True)
        entitlement = services(request).entitlements.add(namespace(request), customer, data)
        return _entitlement_json(request, entitlement, customer)

    return json_response(await call(create), 201)


async def override_entitlement(request: Request) -> Response:
    body = await read_json(request, EntitlementBody, _limit(request))
    data = entitlement_input(body, _v2(request))

    def override() -> dict[str, Any]:
        customer = _owner(request)
        svc = services(request).entitlements
        entitlement = svc.override(namespace(request), customer, request.path_params["entitlement"], data)
        return _entitlement_json(request, entitlement, customer)

    return json_response(await call(override), 201)


async def list_owner_entitlements(request: Request) -> Response:
    def load() -> tuple[list[dict[str, Any]], int]:
        customer = _owner(request)
        offset, limit, _ = _paging(request) if _v2(request) else (0, 100_000, False)
        items, total = services(request).entitlements.list(
            namespace(request),
            customer_ids=[customer.id],
            include_deleted=query_bool(request, "includeDeleted"),
            offset=offset,
            limit=limit,
        )
        return [_entitlement_json(request, e, customer) for e in items], total

    items, total = await call(load)
    if _v2(request):
        return _page_response(request, items, total, always_paged=True)
    return json_response(items)


async def get_owner_entitlement(request: Request) -> Response:
    def load() -> dict[str, Any]:
        customer, entitlement = _resolve(request)
        return _entitlement_json(request, entitlement, customer)

    return json_response(await call(load))


async def delete_owner_entitlement(request: Request) -> Response:
    def delete() -> None:
        customer = _owner(request)
        services(request).entitlements.delete(namespace(request), customer, request.path_params["entitlement"])

    await call(delete)
    return Response(status_code=204)


def _filter_customers(request: Request, **params: str) -> list[str] | None:
    """The customer ids named by the list filters (query name -> "id", "key", "id_or_key" or "subject"); None
    when no filter is given. A filter naming nobody matches nothing: it is not a 404."""
    svc = services(request).entitlements
    ns = namespace(request)
    given = [(kind, value) for name, kind in params.items() for value in request.query_params.getlist(name)]
    if not given:
        return None
    out = []
    for kind, value in given:
        try:
            customer = svc.customer_for_subject(ns, value) if kind == "subject" else svc.customer(ns, value)
        except NotFoundError:
            continue
        if {"id": customer.id, "key": customer.key}.get(kind, value) == value:  # customerIds names ids only
            out.append(customer.id)
    return out


async def list_entitlements(request: Request) -> Response:
    """GET /api/v1/entitlements and /api/v2/entitlements: every customer's."""

    def load() -> tuple[list[dict[str, Any]], int]:
        svc = services(request).entitlements
        ns = namespace(request)
        params = request.query_params
        customer_ids = _filter_customers(request, customerIds="id", customerKeys="key", subject="subject")
        if customer_ids == []:
            return [], 0
        offset, limit, _ = _paging(request)
        items, total = svc.list(
            ns,
            customer_ids=customer_ids or (),
            features=params.getlist("feature"),
            types=params.getlist("entitlementType"),
            offset=offset,
            limit=limit,
        )
        if query_bool(request, "excludeInactive"):
            now = utcnow()
            items = [e for e in items if e.active_at(now)]
        return [_entitlement_json(request, e) for e in items], total

    items, total = await call(load)
    return _page_response(request, items, total, always_paged=_v2(request))


async def get_entitlement(request: Request) -> Response:
    def load() -> dict[str, Any]:
        entitlement = services(request).entitlements.get(namespace(request), request.path_params["entitlement"])
        return _entitlement_json(request, entitlement)

    return json_response(await call(load))


# -- grants -------------------------------------------------------------------------------------------


def _grant_json(request: Request, g: GrantRecord) -> dict[str, Any]:
    return grant_json(g, services(request).entitlements.next_recurrence(g))


async def create_grant(request: Request) -> Response:
    body = await read_json(request, GrantBody, _limit(request))
    data = grant_input(body)

    def create() -> dict[str, Any]:
        _, entitlement = _resolve(request)
        record = services(request).entitlements.add_grant(entitlement, data, v2=_v2(request))
        return _grant_json(request, record)

    return json_response(await call(create), 201)


async def list_owner_grants(request: Request) -> Response:
    def load() -> tuple[list[dict[str, Any]], int]:
        _, entitlement = _resolve(request)
        offset, limit, _ = _paging(request) if _v2(request) else (0, 100_000, False)
        items, total = services(request).entitlements.list_grants(
            namespace(request),
            entitlement_ids=[entitlement.id],
            include_deleted=query_bool(request, "includeDeleted"),
            offset=offset,
            limit=limit,
        )
        return [_grant_json(request, g) for g in items], total

    items, total = await call(load)
    if _v2(request):
        return _page_response(request, items, total, always_paged=True)
    return json_response(items)


async def list_grants(request: Request) -> Response:
    def load() -> tuple[list[dict[str, Any]], int]:
        svc = services(request).entitlements
        ns = namespace(request)
        params = request.query_params
        entitlement_ids: list[str] | None = None
        features = params.getlist("feature")
        customer_ids = _filter_customers(request, subject="subject", customer="id_or_key")
        if customer_ids == []:
            return [], 0
        if features or customer_ids:
            found, _ = svc.list(
                ns, customer_ids=customer_ids or (), features=features, include_deleted=True, limit=100_000
            )
            entitlement_ids = [e.id for e in found]
        offset, limit, _ = _paging(request)
        items, total = svc.list_grants(
            ns,
            entitlement_ids=entitlement_ids,
            include_deleted=query_bool(request, "includeDeleted"),
            offset=offset,
            limit=limit,
        )
        return [_grant_json(request, g) for g in items], total

    items, total = await call(load)
    return _page_response(request, items, total, always_paged=_v2(request))


async def void_grant(request: Request) -> Response:
    at = query_time(request, "at")
    await call(services(request).entitlements.void_grant, namespace(request), request.path_params["grant"], at)
    return Response(status_code=204)


# -- values, history, resets --------------------------------------------------------------------------


def _value_key(request: Request, owner: str, name: str) -> tuple[str, ...]:
    params = request.path_params
    return (namespace(request), owner, params[owner], params[name])


async def entitlement_value(request: Request) -> Response:
    at = _time(request, "time")
    balances = services(request).balances
    owner = "subject" if "subject" in request.path_params else "customer"
    key = _value_key(request, owner, "entitlement")
    v2 = _v2(request)
    if at is None and (hit := balances.cached_value(key)) is not None:
        return json_response(value_json(hit, v2))

    def load() -> dict[str, Any]:
        _, entitlement = _resolve(request)
        value = balances.value(entitlement, at)
        balances.remember(key, entitlement)
        return value_json(value, v2)

    return json_response(await call(load))


async def customer_feature_value(request: Request) -> Response:
    at = _time(request, "time")
    balances = services(request).balances
    key = _value_key(request, "customer", "feature")
    if at is None and (hit := balances.cached_value(key)) is not None:
        return json_response(value_json(hit))

    def load() -> dict[str, Any]:
        svc = services(request)
        customer = svc.entitlements.customer(namespace(request), request.path_params["customer"])
        entitlement = svc.entitlements.get_for(namespace(request), customer, request.path_params["feature"])
        value = balances.value(entitlement, at)
        balances.remember(key, entitlement)
        return value_json(value)

    return json_response(await call(load))


async def customer_access(request: Request) -> Response:
    def load() -> dict[str, Any]:
        svc = services(request)
        ns = namespace(request)
        customer = svc.entitlements.customer(ns, request.path_params["customer"])
        items, _ = svc.entitlements.list(ns, customer_ids=[customer.id], limit=100_000)
        return {"entitlements": {e.feature_key: value_json(svc.balances.value(e)) for e in items}}

    return json_response(await call(load))


_WINDOWS = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}


def _windows(start: datetime, end: datetime, size: str, tz_name: str | None) -> list[tuple[datetime, datetime]]:
    """Tumbling windows covering [start, end) in the time zone (DAY windows follow local midnights)."""
    tz = zone(tz_name)
    step = _WINDOWS[size]
    local = start.astimezone(tz)
    if size == "DAY":
        first = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif size == "HOUR":
        first = local.replace(minute=0, second=0, microsecond=0)
    else:
        first = local.replace(second=0, microsecond=0)
    out = []
    cursor = first
    while cursor.astimezone(start.tzinfo) < end:
        if size == "DAY":
            nxt = (cursor.replace(tzinfo=None) + step).replace(tzinfo=tz)
        else:
            nxt = (cursor + step).astimezone(tz)
        out.append((max(cursor.astimezone(start.tzinfo), start), min(nxt.astimezone(start.tzinfo), end)))
        if len(out) > MAX_WINDOWS:
            raise ValidationError(
                Problem("windowSize", f"more than {MAX_WINDOWS} windows; use a larger window or range")
            )
        cursor = nxt
    return out


async def entitlement_history(request: Request) -> Response:
    size = request.query_params.get("windowSize")
    if size not in _WINDOWS:
        code = "invalid" if size else "required"
        raise ValidationError(Problem("windowSize", "required, one of MINUTE, HOUR, DAY", code))
    tz_name = request.query_params.get("windowTimeZone")
    try:
        zone(tz_name)
    except ValidationError:
        raise ValidationError(Problem("windowTimeZone", f"unknown IANA time zone {tz_name!r}")) from None
    frm, to = _time(request, "from"), _time(request, "to")

    def load() -> dict[str, Any]:
        svc = services(request)
        _, entitlement = _resolve(request)
        if entitlement.type is not EntitlementType.METERED:
            raise ValidationError("history is only kept for metered entitlements")
        end = to or utcnow()
        start = frm
        if start is None:
            period = svc.entitlements.current_period(entitlement, end)
            start = period[0] if period else end
        measure = entitlement.measure_usage_from
        assert measure is not None
        # the engine's resolution: whole minutes, so windows and burn-down segments share their edges
        start, end = floor_minute(max(start, measure)), ceil_minute(end)
        if start >= end:
            raise ValidationError(
                Problem("from", "must be before to (and after the entitlement started measuring usage)")
            )
        windows = _windows(start, end, size, tz_name)
        rows, segments = svc.balances.history(entitlement, start, end, windows)
        return history_json([r for r in rows if r.usage], segments)

    return json_response(await call(load))


async def reset_entitlement(request: Request) -> Response:
    body = await read_json(request, ResetBody, _limit(request)) if await request.body() else ResetBody()
    data = reset_input(body)

    def reset() -> None:
        _, entitlement = _resolve(request)
        services(request).entitlements.reset(entitlement, data)

    await call(reset)
    return Response(status_code=204)


def _scoped(prefix: str, key: str) -> list[Route]:
    base = f"{prefix}/{{{key}}}/entitlements"
    one = f"{base}/{{entitlement}}"
    return [
        Route(base, create_entitlement, methods=["POST"]),
        Route(base, list_owner_entitlements, methods=["GET"]),
        Route(one, get_owner_entitlement, methods=["GET"]),
        Route(one, delete_owner_entitlement, methods=["DELETE"]),
        Route(f"{one}/override", override_entitlement, methods=["PUT"]),
        Route(f"{one}/grants", list_owner_grants, methods=["GET"]),
        Route(f"{one}/grants", create_grant, methods=["POST"]),
        Route(f"{one}/value", entitlement_value, methods=["GET"]),
        Route(f"{one}/history", entitlement_history, methods=["GET"]),
        Route(f"{one}/reset", reset_entitlement, methods=["POST"]),
    ]


routes = [
    Route("/api/v1/features", list_features, methods=["GET"]),
    Route("/api/v1/features", create_feature, methods=["POST"]),
    Route("/api/v1/features/{feature}", get_feature, methods=["GET"]),
    Route("/api/v1/features/{feature}", archive_feature, methods=["DELETE"]),
    *_scoped("/api/v1/subjects", "subject"),
    *_scoped("/api/v2/customers", "customer"),
    Route("/api/v1/customers/{customer}/access", customer_access, methods=["GET"]),
    Route("/api/v1/customers/{customer}/entitlements/{feature}/value", customer_feature_value, methods=["GET"]),
    Route("/api/v1/entitlements", list_entitlements, methods=["GET"]),
    Route("/api/v1/entitlements/{entitlement}", get_entitlement, methods=["GET"]),
    Route("/api/v2/entitlements", list_entitlements, methods=["GET"]),
    Route("/api/v2/entitlements/{entitlement}", get_entitlement, methods=["GET"]),
    Route("/api/v1/grants", list_grants, methods=["GET"]),
    Route("/api/v2/grants", list_grants, methods=["GET"]),
    Route("/api/v1/grants/{grant}", void_grant, methods=["DELETE"]),
]
