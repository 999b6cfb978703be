"""/api/v1/customers and /api/v1/subjects."""

from __future__ import annotations

from datetime import UTC

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meterd.core.errors import Problem, ValidationError
from meterd.core.timeutil import as_utc
from meterd.customers.service import CustomerInput, SubjectInput
from meterd.http.deps import call, namespace, query_bool, query_int, services
from meterd.http.wire import (
    CustomerBody,
    SubjectUpsertBody,
    customer_json,
    json_response,
    read_json,
    subject_json,
)


def _limit(request: Request) -> int:
    return services(request).settings.server.max_body_bytes


def _input(body: CustomerBody) -> CustomerInput:
    keys = body.usageAttribution.subjectKeys if body.usageAttribution else []
    if body.key is None and not keys:
        raise ValidationError(Problem("key", "a customer needs a key or usageAttribution.subjectKeys", "required"))
    return CustomerInput(
        name=body.name,
        key=body.key,
        subject_keys=list(keys),
        description=body.description,
        primary_email=body.primaryEmail,
        currency=body.currency,
        billing_address=body.billingAddress,
        metadata=body.metadata,
    )


async def create_customer(request: Request) -> Response:
    body = await read_json(request, CustomerBody, _limit(request))
    customer = await call(services(request).customers.create, namespace(request), _input(body))
    return json_response(customer_json(customer), 201)


async def list_customers(request: Request) -> Response:
    page = query_int(request, "page", 1, 1, 1_000_000)
    size = query_int(request, "pageSize", 100, 1, 1000)
    params = request.query_params
    items, total = await call(
        services(request).customers.list,
        namespace(request),
        offset=(page - 1) * size,
        limit=size,
        include_deleted=query_bool(request, "includeDeleted"),
        key=params.get("key"),
        name=params.get("name"),
        subject=params.get("subject"),
    )
    return json_response(
        {"items": [customer_json(c) for c in items], "page": page, "pageSize": size, "totalCount": total}
    )


async def get_customer(request: Request) -> Response:
    customer = await call(services(request).customers.get, namespace(request), request.path_params["customer"])
    return json_response(customer_json(customer))


async def replace_customer(request: Request) -> Response:
    body = await read_json(request, CustomerBody, _limit(request))
    customer = await call(
        services(request).customers.replace, namespace(request), request.path_params["customer"], _input(body)
    )
    return json_response(customer_json(customer))


async def delete_customer(request: Request) -> Response:
    await call(services(request).customers.delete, namespace(request), request.path_params["customer"])
    return Response(status_code=204)


async def upsert_subjects(request: Request) -> Response:
    bodies = await read_json(request, list[SubjectUpsertBody], _limit(request))
    svc = services(request)
    ns = namespace(request)
    for index, body in enumerate(bodies):  # check every subject before upserting any
        for name in ("key", "displayName", "stripeCustomerId"):  # the store would name the column it looked up
            if "\x00" in (getattr(body, name) or ""):
                raise ValidationError(Problem(f"[{index}].{name}", "text must not contain NUL (U+0000) characters"))
        for name in ("currentPeriodStart", "currentPeriodEnd"):
            value = getattr(body, name)
            if value is not None:
                as_utc(value, f"[{index}].{name}")  # no offset, or an instant outside the years 1-9999: a 400
    out = []
    for body in bodies:
        given = {name for name in body.__struct_fields__ if name != "key" and name in _sent(body)}
        data = SubjectInput(
            key=body.key,
            display_name=body.displayName,
            metadata=body.metadata,
            stripe_customer_id=body.stripeCustomerId,
            current_period_start=body.currentPeriodStart.astimezone(UTC) if body.currentPeriodStart else None,
            current_period_end=body.currentPeriodEnd.astimezone(UTC) if body.currentPeriodEnd else None,
            given=frozenset(_FIELD[name] for name in given),
        )
        out.append(subject_json(await call(svc.customers.upsert_subject, ns, data)))
    return json_response(out)


_FIELD = {
    "displayName": "display_name",
    "metadata": "metadata",
    "stripeCustomerId": "stripe_customer_id",
    "currentPeriodStart": "current_period_start",
    "currentPeriodEnd": "current_period_end",
}


def _sent(body: SubjectUpsertBody) -> set[str]:
    """Fields the caller set: an upsert of an existing subject changes only those."""
    return {name for name in _FIELD if getattr(body, name) is not None}


async def list_subjects(request: Request) -> Response:
    subjects = await call(services(request).customers.list_subjects, namespace(request))
    return json_response([subject_json(s) for s in subjects])


async def get_subject(request: Request) -> Response:
    subject = await call(services(request).customers.get_subject, namespace(request), request.path_params["subject"])
    return json_response(subject_json(subject))


async def delete_subject(request: Request) -> Response:
    await call(services(request).customers.delete_subject, namespace(request), request.path_params["subject"])
    return Response(status_code=204)


routes = [
    Route("/api/v1/customers", list_customers, methods=["GET"]),
    Route("/api/v1/customers", create_customer, methods=["POST"]),
    Route("/api/v1/customers/{customer}", get_customer, methods=["GET"]),
    Route("/api/v1/customers/{customer}", replace_customer, methods=["PUT"]),
    Route("/api/v1/customers/{customer}", delete_customer, methods=["DELETE"]),
    Route("/api/v1/subjects", list_subjects, methods=["GET"]),
    Route("/api/v1/subjects", upsert_subjects, methods=["POST"]),
    Route("/api/v1/subjects/{subject}", get_subject, methods=["GET"]),
    Route("/api/v1/subjects/{subject}", delete_subject, methods=["DELETE"]),
]
