"""Read-time validation of a stored event against the current meters (the `validationError` of the
events list), with OpenMeter's messages."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from meterd.meters.model import Aggregation, Meter
from meterd.usage.store import StoredEvent


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    """A small JSONPath reader for the dotted/bracketed paths meters use ($.a.b, $.a[0], $['a'])."""
    node = data
    for part in _parts(path):
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                return False, None
            node = node[part]
        else:
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
    return True, node


def _parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    i = 1 if path.startswith("$") else 0
    while i < len(path):
        if path[i] == ".":
            j = i + 1
            while j < len(path) and path[j] not in ".[":
                j += 1
            parts.append(path[i + 1 : j])
            i = j
        elif path[i] == "[":
            j = path.index("]", i)
            inner = path[i + 1 : j].strip()
            if inner[:1] in "'\"":
                parts.append(inner[1:-1])
            else:
                parts.append(int(inner) if inner.lstrip("-").isdigit() else inner)
            i = j + 1
        else:
            i += 1
    return parts


def meter_error(meter: Meter, data: Any) -> str | None:
    if meter.aggregation is Aggregation.COUNT or meter.value_property is None:
        return None
    if data is None:
        return "null and missing value property"
    try:
        found, value = _lookup(data, meter.value_property)
    except (ValueError, IndexError):
        return None
    if not found:
        return f'missing value property: "{meter.value_property}"'
    if value is None:
        return "value cannot be null"
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        return None
    if isinstance(value, bool | dict | list):
        return "value property cannot be parsed"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return "value cannot be parsed as float64"
    if isinstance(value, int | float) and not math.isfinite(float(value)):
        return "value cannot be NaN or infinite"
    return None


def describe(event: StoredEvent, meters: list[Meter], has_customer: bool) -> str | None:
    errors: list[str] = []
    if not meters:
        errors.append(f"no meter found for event type: {event.type}")
    else:
        data = msgspec.json.decode(event.data) if event.data else None
        for meter in meters:
            problem = meter_error(meter, data)
            if problem:
                errors.append(problem)
    if not has_customer:
        errors.append(f"no customer found for event subject: {event.subject}")
    return "\n".join(errors) or None
