"""/api/v1/meters: CRUD, queries (JSON and CSV), subjects and group-by values."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core.errors import Problem, ValidationError
from meterd.core.timeutil import format_rfc3339, parse_rfc3339, utcnow
from meterd.http.deps import call, namespace, query_bool, query_time, services
from meterd.http.wire import (
    MeterCreateBody,
    MeterQueryBody,
    MeterUpdateBody,
    json_response,
    meter_json,
    read_json,
    usage_json,
)
from meterd.meters.service import MeterCreateInput, MeterUpdateInput
from meterd.usage.service import QueryRequest, QueryResult


def _limit(request: Request) -> int:
    return services(request).settings.server.max_body_bytes


async def list_meters(request: Request) -> Response:
    include_deleted = query_bool(request, "includeDeleted")
    meters = await call(services(request).meters.list, namespace(request), include_deleted)
    return json_response([meter_json(m) for m in meters])


async def create_meter(request: Request) -> Response:
    body = await read_json(request, MeterCreateBody, _limit(request))
    data = MeterCreateInput(
        slug=body.slug,
        aggregation=body.aggregation,
        event_type=body.eventType,
        name=body.name,
        description=body.description,
        value_property=body.valueProperty,
        group_by=body.groupBy,
        event_from=body.eventFrom,
        metadata=body.metadata,
    )
    meter = await call(services(request).meters.create, namespace(request), data)
    return json_response(meter_json(meter), 201)


async def get_meter(request: Request) -> Response:
    meter = await call(services(request).meters.get, namespace(request), request.path_params["meter"])
    return json_response(meter_json(meter))


async def update_meter(request: Request) -> Response:
    body = await read_json(request, MeterUpdateBody, _limit(request))
    data = MeterUpdateInput(name=body.name, description=body.description, group_by=body.groupBy, metadata=body.metadata)
    meter = await call(services(request).meters.update, namespace(request), request.path_params["meter"], data)
    return json_response(meter_json(meter))


async def delete_meter(request: Request) -> Response:
    await call(services(request).meters.delete, namespace(request), request.path_params["meter"])
    return Response(status_code=204)


def _get_request(request: Request) -> QueryRequest:
    params = request.query_params
    filter_group_by: dict[str, list[str]] = {}
    for name, value in params.multi_items():
        if name.startswith("filterGroupBy[") and name.endswith("]"):
            filter_group_by.setdefault(name[len("filterGroupBy[") : -1], []).append(value)
    advanced = None
    if params.get("advancedMeterGroupByFilters"):
        try:
            advanced = msgspec.json.decode(params["advancedMeterGroupByFilters"])
        except msgspec.DecodeError:
            raise ValidationError(Problem("advancedMeterGroupByFilters", "must be a JSON object")) from None
        if not isinstance(advanced, dict):
            raise ValidationError(Problem("advancedMeterGroupByFilters", "must be a JSON object"))
    return QueryRequest(
        start=query_time(request, "from"),
        end=query_time(request, "to"),
        window_size=params.get("windowSize") or None,
        window_time_zone=params.get("windowTimeZone") or None,
        subjects=params.getlist("subject"),
        customer_ids=params.getlist("filterCustomerId"),
        group_by=params.getlist("groupBy"),
        filter_group_by=filter_group_by or None,
        advanced_filters=advanced,
    )


def _post_request(body: MeterQueryBody) -> QueryRequest:
    return QueryRequest(
        start=parse_rfc3339(body.from_, "from") if body.from_ is not None else None,
        end=parse_rfc3339(body.to, "to") if body.to is not None else None,
        window_size=body.windowSize,
        window_time_zone=body.windowTimeZone,
        subjects=body.subject,
        customer_ids=body.filterCustomerId,
        group_by=body.groupBy,
        filter_group_by=body.filterGroupBy,
        advanced_filters=body.advancedMeterGroupByFilters,
    )


async def query_meter(request: Request) -> Response:
    svc = services(request)
    ns = namespace(request)
    if request.method == "POST":
        req = _post_request(await read_json(request, MeterQueryBody, _limit(request)))
    else:
        req = _get_request(request)
    meter = await call(svc.meters.get, ns, request.path_params["meter"])
    result = await call(svc.usage.query, meter, req)
    if "text/csv" in request.headers.get("accept", ""):
        names = await call(svc.customers.subject_display_names, ns) if any(r.subject for r in result.rows) else {}
        return _csv(meter.slug, result, names)
    return json_response(usage_json(result))


def _csv(slug: str, result: QueryResult, display_names: dict[str, str]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with_subject = any(r.subject is not None for r in result.rows) or bool(result.rows and result.rows[0].subject)
    header = ["window_start", "window_end"]
    if with_subject:
        header.append("subject")
        if display_names:
            header.append("subject_display_name")
    header += result.group_by
    header.append("value")
    writer.writerow(header)
    for row in result.rows:
        line = [format_rfc3339(row.window_start), format_rfc3339(row.window_end)]
        if with_subject:
            line.append(row.subject or "")
            if display_names:
                line.append(display_names.get(row.subject or "", ""))
        line += [row.group_by.get(key, "") for key in result.group_by]
        line.append(f"{row.value:f}")
        writer.writerow(line)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f"attachment; filename={slug}.csv"},
    )


async def meter_subjects(request: Request) -> Response:
    svc = services(request)
    meter = await call(svc.meters.get, namespace(request), request.path_params["meter"])
    start, end = query_time(request, "from"), query_time(request, "to")
    subjects = await call(svc.store.distinct_subjects, meter.namespace, meter.event_type, start, end)
    return json_response(subjects)


async def group_by_values(request: Request) -> Response:
    svc = services(request)
    meter = await call(svc.meters.get, namespace(request), request.path_params["meter"])
    key = request.path_params["key"]
    if key not in meter.group_by:
        raise ValidationError(Problem("groupByKey", f"{key} is not a group-by of meter {meter.slug}"))
    start = query_time(request, "from") or utcnow() - timedelta(hours=24)
    end = query_time(request, "to")
    values = await call(svc.store.distinct_values, meter.namespace, meter.event_type, meter.group_by[key], start, end)
    return json_response(values)


routes = [
    Route("/api/v1/meters", list_meters, methods=["GET"]),
    Route("/api/v1/meters", create_meter, methods=["POST"]),
    Route("/api/v1/meters/{meter}", get_meter, methods=["GET"]),
    Route("/api/v1/meters/{meter}", update_meter, methods=["PUT"]),
    Route("/api/v1/meters/{meter}", delete_meter, methods=["DELETE"]),
    Route("/api/v1/meters/{meter}/query", query_meter, methods=["GET", "POST"]),
    Route("/api/v1/meters/{meter}/subjects", meter_subjects, methods=["GET"]),
    Route("/api/v1/meters/{meter}/group-by/{key}/values", group_by_values, methods=["GET"]),
]
