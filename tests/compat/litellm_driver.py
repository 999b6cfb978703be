"""Runs LiteLLM completions with its `openmeter` callback, in a process of its own (LiteLLM keeps global state and
background threads). Used by test_litellm.py; not a test module.

    python litellm_driver.py '<json spec>'

spec: {"mode": "sync" | "async", "meterd": url, "count_slug": slug, "calls": [{"model", "user", "content", "mock"}]}
  or {"mode": "quota", "value_url": url, "call": {...}, "max_calls": n} (see run_quota)

The environment must carry OPENMETER_API_ENDPOINT, OPENMETER_API_KEY, OPENMETER_EVENT_TYPE and
LITELLM_LOCAL_MODEL_COST_MAP before this starts. After the calls it keeps the process (and, for async, the event loop)
alive, polling meterd's COUNT meter until every event has arrived or 30 s pass, then prints one JSON object:
{"calls": [{"id", "model", "user", "prompt_tokens", "completion_tokens", "total_tokens", "cost"}], "delivered": n}."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import litellm

DEADLINE_SECONDS = 30.0


def _record(call: dict[str, Any], response: Any) -> dict[str, Any]:
    usage = response.usage
    return {
        "id": response.id,
        "model": call["model"],
        "user": call["user"],
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost": response._hidden_params.get("response_cost"),
    }


def _kwargs(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": call["model"],
        "messages": [{"role": "user", "content": call["content"]}],
        "user": call["user"],
        "mock_response": call["mock"],
    }


def _count(response: httpx.Response) -> int:
    response.raise_for_status()
    rows = response.json()["data"]
    return int(rows[0]["value"]) if rows else 0


def run_sync(spec: dict[str, Any]) -> dict[str, Any]:
    records = [_record(call, litellm.completion(**_kwargs(call))) for call in spec["calls"]]
    url = f"{spec['meterd']}/api/v1/meters/{spec['count_slug']}/query"
    delivered = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while delivered < len(records) and time.monotonic() < deadline:
        time.sleep(0.2)
        delivered = _count(httpx.get(url, timeout=10))
    return {"calls": records, "delivered": delivered}


async def run_async(spec: dict[str, Any]) -> dict[str, Any]:
    responses = await asyncio.gather(*(litellm.acompletion(**_kwargs(call)) for call in spec["calls"]))
    records = [_record(call, response) for call, response in zip(spec["calls"], responses, strict=True)]
    url = f"{spec['meterd']}/api/v1/meters/{spec['count_slug']}/query"
    delivered = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    async with httpx.AsyncClient(timeout=10) as client:
        # The callback runs on LiteLLM's logging worker in this loop: keep the loop busy-but-yielding until done.
        while delivered < len(records) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            delivered = _count(await client.get(url))
    return {"calls": records, "delivered": delivered}


def run_quota(spec: dict[str, Any]) -> dict[str, Any]:
    """An LLM app that asks meterd before every call (as a proxy would) and stops when access is denied. After
    each call it waits until the entitlement's usage shows the call, and records how long that took (the
    callback's delivery plus meterd's freshness)."""
    url = spec["value_url"]
    records, lags = [], []
    with httpx.Client(timeout=10) as client:
        for _ in range(spec["max_calls"]):
            value = client.get(url).json()
            if not value["hasAccess"]:
                break
            record = _record(spec["call"], litellm.completion(**_kwargs(spec["call"])))
            done = time.monotonic()
            records.append(record)
            expected = value["usage"] + record["total_tokens"]
            while client.get(url).json()["usage"] < expected and time.monotonic() - done < DEADLINE_SECONDS:
                time.sleep(0.01)
            lags.append(time.monotonic() - done)
        final = client.get(url).json()
    return {"calls": records, "lags": lags, "final": final}


def main() -> None:
    spec = json.loads(sys.argv[1])
    litellm.callbacks = ["openmeter"]
    if spec["mode"] == "quota":
        result = run_quota(spec)
    else:
        result = run_sync(spec) if spec["mode"] == "sync" else asyncio.run(run_async(spec))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
