"""Webhook delivery end to end: a real `meterd serve`, a real receiver on a local port. Signatures verify with
the standardwebhooks library; failures and timeouts are retried with backoff until success or the last
attempt; resends go out again; a delivery cut off by a killed server is retried by the next one."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from tests.conftest import Server, wait_for
from tests.integration.webhook_receiver import Receiver, receiving

BASE = "/api/v1/notification"
FAST_RETRIES = {
    "METERD_NOTIFICATIONS__RETRY_BASE_DELAY": "PT0.05S",
    "METERD_NOTIFICATIONS__RETRY_MAX_DELAY": "PT0.2S",
    "METERD_NOTIFICATIONS__MAX_ATTEMPTS": "4",
    "METERD_NOTIFICATIONS__TIMEOUT": "PT0.5S",
    "METERD_NOTIFICATIONS__LEASE_TIMEOUT": "PT1.5S",
    "METERD_NOTIFICATIONS__POLL_INTERVAL": "PT0.1S",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("webhooks") / "data", env=FAST_RETRIES).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(fast: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fast.url, timeout=30) as client:
        yield client


def hook(api: httpx.Client, receiver: Receiver, **body: Any) -> tuple[dict[str, Any], str]:
    path = f"/hook/{uuid.uuid4().hex[:8]}"
    response = api.post(f"{BASE}/channels", json={"type": "WEBHOOK", "name": "hook", "url": receiver.url(path), **body})
    assert response.status_code == 201, response.text
    return response.json(), path


def rule_for(api: httpx.Client, *channels: str) -> dict[str, Any]:
    body = {
        "type": "entitlements.balance.threshold",
        "name": "alerts",
        "channels": list(channels),
        "thresholds": [{"value": 90, "type": "usage_percentage"}],
    }
    response = api.post(f"{BASE}/rules", json=body)
    assert response.status_code == 201, response.text
    rule: dict[str, Any] = response.json()
    return rule


def fire(api: httpx.Client, rule: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"{BASE}/rules/{rule['id']}/test")
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def status_when(api: httpx.Client, event_id: str, *states: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The event's delivery statuses once every one is in one of `states`."""

    def check() -> list[dict[str, Any]] | None:
        statuses: list[dict[str, Any]] = api.get(f"{BASE}/events/{event_id}").json()["deliveryStatus"]
        return statuses if statuses and all(s["state"] in states for s in statuses) else None

    result: list[dict[str, Any]] = wait_for(check, timeout=timeout)
    return result


def test_delivery_is_signed_and_recorded(api: httpx.Client, receiver: Receiver) -> None:
    channel, path = hook(api, receiver, customHeaders={"X-Tenant": "acme"})
    event = fire(api, rule_for(api, channel["id"]))
    [status] = status_when(api, event["id"], "SUCCESS")
    [got] = receiver.at(path)
    assert got.headers["webhook-id"] == event["id"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["X-Tenant"] == "acme"
    assert got.headers["svix-signature"] == got.headers["webhook-signature"]
    payload = Webhook(channel["signingSecret"]).verify(got.body, got.headers)
    assert payload == event["payload"]
    assert json.loads(got.body) == event["payload"]
    with pytest.raises(Exception, match="signature"):
        Webhook(channel["signingSecret"]).verify(got.body + b" ", got.headers)
    assert status["reason"] == "" and "nextAttempt" not in status
    [attempt] = status["attempts"]
    assert attempt["state"] == "SUCCESS"
    assert attempt["response"]["statusCode"] == 200 and attempt["response"]["body"] == "status 200"
    assert attempt["response"]["url"] == receiver.url(path) and attempt["response"]["durationMs"] >= 0


def attempts_metric(api: httpx.Client) -> dict[str, float]:
    """meterd_webhook_attempts_total by result, from /metrics."""
    families = text_string_to_metric_families(api.get("/metrics").text)
    family = next(f for f in families if f.name == "meterd_webhook_attempts")
    return {s.labels["result"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_failures_and_timeouts_are_retried_until_success(api: httpx.Client, receiver: Receiver) -> None:
    channel, path = hook(api, receiver)
    receiver.script[path] = [500, (1.0, 200), 503]  # the 1 s answer comes after the 0.5 s timeout
    before = attempts_metric(api)
    event = fire(api, rule_for(api, channel["id"]))
    [status] = status_when(api, event["id"], "SUCCESS")
    after = attempts_metric(api)
    assert (after["ok"] - before["ok"], after["failed"] - before["failed"]) == (1, 3)
    attempts = status["attempts"]
    assert [a["state"] for a in attempts] == ["FAILED", "FAILED", "FAILED", "SUCCESS"]
    assert [a["response"].get("statusCode") for a in attempts] == [500, None, 503, 200]
    assert "timed out" in attempts[1]["response"]["body"]
    assert attempts[0]["response"]["body"] == "status 500"
    requests = receiver.at(path)
    assert len(requests) == 4
    assert {r.headers["webhook-id"] for r in requests} == {event["id"]}  # stable across retries
    for r in requests:
        Webhook(channel["signingSecret"]).verify(r.body, r.headers)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert all(gap >= 0.02 for gap in gaps)  # backed off, not hammered


def test_gives_up_after_the_last_attempt_then_resend(api: httpx.Client, receiver: Receiver) -> None:
    channel, path = hook(api, receiver)
    receiver.script[path] = [500, 500, 500, 500]
    event = fire(api, rule_for(api, channel["id"]))
    [status] = status_when(api, event["id"], "FAILED")
    assert len(status["attempts"]) == 4 and "nextAttempt" not in status
    assert "gave up after 4 attempts" in status["reason"] and "HTTP 500" in status["reason"]
    time.sleep(0.5)
    assert len(receiver.at(path)) == 4  # nothing more once FAILED

    assert api.post(f"{BASE}/events/{event['id']}/resend", json={}).status_code == 202
    [status] = status_when(api, event["id"], "SUCCESS")
    assert [a["state"] for a in status["attempts"]] == ["FAILED"] * 4 + ["SUCCESS"]
    assert len(receiver.at(path)) == 5
    assert receiver.at(path)[-1].headers["webhook-id"] == event["id"]


def test_resend_to_one_channel(api: httpx.Client, receiver: Receiver) -> None:
    (a, path_a), (b, path_b) = hook(api, receiver), hook(api, receiver)
    event = fire(api, rule_for(api, a["id"], b["id"]))
    status_when(api, event["id"], "SUCCESS")
    assert len(receiver.at(path_a)) == len(receiver.at(path_b)) == 1
    response = api.post(f"{BASE}/events/{event['id']}/resend", json={"channels": [b["id"]]})
    assert response.status_code == 202
    wait_for(lambda: len(receiver.at(path_b)) == 2)
    statuses = {s["channel"]["id"]: s for s in status_when(api, event["id"], "SUCCESS")}
    assert len(statuses[a["id"]]["attempts"]) == 1 and len(statuses[b["id"]]["attempts"]) == 2
    time.sleep(0.3)
    assert len(receiver.at(path_a)) == 1


def test_disabled_channel_gets_nothing(api: httpx.Client, receiver: Receiver) -> None:
    (on, _), (off, path_off) = hook(api, receiver), hook(api, receiver, disabled=True)
    event = fire(api, rule_for(api, on["id"], off["id"]))
    [status] = status_when(api, event["id"], "SUCCESS")
    assert status["channel"]["id"] == on["id"]
    assert receiver.at(path_off) == []


@pytest.mark.slow
def test_a_delivery_cut_off_by_a_crash_is_retried_after_the_lease(tmp_path: Path, receiver: Receiver) -> None:
    data = tmp_path / "data"
    first = Server(data, env={**FAST_RETRIES, "METERD_NOTIFICATIONS__TIMEOUT": "PT1S"}).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as api:
            channel, path = hook(api, receiver)
            receiver.script[path] = [(2.0, 200)]  # holds the first request while the server dies
            event = fire(api, rule_for(api, channel["id"]))
            wait_for(lambda: receiver.at(path))
    finally:
        first.kill()
    second = Server(data, env=FAST_RETRIES).start()  # the first run's lease (1.5 s) must expire first
    try:
        with httpx.Client(base_url=second.url, timeout=30) as api:
            [status] = status_when(api, event["id"], "SUCCESS", timeout=15)
    finally:
        second.stop()
    attempts = status["attempts"]
    assert [a["state"] for a in attempts] == ["FAILED", "SUCCESS"]
    assert "no outcome recorded" in attempts[0]["response"]["body"]
    requests = receiver.at(path)
    assert len(requests) == 2 and requests[1].at - requests[0].at >= 1.4
    assert {r.headers["webhook-id"] for r in requests} == {event["id"]}
