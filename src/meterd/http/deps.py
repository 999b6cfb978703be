"""What a handler needs from the running app: the services and the caller's namespace."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from meterd.core.errors import Problem, ValidationError
from meterd.core.timeutil import parse_rfc3339

if TYPE_CHECKING:
    from meterd.bootstrap import Services

T = TypeVar("T")


def services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def namespace(request: Request) -> str:
    return request.scope.get("meterd.namespace") or services(request).settings.namespace


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking service call (database, event store) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def query_time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    return parse_rfc3339(value, name) if value else None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(Problem(name, "must be an integer")) from None
    if not low <= number <= high:
        raise ValidationError(Problem(name, f"must be between {low} and {high}"))
    return number


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ValidationError(Problem(name, "must be true or false"))
