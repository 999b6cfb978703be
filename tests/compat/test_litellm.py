"""LiteLLM (litellm==1.106.2) metering through its built-in `openmeter` callback into a running meterd.

Each scenario runs LiteLLM in a process of its own (tests/compat/litellm_driver.py, or the `litellm` proxy CLI), with
its own event type, so LiteLLM's global state and background threads never leak between tests. meterd's totals must
equal what LiteLLM reported in its responses: tokens per (model, subject), calls, and cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, free_port, wait_for

pytest.importorskip("litellm")

pytestmark = pytest.mark.compat

DRIVER = Path(__file__).with_name("litellm_driver.py")
MOCKS = (
    "Hello!",
    "A somewhat longer answer, so that the completion token counts differ between calls.",
    "Metering is counting; billing is pricing what was counted.",
)


def _env(server: Server, event_type: str) -> dict[str, str]:
    return {
        **os.environ,
        "OPENMETER_API_ENDPOINT": server.url,
        "OPENMETER_API_KEY": "compat-test-key",
        "OPENMETER_EVENT_TYPE": event_type,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }


def _create_meters(api: httpx.Client, event_type: str) -> dict[str, str]:
    """A SUM of total_tokens, a SUM of cost and a COUNT, each grouped by model."""
    slugs = {kind: f"{event_type}_{kind}" for kind in ("tokens", "cost", "calls")}
    specs = {
        "tokens": {"aggregation": "SUM", "valueProperty": "$.total_tokens"},
        "cost": {"aggregation": "SUM", "valueProperty": "$.cost"},
        "calls": {"aggregation": "COUNT"},
    }
    for kind, spec in specs.items():
        body = {"slug": slugs[kind], "eventType": event_type, "groupBy": {"model": "$.model"}, **spec}
        response = api.post("/api/v1/meters", json=body)
        assert response.status_code == 201, response.text
    return slugs


def _by_model_subject(api: httpx.Client, slug: str) -> dict[tuple[str, str], float]:
    response = api.get(f"/api/v1/meters/{slug}/query", params=[("groupBy", "model"), ("groupBy", "subject")])
    assert response.status_code == 200, response.text
    return {(row["groupBy"]["model"], row["subject"]): row["value"] for row in response.json()["data"]}


def _calls(users: list[str], models: list[str], per_pair: int) -> list[dict[str, Any]]:
    calls = []
    for u, user in enumerate(users):
        for m, model in enumerate(models):
            for i in range(per_pair):
                calls.append(
                    {
                        "model": model,
                        "user": user,
                        "content": f"question {i} " * (1 + u + m + i),  # distinct prompt lengths
                        "mock": MOCKS[(u + m + i) % len(MOCKS)],
                    }
                )
    return calls


def _run_driver(server: Server, event_type: str, spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(spec)],
        env=_env(server, event_type),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"driver failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _assert_metered(api: httpx.Client, slugs: dict[str, str], records: list[dict[str, Any]]) -> None:
    """meterd's totals per (model, subject) equal the usage LiteLLM reported; each call counted exactly once."""
    tokens: dict[tuple[str, str], float] = defaultdict(float)
    cost: dict[tuple[str, str], float] = defaultdict(float)
    calls: Counter[tuple[str, str]] = Counter()
    for record in records:
        key = (record["model"].split("/")[-1], record["user"])  # the callback strips the provider prefix
        assert record["total_tokens"] == record["prompt_tokens"] + record["completion_tokens"] > 0
        tokens[key] += record["total_tokens"]
        cost[key] += record["cost"]
        calls[key] += 1
    assert len({r["id"] for r in records}) == len(records), "LiteLLM reused a response id"

    wait_for(lambda: _by_model_subject(api, slugs["calls"]) == dict(calls), timeout=15)
    assert _by_model_subject(api, slugs["calls"]) == dict(calls)
    assert _by_model_subject(api, slugs["tokens"]) == dict(tokens)
    metered_cost = _by_model_subject(api, slugs["cost"])
    assert metered_cost.keys() == cost.keys()
    for key, value in cost.items():
        assert metered_cost[key] == pytest.approx(value, rel=1e-9), key


def _check_events(api: httpx.Client, server_users: list[str], records: list[dict[str, Any]], event_type: str) -> None:
    """The raw events carry LiteLLM's response ids, the users as subjects and the fixed source."""
    seen: dict[str, dict[str, Any]] = {}
    for user in server_users:
        response = api.get("/api/v1/events", params={"subject": user, "limit": 100})
        assert response.status_code == 200, response.text
        seen.update({item["event"]["id"]: item["event"] for item in response.json()})
    expected = {r["id"]: r for r in records}
    assert expected.keys() <= seen.keys()
    for event_id, record in expected.items():
        stored = seen[event_id]
        assert stored["type"] == event_type and stored["source"] == "litellm-proxy"
        assert stored["subject"] == record["user"]
        assert stored["data"]["total_tokens"] == record["total_tokens"]
        assert stored["data"]["prompt_tokens"] == record["prompt_tokens"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_litellm_sdk_callback(server: Server, api: httpx.Client, mode: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    event_type = f"litellm_tokens_{mode}_{suffix}"
    slugs = _create_meters(api, event_type)
    users = [f"alice-{suffix}", f"bob-{suffix}", f"carol-{suffix}"]
    models = ["gpt-4o-mini", "openai/gpt-4o", "gpt-3.5-turbo"]
    calls = _calls(users, models, per_pair=2)
    result = _run_driver(
        server, event_type, {"mode": mode, "meterd": server.url, "count_slug": slugs["calls"], "calls": calls}
    )
    records = result["calls"]
    assert len(records) == len(calls) == 18
    assert result["delivered"] == len(calls), "LiteLLM did not deliver every event within 30 s"
    _assert_metered(api, slugs, records)
    _check_events(api, users, records, event_type)


def test_litellm_sdk_callback_late_meter(server: Server, api: httpx.Client) -> None:
    """Queries aggregate raw events: a meter created after the traffic still sees all of it."""
    suffix = uuid.uuid4().hex[:8]
    event_type = f"litellm_tokens_late_{suffix}"
    probe = f"{event_type}_probe"  # a COUNT meter the driver polls; the metered ones are created afterwards
    created = api.post("/api/v1/meters", json={"slug": probe, "eventType": event_type, "aggregation": "COUNT"})
    assert created.status_code == 201, created.text
    users = [f"dave-{suffix}", f"erin-{suffix}"]
    calls = _calls(users, ["gpt-4o-mini"], per_pair=3)
    result = _run_driver(
        server, event_type, {"mode": "sync", "meterd": server.url, "count_slug": probe, "calls": calls}
    )
    assert result["delivered"] == len(calls)
    slugs = _create_meters(api, event_type)
    _assert_metered(api, slugs, result["calls"])


PROXY_CONFIG = """
model_list:
  - model_name: mock-small
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-compat-fake
      mock_response: "Hello from the small mock model."
  - model_name: mock-large
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-compat-fake
      mock_response: "A longer answer from the large mock model, so that its token counts are different."
litellm_settings:
  callbacks: ["openmeter"]
"""


@pytest.fixture
def litellm_proxy(server: Server, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A `litellm --config ... --port ...` proxy whose openmeter callback points at meterd.

    Yields (url, event type, master key)."""
    binary = Path(sys.executable).with_name("litellm")
    if not binary.exists():
        pytest.skip("the litellm proxy CLI is not installed (pip install 'litellm[proxy]==1.106.2')")
    config = tmp_path / "litellm.yaml"
    config.write_text(PROXY_CONFIG)
    event_type = f"litellm_tokens_proxy_{uuid.uuid4().hex[:8]}"
    master_key = f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex}"  # the proxy refuses to start without a strong one
    port = free_port()
    log_path = tmp_path / "litellm-proxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"],
            env={**_env(server, event_type), "LITELLM_MASTER_KEY": master_key},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"litellm proxy exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"litellm proxy not ready:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        yield url, event_type, master_key
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_litellm_proxy_callback(api: httpx.Client, litellm_proxy: tuple[str, str, str]) -> None:
    proxy_url, event_type, master_key = litellm_proxy
    slugs = _create_meters(api, event_type)
    suffix = uuid.uuid4().hex[:8]
    users = [f"frank-{suffix}", f"grace-{suffix}"]
    underlying = {"mock-small": "gpt-4o-mini", "mock-large": "gpt-4o"}
    records = []
    headers = {"Authorization": f"Bearer {master_key}"}
    with httpx.Client(base_url=proxy_url, timeout=60, headers=headers) as proxy:
        for u, user in enumerate(users):
            for m, public in enumerate(underlying):
                for i in range(2):
                    body = {
                        "model": public,
                        "user": user,
                        "messages": [{"role": "user", "content": f"hello {i} " * (1 + u + m + i)}],
                    }
                    response = proxy.post("/v1/chat/completions", json=body)
                    assert response.status_code == 200, response.text
                    payload = response.json()
                    usage = payload["usage"]
                    cost = response.headers.get("x-litellm-response-cost")
                    records.append(
                        {
                            "id": payload["id"],
                            "model": underlying[public],  # the event names the underlying model, not model_name
                            "user": user,
                            "prompt_tokens": usage["prompt_tokens"],
                            "completion_tokens": usage["completion_tokens"],
                            "total_tokens": usage["total_tokens"],
                            "cost": float(cost) if cost is not None else None,
                        }
                    )
    # The proxy's callback runs after the response is sent: wait for every call before comparing.
    wait_for(lambda: sum(_by_model_subject(api, slugs["calls"]).values()) >= len(records), timeout=30)
    if any(r["cost"] is None for r in records):
        pytest.fail("the proxy did not report x-litellm-response-cost")
    _assert_metered(api, slugs, records)
    _check_events(api, users, records, event_type)
