"""CloudEvents as OpenMeter accepts them, decoded straight from request bytes.

Validation follows OpenMeter's v1 schema: `id`, `source`, `specversion` ("1.0"), `type` and `subject` are
required non-empty strings; `time` is optional (RFC 3339 with an offset; default: now); `data` is a JSON
object or null. Extension attributes are accepted and dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import msgspec

from meterd.core.errors import Problem, UnsupportedMediaError, ValidationError
from meterd.core.timeutil import now_us, rfc3339_utc, to_us

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
CONTENT_TYPES = (SINGLE, BATCH, JSON)


class CloudEvent(msgspec.Struct, frozen=True):
    id: NonEmpty
    source: NonEmpty
    specversion: str
    type: NonEmpty
    subject: NonEmpty
    time: str | None = None  # parsed by _record: msgspec rounds digits past the microsecond, meterd cuts them
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An accepted event, as the journal keeps it. Times are microseconds since the epoch (UTC)."""

    id: str
    source: str
    type: str
    subject: str
    time_us: int
    data: bytes  # JSON text of an object, or b"null"


# The event store keeps microseconds, and its time-window functions work from 1970 to 2106: an event outside
# this range is refused at the door rather than silently clamped.
MIN_TIME_US = 0
MAX_TIME_US = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z

_single = msgspec.json.Decoder(CloudEvent)
_batch = msgspec.json.Decoder(list[CloudEvent])
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header; only UTF-8 (or no) charset is accepted."""
    if not header:
        raise UnsupportedMediaError("missing content type", contentType="")
    main, _, params = header.partition(";")
    main = main.strip().lower()
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaError(f"unsupported charset: {value}", contentType=header)
    if main not in CONTENT_TYPES:
        raise UnsupportedMediaError(f"invalid content type: {header}", contentType=header)
    return main


def decode(body: bytes, content_type: str) -> list[EventRecord]:
    """Decode and validate a request body; all-or-nothing: any bad event rejects the whole body."""
    if not body.strip():
        raise ValidationError(Problem("$", "invalid event: no events found", "required"))
    try:
        if content_type == SINGLE:
            events = [_single.decode(body)]
        elif content_type == BATCH or body.lstrip()[:1] == b"[":
            events = _batch.decode(body)
        else:
            events = [_single.decode(body)]
    except msgspec.ValidationError as exc:
        raise ValidationError(_problem(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(Problem("$", f"malformed JSON: {exc}", "malformed")) from None
    if not events:
        raise ValidationError(Problem("$", "invalid event: no events found", "required"))
    default_time = now_us()
    batch = content_type != SINGLE and body.lstrip()[:1] == b"["
    return [_record(event, index if batch else None, default_time) for index, event in enumerate(events)]


def _record(event: CloudEvent, index: int | None, default_time: int) -> EventRecord:
    where = "$" if index is None else f"$[{index}]"
    if event.specversion != "1.0":
        raise ValidationError(
            Problem(f"{where}.specversion", f'unsupported specversion {event.specversion!r} (want "1.0")')
        )
    if event.datacontenttype not in (None, "application/json"):
        raise ValidationError(
            Problem(f"{where}.datacontenttype", "only application/json (or no datacontenttype) is supported")
        )
    data = bytes(event.data).strip()
    if data[:1] != b"{" and data != b"null":
        raise ValidationError(Problem(f"{where}.data", "data must be a JSON object or null"))
    moment = rfc3339_utc(event.time) if event.time is not None else None
    if event.time is None:
        time_us = default_time
    elif moment is None:
        raise ValidationError(
            Problem(f"{where}.time", f"time must be RFC 3339 with a UTC offset or Z, not {event.time[:64]!r}")
        )
    else:
        time_us = to_us(moment)
        if not MIN_TIME_US <= time_us < MAX_TIME_US:
            raise ValidationError(
                Problem(f"{where}.time", "time must be between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z")
            )
    return EventRecord(event.id, event.source, event.type, event.subject, time_us, data)


def _problem(message: str) -> Problem:
    match = _PATH.search(message)
    path = match.group(1) if match else "$"
    text = message[: match.start()] if match else message
    missing = _MISSING.match(text)
    if missing:
        return Problem(f"{path}.{missing.group(1)}", f"missing required field `{missing.group(1)}`", "required")
    return Problem(path, text, "invalid")
