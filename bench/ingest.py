"""Ingest benchmark: durable-204 throughput and latency of a real `meterd serve`, then an exactness check.

    .venv/bin/python -m bench.ingest --mode batch --seconds 20      # batches of 100 events
    .venv/bin/python -m bench.ingest --mode single --seconds 20     # one event per request (LiteLLM's way)

The load generator is a small asyncio HTTP/1.1 client with keep-alive connections (it must not be the
bottleneck on a 2-core machine). It prints requests/s, events/s, latency percentiles, freshness (204 to
visible in a query) and whether the meter total equals the number of acknowledged events."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.wire import exchange, request
from tests.conftest import Server


async def _connection(
    port: int, make_body, content_type: str, until: float, latencies: list[float], counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < until:
        body, n = make_body()
        started = time.perf_counter()
        code = await exchange(reader, writer, request(port, body, content_type))
        latencies.append(time.perf_counter() - started)
        if code == 204:
            counts[0] += n
        else:
            counts[1] += 1
    writer.close()


def _bodies(mode: str, etype: str, subjects: int):
    seq = 0

    def make():
        nonlocal seq
        if mode == "single":
            seq += 1
            event = {
                "specversion": "1.0",
                "type": etype,
                "id": f"{seq}-{uuid.uuid4().hex[:8]}",
                "source": "bench",
                "subject": f"customer-{seq % subjects}",
                "time": "2026-11-23T07:27:46.546345+00:00",
                "data": {"model": "gpt-4o-mini", "prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            }
            return json.dumps(event).encode(), 1
        batch = []
        for _ in range(100):
            seq += 1
            batch.append(
                {
                    "specversion": "1.0",
                    "type": etype,
                    "id": f"{seq}-{uuid.uuid4().hex[:8]}",
                    "source": "bench",
                    "subject": f"customer-{seq % subjects}",
                    "data": {"model": "gpt-4o-mini", "total_tokens": 30},
                }
            )
        return json.dumps(batch).encode(), 100

    return make


async def _run(port: int, mode: str, seconds: float, connections: int, etype: str) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    counts = [0, 0]
    content_type = "application/cloudevents+json" if mode == "single" else "application/cloudevents-batch+json"
    until = time.perf_counter() + seconds
    make = _bodies(mode, etype, 10_000)
    await asyncio.gather(*(_connection(port, make, content_type, until, latencies, counts) for _ in range(connections)))
    return latencies, counts


def _freshness(api: httpx.Client, etype: str, slug: str, samples: int = 20) -> list[float]:
    out = []
    for _ in range(samples):
        subject = uuid.uuid4().hex
        api.post(
            "/api/v1/events",
            json={
                "specversion": "1.0",
                "type": etype,
                "id": subject,
                "source": "fresh",
                "subject": subject,
                "data": {"total_tokens": 1},
            },
        )
        sent = time.perf_counter()
        while not api.get(f"/api/v1/meters/{slug}/query", params={"subject": subject}).json()["data"]:
            time.sleep(0.005)
        out.append(time.perf_counter() - sent)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["batch", "single"], default="batch")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=0, help="default: 8 (batch) or 32 (single)")
    args = parser.parse_args()
    connections = args.connections or (8 if args.mode == "batch" else 32)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            etype, slug = "bench_tokens", "bench_count"
            with httpx.Client(base_url=server.url, timeout=60) as api:
                api.post("/api/v1/meters", json={"slug": slug, "eventType": etype, "aggregation": "COUNT"})
                latencies, (acked, errors) = asyncio.run(_run(server.port, args.mode, args.seconds, connections, etype))
                deadline = time.time() + 60
                while time.time() < deadline:
                    rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
                    if rows and rows[0]["value"] >= acked:
                        break
                    time.sleep(0.2)
                stored = rows[0]["value"] if rows else 0
                fresh = _freshness(api, etype, slug)
        finally:
            server.stop()
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    print(f"mode={args.mode} connections={connections} seconds={args.seconds}")
    print(
        f"requests/s: {len(latencies) / args.seconds:,.0f}   events/s (204): {acked / args.seconds:,.0f}   "
        f"non-204: {errors}"
    )
    print(f"latency ms: p50 {pct(0.5):.1f}  p90 {pct(0.9):.1f}  p99 {pct(0.99):.1f}  max {latencies[-1] * 1000:.1f}")
    print(f"freshness ms (204 -> visible): median {statistics.median(fresh) * 1000:.0f}  max {max(fresh) * 1000:.0f}")
    print(f"exact: acknowledged {acked}, counted {stored:.0f} -> {'OK' if stored == acked else 'MISMATCH'}")


if __name__ == "__main__":
    main()
