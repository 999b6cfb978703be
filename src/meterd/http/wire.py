"""Wire shapes: request bodies (msgspec structs, camelCase as OpenMeter names them) and the JSON
encoders for responses. Decoding failures become problems naming the field."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from meterd.core.errors import PayloadTooLargeError, Problem, ValidationError
from meterd.core.timeutil import format_rfc3339
from meterd.customers.model import Customer, Subject
from meterd.meters.model import Meter
from meterd.usage.service import QueryResult

T = TypeVar("T")
Str256 = Annotated[str, msgspec.Meta(max_length=256)]


class MeterCreateBody(msgspec.Struct, forbid_unknown_fields=False):
    slug: str
    aggregation: str
    eventType: str
    name: str | None = None
    description: str | None = None
    valueProperty: str | None = None
    groupBy: dict[str, str] = {}
    eventFrom: str | None = None
    metadata: dict[str, str] = {}


class MeterUpdateBody(msgspec.Struct):
    name: str | None = None
    description: str | None = None
    groupBy: dict[str, str] | None = None
    metadata: dict[str, str] | None = None


# An RFC 3339 date-time left as text for meterd.core.timeutil.parse_rfc3339: msgspec's datetime rounds digits past
# the microsecond (GET cuts them) and fails with an OverflowError on 0001-01-01T00:00:00+01:00 later.
DateTimeText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class MeterQueryBody(msgspec.Struct):
    # `from` is a Python keyword: the field is renamed on the wire.
    from_: DateTimeText | None = msgspec.field(default=None, name="from")
    to: DateTimeText | None = None
    windowSize: str | None = None
    windowTimeZone: str | None = None
    subject: list[str] = []
    filterCustomerId: list[str] = []
    groupBy: list[str] = []
    filterGroupBy: dict[str, list[str]] | None = None
    advancedMeterGroupByFilters: dict[str, dict[str, Any]] | None = None
    clientId: str | None = None


class UsageAttribution(msgspec.Struct):
    subjectKeys: list[str] = []


class CustomerBody(msgspec.Struct):
    name: str
    key: str | None = None
    usageAttribution: UsageAttribution | None = None
    description: str | None = None
    primaryEmail: str | None = None
    currency: str | None = None
    billingAddress: dict[str, Any] | None = None
    metadata: dict[str, str] = {}


class SubjectUpsertBody(msgspec.Struct):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    displayName: str | None = None
    metadata: dict[str, Any] | None = None
    stripeCustomerId: str | None = None
    currentPeriodStart: datetime | None = None
    currentPeriodEnd: datetime | None = None


_PATH = re.compile(r" - at `\$([^`]*)`$")


def decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(_problem(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(Problem("body", f"malformed JSON: {exc}", "malformed")) from None


def _problem(message: str) -> Problem:
    match = _PATH.search(message)
    path = match.group(1).lstrip(".") if match else ""
    text = message[: match.start()] if match else message
    missing = re.match(r"^Object missing required field `([^`]+)`", text)
    if missing:
        field = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return Problem(field, "is required", "required")
    return Problem(path or "body", text)


async def read_limited(request: Request, max_bytes: int, **extensions: Any) -> bytes:
    """The raw request body, refused with 413 (and `extensions` in the problem) past `max_bytes` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes", **extensions)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"request body larger than {max_bytes} bytes", **extensions)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, kind: type[T], limit: int) -> T:
    body = await read_limited(request, limit)
    if not body.strip():
        raise ValidationError(Problem("body", "a JSON body is required", "required"))
    return decode(body, kind)


_encoder = msgspec.json.Encoder(decimal_format="number")  # exact decimals, as JSON numbers


def json_response(content: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def ts(value: datetime | None) -> str | None:
    return format_rfc3339(value) if value is not None else None


def meter_json(m: Meter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "slug": m.slug,
        "name": m.name,
        "aggregation": m.aggregation.value,
        "eventType": m.event_type,
        "groupBy": m.group_by,
        "metadata": m.metadata,
        "createdAt": ts(m.created_at),
        "updatedAt": ts(m.updated_at),
    }
    if m.description is not None:
        out["description"] = m.description
    if m.value_property is not None:
        out["valueProperty"] = m.value_property
    if m.event_from is not None:
        out["eventFrom"] = ts(m.event_from)
    if m.deleted_at is not None:
        out["deletedAt"] = ts(m.deleted_at)
    return out


def customer_json(c: Customer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "name": c.name,
        "usageAttribution": {"subjectKeys": list(c.subject_keys)},
        "metadata": c.metadata,
        "createdAt": ts(c.created_at),
        "updatedAt": ts(c.updated_at),
    }
    for field, value in (
        ("key", c.key),
        ("description", c.description),
        ("primaryEmail", c.primary_email),
        ("currency", c.currency),
        ("billingAddress", c.billing_address),
        ("deletedAt", ts(c.deleted_at)),
    ):
        if value is not None:
            out[field] = value
    return out


def subject_json(s: Subject) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id,
        "key": s.key,
        "createdAt": ts(s.created_at),
        "updatedAt": ts(s.updated_at),
    }
    for field, value in (
        ("displayName", s.display_name),
        ("metadata", s.metadata),
        ("stripeCustomerId", s.stripe_customer_id),
        ("currentPeriodStart", ts(s.current_period_start)),
        ("currentPeriodEnd", ts(s.current_period_end)),
    ):
        if value is not None:
            out[field] = value
    return out


def usage_json(result: QueryResult) -> dict[str, Any]:
    data = []
    edge = lru_cache(maxsize=None)(format_rfc3339)  # window edges repeat across rows
    for row in result.rows:
        item: dict[str, Any] = {
            "value": row.value,
            "windowStart": edge(row.window_start),
            "windowEnd": edge(row.window_end),
            "subject": row.subject,
            "groupBy": row.group_by,
        }
        if row.customer_id is not None:
            item["customerId"] = row.customer_id
        data.append(item)
    out: dict[str, Any] = {"data": data}
    if result.start is not None:
        out["from"] = format_rfc3339(result.start)
    if result.end is not None:
        out["to"] = format_rfc3339(result.end)
    if result.window_size is not None:
        out["windowSize"] = result.window_size
    return out
