"""Entitlement value checks at scale: 10M events, 10,000 customers, each with a metered entitlement.

    .venv/bin/python -m bench.entitlements --data-dir /tmp/meterd-10m      # reuses a dir bench.query loaded
    .venv/bin/python -m bench.entitlements --events 1000000 --customers 1000 --seconds 10   # smaller

Steps: load the events (bench.data: 10,000 Zipf-skewed customers over October 2026) if the data dir does not
have them yet; give every customer an annual token quota (a metered entitlement on the tokens meter, usage
period a year anchored at 2026-01-01, 100M tokens issued); then
1. cold checks: each customer's value once (the engine runs, period-start snapshots are cached);
2. hot checks: closed-loop value checks from keep-alive connections for --seconds: requests/s and latency;
3. exactness: usage, balance and overage of a sample of customers equal the meter's own total;
4. under ingest: checks offered at --check-rate while fresh events arrive at --ingest-rate (from another
   process), and freshness: how long after its 204 an event shows in the value.
Results go to bench/results/entitlements.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.data import EVENT_TYPE, subjects, zipf_weights
from bench.query import load_events, save, served
from bench.wire import exchange, exchange_body, get, request

FEATURE = "bench_quota"
QUOTA = 100_000_000
YEAR = {"interval": "YEAR", "anchor": "2026-01-01T00:00:00Z"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _setup(base: str, names: list[str], concurrency: int = 8) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as api:
        await api.post("/api/v1/features", json={"key": FEATURE, "name": "Annual tokens", "meterSlug": "bench_tokens"})
        queue: asyncio.Queue[str] = asyncio.Queue()
        for name in names:
            queue.put_nowait(name)

        async def worker() -> None:
            while not queue.empty():
                name = queue.get_nowait()
                r = await api.post("/api/v1/customers", json={"name": name, "key": name})
                assert r.status_code in (201, 409), r.text
                body = {
                    "type": "metered",
                    "featureKey": FEATURE,
                    "usagePeriod": YEAR,
                    "measureUsageFrom": "2026-01-01T00:00:00Z",
                    "issue": {"amount": QUOTA},
                }
                r = await api.post(f"/api/v2/customers/{name}/entitlements", json=body)
                assert r.status_code in (201, 409), r.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))


class _Hooks(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Hooks.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _alerts(api: httpx.Client) -> ThreadingHTTPServer:
    """A local webhook receiver, and a rule alerting at 80% and 100% of every quota."""
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    channel = api.post("/api/v1/notification/channels", json={"type": "WEBHOOK", "name": "bench", "url": url})
    rule = {
        "type": "entitlements.balance.threshold",
        "name": "quota alerts",
        "channels": [channel.json()["id"]],
        "features": [FEATURE],
        "thresholds": [{"type": "usage_percentage", "value": 80}, {"type": "usage_percentage", "value": 100}],
    }
    assert api.post("/api/v1/notification/rules", json=rule).status_code == 201
    return receiver


def _value_path(name: str) -> str:
    return f"/api/v2/customers/{name}/entitlements/{FEATURE}/value"


async def _checks(
    port: int,
    pick,
    seconds: float | None,
    connections: int,
    names: list[str] | None = None,
    rate: float | None = None,
) -> tuple[list[float], int]:
    """Value checks from keep-alive connections: as fast as answers come (closed loop), or paced to `rate`
    per second in all; with `names`, each name exactly once (the cold pass)."""
    latencies: list[float] = []
    errors = 0
    until = time.perf_counter() + (seconds or 0)
    todo = list(names or [])

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        gap = connections / rate if rate else 0.0
        slot = time.perf_counter()
        while todo if names else time.perf_counter() < until:
            name = todo.pop() if names else pick()
            if gap:
                slot += gap
                await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            started = time.perf_counter()
            status, _ = await exchange_body(reader, writer, get(port, _value_path(name)))
            latencies.append(time.perf_counter() - started)
            errors += status != 200
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return latencies, errors


async def _ingest(port: int, rate: int, stop: asyncio.Event, pick, sent: list[int]) -> None:
    """Fresh events (now) at about `rate` events/s, batches of 100."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    interval = 100 / rate
    while not stop.is_set():
        started = time.perf_counter()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        batch = [
            {
                "specversion": "1.0",
                "type": EVENT_TYPE,
                "id": uuid.uuid4().hex,
                "source": "bench-live",
                "subject": pick(),
                "time": now,
                "data": {"model": "gpt-4o", "total_tokens": 100},
            }
            for _ in range(100)
        ]
        status = await exchange(reader, writer, request(port, json.dumps(batch).encode(), "application/json"))
        if status == 204:
            sent[0] += 100
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    writer.close()


def _feed(port: int, rate: int, seconds: float, customers: int, sent_total: Any) -> None:
    names, cum, rng = subjects(customers), zipf_weights(customers), random.Random(5)

    async def run() -> None:
        stop, sent = asyncio.Event(), [0]
        task = asyncio.create_task(_ingest(port, rate, stop, lambda: rng.choices(names, cum_weights=cum)[0], sent))
        await asyncio.sleep(seconds)
        stop.set()
        await task
        sent_total.value = sent[0]

    asyncio.run(run())


async def _freshness(base: str, port: int, names: list[str], samples: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        for name in random.Random(3).sample(names, samples):
            before = Decimal(str((await api.get(_value_path(name))).json()["usage"]))
            event = {
                "specversion": "1.0",
                "type": EVENT_TYPE,
                "id": uuid.uuid4().hex,
                "source": "bench-fresh",
                "subject": name,
                "data": {"model": "gpt-4o", "total_tokens": 1000},
            }
            r = await api.post("/api/v1/events", json=event)
            acked = time.perf_counter()
            assert r.status_code == 204
            while Decimal(str((await api.get(_value_path(name))).json()["usage"])) < before + 1000:
                await asyncio.sleep(0.005)
            out.append(time.perf_counter() - acked)
    return out


def _exact(api: httpx.Client, names: list[str]) -> int:
    """Usage, balance and overage equal the meter's own total for the customer."""
    checked = 0
    for name in names:
        value = api.get(_value_path(name)).json()
        rows = api.get(
            "/api/v1/meters/bench_tokens/query", params={"subject": name, "from": "2026-01-01T00:00:00Z"}
        ).json()["data"]
        usage = Decimal(str(rows[0]["value"])) if rows else Decimal(0)
        assert Decimal(str(value["usage"])) == usage, (name, value, usage)
        assert Decimal(str(value["balance"])) == max(Decimal(0), QUOTA - usage), (name, value)
        assert Decimal(str(value["overage"])) == max(Decimal(0), usage - QUOTA), (name, value)
        assert value["hasAccess"] == (usage < QUOTA)
        checked += 1
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--data-dir", type=Path, help="keep the data here (reused when already loaded)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--ingest-rate", type=int, default=2000, help="events/s during the checks under ingest")
    parser.add_argument("--check-rate", type=float, default=1000, help="checks/s offered during ingest")
    parser.add_argument(
        "--alerts", action="store_true", help="add an 80%%/100%% notification rule and a local webhook receiver"
    )
    args = parser.parse_args()
    names = subjects(args.customers)
    cum = zipf_weights(args.customers)
    rng = random.Random(11)

    def uniform() -> str:
        return names[rng.randrange(len(names))]

    def zipf() -> str:
        return rng.choices(names, cum_weights=cum)[0]

    results: dict[str, object] = {"events": args.events, "customers": args.customers}
    with served(args.data_dir, timeout=600) as (server, watch), httpx.Client(base_url=server.url, timeout=300) as api:
        load_events(api, server.port, args.events, exact=False)
        started = time.perf_counter()
        asyncio.run(_setup(server.url, names))
        print(f"{len(names):,} customers with entitlements set up in {time.perf_counter() - started:.0f} s")
        receiver = _alerts(api) if args.alerts else None

        started = time.perf_counter()
        cold, errors = asyncio.run(_checks(server.port, uniform, None, 2, names=list(names)))
        took = time.perf_counter() - started
        assert errors == 0
        results["cold"] = {"p50_ms": _pct(cold, 0.5), "p99_ms": _pct(cold, 0.99), "seconds": round(took, 1)}
        print(
            f"cold checks: {len(cold):,} in {took:.0f} s, p50 {_pct(cold, 0.5):.1f} ms, p99 {_pct(cold, 0.99):.1f} ms"
        )

        for label, pick in (("hot uniform", uniform), ("hot zipf", zipf)):
            lat, errors = asyncio.run(_checks(server.port, pick, args.seconds, args.connections))
            assert errors == 0
            rate = len(lat) / args.seconds
            results[label] = {
                "requests_per_s": round(rate),
                "p50_ms": round(_pct(lat, 0.5), 2),
                "p99_ms": round(_pct(lat, 0.99), 2),
                "p999_ms": round(_pct(lat, 0.999), 2),
            }
            print(f"{label}: {rate:,.0f} checks/s, p50 {_pct(lat, 0.5):.2f} ms, p99 {_pct(lat, 0.99):.2f} ms")

        results["exact_sample"] = _exact(api, [names[0], *rng.sample(names, 30)])
        print(f"exact: {results['exact_sample']} customers' usage, balance and overage equal the meter's totals")

        # the feeder runs in a process of its own: in this one, the checks would starve it
        sent_total = multiprocessing.Value("q", 0)
        feeder = multiprocessing.Process(
            target=_feed, args=(server.port, args.ingest_rate, args.seconds, args.customers, sent_total)
        )
        feeder.start()
        lat, errors = asyncio.run(_checks(server.port, uniform, args.seconds, args.connections, rate=args.check_rate))
        feeder.join()
        sent = [int(sent_total.value)]
        assert errors == 0
        rate = len(lat) / args.seconds
        results["under ingest"] = {
            "ingest_events_per_s": round(sent[0] / args.seconds),
            "requests_per_s": round(rate),
            "p50_ms": round(_pct(lat, 0.5), 2),
            "p99_ms": round(_pct(lat, 0.99), 2),
        }
        print(
            f"under ingest ({sent[0] / args.seconds:,.0f} events/s): {rate:,.0f} checks/s, "
            f"p50 {_pct(lat, 0.5):.2f} ms, p99 {_pct(lat, 0.99):.2f} ms"
        )
        fresh = asyncio.run(_freshness(server.url, server.port, names, 20))
        results["freshness_ms"] = {
            "median": round(statistics.median(fresh) * 1000),
            "max": round(max(fresh) * 1000),
        }
        print(
            f"freshness (204 -> value): median {statistics.median(fresh) * 1000:.0f} ms, max {max(fresh) * 1000:.0f} ms"
        )
        time.sleep(1)  # the last events reach the store
        results["exact_after_ingest"] = _exact(api, [names[0], *rng.sample(names, 30)])
        print(f"exact after live ingest: {results['exact_after_ingest']} customers")
        if receiver is not None:
            results["webhooks_received"] = _Hooks.received
            print(f"webhooks received: {_Hooks.received:,}")
            receiver.shutdown()
    save("entitlements-alerts" if args.alerts else "entitlements", results, watch)


if __name__ == "__main__":
    main()
