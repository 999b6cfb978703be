"""The reliability report: crash rounds, overload, a soak, fuzzing. Prints a table and writes docs/reliability.md.

    make reliability
    .venv/bin/python -m bench.reliability --rounds 20 --overload-seconds 60 --soak-seconds 600 \
        --cluster-rounds 10 --fuzz-examples 50

1. crash: 4 clients keep ingesting (retrying with the same ids, resending some acknowledged batches) while the
   server is SIGKILLed `--rounds` times: mid-ingest, during a new meter's backfill, or twice in a row (the
   second during start-up recovery). At the end every meter counts every acknowledged event exactly once.
2. overload: `--connections` keep-alive connections send batches back to back for `--overload-seconds`,
   honouring Retry-After when shed: accepted and shed requests, latency of accepted requests, peak RSS,
   how soon a request is accepted again, and whether the count is exact.
3. soak: an open-loop load at half the sustained capacity (the overload's accepted events over the flood and
   the time its backlog took to reach the event store) for `--soak-seconds`: RSS over time, the
   largest journal depth and sink lag, latency, and an exact count.
4. cluster: `bench/reliability_cluster.py`, `--cluster-rounds` faults (API node, sink, broker, PostgreSQL,
   ClickHouse) under load on a local cluster, then an exact count on every node.
5. fuzz: schemathesis against the OpenAPI document, `--fuzz-examples` per operation: cases and failures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

import meterd
from bench.query import RssWatch, rss_kib
from bench.wire import request
from tests.conftest import Server, event, wait_for
from tests.integration.test_fuzz_openapi import CHECKS
from tests.integration.test_fuzz_openapi import config as fuzz_config
from tests.integration.test_fuzz_openapi import seed as seed_resources

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def _count(api: httpx.Client, slug: str) -> int:
    rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
    return int(sum(r["value"] for r in rows))


class _Load:
    """Clients that keep ingesting until stopped: each batch is retried with the same ids until it gets a 204,
    and every fifth acknowledged batch is sent once more (a duplicate that must not count)."""

    def __init__(self, etype: str, threads: int, seed: int) -> None:
        self.etype, self.url = etype, ""
        self.acked = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.rngs = [random.Random(seed * 1000 + n) for n in range(threads)]
        self.threads = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(threads)]

    def _send(self, client: httpx.Client, batch: list[dict[str, object]]) -> None:
        while True:
            try:
                if client.post(f"{self.url}/api/v1/events", json=batch, timeout=10).status_code == 204:
                    return
            except httpx.HTTPError:
                pass  # the server is down: retry the same batch
            time.sleep(0.05)

    def _work(self, n: int) -> None:
        rng = self.rngs[n]
        with httpx.Client() as client:
            while not self.stop.is_set():
                batch = [event(uuid.uuid4().hex, type_=self.etype, subject=f"c{rng.randrange(7)}") for _ in range(50)]
                self._send(client, batch)
                with self.lock:
                    self.acked += len(batch)
                if rng.random() < 0.2:
                    self._send(client, batch)

    def start(self, url: str) -> None:
        self.url = url
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _spawn(server: Server) -> None:
    """Start the server without waiting until it is ready (to kill it during its start-up recovery)."""
    assert server.log_path is not None
    log = server.log_path.open("ab")
    cmd = [sys.executable, "-m", "meterd.cli.main", *server.command()]
    server.process = subprocess.Popen(cmd, env={**os.environ, "METERD_LOG_LEVEL": "warning"}, stdout=log, stderr=log)


def crash(rounds: int, seed: int) -> dict[str, object]:
    """SIGKILL rounds under continuous load, each at one of three awkward moments: mid-ingest (requests in
    flight, a group commit or a sink flush under way), right after a meter is created (its rollup backfill
    running), and during start-up recovery (a second kill while the restarted server moves its backlog)."""
    rng = random.Random(seed)
    etype = f"crash_{uuid.uuid4().hex[:6]}"
    slugs = ["crash_count"]
    kinds = {"ingest": 0, "backfill": 0, "recovery": 0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        load = _Load(etype, threads=4, seed=seed)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as api:
                api.post("/api/v1/meters", json={"slug": slugs[0], "eventType": etype, "aggregation": "COUNT"})
            load.start(server.url)
            for n in range(rounds):
                time.sleep(0.5 + rng.random() * 2.0)  # load flows, then a random moment
                kind = rng.choice(list(kinds))
                kinds[kind] += 1
                if kind == "backfill":
                    slug = f"crash_bf_{n}"
                    with httpx.Client(base_url=server.url, timeout=30) as api:
                        meter = {"slug": slug, "eventType": etype, "aggregation": "COUNT"}
                        assert api.post("/api/v1/meters", json=meter).status_code == 201
                    slugs.append(slug)
                    time.sleep(rng.random() * 0.3)
                acked = load.acked
                server.kill()
                if kind == "recovery":
                    _spawn(server)
                    time.sleep(0.3 + rng.random() * 1.5)
                    server.kill()
                server.start()
                with httpx.Client(base_url=server.url, timeout=30) as api:
                    wait_for(lambda a=acked: _count(api, slugs[0]) >= a, timeout=120)
                print(f"  crash round {n + 1}/{rounds} ({kind}): {acked:,} acknowledged so far, all present")
            load.finish()
            acknowledged = load.acked
            with httpx.Client(base_url=server.url, timeout=30) as api:
                wait_for(lambda: _count(api, slugs[0]) >= acknowledged, timeout=120)
                time.sleep(2.0)  # anything extra (a double count, a late rollup) arrives too
                counts = {slug: _count(api, slug) for slug in slugs}
        finally:
            load.stop.set()
            server.stop()
    off = [abs(c - acknowledged) for c in counts.values()]
    return {
        "rounds": rounds,
        "kills": kinds,
        "meters": len(slugs),
        "acknowledged": acknowledged,
        "counted": counts[slugs[0]],
        "lost": sum(max(0, acknowledged - c) for c in counts.values()),
        "duplicated": sum(max(0, c - acknowledged) for c in counts.values()),
        "meters_exact": sum(1 for d in off if d == 0),
        "seconds": round(time.perf_counter() - started),
    }


_EVENT = (
    '{"specversion":"1.0","id":"%s-%d","source":"load","type":"%s","subject":"c%d",'
    '"time":"2026-01-01T00:00:00Z","data":{"n":1}}'
)


def _body(prefix: str, etype: str, size: int) -> bytes:
    return ("[" + ",".join(_EVENT % (prefix, j, etype, j % 7) for j in range(size)) + "]").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str | None]:
    status = int((await reader.readline()).split()[1])
    length, retry = 0, None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "retry-after":
            retry = value.strip()
    if length:
        await reader.readexactly(length)
    return status, retry


async def _flood(port: int, seconds: float, connections: int, batch: int) -> dict[str, object]:
    """Every connection sends batches back to back; a shed one waits what Retry-After says (plus jitter),
    as a well-behaved client does, then sends a new batch."""
    statuses: dict[int, int] = {}
    accepted_latency: list[float] = []
    retry_after_ok = True
    until = time.perf_counter() + seconds
    run = uuid.uuid4().hex[:8]

    async def one(conn: int) -> None:
        nonlocal retry_after_ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        while time.perf_counter() < until:
            sent += 1
            message = request(port, _body(f"{run}-{conn}-{sent}", "flood", batch), "application/cloudevents-batch+json")
            started = time.perf_counter()
            writer.write(message)
            status, retry = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 204:
                accepted_latency.append(time.perf_counter() - started)
            elif status in (429, 503):
                retry_after_ok = retry_after_ok and retry is not None and int(retry) >= 1
                await asyncio.sleep(int(retry or 1) * (1 + random.random() * 0.5))
        writer.close()

    await asyncio.gather(*(one(n) for n in range(connections)))
    accepted_latency.sort()
    p99 = accepted_latency[int(0.99 * (len(accepted_latency) - 1))] * 1000 if accepted_latency else 0.0
    p50 = accepted_latency[len(accepted_latency) // 2] * 1000 if accepted_latency else 0.0
    return {"statuses": statuses, "p50": round(p50, 1), "p99": round(p99, 1), "retry_after_ok": retry_after_ok}


def overload(seconds: float, connections: int, batch: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        assert server.process is not None
        watch = RssWatch(server.process.pid)
        watch.start()
        try:
            with httpx.Client(base_url=server.url, timeout=60) as api:
                api.post("/api/v1/meters", json={"slug": "flood", "eventType": "flood", "aggregation": "COUNT"})
            result = asyncio.run(_flood(server.port, seconds, connections, batch))
            started = time.perf_counter()
            with httpx.Client(base_url=server.url, timeout=60) as api:
                while api.post("/api/v1/events", json=[event(type_="probe")]).status_code != 204:
                    time.sleep(0.05)
                recovered = time.perf_counter() - started
                statuses: dict[int, int] = result["statuses"]  # type: ignore[assignment]
                accepted = statuses.get(204, 0) * batch
                wait_for(lambda: _count(api, "flood") >= accepted, timeout=300)
                drained = time.perf_counter() - started  # until the event store has every accepted event
                time.sleep(1.0)
                counted = _count(api, "flood")
        finally:
            watch.stop.set()
            server.stop()
    offered = sum(statuses.values())
    shed = statuses.get(429, 0) + statuses.get(503, 0)
    return {
        "seconds": seconds,
        "connections": connections,
        "requests": offered,
        "accepted_events_per_s": round(accepted / seconds),
        # what the whole pipeline keeps up with: accepted and stored (the flood leaves a backlog to drain)
        "stored_events_per_s": round(accepted / (seconds + drained)),
        "drained_s": round(drained, 1),
        "shed_ratio": round(shed / offered, 3) if offered else 0.0,
        "other_statuses": {k: v for k, v in statuses.items() if k not in (204, 429, 503)},
        "p50_accepted_ms": result["p50"],
        "p99_accepted_ms": result["p99"],
        "retry_after_on_every_shed": result["retry_after_ok"],
        "peak_rss_mib": round(watch.peak_kib / 1024),
        "recovered_s": round(recovered, 2),
        "accepted_events": accepted,
        "counted": counted,
    }


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _paced(port: int, seconds: float, rate: float, batch: int, connections: int) -> dict[str, object]:
    """An open-loop load: `rate` events/s in batches, spread over `connections`, each send on its schedule.
    Latency counts from the scheduled moment, not the send, so a stall shows in full for every request it
    held back (no coordinated omission)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    interval = batch * connections / rate
    begin = time.perf_counter()
    run = uuid.uuid4().hex[:8]

    async def one(conn: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while (due := begin + conn * interval / connections + n * interval) < begin + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            n += 1
            writer.write(request(port, _body(f"{run}-{conn}-{n}", "soak", batch), "application/cloudevents-batch+json"))
            status, _ = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 204:
                latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(one(n) for n in range(connections)))
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0
    return {"statuses": statuses, "p99": p99, "max": latencies[-1] * 1000 if latencies else 0.0}


def soak(seconds: float, rate: float, batch: int = 100) -> dict[str, object]:
    """`rate` events/s for `seconds`, sampling the server's RSS, journal depth and sink lag every 5 s."""
    samples: list[tuple[float, float, float, float]] = []  # (t, rss MiB, journal depth, sink lag s)
    scrapes: list[tuple[float, float]] = []  # (t, seconds the scrape took; -1 when it failed)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        assert server.process is not None
        pid = server.process.pid
        stop = threading.Event()

        def sample() -> None:
            """RSS from /proc, depth and lag from /metrics as Prometheus would scrape it (a fresh connection,
            a 10 s timeout); a scrape that fails or is slow is recorded, not fatal."""
            began = time.perf_counter()
            while not stop.wait(5.0):
                at = time.perf_counter() - began
                try:
                    text = httpx.get(f"{server.url}/metrics", timeout=10).text
                except httpx.HTTPError as exc:
                    scrapes.append((at, -1.0))
                    print(f"  soak: /metrics failed at {at:.0f} s: {exc!r}")
                    continue
                scrapes.append((at, time.perf_counter() - began - at))
                depth = _gauge(text, "meterd_journal_depth_events")
                lag = _gauge(text, "meterd_sink_lag_seconds")
                samples.append((at, rss_kib(pid) / 1024, depth, lag))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as api:
                api.post("/api/v1/meters", json={"slug": "soak", "eventType": "soak", "aggregation": "COUNT"})
            sampler.start()
            result = asyncio.run(_paced(server.port, seconds, rate, batch, connections=8))
            stop.set()
            sampler.join()
            statuses: dict[int, int] = result["statuses"]  # type: ignore[assignment]
            accepted = statuses.get(204, 0) * batch
            with httpx.Client(base_url=server.url, timeout=60) as api:
                wait_for(lambda: _count(api, "soak") >= accepted, timeout=300)
                time.sleep(1.0)
                counted = _count(api, "soak")
        finally:
            stop.set()
            server.stop()
    minute = [s for s in samples if 60 <= s[0] < 120] or samples[:12]
    last = [s for s in samples if s[0] >= samples[-1][0] - 60]
    median = statistics.median
    return {
        "seconds": seconds,
        "rate": rate,
        "requests": sum(statuses.values()),
        "other_statuses": {k: v for k, v in statuses.items() if k != 204},
        "p99_ms": round(float(result["p99"]), 1),  # type: ignore[arg-type]
        "max_ms": round(float(result["max"]), 1),  # type: ignore[arg-type]
        "rss_second_minute_mib": round(median(s[1] for s in minute)),
        "rss_last_minute_mib": round(median(s[1] for s in last)),
        "rss_max_mib": round(max(s[1] for s in samples)),
        "max_journal_depth": round(max(s[2] for s in samples)),
        "max_sink_lag_s": round(max(s[3] for s in samples), 2),
        "samples": len(samples),
        "scrapes_failed": sum(1 for _, took in scrapes if took < 0),
        "slowest_scrape_s": round(max((took for _, took in scrapes), default=0.0), 2),
        "accepted_events": accepted,
        "counted": counted,
    }


def fuzz(examples: int) -> dict[str, object]:
    """The CI fuzz test's run with more examples: one of everything seeded first, then every operation with
    the same checks (no 5xx, every response and content type as the document says)."""
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as api:
                settings = Path(tmp) / "schemathesis.toml"
                settings.write_text(fuzz_config(seed_resources(api)))
            done = subprocess.run(
                [
                    *(st, "--config-file", str(settings), "run", f"{server.url}/api/v1/openapi.json"),
                    *("--checks", CHECKS, "--max-examples", str(examples), "--workers", "1"),
                    *("--no-color", "--seed", "7"),
                ],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
                cwd=tmp,
            )
        finally:
            server.stop()
    out = done.stdout
    generated = re.search(r"(\d+) generated", out)
    failed = re.search(r"(\d+) failed", out)
    operations = re.search(r"Tested: (\d+)", out)
    return {
        "operations": int(operations.group(1)) if operations else 0,
        "cases": int(generated.group(1)) if generated else 0,
        "failures": int(failed.group(1)) if failed else (0 if done.returncode == 0 else -1),
        "exit": done.returncode,
    }


def _machine() -> str:
    import chdb

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, meterd {meterd.__version__}, chDB {chdb.__version__}"
    )


def _cluster_rows(x: dict[str, object] | None) -> list[tuple[str, object]]:
    if x is None:
        return []
    kills = x["kills"]
    assert isinstance(kills, dict)
    slowest = x["slowest_recovery_s"]
    assert isinstance(slowest, dict)
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(kills.items()))
    return [
        (
            "cluster: fault rounds survived (2 API nodes, 2 sinks, Kafka, PostgreSQL, ClickHouse HTTP)",
            f"{x['rounds']} ({faults}; SIGKILL, broker also restarted gracefully)",
        ),
        ("cluster: events acknowledged", f"{x['acknowledged']:,} (plus {x['resent_events']:,} resent after a 204)"),
        (
            "cluster: events lost / duplicated (each node; stored rows missing / extra)",
            f"{x['lost']} / {x['duplicated']} ({x['stored_missing']} / {x['stored_extra']})",
        ),
        (
            "cluster: slowest recovery, fault to all counted",
            ", ".join(f"{k} {v} s" for k, v in sorted(slowest.items())),
        ),
    ]


def _fuzz_rows(f: dict[str, object] | None) -> list[tuple[str, object]]:
    if f is None:
        return []
    return [
        ("fuzz: operations / cases (schemathesis)", f"{f['operations']} / {f['cases']:,}"),
        ("fuzz failures (5xx, or a response or content type the document does not allow)", f["failures"]),
    ]


def report(args: argparse.Namespace, r: dict[str, dict[str, object]]) -> str:
    c, o, k = r["crash"], r["overload"], r["soak"]
    pace = "set by --soak-rate" if args.soak_rate else "half the sustained capacity"
    kinds = c["kills"]
    assert isinstance(kinds, dict)
    rows = [
        (
            "crash rounds survived (SIGKILL under load from 4 clients retrying with the same ids)",
            f"{c['rounds']} ({kinds['ingest']} mid-ingest, {kinds['backfill']} during a new meter's backfill, "
            f"{kinds['recovery']} during start-up recovery)",
        ),
        ("events acknowledged", f"{c['acknowledged']:,}"),
        (f"events lost / duplicated (over {c['meters']} meters)", f"{c['lost']} / {c['duplicated']}"),
        (
            f"overload: {o['connections']} connections x batches of {args.batch} for {o['seconds']:.0f} s",
            f"{o['requests']:,} requests",
        ),
        ("accepted (durable) events/s", f"{o['accepted_events_per_s']:,}"),
        (
            "sustained capacity: accepted and stored, events/s (the flood's backlog drained in)",
            f"{o['stored_events_per_s']:,} ({o['drained_s']} s)",
        ),
        ("shed ratio (429/503, each with Retry-After)", f"{o['shed_ratio']} ({o['retry_after_on_every_shed']})"),
        ("other statuses", o["other_statuses"] or "none"),
        ("p50 / p99 latency of accepted requests", f"{o['p50_accepted_ms']} / {o['p99_accepted_ms']} ms"),
        ("server peak RSS under overload", f"{o['peak_rss_mib']} MiB"),
        ("first request accepted after the flood", f"{o['recovered_s']} s"),
        ("accepted vs counted after overload", f"{o['accepted_events']:,} / {o['counted']:,}"),
        (
            f"soak: {k['rate']:,.0f} events/s ({pace}) for {k['seconds']:.0f} s",
            f"{k['requests']:,} requests, other statuses: {k['other_statuses'] or 'none'}, "
            f"latency from the scheduled send p99 {k['p99_ms']} ms, max {k['max_ms']} ms",
        ),
        (
            "soak: server RSS, 2nd minute / last minute / max",
            f"{k['rss_second_minute_mib']} / {k['rss_last_minute_mib']} / {k['rss_max_mib']} MiB",
        ),
        ("soak: largest journal depth / sink lag", f"{k['max_journal_depth']:,} events / {k['max_sink_lag_s']} s"),
        (
            "soak: /metrics scrapes every 5 s: failed / slowest",
            f"{k['scrapes_failed']} of {k['samples'] + k['scrapes_failed']} / {k['slowest_scrape_s']} s",
        ),
        ("soak: accepted vs counted", f"{k['accepted_events']:,} / {k['counted']:,}"),
        *_cluster_rows(r.get("cluster")),
        *_fuzz_rows(r.get("fuzz")),
    ]
    command = (
        f".venv/bin/python -m bench.reliability --rounds {args.rounds} --overload-seconds {args.overload_seconds:g} "
        f"--connections {args.connections} --soak-seconds {args.soak_seconds:g} "
        + (f"--soak-rate {args.soak_rate:g} " if args.soak_rate else "")
        + f"--cluster-rounds {args.cluster_rounds} --fuzz-examples {args.fuzz_examples}"
    )
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        "# Reliability report\n\n"
        f"Generated by `make reliability` (`{command}`) on {time.strftime('%Y-%m-%d')}.\n"
        f"Machine: {_machine()}.\n\n| measure | result |\n|---|---|\n{table}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="SIGKILLs under concurrent ingest")
    parser.add_argument("--overload-seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=256, help="connections sending back to back")
    parser.add_argument("--batch", type=int, default=200, help="events per request under overload")
    parser.add_argument("--soak-seconds", type=float, default=600, help="the soak's length")
    parser.add_argument(
        "--soak-rate", type=float, default=0, help="soak events/s (default: half of sustained capacity)"
    )
    parser.add_argument("--cluster-rounds", type=int, default=10, help="cluster-mode fault rounds (0: skip)")
    parser.add_argument("--fuzz-examples", type=int, default=50, help="schemathesis examples per operation (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/reliability.md alone")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    print("crash suite...")
    results["crash"] = crash(args.rounds, args.seed)
    print(f"  {results['crash']}")
    print("overload suite...")
    results["overload"] = o = overload(args.overload_seconds, args.connections, args.batch)
    print(f"  {o}")
    rate = args.soak_rate or float(o["stored_events_per_s"]) / 2  # type: ignore[arg-type]
    print(f"soak at {rate:,.0f} events/s for {args.soak_seconds:g} s...")
    results["soak"] = soak(args.soak_seconds, rate)
    print(f"  {results['soak']}")
    if args.cluster_rounds:
        from bench.reliability_cluster import cluster_crash

        print("cluster crash suite...")
        results["cluster"] = cluster_crash(args.cluster_rounds, args.seed)
        print(f"  {results['cluster']}")
    if args.fuzz_examples:
        print("fuzzing...")
        results["fuzz"] = fuzz(args.fuzz_examples)
        print(f"  {results['fuzz']}")
    text = report(args, results)
    print(text)
    if not args.no_write:
        DOC.write_text(text)
    c, k = results["crash"], results["soak"]
    exact = c["lost"] == c["duplicated"] == 0 and o["accepted_events"] == o["counted"]
    exact = exact and k["accepted_events"] == k["counted"] and bool(results.get("cluster", {"exact": True})["exact"])
    fuzzed = results.get("fuzz", {"failures": 0})["failures"] == 0
    sys.exit(0 if exact and fuzzed and not o["other_statuses"] and not k["other_statuses"] else 1)


if __name__ == "__main__":
    main()
