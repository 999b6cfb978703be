"""`meterd features|entitlements|grants` against the real session server: a whole flow from a meter to a voided
grant, with exact decimals in both the tables and the JSON, and the errors people see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from meterd.cli.main import cli
from tests.conftest import Server, wait_for


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:00Z")


class Meterd:
    """`meterd ...` in process through click's runner, talking HTTP to the session server."""

    def __init__(self, url: str) -> None:
        self.runner = CliRunner()
        self.env = {"METERD_URL": url, "COLUMNS": "250"}

    def __call__(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout, parse_float=Decimal)


@pytest.fixture
def meterd(server: Server) -> Iterator[Meterd]:
    yield Meterd(server.url)


def test_full_flow(meterd: Meterd, api: httpx.Client, unique: Callable[[str], str], tmp_path: Path) -> None:
    slug, feature, customer = unique("cli_ent_tokens"), unique("ai_tokens"), unique("acme")
    now = datetime.now(UTC)
    start, used_at, reset_at = now - timedelta(hours=1), now - timedelta(minutes=10), now - timedelta(minutes=5)

    meterd("meters", "create", slug, "--event-type", slug, "--aggregation", "SUM", "--value-property", "$.tokens")
    created = meterd.json("features", "create", feature, "--meter", slug, "--name", "AI tokens")
    assert created["key"] == feature and created["meterSlug"] == slug
    assert feature in meterd("features", "list", "--meter", slug).stdout
    assert meterd.json("features", "get", feature)["id"] == created["id"]
    body = {"key": customer, "name": "Acme", "usageAttribution": {"subjectKeys": [customer]}}
    assert api.post("/api/v1/customers", json=body).status_code == 201

    entitlement = meterd.json(
        "entitlements", "create", customer, "--feature", feature, "--period", "MONTH",
        "--measure-from", _stamp(start), "--metadata", "plan=pro",
    )  # fmt: skip
    assert entitlement["type"] == "metered" and entitlement["measureUsageFrom"] == _stamp(start)
    assert entitlement["usagePeriod"] == {"interval": "MONTH", "intervalISO": "P1M", "anchor": _stamp(start)}
    assert entitlement["isSoftLimit"] is False and entitlement["metadata"] == {"plan": "pro"}
    grant = meterd.json(
        "grants", "create", customer, feature, "--amount", "123456789012.345678", "--max-rollover", "500",
        "--expires-in", "1y", "--effective-at", _stamp(start),
    )  # fmt: skip
    assert (
        grant["amount"] == Decimal("123456789012.345678")
        and grant["maxRolloverAmount"] == 500
        and grant["priority"] == 1
    )
    assert grant["expiration"] == {"duration": "YEAR", "count": 1}

    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps({"type": slug, "subject": customer, "time": used_at.isoformat(), "data": {"tokens": tokens}})
            for tokens in (100, 150)
        )
    )
    meterd("ingest", str(events))

    def value() -> dict[str, Any] | None:
        found: dict[str, Any] = meterd.json("entitlements", "value", customer, feature)
        return found if found["usage"] == 250 else None

    assert wait_for(value) == {
        "hasAccess": True,
        "balance": Decimal("123456788762.345678"),  # 18 digits: a float would end in ...762.34568
        "usage": 250,
        "overage": 0,
        "totalAvailableGrantAmount": Decimal("123456789012.345678"),
        "grantBalances": {grant["id"]: Decimal("123456788762.345678")},
    }
    table = meterd("entitlements", "value", customer, feature).stdout
    assert "123456788762.345678" in table and "250" in table and "yes" in table
    assert f"grant {grant['id']}" in table
    access = meterd.json("entitlements", "access", customer)["entitlements"]
    assert access[feature]["balance"] == Decimal("123456788762.345678")
    assert feature in meterd("entitlements", "access", customer).stdout
    listed = meterd.json("entitlements", "list", "--customer", customer)
    assert [e["id"] for e in listed] == [entitlement["id"]]
    assert entitlement["id"] in meterd("entitlements", "list", "--feature", feature).stdout

    # a reset five minutes ago: the usage ten minutes ago belongs to the old period, and the grant carries
    # at most its max rollover (500 of the 123,456,788,762.345678 left) into the new one
    assert "reset" in meterd("entitlements", "reset", customer, feature, "--at", _stamp(reset_at)).stdout
    after = meterd.json("entitlements", "value", customer, feature)
    assert after == {
        "hasAccess": True,
        "balance": 500,
        "usage": 0,
        "overage": 0,
        "totalAvailableGrantAmount": 500,
        "grantBalances": {grant["id"]: 500},
    }
    before_reset = meterd.json(
        "entitlements", "value", customer, feature, "--at", _stamp(reset_at - timedelta(minutes=1))
    )
    assert before_reset["balance"] == Decimal("123456788762.345678")
    assert meterd.json("entitlements", "get", customer, feature)["currentUsagePeriod"]["from"] == _stamp(reset_at)

    history = meterd.json(
        "entitlements", "history", customer, feature, "--window", "HOUR", "--from", _stamp(start), "--tz", "UTC"
    )
    assert sum(w["usage"] for w in history["windowedHistory"]) == 250
    phases = history["burndownHistory"]
    assert phases[0]["period"]["from"] == _stamp(start) and phases[0]["balanceAtEnd"] == Decimal("123456788762.345678")
    assert phases[-1]["balanceAtStart"] == 500
    assert phases[0]["grantUsages"] == [{"grantId": grant["id"], "usage": 250}]
    text = meterd("entitlements", "history", customer, feature, "--window", "HOUR", "--from", _stamp(start)).stdout
    assert "burn-down" in text and "123456788762.345678" in text

    assert [g["id"] for g in meterd.json("grants", "list", "--customer", customer, "--feature", feature)] == [
        grant["id"]
    ]
    assert grant["id"] in meterd("grants", "list", "--feature", feature).stdout
    assert "voided" in meterd("grants", "void", grant["id"]).stdout
    voided = meterd.json("entitlements", "value", customer, feature)
    assert voided["hasAccess"] is False and voided["balance"] == 0 and voided["grantBalances"] == {}
    assert meterd.json("grants", "list", "--customer", customer)[0]["voidedAt"] is not None
    again = meterd("grants", "void", grant["id"], ok=False)
    assert again.exit_code == 1 and "409: grant" in again.output

    assert "deleted" in meterd("entitlements", "delete", customer, feature).stdout
    gone = meterd("entitlements", "get", customer, feature, ok=False)
    assert gone.exit_code == 1 and "404: entitlement not found" in gone.output
    assert "archived" in meterd("features", "archive", feature).stdout
    assert meterd.json("features", "get", feature)["archivedAt"] is not None


def test_boolean_and_static(meterd: Meterd, api: httpx.Client, unique: Callable[[str], str]) -> None:
    sso, seats, customer = unique("sso"), unique("seats"), unique("globex")
    meterd("features", "create", sso)
    meterd("features", "create", seats)
    api.post("/api/v1/customers", json={"key": customer, "name": "Globex"})
    meterd("entitlements", "create", customer, "--feature", sso, "--type", "boolean")
    meterd("entitlements", "create", customer, "--feature", seats, "--type", "static", "--config", '{"seats": 5}')
    access = meterd.json("entitlements", "access", customer)["entitlements"]
    assert access == {sso: {"hasAccess": True}, seats: {"hasAccess": True, "config": '{"seats": 5}'}}
    no_grants = meterd("grants", "create", customer, sso, "--amount", "1", ok=False)
    assert no_grants.exit_code == 1 and "400: grants can only be issued to metered entitlements" in no_grants.output


def test_bad_input_is_refused_before_any_request(meterd: Meterd) -> None:
    for args, message in [
        (["entitlements", "value", "c", "f", "--at", "2026-11-01"], "not an RFC 3339 time with an offset"),
        (["grants", "create", "c", "f", "--amount", "ten"], "is not a decimal number"),
        (["grants", "create", "c", "f", "--amount", "1", "--expires-in", "3 fortnights"], "use a count and a unit"),
        (["features", "create", "k", "--metadata", "novalue"], "expected KEY=VALUE"),
        (["entitlements", "history", "c", "f", "--window", "YEAR"], "'YEAR' is not one of"),
    ]:
        result = meterd(*args, "--url", "http://127.0.0.1:1", ok=False)
        assert result.exit_code == 2 and message in result.output, result.output


def test_every_command_has_an_example() -> None:
    for name in ("features", "entitlements", "grants"):
        group = cli.commands[name]
        assert isinstance(group, click.Group)
        for command in group.commands.values():
            assert "meterd " + name in (command.help or ""), f"{name} {command.name} has no example"


def test_the_installed_command_exits_non_zero_with_the_problem(server: Server, unique: Callable[[str], str]) -> None:
    env = {**os.environ, "METERD_URL": server.url}
    cmd = [sys.executable, "-m", "meterd.cli.main", "entitlements", "value", unique("nobody"), "f"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: 404: customer not found"), result.stderr
