"""The ASGI app factory: routes, the error table, authentication, limits and metrics."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import Gauge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from meterd.bootstrap import Services
from meterd.core.errors import MeterdError
from meterd.http.admission import IngestGate
from meterd.http.errors import HANDLERS, on_domain_error, problem
from meterd.http.metrics import Metrics
from meterd.http.routes import customers, entitlements, events, meters, notifications, system

_OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/swagger.json")


class AuthMiddleware:
    """Bearer API keys. With no key configured anywhere, the API is open (loopback only, see cli)."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.keys = services.keys
        self._enabled = (0.0, False)

    def _auth_on(self) -> bool:
        checked, enabled = self._enabled
        now = time.monotonic()
        if now - checked > 1.0:
            enabled = self.keys.enabled()
            self._enabled = (now, enabled)
        return enabled

    def _namespace(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        return self.keys.namespace_for(token.strip()) if scheme.lower() == "bearer" and token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = dict(scope.get("headers", ())).get(b"authorization", b"").decode("latin-1")
        try:  # the keys live in the metadata database, which may be unavailable (503): outside the routes
            needs_key = scope["type"] == "http" and scope["path"] not in _OPEN_PATHS and self._auth_on()
            namespace = self._namespace(header) if needs_key else None
        except MeterdError as exc:
            await (await on_domain_error(Request(scope), exc))(scope, receive, send)
            return
        if not needs_key:
            await self.app(scope, receive, send)
            return
        if namespace is None:
            detail = "missing API key" if not header else "invalid or revoked API key"
            response = problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="meterd"'})
            await response(scope, receive, send)
            return
        scope["meterd.namespace"] = namespace
        await self.app(scope, receive, send)


class ObserveMiddleware:
    """Request ids and per-route metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()

    def _route(self, scope: Scope) -> str:
        matched = scope.get("route")  # set by the router once it matched
        if matched is not None:
            return str(matched.path)
        for route in self.router.routes:  # a response sent before routing (401)
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(route.path)
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["meterd.request_id"] = f"{self._prefix}-{next(self._ids)}"
        started = time.perf_counter()
        status = 500

        async def observe(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_app(services: Services, *, manage_lifecycle: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle and not services.started:
            services.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                services.close()

    routes = [
        *system.routes,
        *events.routes,
        *meters.routes,
        *customers.routes,
        *entitlements.routes,
        *notifications.routes,
    ]
    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan)
    app.state.services = services
    app.state.ingest_gate = IngestGate(services.settings.ingest.max_concurrent_requests)
    metrics = Metrics(services)
    app.state.registry = metrics.registry
    Gauge(
        "meterd_ingest_requests_in_progress", "Ingest requests being handled", registry=metrics.registry
    ).set_function(lambda: app.state.ingest_gate.active)
    app.state.metrics = metrics
    app.add_middleware(AuthMiddleware, services=services)
    app.add_middleware(ObserveMiddleware, metrics=metrics, router=app.router)
    from meterd.http.openapi import routes as openapi_routes

    for route in openapi_routes:
        app.router.routes.append(route)
    return app
