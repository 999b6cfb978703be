"""PostgreSQL baseline: the classic design users build instead of meterd, measured with the same workload.

One table `usage_events` (unique index on (source, event_id) for dedup, index on (type, subject, time)) behind
the simplest Starlette endpoint (psycopg 3 + psycopg_pool, executemany, one transaction per request, 204 after
commit), served by uvicorn in a subprocess; PostgreSQL from Debian packages, initdb'd into a temp dir, default
settings except shared_buffers=1GB (synchronous_commit stays on: the honest durable baseline).

    .venv/bin/pip install -e '.[bench]'                                     # psycopg + psycopg_pool
    .venv/bin/python -m bench.baseline_pg                                   # 10M events, 20 s single
    .venv/bin/python -m bench.baseline_pg --events 200000 --single-seconds 5   # quick check (~1 min)

Installs PostgreSQL with apt-get if missing (as root). Phases: (1) --events events from bench/data.py in
batches of 100 over 8 connections (events/s, latency); (2) --single-seconds of one-event requests over 32
connections, the same requests as `bench.ingest --mode single` (requests/s, latency); (3) VACUUM ANALYZE,
then the three queries of bench/query.py in plain SQL, one warm-up and 5 runs each, median reported;
(4) memory of the postgres processes. Results also go to bench/results/baseline_pg.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.data import END, EVENT_TYPE, START, TOP_CUSTOMER, events
from bench.wire import exchange, request

if TYPE_CHECKING:
    from tests.services.postgres import PostgresServer

# --- the baseline application: what a typical tutorial implementation looks like --------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_events (
    id bigserial PRIMARY KEY,
    event_id text,
    source text,
    subject text NOT NULL,
    type text NOT NULL,
    time timestamptz NOT NULL,
    data jsonb NOT NULL,
    ingested_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS usage_events_dedup ON usage_events (source, event_id);
CREATE INDEX IF NOT EXISTS usage_events_type_subject_time ON usage_events (type, subject, time);
"""

INSERT = (
    "INSERT INTO usage_events (event_id, source, subject, type, time, data) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (source, event_id) DO NOTHING"
)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    size = int(os.environ.get("BASELINE_PG_POOL", "16"))
    async with AsyncConnectionPool(os.environ["BASELINE_PG_DSN"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


async def ingest(request: Request) -> Response:
    try:
        body = await request.json()
        batch = body if isinstance(body, list) else [body]
        rows = [
            (
                e["id"],
                e["source"],
                e["subject"],
                e["type"],
                e.get("time") or datetime.now(UTC),
                Jsonb(e.get("data", {})),
            )
            for e in batch
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return JSONResponse({"detail": f"invalid event: {exc}"}, status_code=400)
    async with request.app.state.pool.connection() as conn, conn.cursor() as cur:  # commits on leaving the block
        await cur.executemany(INSERT, rows)
    return Response(status_code=204)


app = Starlette(routes=[Route("/api/v1/events", ingest, methods=["POST"])], lifespan=lifespan)

# --- the three queries of bench/query.py, as users of this design write them -----------------------------------

TOKENS = "SUM((data->>'total_tokens')::float8)"
MONTH = "type = %(type)s AND time >= %(from)s AND time < %(to)s"
QUERIES = {
    "one customer, month, hourly, by model": (
        f"SELECT date_trunc('hour', time) AS window_start, data->>'model' AS model, {TOKENS} AS value "
        f"FROM usage_events WHERE subject = %(subject)s AND {MONTH} GROUP BY 1, 2 ORDER BY 1, 2"
    ),
    "all customers, month, by subject": (
        f"SELECT subject, {TOKENS} AS value FROM usage_events WHERE {MONTH} GROUP BY subject ORDER BY subject"
    ),
    "one customer, daily, Europe/Budapest": (
        f"SELECT date_trunc('day', time AT TIME ZONE 'Europe/Budapest') AS window_start, {TOKENS} AS value "
        f"FROM usage_events WHERE subject = %(subject)s AND {MONTH} GROUP BY 1 ORDER BY 1"
    ),
}
QUERY_PARAMS = {"type": EVENT_TYPE, "subject": TOP_CUSTOMER, "from": START, "to": END}

# --- PostgreSQL: tests/services/postgres.py installs, initdb's, starts and stops it -------------------------------
# Imported inside the driver's functions only: uvicorn imports this module as the app, which must not load pytest.


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(summed RSS, summed PSS) in KiB. RSS counts shared_buffers once per backend that touched it; PSS splits it."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, StopIteration, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


class MemoryWatch(threading.Thread):
    def __init__(self, pg: PostgresServer, app_pid: int) -> None:
        super().__init__(daemon=True)
        self.pg, self.app_pid, self.stop = pg, app_pid, threading.Event()
        self.pg_peak_rss = self.pg_peak_pss = self.app_peak_rss = 0

    def run(self) -> None:
        from tests.services.postgres import with_children

        while not self.stop.wait(0.5):
            rss, pss = memory_kib(self.pg.pids())
            self.pg_peak_rss, self.pg_peak_pss = max(self.pg_peak_rss, rss), max(self.pg_peak_pss, pss)
            self.app_peak_rss = max(self.app_peak_rss, memory_kib(with_children(self.app_pid))[0])


# --- the app server -----------------------------------------------------------------------------------------------


def start_app(dsn: str, pool: int, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    from tests.services.postgres import free_port

    port = free_port()
    env = {**os.environ, "BASELINE_PG_DSN": dsn, "BASELINE_PG_POOL": str(pool)}
    cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_pg:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(
        cmd, env=env, cwd=Path(__file__).parent.parent, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # uvicorn listens only after the lifespan (pool open) has finished
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}: {log.read_text()[-4000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return process, port
        time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not start: {log.read_text()[-4000:]}")


def stop_app(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the workload -------------------------------------------------------------------------------------------------


async def load(port: int, total: int, batch: int, connections: int) -> tuple[float, list[float], int]:
    """Stream `total` bench/data.py events in batches over keep-alive connections; resend a batch on non-204."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=connections * 4)
    latencies: list[float] = []
    errors = [0]

    async def produce() -> None:
        for chunk in events(total):  # default chunking, so the events are exactly those bench/query.py loads
            for i in range(0, len(chunk), batch):
                await queue.put(json.dumps(chunk[i : i + batch]).encode())
        for _ in range(connections):
            await queue.put(None)

    async def send() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (body := await queue.get()) is not None:
            message = request(port, body, "application/cloudevents-batch+json")
            while True:
                started = time.perf_counter()
                status = await exchange(reader, writer, message)
                latencies.append(time.perf_counter() - started)
                if status == 204:
                    break
                errors[0] += 1
                await asyncio.sleep(0.2)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(produce(), *(send() for _ in range(connections)))
    return time.perf_counter() - started, latencies, errors[0]


def pct_ms(latencies: list[float], p: float) -> float:
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)


def run_queries(dsn: str, runs: int) -> dict[str, tuple[float, float, float, int]]:
    out = {}
    with psycopg.connect(dsn) as conn:
        for name, sql in QUERIES.items():
            conn.execute(sql, QUERY_PARAMS).fetchall()  # warm-up
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                rows = conn.execute(sql, QUERY_PARAMS).fetchall()
                times.append((time.perf_counter() - started) * 1000)
                assert rows, name
            out[name] = (statistics.median(times), min(times), max(times), len(rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=100, help="events per request while loading")
    parser.add_argument("--connections", type=int, default=8, help="client connections while loading")
    parser.add_argument("--single-seconds", type=float, default=20)
    parser.add_argument("--single-connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5, help="runs per query (after one warm-up); median reported")
    parser.add_argument("--pool", type=int, default=16, help="psycopg_pool size of the app")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--dir", type=Path, help="parent of the temp dir holding the cluster (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory (printed) afterwards")
    parser.add_argument("--pg-conf", action="append", default=[], metavar="KEY=VALUE", help="extra postgresql.conf")
    args = parser.parse_args()
    from bench.ingest import _run  # imported here: it pulls in tests.conftest (pytest), not wanted in the app server
    from tests.services.postgres import PostgresServer, with_children

    command = shlex.join([".venv/bin/python", "-m", "bench.baseline_pg", *sys.argv[1:]])
    root = Path(tempfile.mkdtemp(prefix="baseline-pg-", dir=args.dir))
    pg = PostgresServer(root, {"shared_buffers": "'1GB'", **dict(kv.split("=", 1) for kv in args.pg_conf)})
    results: dict[str, object] = {"command": command, "events": args.events}
    app = watch = None
    try:
        pg.start()
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            results["postgres"] = conn.execute("SELECT version()").fetchone()[0]
            conn.execute(SCHEMA)
        app, port = start_app(pg.dsn, args.pool, args.workers, root / "uvicorn.log")
        watch = MemoryWatch(pg, app.pid)
        watch.start()
        print(f"command: {command}")
        print(f"postgres: {results['postgres'].split(',')[0]}  dir {root}  port {pg.port}; app port {port}")

        seconds, latencies, errors = asyncio.run(load(port, args.events, args.batch, args.connections))
        results |= {
            "batch_seconds": round(seconds, 1),
            "batch_events_per_s": round(args.events / seconds),
            "batch_latency_ms_p50": pct_ms(latencies, 0.5),
            "batch_latency_ms_p99": pct_ms(latencies, 0.99),
            "batch_non_204": errors,
        }
        print(f"batch ingest ({args.batch}/request, {args.connections} connections): {args.events:,} events in "
              f"{seconds:.1f} s")  # fmt: skip
        print(f"batch events/s: {args.events / seconds:,.0f}")
        print(f"batch latency ms: p50 {results['batch_latency_ms_p50']}  p99 {results['batch_latency_ms_p99']}")
        print(f"batch non-204 (resent): {errors}")

        latencies, (acked, errors) = asyncio.run(
            _run(port, "single", args.single_seconds, args.single_connections, EVENT_TYPE)
        )
        results |= {
            "single_requests_per_s": round(len(latencies) / args.single_seconds),
            "single_latency_ms_p50": pct_ms(latencies, 0.5),
            "single_latency_ms_p99": pct_ms(latencies, 0.99),
            "single_non_204": errors,
        }
        print(f"single ingest ({args.single_connections} connections, {args.single_seconds:g} s): "
              f"{len(latencies):,} requests")  # fmt: skip
        print(f"single requests/s: {results['single_requests_per_s']:,}")
        print(f"single latency ms: p50 {results['single_latency_ms_p50']}  p99 {results['single_latency_ms_p99']}")
        print(f"single non-204: {errors}")

        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM usage_events WHERE type = %(type)s AND time >= %(from)s AND time < %(to)s",
                QUERY_PARAMS,
            ).fetchone()[0]
            total = conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]
            started = time.perf_counter()
            conn.execute("VACUUM ANALYZE usage_events")
            results["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
            size = conn.execute("SELECT pg_total_relation_size('usage_events')").fetchone()[0]
        exact = stored == args.events and total - stored == acked
        results |= {"exact": exact, "table_mib": round(size / 2**20)}
        print(f"exact: batch {args.events:,} sent, {stored:,} stored; single {acked:,} acknowledged, "
              f"{total - stored:,} stored -> {'OK' if exact else 'MISMATCH'}")  # fmt: skip
        print(f"table + indexes on disk: {size / 2**20:,.0f} MiB; VACUUM ANALYZE {results['vacuum_analyze_s']} s")

        for name, (median, low, high, rows) in run_queries(pg.dsn, args.runs).items():
            results[name] = round(median, 1)
            print(f"{name}: median {median:.1f} ms (min {low:.1f}, max {high:.1f}; {rows} rows)")

        pids = pg.pids()
        rss, pss = memory_kib(pids)
        app_rss = memory_kib(with_children(app.pid))[0]
        watch.stop.set()
        results |= {
            "postgres_processes": len(pids),
            "postgres_rss_mib": round(rss / 1024),
            "postgres_pss_mib": round(pss / 1024),
            "postgres_peak_rss_mib": round(watch.pg_peak_rss / 1024),
            "postgres_peak_pss_mib": round(watch.pg_peak_pss / 1024),
            "app_rss_mib": round(app_rss / 1024),
            "app_peak_rss_mib": round(watch.app_peak_rss / 1024),
        }
        # Summed RSS counts the shared buffers once per process that touched them; PSS splits shared pages.
        print(f"postgres RSS at end (summed over {len(pids)} processes): {rss / 1024:,.0f} MiB "
              f"(peak {watch.pg_peak_rss / 1024:,.0f} MiB)")  # fmt: skip
        print(f"postgres PSS at end (shared pages counted once): {pss / 1024:,.0f} MiB "
              f"(peak {watch.pg_peak_pss / 1024:,.0f} MiB)")  # fmt: skip
        print(f"app (uvicorn) RSS at end: {app_rss / 1024:,.0f} MiB (peak {watch.app_peak_rss / 1024:,.0f} MiB)")
    finally:
        if watch is not None:
            watch.stop.set()
        if app is not None:
            stop_app(app)
        pg.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "baseline_pg.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out / 'baseline_pg.json'}")


if __name__ == "__main__":
    main()
