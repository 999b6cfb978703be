"""/api/v1/notification/channels, /rules and /events (OpenMeter's notification API)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core.errors import Problem, ValidationError
from meterd.http.deps import call, namespace, query_bool, query_int, query_time, services
from meterd.http.notification_wire import (
    ChannelBody,
    ResendBody,
    RuleBody,
    channel_json,
    event_json,
    json_response,
    rule_json,
)
from meterd.http.wire import decode, read_json, read_limited
from meterd.notifications.service import ListQuery, NotificationService
from meterd.notifications.store import EventQuery

_ORDER_BY = ("id", "type", "createdAt", "updatedAt")
_EVENT_ORDER_BY = ("id", "createdAt")


def _svc(request: Request) -> NotificationService:
    return services(request).notifications


def _limit(request: Request) -> int:
    return services(request).settings.server.max_body_bytes


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name) or default
    match = next((a for a in allowed if a.lower() == value.lower()), None)
    if match is None:
        raise ValidationError(Problem(name, f"must be one of {', '.join(allowed)}"))
    return match


def _descending(request: Request, default: str) -> bool:
    return _choice(request, "order", ("ASC", "DESC"), default) == "DESC"


def _list_query(request: Request) -> ListQuery:
    return ListQuery(
        page=query_int(request, "page", 1, 1, 1_000_000),
        page_size=query_int(request, "pageSize", 100, 1, 1000),
        include_deleted=query_bool(request, "includeDeleted"),
        include_disabled=query_bool(request, "includeDisabled"),
        order_by=_choice(request, "orderBy", _ORDER_BY, "id"),
        descending=_descending(request, "ASC"),
    )


def _paged(items: list[object], total: int, page: int, size: int) -> dict[str, object]:
    return {"items": items, "page": page, "pageSize": size, "totalCount": total}


# -- channels ------------------------------------------------------------------------------------------------


async def list_notification_channels(request: Request) -> Response:
    query = _list_query(request)
    found = await call(_svc(request).list_channels, namespace(request), query)
    items: list[object] = [channel_json(c) for c in found.items]
    return json_response(_paged(items, found.total, query.page, query.page_size))


async def create_notification_channel(request: Request) -> Response:
    body = await read_json(request, ChannelBody, _limit(request))
    channel = await call(_svc(request).create_channel, namespace(request), body.to_input())
    return json_response(channel_json(channel), 201)


async def get_notification_channel(request: Request) -> Response:
    channel = await call(_svc(request).get_channel, namespace(request), request.path_params["channelId"])
    return json_response(channel_json(channel))


async def update_notification_channel(request: Request) -> Response:
    body = await read_json(request, ChannelBody, _limit(request))
    channel = await call(
        _svc(request).replace_channel, namespace(request), request.path_params["channelId"], body.to_input()
    )
    return json_response(channel_json(channel))


async def delete_notification_channel(request: Request) -> Response:
    await call(_svc(request).delete_channel, namespace(request), request.path_params["channelId"])
    return Response(status_code=204)


# -- rules ---------------------------------------------------------------------------------------------------


async def list_notification_rules(request: Request) -> Response:
    query = _list_query(request)
    svc, ns = _svc(request), namespace(request)
    params = request.query_params
    found = await call(svc.list_rules, ns, query, params.getlist("feature"), params.getlist("channel"))
    refs = await call(svc.feature_refs, ns, found.items)
    items: list[object] = [rule_json(r, refs) for r in found.items]
    return json_response(_paged(items, found.total, query.page, query.page_size))


async def create_notification_rule(request: Request) -> Response:
    body = await read_json(request, RuleBody, _limit(request))
    svc, ns = _svc(request), namespace(request)
    rule = await call(svc.create_rule, ns, body.to_input())
    return json_response(rule_json(rule, await call(svc.feature_refs, ns, [rule])), 201)


async def get_notification_rule(request: Request) -> Response:
    svc, ns = _svc(request), namespace(request)
    rule = await call(svc.get_rule, ns, request.path_params["ruleId"])
    return json_response(rule_json(rule, await call(svc.feature_refs, ns, [rule])))


async def update_notification_rule(request: Request) -> Response:
    body = await read_json(request, RuleBody, _limit(request))
    svc, ns = _svc(request), namespace(request)
    rule = await call(svc.replace_rule, ns, request.path_params["ruleId"], body.to_input())
    return json_response(rule_json(rule, await call(svc.feature_refs, ns, [rule])))


async def delete_notification_rule(request: Request) -> Response:
    await call(_svc(request).delete_rule, namespace(request), request.path_params["ruleId"])
    return Response(status_code=204)


async def rule_test_event(request: Request) -> Response:
    svc, ns = _svc(request), namespace(request)
    view = await call(svc.test_rule, ns, request.path_params["ruleId"])
    return json_response(event_json(view, await call(svc.feature_refs, ns, [view.rule])), 201)


# -- events --------------------------------------------------------------------------------------------------


async def list_notification_events(request: Request) -> Response:
    params = request.query_params
    page = query_int(request, "page", 1, 1, 1_000_000)
    size = query_int(request, "pageSize", 100, 1, 1000)
    query = EventQuery(
        namespace=namespace(request),
        start=query_time(request, "from"),
        end=query_time(request, "to"),
        features=params.getlist("feature"),
        subjects=params.getlist("subject"),
        rules=params.getlist("rule"),
        channels=params.getlist("channel"),
        order_by=_choice(request, "orderBy", _EVENT_ORDER_BY, "createdAt"),
        descending=_descending(request, "DESC"),
        offset=(page - 1) * size,
        limit=size,
    )
    if query.start and query.end and query.start > query.end:
        raise ValidationError(Problem("from", "must not be after to"))
    svc = _svc(request)
    views, total = await call(svc.list_events, query)
    refs = await call(svc.feature_refs, query.namespace, [v.rule for v in views])
    return json_response(_paged([event_json(v, refs) for v in views], total, page, size))


async def get_notification_event(request: Request) -> Response:
    svc, ns = _svc(request), namespace(request)
    view = await call(svc.get_event, ns, request.path_params["eventId"])
    return json_response(event_json(view, await call(svc.feature_refs, ns, [view.rule])))


async def resend_notification_event(request: Request) -> Response:
    raw = await read_limited(request, _limit(request))
    body = decode(raw, ResendBody) if raw.strip() else ResendBody()
    await call(_svc(request).resend, namespace(request), request.path_params["eventId"], body.channels)
    return Response(status_code=202)


_BASE = "/api/v1/notification"
routes = [
    Route(f"{_BASE}/channels", list_notification_channels, methods=["GET"]),
    Route(f"{_BASE}/channels", create_notification_channel, methods=["POST"]),
    Route(f"{_BASE}/channels/{{channelId}}", get_notification_channel, methods=["GET"]),
    Route(f"{_BASE}/channels/{{channelId}}", update_notification_channel, methods=["PUT"]),
    Route(f"{_BASE}/channels/{{channelId}}", delete_notification_channel, methods=["DELETE"]),
    Route(f"{_BASE}/rules", list_notification_rules, methods=["GET"]),
    Route(f"{_BASE}/rules", create_notification_rule, methods=["POST"]),
    Route(f"{_BASE}/rules/{{ruleId}}", get_notification_rule, methods=["GET"]),
    Route(f"{_BASE}/rules/{{ruleId}}", update_notification_rule, methods=["PUT"]),
    Route(f"{_BASE}/rules/{{ruleId}}", delete_notification_rule, methods=["DELETE"]),
    Route(f"{_BASE}/rules/{{ruleId}}/test", rule_test_event, methods=["POST"]),
    Route(f"{_BASE}/events", list_notification_events, methods=["GET"]),
    Route(f"{_BASE}/events/{{eventId}}", get_notification_event, methods=["GET"]),
    Route(f"{_BASE}/events/{{eventId}}/resend", resend_notification_event, methods=["POST"]),
]
