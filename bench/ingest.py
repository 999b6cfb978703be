"""Ingest benchmark: durable-204 throughput and latency of a real `meterd serve`, then an exactness check.

    .venv/bin/python -m bench.ingest --mode batch --seconds 20      # batches of 100 events
    .venv/bin/python -m bench.ingest --mode single --seconds 20     # one event per request (LiteLLM's way)
    .venv/bin/python -m bench.ingest --cluster --nodes 2 --sinks 2 --partitions 4   # cluster mode

`--cluster` starts a Kafka broker, PostgreSQL and the ClickHouse HTTP interface on chDB on this machine (the
test services), runs `meterd migrate`, then `--nodes` API nodes and `--sinks` sinks; the load is spread over
the nodes. It also samples the sinks' lag during the run and reports each process's CPU time (where the time
goes).

The load generator is a small asyncio HTTP/1.1 client with keep-alive connections (it must not be the
bottleneck on a 2-core machine). It prints requests/s, events/s, latency percentiles, freshness (204 to
visible in a query) and whether the meter total equals the number of acknowledged events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


async def _run(
    ports: list[int], mode: str, seconds: float, connections: int, etype: str
) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    counts = [0, 0]
    content_type = "application/cloudevents+json" if mode == "single" else "application/cloudevents-batch+json"
    until = time.perf_counter() + seconds
    make = _bodies(mode, etype, 10_000)
    await asyncio.gather(
        *(_connection(ports[i % len(ports)], make, content_type, until, latencies, counts) for i in range(connections))
    )
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
    parser.add_argument("--cluster", action="store_true", help="cluster mode on local Kafka, PostgreSQL, chDB")
    parser.add_argument("--nodes", type=int, default=2, help="cluster: API nodes")
    parser.add_argument("--sinks", type=int, default=2, help="cluster: sink workers")
    parser.add_argument("--partitions", type=int, default=4, help="cluster: partitions of the events topic")
    args = parser.parse_args()
    connections = args.connections or (8 if args.mode == "batch" else 32)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.cluster:
            servers, watch = _cluster(stack, Path(tmp), args)
        else:
            servers, watch = [Server(Path(tmp) / "data").start()], None
            stack.callback(servers[0].stop)
        etype, slug = "bench_tokens", "bench_count"
        with httpx.Client(base_url=servers[0].url, timeout=60) as api:
            api.post("/api/v1/meters", json={"slug": slug, "eventType": etype, "aggregation": "COUNT"})
            time.sleep(2 if args.cluster else 0)  # the new meter's rollup build
            if watch is not None:
                watch.begin()
            ports = [server.port for server in servers]
            latencies, (acked, errors) = asyncio.run(_run(ports, args.mode, args.seconds, connections, etype))
            deadline = time.time() + 120
            while time.time() < deadline:
                rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
                if rows and rows[0]["value"] >= acked:
                    break
                time.sleep(0.2)
            drained = time.time() - (deadline - 120)
            stored = rows[0]["value"] if rows else 0
            fresh = _freshness(api, etype, slug)
        if watch is not None:
            watch.report(args.seconds, drained)
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


class _Watch:
    """During the load: the sinks' lag every half second, and every process's CPU seconds."""

    def __init__(self, processes: dict[str, Callable[[], float]], sinks: list[Any]) -> None:
        self._processes = processes
        self._sinks = sinks
        self._stop = threading.Event()
        self.lag: list[float] = []
        self._cpu0: dict[str, float] = {}

    def begin(self) -> None:
        self._cpu0 = {name: cpu() for name, cpu in self._processes.items()}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            total = 0.0
            for sink in self._sinks:
                with contextlib.suppress(Exception):
                    total += sink.metrics().get("meterd_sink_lag_events", 0.0)
            self.lag.append(total)

    def report(self, seconds: float, drained: float) -> None:
        self._stop.set()
        cpu = {name: used() - self._cpu0.get(name, 0.0) for name, used in self._processes.items()}
        lag = sorted(self.lag) or [0.0]
        print(f"sink lag (events, sampled every 0.5 s): median {statistics.median(lag):,.0f}  max {lag[-1]:,.0f}")
        print(f"drained {drained:.1f} s after the load stopped")
        busy = sum(cpu.values())
        print(f"CPU seconds during the run ({seconds:.0f} s wall, 2 cores = {2 * seconds:.0f} core-s):")
        for name, used in sorted(cpu.items(), key=lambda item: -item[1]):
            print(f"  {name:<14} {used:6.1f}  ({used / busy:.0%})")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children that were waited for (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _cluster(stack: contextlib.ExitStack, root: Path, args: argparse.Namespace) -> tuple[list[Server], _Watch]:
    from tests.cluster.processes import new_cluster
    from tests.services.kafka import KafkaBroker
    from tests.services.postgres import PostgresServer

    root.chmod(0o755)  # PostgreSQL runs as user postgres, who must reach its directory
    kafka = KafkaBroker(root / "kafka").start()
    stack.callback(kafka.stop)
    postgres = PostgresServer(root / "pg").start()
    stack.callback(postgres.stop)
    cluster = new_cluster(root / "cluster", postgres, kafka, args.partitions, METERD_LOG_LEVEL="warning")
    stack.callback(cluster.store.stop)
    stack.callback(cluster.stop)
    cluster.migrate()
    nodes = [cluster.serve() for _ in range(args.nodes)]
    sinks = [cluster.sink() for _ in range(args.sinks)]
    pids = {"kafka (java)": kafka.process.pid if kafka.process else 0, "clickhouse": cluster.store.process.pid}
    pids.update({f"api node {i}": node.process.pid for i, node in enumerate(nodes) if node.process})
    pids.update({f"sink {i}": sink.process.pid for i, sink in enumerate(sinks) if sink.process})
    processes: dict[str, Callable[[], float]] = {
        name: functools.partial(_cpu_seconds, pid) for name, pid in pids.items()
    }
    # PostgreSQL's backends come and go: its whole tree (the postmaster counts the children it reaped)
    processes["postgres"] = lambda: sum(_cpu_seconds(pid) for pid in postgres.pids())
    print(f"cluster: {args.nodes} API nodes, {args.sinks} sinks, {args.partitions} partitions", flush=True)
    return nodes, _Watch(processes, sinks)


if __name__ == "__main__":
    main()
