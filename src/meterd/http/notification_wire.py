"""Wire shapes of /api/v1/notification/*: request bodies (msgspec structs, OpenMeter's camelCase names) and
the JSON of channels, rules and events as OpenMeter's API and SDK read them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from starlette.responses import Response

from meterd.core.timeutil import format_rfc3339
from meterd.notifications.inputs import ChannelInput, RuleInput
from meterd.notifications.model import (
    BALANCE_THRESHOLD,
    WEBHOOK,
    Attempt,
    Channel,
    Delivery,
    EventView,
    Rule,
    Threshold,
)


class ChannelBody(msgspec.Struct):
    type: str
    name: str
    url: str
    disabled: bool | None = None
    metadata: dict[str, str] | None = None
    customHeaders: dict[str, str] | None = None
    signingSecret: str | None = None

    def to_input(self) -> ChannelInput:
        return ChannelInput(
            type=self.type,
            name=self.name,
            url=self.url,
            custom_headers=dict(self.customHeaders or {}),
            signing_secret=self.signingSecret,
            disabled=bool(self.disabled),
            metadata=dict(self.metadata or {}),
        )


class ThresholdBody(msgspec.Struct):
    value: Decimal
    type: str


class RuleBody(msgspec.Struct):
    type: str
    name: str
    channels: list[str]
    disabled: bool | None = None
    metadata: dict[str, str] | None = None
    features: list[str] | None = None
    thresholds: list[ThresholdBody] | None = None

    def to_input(self) -> RuleInput:
        return RuleInput(
            type=self.type,
            name=self.name,
            channels=list(self.channels),
            features=list(self.features or []),
            thresholds=None if self.thresholds is None else [Threshold(t.value, t.type) for t in self.thresholds],
            disabled=bool(self.disabled),
            metadata=dict(self.metadata or {}),
        )


class ResendBody(msgspec.Struct):
    channels: list[str] | None = None


_encoder = msgspec.json.Encoder(decimal_format="number")


def json_response(content: Any, status: int = 200) -> Response:
    """Like meterd.http.wire.json_response, with decimals (thresholds) written as JSON numbers."""
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def _dates(out: dict[str, Any], x: Channel | Rule) -> dict[str, Any]:
    assert x.created_at is not None and x.updated_at is not None
    out["createdAt"] = format_rfc3339(x.created_at)
    out["updatedAt"] = format_rfc3339(x.updated_at)
    if x.deleted_at is not None:
        out["deletedAt"] = format_rfc3339(x.deleted_at)
    return out


def channel_json(c: Channel) -> dict[str, Any]:
    out = {
        "id": c.id,
        "type": c.type,
        "name": c.name,
        "url": c.url,
        "disabled": c.disabled,
        "signingSecret": c.signing_secret,
        "customHeaders": c.custom_headers,
        "metadata": c.metadata,
    }
    return _dates(out, c)


def rule_json(r: Rule, features: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "type": r.type,
        "name": r.name,
        "disabled": r.disabled,
        "channels": [{"id": cid, "type": WEBHOOK} for cid in r.channels],
        "metadata": r.metadata,
    }
    if r.type == BALANCE_THRESHOLD:
        out["thresholds"] = [{"value": t.value, "type": t.type} for t in r.thresholds]
    if r.features:
        out["features"] = [_feature_meta(f, (features or {}).get(f)) for f in r.features]
    return _dates(out, r)


def _feature_meta(given: str, found: tuple[str, str] | None) -> dict[str, str]:
    """{id, key} when the feature is known; as OpenMeter does, just {id: <what the rule names>} when not."""
    if found is None:
        return {"id": given}
    return {"id": found[0], "key": found[1]}


def _attempt_json(a: Attempt) -> dict[str, Any]:
    response: dict[str, Any] = {"body": a.body, "durationMs": a.duration_ms}
    if a.status_code is not None:
        response["statusCode"] = a.status_code
    if a.url is not None:
        response["url"] = a.url
    return {"state": a.state.value, "timestamp": format_rfc3339(a.timestamp), "response": response}


def delivery_json(d: Delivery) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": d.state.value,
        "reason": d.reason,
        "updatedAt": format_rfc3339(d.updated_at),
        "channel": {"id": d.channel_id, "type": WEBHOOK},
        "attempts": [_attempt_json(a) for a in d.attempts],
    }
    if d.next_attempt_at is not None:
        out["nextAttempt"] = format_rfc3339(d.next_attempt_at)
    return out


def event_json(view: EventView, features: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    e = view.event
    out: dict[str, Any] = {
        "id": e.id,
        "type": e.type,
        "createdAt": format_rfc3339(e.created_at),
        "rule": rule_json(view.rule, features),
        "deliveryStatus": [delivery_json(d) for d in view.deliveries],
        "payload": msgspec.Raw(e.payload),
    }
    if e.annotations:
        out["annotations"] = e.annotations
    return out
