"""The one error table: domain error kinds -> HTTP status, every body RFC 7807 problem+json in
OpenMeter's shape ({type, title, status, detail, instance, extensions})."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core import errors

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

STATUS: dict[type[errors.MeterdError], int] = {
    errors.ValidationError: 400,
    errors.UnsupportedMediaError: 400,
    errors.UnauthorizedError: 401,
    errors.ForbiddenError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.PayloadTooLargeError: 413,
    errors.OverloadedError: 429,
    errors.NotImplementedYetError: 501,
    errors.UnavailableError: 503,
}


def problem(
    status: int,
    detail: str,
    request: Request | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    request_id = request.scope.get("meterd.request_id") if request is not None else None
    if request_id:
        body["instance"] = f"urn:request:{request_id}"
    if extensions:
        body["extensions"] = extensions
    return Response(msgspec.json.encode(body), status_code=status, media_type=PROBLEM, headers=headers)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.MeterdError)
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    headers = None
    if isinstance(exc, errors.OverloadedError | errors.UnavailableError):
        headers = {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, errors.UnauthorizedError):
        headers = {"WWW-Authenticate": 'Bearer realm="meterd"'}
    return problem(status, exc.detail, request, headers, **exc.extensions)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else _DEFAULT.get(exc.status_code, "")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return problem(exc.status_code, detail or HTTPStatus(exc.status_code).phrase, request, headers)


def _allowed_methods(request: Request) -> str:
    """Every method served on the path: Starlette's own Allow names only the first route that matched it."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.scope["path"]):
            methods |= route.methods
    return ", ".join(sorted(methods))


_DEFAULT = {404: "no such route", 405: "method not allowed on this route"}


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "", request)


HANDLERS = {
    errors.MeterdError: on_domain_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
