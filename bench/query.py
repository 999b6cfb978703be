"""Query benchmark on a large event set: load N synthetic LLM-usage events (10,000 customers, Zipf) into a
real `meterd serve` over HTTP, watch its memory, then time the three queries the issue names.

    .venv/bin/python -m bench.query --events 10000000                    # load + query (fresh data dir)
    .venv/bin/python -m bench.query --data-dir /tmp/meterd-10m --events 10000000   # reuse a loaded dir

Prints events/s while loading, the server's peak RSS, and the median of 5 runs (after one warm-up) of:
(a) one customer's month, hourly, grouped by model; (b) all customers' month grouped by subject;
(c) one customer's month in daily Europe/Budapest windows. Results also go to bench/results/query.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.data import EVENT_TYPE, TOP_CUSTOMER, events
from bench.wire import exchange, request
from tests.conftest import Server

MONTH = {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
QUERIES = {
    "one customer, month, hourly, by model": {
        **MONTH,
        "subject": TOP_CUSTOMER,
        "windowSize": "HOUR",
        "groupBy": "model",
    },
    "all customers, month, by subject": {**MONTH, "groupBy": "subject"},
    "one customer, daily, Europe/Budapest": {
        **MONTH,
        "subject": TOP_CUSTOMER,
        "windowSize": "DAY",
        "windowTimeZone": "Europe/Budapest",
    },
}


def rss_kib(pid: int) -> int:
    """A process's resident set size, from /proc (OSError once it is gone)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS:")))


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                kib = rss_kib(self.pid)
            except OSError:
                return
            self.peak_kib = max(self.peak_kib, kib)


async def _load(port: int, total: int, connections: int, chunk: int) -> float:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=connections * 4)

    async def produce() -> None:
        for batch in events(total, chunk=chunk):
            await queue.put(json.dumps(batch).encode())
        for _ in range(connections):
            await queue.put(None)

    async def send() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (body := await queue.get()) is not None:
            message = request(port, body, "application/cloudevents-batch+json")
            while True:
                if await exchange(reader, writer, message) == 204:
                    break
                await asyncio.sleep(0.2)  # 429/503: back off and resend the same batch (dedup makes it safe)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(produce(), *(send() for _ in range(connections)))
    return time.perf_counter() - started


def _count(api: httpx.Client) -> float:
    rows = api.get("/api/v1/meters/bench_calls/query").json()["data"]
    return rows[0]["value"] if rows else 0.0


@contextmanager
def served(data_dir: Path | None, timeout: float = 300) -> Iterator[tuple[Server, RssWatch]]:
    """A `meterd serve` on `data_dir` (a temporary one when None) with its RSS watched; stopped after."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(data_dir or Path(tmp) / "data").start(timeout=timeout)
        assert server.process is not None
        watch = RssWatch(server.process.pid)
        watch.start()
        try:
            yield server, watch
        finally:
            watch.stop.set()
            server.stop()


def load_events(
    api: httpx.Client, port: int, total: int, connections: int = 4, chunk: int = 1000, exact: bool = True
) -> float | None:
    """Create the bench meters and load `total` events unless they are there already; events/s, or None.
    With `exact=False` a data dir holding more (live events of earlier entitlement runs) is fine."""
    for slug, body in (
        ("bench_tokens", {"aggregation": "SUM", "valueProperty": "$.total_tokens", "groupBy": {"model": "$.model"}}),
        ("bench_calls", {"aggregation": "COUNT"}),
    ):
        api.post("/api/v1/meters", json={"slug": slug, "eventType": EVENT_TYPE, **body})
    rate = None
    if _count(api) < total:
        seconds = asyncio.run(_load(port, total, connections, chunk))
        while _count(api) < total:
            time.sleep(0.5)
        rate = total / seconds
        print(f"loaded {total:,} events in {seconds:.0f} s: {rate:,.0f} events/s")
    count = _count(api)
    assert count == total or (not exact and count > total), f"expected exactly {total} events, got {count}"
    return rate


def save(name: str, results: dict[str, object], watch: RssWatch) -> None:
    results["peak_rss_mib"] = round(watch.peak_kib / 1024)
    print(f"server peak RSS: {watch.peak_kib / 1024:,.0f} MiB")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, help="keep the data here (reused when already loaded)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1000, help="events per ingest request while loading")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, object] = {"events": args.events}
    with served(args.data_dir) as (server, watch), httpx.Client(base_url=server.url, timeout=300) as api:
        rate = load_events(api, server.port, args.events, args.connections, args.chunk)
        if rate is not None:
            results["load_events_per_s"] = round(rate)
        for name, params in QUERIES.items():
            api.get("/api/v1/meters/bench_tokens/query", params=params)  # warm-up
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                response = api.get("/api/v1/meters/bench_tokens/query", params=params)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200 and response.json()["data"], response.text
            median = statistics.median(times)
            results[name] = round(median, 1)
            rows = len(response.json()["data"])
            print(f"{name}: median {median:.1f} ms (min {min(times):.1f}, max {max(times):.1f}; {rows} rows)")
    save("query", results, watch)


if __name__ == "__main__":
    main()
