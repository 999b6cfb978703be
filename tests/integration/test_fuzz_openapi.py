"""Schemathesis against meterd's own OpenAPI document: every operation, coverage, fuzzing and stateful phases,
with a fixed seed. No input may make the server answer 5xx, and every response must match the document: its
status's schema (`default`: a problem) and one of its content types.

Before the run the server gets one of everything (a meter with events, a customer and a subject, features,
entitlements of each type with grants, a channel, a rule and its test event); each of those answers is checked
against the document too, since random bodies rarely create anything. Schemathesis then draws path parameters
from the identifiers half of the time: otherwise almost every operation with a path parameter answers 404, and
no success body is checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import Server, event

pytestmark = pytest.mark.slow

# The checks every run makes (bench/reliability.py runs the same). status_code_conformance is left out: every
# operation documents a `default` problem response, so any status conforms and the check could never fail.
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
EXAMPLES = 25


class Documented:
    """Sends requests and checks each answer against the document: the status, a documented content type and,
    for JSON, the schema."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.document: dict[str, Any] = api.get("/api/v1/openapi.json").json()

    def __call__(self, method: str, template: str, status: int = 200, **kwargs: Any) -> Any:
        path = kwargs.pop("path", {})
        response = self.api.request(method, template.format(**path), **kwargs)
        assert response.status_code == status, (method, template, response.text)
        content = self.document["paths"][template][method.lower()]["responses"][str(status)].get("content", {})
        if not content:
            assert response.content == b"", (method, template, response.text)
            return None
        media = response.headers["content-type"].split(";")[0]
        assert media in content, (method, template, media)
        if media != "application/json":
            return response.text
        body = response.json()
        root = {"components": self.document["components"], **content[media]["schema"]}
        jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker()).validate(body)
        return body


def seed(api: httpx.Client) -> dict[str, list[str]]:
    """One of everything, each answer checked against the document; answers the identifiers to draw each path
    parameter from."""
    call = Documented(api)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    meter = call(
        "POST",
        "/api/v1/meters",
        201,
        json={
            "slug": "fuzz_tokens",
            "name": "Tokens",
            "description": "tokens used",
            "aggregation": "SUM",
            "eventType": "fuzz",
            "valueProperty": "$.tokens",
            "groupBy": {"model": "$.model"},
        },
    )
    customer = call(
        "POST",
        "/api/v1/customers",
        201,
        json={
            "name": "Fuzz",
            "key": "fuzz_customer",
            "usageAttribution": {"subjectKeys": ["fuzz_subject"]},
            "description": "seeded",
            "primaryEmail": "fuzz@example.com",
            "currency": "USD",
            "billingAddress": {"country": "US"},
            "metadata": {"tier": "gold"},
        },
    )
    subject = {"key": "fuzz_subject", "displayName": "Fuzz", "metadata": {"a": 1}, "currentPeriodStart": start}
    call("POST", "/api/v1/subjects", json=[subject])
    events = [
        event(
            type_="fuzz",
            subject="fuzz_subject",
            time_=(now - timedelta(minutes=m)).isoformat(),
            data={"tokens": m, "model": "a" if m % 2 else "b"},
        )
        for m in range(1, 90, 7)
    ]
    call("POST", "/api/v1/events", 204, json=events)
    features = {
        key: call("POST", "/api/v1/features", 201, json={"key": key, "name": key, **body})
        for key, body in (
            ("fuzz_feature", {"meterSlug": meter["slug"], "meterGroupByFilters": {"model": "a"}}),
            ("fuzz_v1", {"meterSlug": meter["slug"]}),
            ("fuzz_flag", {}),
            ("fuzz_config", {}),
        )
    }
    v2_base = "/api/v2/customers/{customer}/entitlements"
    v1_base = "/api/v1/subjects/{subject}/entitlements"
    owner = {"customer": customer["key"], "subject": "fuzz_subject"}
    period = {"interval": "DAY"}
    metered = {"type": "metered", "usagePeriod": period, "measureUsageFrom": start}
    v2 = call("POST", v2_base, 201, path=owner, json={**metered, "featureKey": "fuzz_feature", "issue": {"amount": 5}})
    v1 = call("POST", v1_base, 201, path=owner, json={**metered, "featureKey": "fuzz_v1", "issueAfterReset": 10})
    flag = call("POST", v1_base, 201, path=owner, json={"type": "boolean", "featureKey": "fuzz_flag"})
    static = {"type": "static", "featureKey": "fuzz_config", "config": '{"seats": 5}', "usagePeriod": period}
    call("POST", v2_base, 201, path=owner, json=static)
    grant = {"amount": 100, "effectiveAt": start, "expiration": {"duration": "DAY", "count": 30}}
    recurring = {**grant, "recurrence": {"interval": "DAY"}, "maxRolloverAmount": 10}
    grants = [
        call("POST", v2_base + "/{entitlement}/grants", 201, path={**owner, "entitlement": v2["id"]}, json=recurring),
        call("POST", v1_base + "/{entitlement}/grants", 201, path={**owner, "entitlement": v1["id"]}, json=grant),
    ]
    for base, entitlement in (
        (v2_base, v2["id"]),
        (v1_base, v1["id"]),
        (v2_base, "fuzz_config"),
        (v1_base, "fuzz_flag"),
    ):
        call("GET", base + "/{entitlement}/value", path={**owner, "entitlement": entitlement})
    for base, entitlement in ((v2_base, v2["id"]), (v1_base, v1["id"])):
        history = {"windowSize": "HOUR", "from": start}
        call("GET", base + "/{entitlement}/history", path={**owner, "entitlement": entitlement}, params=history)
    call("GET", "/api/v1/customers/{customer}/access", path=owner)
    channel = call(
        "POST",
        "/api/v1/notification/channels",
        201,
        json={"type": "WEBHOOK", "name": "fuzz", "url": "http://127.0.0.1:9/hook"},  # nothing listens on 9
    )
    rule = {
        "type": "entitlements.balance.threshold",
        "name": "fuzz",
        "channels": [channel["id"]],
        "features": ["fuzz_feature", features["fuzz_v1"]["id"]],
        "thresholds": [{"value": 50, "type": "usage_percentage"}],
    }
    rule = call("POST", "/api/v1/notification/rules", 201, json=rule)
    notification = call("POST", "/api/v1/notification/rules/{ruleId}/test", 201, path={"ruleId": rule["id"]})
    query = {"windowSize": "HOUR", "groupBy": ["model"], "filterCustomerId": [customer["id"]]}
    call("GET", "/api/v1/meters/{meter}/query", path={"meter": meter["slug"]}, params=query)
    csv = call(
        "GET", "/api/v1/meters/{meter}/query", path={"meter": meter["id"]}, headers={"Accept": "text/csv"}, params=query
    )
    assert csv.startswith("window_start,window_end"), csv
    return {
        "meter": [meter["slug"], meter["id"]],
        "key": ["model"],
        "customer": [customer["key"], customer["id"]],
        "subject": ["fuzz_subject"],
        "entitlement": [v2["id"], v1["id"], flag["id"], "fuzz_feature", "fuzz_flag", "fuzz_config"],
        "feature": [*features, features["fuzz_feature"]["id"]],
        "grant": [g["id"] for g in grants],
        "channelId": [channel["id"]],
        "ruleId": [rule["id"]],
        "eventId": [notification["id"]],
    }


def config(dictionaries: dict[str, list[str]]) -> str:
    """schemathesis.toml: the path parameters of reads and additions (GET, POST) drawn from their dictionaries
    half of the time. Replacements and deletions (PUT, DELETE) are not pointed at the seeded resources, which
    they would take away from the operations after them (they still meet identifiers schemathesis picks up from
    earlier answers)."""
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    bindings = ", ".join(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in dictionaries)
    lines += ["[[operations]]", 'include-method-regex = "^(GET|POST)$"', f"parameters = {{ {bindings} }}"]
    return "\n".join(lines) + "\n"


def test_every_response_conforms_and_none_is_5xx(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency"
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            settings = tmp_path / "schemathesis.toml"
            settings.write_text(config(seed(api)))
        done = subprocess.run(
            [
                st,
                "--config-file",
                str(settings),
                "run",
                f"{server.url}/api/v1/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
                # one worker: Hypothesis parses lambda sources while drawing, and Python 3.11's AST constructor is
                # not thread-safe (two workers failed a run with "AST constructor recursion depth mismatch");
                # one worker is no slower here, the server being the other busy process
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    summary = done.stdout[-6000:]
    assert done.returncode == 0, f"schemathesis found failures:\n{summary}\n{server.log()[-3000:]}"
    assert "Tested:" in summary, summary
