"""/api/v1/notification/{channels,rules,events} over real HTTP: shapes, status codes, filters and validation.
Delivery itself (signatures, retries, resends reaching a receiver) is in tests/integration/test_webhooks.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem

Unique = Callable[[str], str]
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
SECRET = re.compile(r"^(whsec_)?[a-zA-Z0-9+/=]{32,100}$")
BASE = "/api/v1/notification"
NOWHERE = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
GOOD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def create_channel(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post(f"{BASE}/channels", json={"type": "WEBHOOK", "name": "hook", "url": NOWHERE, **body})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    channel: dict[str, Any] = response.json()
    return channel


def create_rule(api: httpx.Client, channels: list[str], **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "entitlements.balance.threshold",
        "name": "usage alerts",
        "channels": channels,
        "thresholds": [{"value": 80, "type": "usage_percentage"}],
        **body,
    }
    response = api.post(f"{BASE}/rules", json=payload)
    assert response.status_code == 201, response.text
    rule: dict[str, Any] = response.json()
    return rule


def listed(api: httpx.Client, what: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"{BASE}/{what}", params={"pageSize": 1000, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "page", "pageSize", "totalCount"}
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


# -- channels ------------------------------------------------------------------------------------------------


def test_channel_create_get_and_shape(api: httpx.Client) -> None:
    channel = create_channel(api, name="Billing hook", customHeaders={"X-Team": "billing"}, metadata={"env": "test"})
    assert ULID.match(channel["id"])
    assert SECRET.match(channel["signingSecret"]) and channel["signingSecret"].startswith("whsec_")
    assert channel["createdAt"] == channel["updatedAt"]
    assert {k: v for k, v in channel.items() if k not in ("id", "signingSecret", "createdAt", "updatedAt")} == {
        "type": "WEBHOOK",
        "name": "Billing hook",
        "url": NOWHERE,
        "disabled": False,
        "customHeaders": {"X-Team": "billing"},
        "metadata": {"env": "test"},
    }
    got = api.get(f"{BASE}/channels/{channel['id']}")
    assert got.status_code == 200 and got.json() == channel
    own = create_channel(api, signingSecret=GOOD_SECRET)
    assert own["signingSecret"] == GOOD_SECRET
    assert_problem(api.get(f"{BASE}/channels/01J00000000000000000000000"), 404, detail="notification channel not found")


def test_channel_replace_keeps_or_replaces_the_secret(api: httpx.Client) -> None:
    channel = create_channel(api, customHeaders={"X-A": "1"})
    body = {"type": "WEBHOOK", "name": "renamed", "url": "https://example.test/hook", "disabled": True}
    response = api.put(f"{BASE}/channels/{channel['id']}", json=body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "renamed" and updated["disabled"] is True and updated["url"] == body["url"]
    assert updated["customHeaders"] == {}  # a full replace
    assert updated["signingSecret"] == channel["signingSecret"]  # not sent: kept
    assert updated["createdAt"] == channel["createdAt"] and updated["updatedAt"] > channel["updatedAt"]
    updated = api.put(f"{BASE}/channels/{channel['id']}", json={**body, "signingSecret": GOOD_SECRET}).json()
    assert updated["signingSecret"] == GOOD_SECRET
    assert api.get(f"{BASE}/channels/{channel['id']}").json() == updated
    assert_problem(api.put(f"{BASE}/channels/01J00000000000000000000000", json=body), 404)


def test_channel_list_filters_and_pages(api: httpx.Client, unique: Unique) -> None:
    live = create_channel(api, name=unique("live"))
    disabled = create_channel(api, name=unique("disabled"), disabled=True)
    deleted = create_channel(api, name=unique("deleted"))
    assert api.delete(f"{BASE}/channels/{deleted['id']}").status_code == 204

    default = ids(listed(api, "channels"))
    assert live["id"] in default and disabled["id"] not in default and deleted["id"] not in default
    assert disabled["id"] in ids(listed(api, "channels", includeDisabled="true"))
    with_deleted = listed(api, "channels", includeDeleted="true", includeDisabled="true")
    gone = next(c for c in with_deleted["items"] if c["id"] == deleted["id"])
    assert gone["deletedAt"] >= gone["createdAt"]

    everything = listed(api, "channels", includeDeleted="true", includeDisabled="true")
    total = everything["totalCount"]
    assert total == len(everything["items"]) >= 3
    assert ids(everything) == sorted(ids(everything))  # default order: id ascending
    page = api.get(
        f"{BASE}/channels", params={"page": 2, "pageSize": 2, "includeDeleted": True, "includeDisabled": True}
    )
    assert page.json()["page"] == 2 and page.json()["pageSize"] == 2 and page.json()["totalCount"] == total
    assert ids(page.json()) == ids(everything)[2:4]
    newest = listed(api, "channels", orderBy="createdAt", order="DESC", includeDeleted="true", includeDisabled="true")
    assert ids(newest)[0] == deleted["id"]


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"name": "x", "url": NOWHERE}, "type", "is required"),
        ({"type": "EMAIL", "name": "x", "url": NOWHERE}, "type", "must be WEBHOOK"),
        ({"type": "WEBHOOK", "url": NOWHERE}, "name", "is required"),
        ({"type": "WEBHOOK", "name": "", "url": NOWHERE}, "name", "1-256"),
        ({"type": "WEBHOOK", "name": "x"}, "url", "is required"),
        ({"type": "WEBHOOK", "name": "x", "url": "not a url"}, "url", "absolute http(s) URL"),
        ({"type": "WEBHOOK", "name": "x", "url": "ftp://host/x"}, "url", "absolute http(s) URL"),
        ({"type": "WEBHOOK", "name": "x", "url": NOWHERE, "signingSecret": "short"}, "signingSecret", "must match"),
        ({"type": "WEBHOOK", "name": "x", "url": NOWHERE, "signingSecret": "a" * 33}, "signingSecret", "base64"),
        (
            {"type": "WEBHOOK", "name": "x", "url": NOWHERE, "customHeaders": {"a b": "1"}},
            "customHeaders.a b",
            "header",
        ),
        (
            {"type": "WEBHOOK", "name": "x", "url": NOWHERE, "customHeaders": {"Webhook-Signature": "v1,x"}},
            "customHeaders.Webhook-Signature",
            "cannot be overridden",
        ),
        (
            {"type": "WEBHOOK", "name": "x", "url": NOWHERE, "customHeaders": {"a": 1}},
            "customHeaders[...]",
            "Expected `str`",
        ),
        ({"type": "WEBHOOK", "name": "x", "url": NOWHERE, "disabled": "yes"}, "disabled", "Expected `bool"),
    ],
)
def test_channel_validation(api: httpx.Client, body: dict[str, Any], field: str, detail: str) -> None:
    assert_problem(api.post(f"{BASE}/channels", json=body), 400, field=field, detail=detail)
    channel = create_channel(api)
    assert_problem(api.put(f"{BASE}/channels/{channel['id']}", json=body), 400, field=field, detail=detail)


def test_channel_malformed_bodies(api: httpx.Client) -> None:
    assert_problem(api.post(f"{BASE}/channels", content=b"{", headers={"content-type": "application/json"}), 400)
    assert_problem(api.post(f"{BASE}/channels", content=b""), 400, field="body")
    assert_problem(api.post(f"{BASE}/channels", json=[1]), 400, field="body")


def test_channel_delete_refused_while_a_rule_uses_it(api: httpx.Client) -> None:
    channel = create_channel(api)
    rule = create_rule(api, [channel["id"]], disabled=True)  # a disabled rule still holds on to it
    body = assert_problem(api.delete(f"{BASE}/channels/{channel['id']}"), 409, detail=rule["id"])
    assert body["extensions"]["rules"] == [rule["id"]]
    assert api.delete(f"{BASE}/rules/{rule['id']}").status_code == 204
    response = api.delete(f"{BASE}/channels/{channel['id']}")
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"{BASE}/channels/{channel['id']}").json()["deletedAt"]
    assert_problem(api.delete(f"{BASE}/channels/{channel['id']}"), 404)
    body2 = {"type": "WEBHOOK", "name": "x", "url": NOWHERE}
    assert_problem(api.put(f"{BASE}/channels/{channel['id']}", json=body2), 409, detail="deleted")


# -- rules ---------------------------------------------------------------------------------------------------


def test_rule_create_get_and_shape(api: httpx.Client, unique: Unique) -> None:
    channels = [create_channel(api)["id"], create_channel(api)["id"]]
    key = unique("tokens")
    feature = api.post("/api/v1/features", json={"key": key, "name": "Tokens"})
    assert feature.status_code == 201, feature.text
    rule = create_rule(
        api,
        channels,
        name="Tokens 80/100%",
        features=[key],
        metadata={"team": "a"},
        thresholds=[
            {"value": 80, "type": "usage_percentage"},
            {"value": 100, "type": "PERCENT"},
            {"value": 0.5, "type": "balance_value"},
            {"value": 1500, "type": "usage_value"},
        ],
    )
    assert ULID.match(rule["id"])
    assert {k: v for k, v in rule.items() if k not in ("id", "createdAt", "updatedAt")} == {
        "type": "entitlements.balance.threshold",
        "name": "Tokens 80/100%",
        "disabled": False,
        "channels": [{"id": channels[0], "type": "WEBHOOK"}, {"id": channels[1], "type": "WEBHOOK"}],
        "features": [{"id": feature.json()["id"], "key": key}],
        "metadata": {"team": "a"},
        "thresholds": [
            {"value": 80, "type": "usage_percentage"},
            {"value": 100, "type": "PERCENT"},
            {"value": 0.5, "type": "balance_value"},
            {"value": 1500, "type": "usage_value"},
        ],
    }
    assert api.get(f"{BASE}/rules/{rule['id']}").json() == rule
    reset = create_rule(api, channels[:1], type="entitlements.reset", name="resets", thresholds=None)
    assert reset["type"] == "entitlements.reset" and "thresholds" not in reset and "features" not in reset
    assert_problem(api.get(f"{BASE}/rules/01J00000000000000000000000"), 404, detail="notification rule not found")


def test_rule_replace_and_delete(api: httpx.Client) -> None:
    first, second = create_channel(api)["id"], create_channel(api)["id"]
    rule = create_rule(api, [first])
    body = {
        "type": "entitlements.balance.threshold",
        "name": "renamed",
        "channels": [second],
        "disabled": True,
        "thresholds": [{"value": 10, "type": "balance_value"}],
    }
    response = api.put(f"{BASE}/rules/{rule['id']}", json=body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "renamed" and updated["disabled"] is True
    assert updated["channels"] == [{"id": second, "type": "WEBHOOK"}]
    assert updated["thresholds"] == [{"value": 10, "type": "balance_value"}]
    assert api.get(f"{BASE}/rules/{rule['id']}").json() == updated
    assert api.delete(f"{BASE}/channels/{first}").status_code == 204  # no longer referenced
    assert api.delete(f"{BASE}/rules/{rule['id']}").status_code == 204
    assert api.get(f"{BASE}/rules/{rule['id']}").json()["deletedAt"]
    assert_problem(api.delete(f"{BASE}/rules/{rule['id']}"), 404)
    assert_problem(api.put(f"{BASE}/rules/{rule['id']}", json=body), 409, detail="deleted")
    assert_problem(api.post(f"{BASE}/rules/{rule['id']}/test"), 409, detail="deleted")
    assert_problem(api.put(f"{BASE}/rules/01J00000000000000000000000", json=body), 404)
    assert_problem(api.delete(f"{BASE}/rules/01J00000000000000000000000"), 404)


def test_rule_list_filters(api: httpx.Client, unique: Unique) -> None:
    a, b = create_channel(api)["id"], create_channel(api)["id"]
    key = unique("feat")
    feature_id = api.post("/api/v1/features", json={"key": key, "name": "F"}).json()["id"]
    on_a = create_rule(api, [a], features=[key])
    on_b = create_rule(api, [b])
    on_both_disabled = create_rule(api, [a, b], disabled=True)
    assert ids(listed(api, "rules", channel=a)) == [on_a["id"]]
    assert sorted(ids(listed(api, "rules", channel=[a, b]))) == sorted([on_a["id"], on_b["id"]])
    assert sorted(ids(listed(api, "rules", channel=[a, b], includeDisabled="true"))) == sorted(
        [on_a["id"], on_b["id"], on_both_disabled["id"]]
    )
    assert ids(listed(api, "rules", feature=key)) == [on_a["id"]]
    assert ids(listed(api, "rules", feature=feature_id)) == [on_a["id"]]  # named by key, found by id
    assert api.delete(f"{BASE}/rules/{on_b['id']}").status_code == 204
    assert ids(listed(api, "rules", channel=b)) == []
    assert ids(listed(api, "rules", channel=b, includeDeleted="true")) == [on_b["id"]]


def _rule_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "entitlements.balance.threshold",
        "name": "r",
        "channels": ["CHANNEL"],
        "thresholds": [{"value": 50, "type": "usage_percentage"}],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (_rule_body(type=None), "type", "is required"),
        (_rule_body(type="invoice.created"), "type", "invoicing"),
        (_rule_body(type="entitlements.nope"), "type", "must be one of"),
        (_rule_body(name=""), "name", "1-256"),
        (_rule_body(channels=[]), "channels", "1-5"),
        (_rule_body(channels=None), "channels", "is required"),
        (_rule_body(channels=["CHANNEL"] * 2), "channels", "must not repeat"),
        (_rule_body(channels=["01J00000000000000000000000"]), "channels[0]", "no such notification channel"),
        (_rule_body(features=["no_such_feature"]), "features[0]", "no such feature"),
        (_rule_body(thresholds=[]), "thresholds", "1-10"),
        (_rule_body(thresholds=None), "thresholds", "1-10"),
        (_rule_body(thresholds=[{"value": v, "type": "usage_value"} for v in range(1, 12)]), "thresholds", "1-10"),
        (_rule_body(thresholds=[{"value": 5, "type": "gauge"}]), "thresholds[0].type", "must be one of"),
        (_rule_body(thresholds=[{"value": 0, "type": "usage_value"}]), "thresholds[0].value", "greater than 0"),
        (_rule_body(thresholds=[{"value": -1, "type": "balance_value"}]), "thresholds[0].value", "0 or more"),
        (_rule_body(thresholds=[{"value": 1e300, "type": "NUMBER"}]), "thresholds[0].value", "at most 1e15"),
        (_rule_body(thresholds=[{"value": True, "type": "NUMBER"}]), "thresholds[0].value", "Expected `decimal`"),
        (_rule_body(thresholds=[{"type": "NUMBER"}]), "thresholds[0].value", "is required"),
        (_rule_body(type="entitlements.reset"), "thresholds", "only entitlements.balance.threshold"),
        (_rule_body(metadata={"a": 1}), "metadata[...]", "Expected `str`"),
    ],
)
def test_rule_validation(api: httpx.Client, body: dict[str, Any], field: str, detail: str) -> None:
    channel = create_channel(api)["id"]
    if "channels" in body:
        body = {**body, "channels": [channel if c == "CHANNEL" else c for c in body["channels"]]}
    assert_problem(api.post(f"{BASE}/rules", json=body), 400, field=field, detail=detail)
    rule = create_rule(api, [channel])
    assert_problem(api.put(f"{BASE}/rules/{rule['id']}", json=body), 400, field=field, detail=detail)


def test_rule_with_a_deleted_channel_is_refused(api: httpx.Client) -> None:
    channel = create_channel(api)
    assert api.delete(f"{BASE}/channels/{channel['id']}").status_code == 204
    body = _rule_body(channels=[channel["id"]])
    assert_problem(api.post(f"{BASE}/rules", json=body), 400, field="channels[0]")


# -- rule tests and events -----------------------------------------------------------------------------------


def test_rule_test_creates_a_real_event(api: httpx.Client) -> None:
    channel = create_channel(api)
    disabled = create_channel(api, disabled=True)
    rule = create_rule(api, [channel["id"], disabled["id"]], thresholds=[{"value": 75, "type": "usage_percentage"}])
    response = api.post(f"{BASE}/rules/{rule['id']}/test")
    assert response.status_code == 201, response.text
    event = response.json()
    assert ULID.match(event["id"])
    assert event["type"] == "entitlements.balance.threshold"
    assert event["annotations"] == {"notification.rule.test": True}
    assert event["rule"] == rule
    [status] = event["deliveryStatus"]  # the disabled channel gets nothing
    assert status["channel"] == {"id": channel["id"], "type": "WEBHOOK"}
    assert status["state"] in ("PENDING", "SENDING", "FAILED") and isinstance(status["attempts"], list)
    payload = event["payload"]
    assert payload["id"] == event["id"] and payload["type"] == event["type"]
    assert payload["timestamp"] == event["createdAt"]
    assert set(payload["data"]) == {"entitlement", "feature", "subject", "customer", "value", "threshold"}
    assert payload["data"]["threshold"] == {"value": 75, "type": "usage_percentage"}
    assert payload["data"]["entitlement"]["type"] == "metered"
    got = api.get(f"{BASE}/events/{event['id']}")
    assert got.status_code == 200
    assert {k: v for k, v in got.json().items() if k != "deliveryStatus"} == {
        k: v for k, v in event.items() if k != "deliveryStatus"
    }
    reset_rule = create_rule(api, [channel["id"]], type="entitlements.reset", thresholds=None)
    reset_event = api.post(f"{BASE}/rules/{reset_rule['id']}/test").json()
    assert reset_event["type"] == "entitlements.reset" and "threshold" not in reset_event["payload"]["data"]
    assert_problem(api.post(f"{BASE}/rules/01J00000000000000000000000/test"), 404)


def test_events_list_filters_order_and_pages(api: httpx.Client) -> None:
    a, b = create_channel(api)["id"], create_channel(api)["id"]
    rule_a, rule_b = create_rule(api, [a]), create_rule(api, [b])
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = api.post(f"{BASE}/rules/{rule_a['id']}/test").json()
    second = api.post(f"{BASE}/rules/{rule_a['id']}/test").json()
    other = api.post(f"{BASE}/rules/{rule_b['id']}/test").json()
    after = datetime.now(UTC) + timedelta(seconds=1)

    assert ids(listed(api, "events", rule=rule_a["id"])) == [second["id"], first["id"]]  # newest first
    assert ids(listed(api, "events", rule=rule_a["id"], order="ASC")) == [first["id"], second["id"]]
    assert ids(listed(api, "events", rule=rule_a["id"], orderBy="id", order="asc")) == [first["id"], second["id"]]
    assert sorted(ids(listed(api, "events", rule=[rule_a["id"], rule_b["id"]]))) == sorted(
        [first["id"], second["id"], other["id"]]
    )
    assert ids(listed(api, "events", channel=b)) == [other["id"]]
    window = ids(listed(api, "events", **{"from": before.isoformat(), "to": after.isoformat()}))
    assert {first["id"], second["id"], other["id"]} <= set(window)
    assert ids(listed(api, "events", rule=rule_a["id"], **{"from": after.isoformat()})) == []
    assert ids(listed(api, "events", rule=rule_a["id"], subject="test_subject")) == []  # test events have no subject
    page = api.get(f"{BASE}/events", params={"rule": rule_a["id"], "page": 2, "pageSize": 1}).json()
    assert page["totalCount"] == 2 and ids(page) == [first["id"]]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"from": "yesterday"}, "from: invalid RFC 3339"),
        ({"to": "2026-01-01"}, "to: invalid RFC 3339"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from: must not be after to"),
        ({"order": "UP"}, "order: must be one of ASC, DESC"),
        ({"orderBy": "name"}, "orderBy: must be one of id, createdAt"),
        ({"page": 0}, "page: must be between"),
        ({"pageSize": 1001}, "pageSize: must be between"),
    ],
)
def test_events_list_validation(api: httpx.Client, params: dict[str, Any], detail: str) -> None:
    assert_problem(api.get(f"{BASE}/events", params=params), 400, field=detail.split(":")[0], detail=detail)


@pytest.mark.parametrize("what", ["channels", "rules"])
def test_list_validation(api: httpx.Client, what: str) -> None:
    assert_problem(api.get(f"{BASE}/{what}", params={"orderBy": "name"}), 400, field="orderBy", detail="must be one of")
    assert_problem(api.get(f"{BASE}/{what}", params={"includeDeleted": "maybe"}), 400, field="includeDeleted")
    assert_problem(api.get(f"{BASE}/{what}", params={"page": "x"}), 400, field="page", detail="must be an integer")


def test_resend(api: httpx.Client) -> None:
    a, b = create_channel(api)["id"], create_channel(api)["id"]
    rule = create_rule(api, [a, b])
    event = api.post(f"{BASE}/rules/{rule['id']}/test").json()
    for body in (None, {}, {"channels": [a]}, {"channels": [a, b]}):
        response = api.post(f"{BASE}/events/{event['id']}/resend", json=body)
        assert response.status_code == 202, response.text
        assert response.content == b""
    states = {s["channel"]["id"]: s for s in api.get(f"{BASE}/events/{event['id']}").json()["deliveryStatus"]}
    assert set(states) == {a, b}
    assert all(s["state"] in ("RESENDING", "SENDING", "FAILED") for s in states.values())
    assert_problem(
        api.post(f"{BASE}/events/{event['id']}/resend", json={"channels": ["01J00000000000000000000000"]}),
        400,
        field="channels[0]",
        detail="was not sent to channel",
    )
    assert_problem(api.post(f"{BASE}/events/{event['id']}/resend", json={"channels": "a"}), 400, field="channels")
    assert_problem(api.post(f"{BASE}/events/01J00000000000000000000000/resend", json={}), 404)
    assert_problem(api.get(f"{BASE}/events/01J00000000000000000000000"), 404, detail="notification event not found")


def test_unknown_methods_are_405(api: httpx.Client) -> None:
    assert_problem(api.patch(f"{BASE}/channels"), 405)
    assert_problem(api.get(f"{BASE}/rules/x/test"), 405)
    assert_problem(api.delete(f"{BASE}/events/x"), 405)
