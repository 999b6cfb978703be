"""/api/v1/events (ingest and list) and /api/v2/events (cursor-paged list)."""

from __future__ import annotations

import base64
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core.errors import PayloadTooLargeError, Problem, ProblemCollector, ValidationError
from meterd.core.timeutil import format_rfc3339, parse_rfc3339, to_us, utcnow
from meterd.http.admission import IngestGate
from meterd.http.deps import call, namespace, query_int, query_time, services
from meterd.http.wire import json_response, read_limited
from meterd.ingest import events as cloudevents
from meterd.ingest.validation import describe
from meterd.usage.service import check_filter
from meterd.usage.store import EventFilter, StoredEvent

MAX_LOOKBACK = timedelta(days=32)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped if sent so, refused with 413 past `limit` bytes (either side of gzip)."""
    body = await read_limited(request, limit, limit=limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ValidationError(Problem("body", "malformed gzip data", "malformed")) from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise PayloadTooLargeError(f"request body larger than {limit} bytes once decompressed", limit=limit)
    elif encoding not in ("", "identity"):
        raise ValidationError(Problem("Content-Encoding", f"unsupported content encoding {encoding!r} (gzip or none)"))
    return body


async def ingest(request: Request) -> Response:
    svc = services(request)
    gate: IngestGate = request.app.state.ingest_gate
    with gate.admit():
        content_type = cloudevents.media_type(request.headers.get("content-type"))
        body = await read_body(request, svc.settings.server.max_body_bytes)
        events = cloudevents.decode(body, content_type)
        if len(events) > svc.settings.ingest.max_batch_events:
            raise PayloadTooLargeError(
                f"batch of {len(events)} events exceeds the limit of {svc.settings.ingest.max_batch_events}"
            )
        result = await svc.ingest.append(namespace(request), events)
    counter = request.app.state.metrics.ingested
    counter.labels("stored").inc(result.accepted)
    counter.labels("duplicate").inc(result.duplicates)
    return Response(status_code=204)


async def _ingested_json(request: Request, rows: list[StoredEvent]) -> list[dict[str, Any]]:
    svc = services(request)
    ns = namespace(request)
    subjects = sorted({e.subject for e in rows})
    customers = await call(svc.customers.attribution, ns, subjects)
    meters = await call(svc.meters.list, ns)
    out = []
    for e in rows:
        item: dict[str, Any] = {
            "event": {
                "id": e.id,
                "source": e.source,
                "specversion": "1.0",
                "type": e.type,
                "subject": e.subject,
                "time": format_rfc3339(e.time),
                "datacontenttype": "application/json",
                "data": msgspec.json.decode(e.data) if e.data else None,
            },
            "ingestedAt": format_rfc3339(e.ingested_at),
            "storedAt": format_rfc3339(e.stored_at),
        }
        customer = customers.get(e.subject)
        if customer:
            item["customerId"] = customer
        error = describe(e, [m for m in meters if m.event_type == e.type], customer is not None)
        if error:
            item["validationError"] = error
        out.append(item)
    return out


async def list_events(request: Request) -> Response:
    svc = services(request)
    now = utcnow()
    start = query_time(request, "from") or now - MAX_LOOKBACK
    if start < now - MAX_LOOKBACK - timedelta(seconds=1):
        raise ValidationError(Problem("from", "must be within the last 32 days"))
    flt = EventFilter(
        namespace=namespace(request),
        start=start,
        end=query_time(request, "to"),
        ingested_from=query_time(request, "ingestedAtFrom"),
        ingested_to=query_time(request, "ingestedAtTo"),
        id_contains=request.query_params.get("id") or None,
        subjects=request.query_params.getlist("subject") or None,
        limit=query_int(request, "limit", 100, 1, 100),
    )
    customer_ids = request.query_params.getlist("customerId")
    if customer_ids:
        owned = await call(svc.customers.subject_map, flt.namespace, customer_ids)
        wanted = set(owned) & set(flt.subjects) if flt.subjects else set(owned)
        flt = EventFilter(**{**flt.__dict__, "subjects": sorted(wanted) or ["\x00none"]})
    rows = await call(svc.store.list_events, flt)
    return json_response(await _ingested_json(request, rows))


def _cursor(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        time_us, seq = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().split(":")
        return int(time_us), int(seq)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(Problem("cursor", "not a cursor this server issued")) from None


async def list_events_v2(request: Request) -> Response:
    svc = services(request)
    limit = query_int(request, "limit", 100, 1, 100)
    raw_filter = request.query_params.get("filter")
    spec: dict[str, Any] = {}
    if raw_filter:
        try:
            spec = msgspec.json.decode(raw_filter)
        except msgspec.DecodeError:
            raise ValidationError(Problem("filter", "must be a JSON object")) from None
        if not isinstance(spec, dict):
            raise ValidationError(Problem("filter", "must be a JSON object"))
    problems = ProblemCollector()
    strings: dict[str, dict[str, Any]] = {}
    start = end = None
    for key, value in spec.items():
        if key in ("id", "source", "subject", "type"):
            check_filter(value, f"filter.{key}", problems)
            strings[key] = value
        elif key == "time" and isinstance(value, dict):
            start, end = _time_filter(value, problems)
        else:
            problems.add(f"filter.{key}", "unknown filter (use id, source, subject, type or time)")
    problems.raise_if_any()
    flt = EventFilter(
        namespace=namespace(request),
        start=start,
        end=end,
        string_filters=strings or None,
        after=_cursor(request.query_params.get("cursor")),
        limit=limit,
    )
    rows = await call(svc.store.list_events, flt)
    next_cursor = None
    if len(rows) == limit:
        last = rows[-1]
        next_cursor = base64.urlsafe_b64encode(f"{to_us(last.time)}:{last.seq}".encode()).decode().rstrip("=")
    return json_response({"items": await _ingested_json(request, rows), "nextCursor": next_cursor})


def _time_filter(value: dict[str, Any], problems: ProblemCollector) -> tuple[Any, Any]:
    start = end = None
    for op, arg in value.items():
        try:
            moment = parse_rfc3339(str(arg), f"filter.time.{op}")
        except ValidationError as exc:
            problems.add(f"filter.time.{op}", exc.problems[0].message)
            continue
        last = moment == _LAST_INSTANT  # one microsecond later is past what datetime holds (and nothing is stored)
        if op == "$gte":
            start = moment
        elif op == "$gt":
            start = moment if last else moment + timedelta(microseconds=1)
        elif op == "$lt":
            end = moment
        elif op == "$lte":
            end = None if last else moment + timedelta(microseconds=1)
        else:
            problems.add(f"filter.time.{op}", "use $gt, $gte, $lt or $lte")
    return start, end


routes = [
    Route("/api/v1/events", ingest, methods=["POST"]),
    Route("/api/v1/events", list_events, methods=["GET"]),
    Route("/api/v2/events", list_events_v2, methods=["GET"]),
]
