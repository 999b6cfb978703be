"""The reliability report: crash rounds, overload, fuzzing. Prints a table and writes docs/reliability.md.

    make reliability
    .venv/bin/python -m bench.reliability --rounds 10 --overload-seconds 60 --fuzz-examples 50

1. crash: clients ingest batches with retries that reuse event ids while the server is SIGKILLed at random
   moments (`--rounds` times) and restarted; at the end every acknowledged event must be counted once.
2. overload: `--connections` keep-alive connections send batches as fast as they can for `--overload-seconds`:
   what was accepted, what was shed (429/503 with Retry-After), the latency of accepted requests, the
   server's peak RSS, how soon one request is accepted again, and whether the count is exact.
3. fuzz: schemathesis against the OpenAPI document, `--fuzz-examples` per operation: cases and 5xx failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

import meterd
from bench.query import RssWatch
from bench.wire import request
from tests.conftest import Server, event, wait_for
from tests.integration.test_durability import BATCH, Clients

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def _count(api: httpx.Client, slug: str) -> int:
    rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
    return int(sum(r["value"] for r in rows))


def crash(rounds: int, batches: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    etype, slug = f"crash_{uuid.uuid4().hex[:6]}", "crash_count"
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.url) as api:
                api.post("/api/v1/meters", json={"slug": slug, "eventType": etype, "aggregation": "COUNT"})
            clients = Clients(etype, batches=batches, threads=4)
            clients.start(server.url)
            for n in range(rounds):
                start = clients.acked
                wait_for(lambda s=start: clients.acked >= s + rng.randint(1, 40) * BATCH or not clients.queue, 60)
                time.sleep(rng.random() * 0.2)  # a random moment: mid-request, mid-commit, mid-flush
                acked = clients.acked
                server.kill()
                server.start()
                with httpx.Client(base_url=server.url) as api:
                    wait_for(lambda a=acked: _count(api, slug) >= a, timeout=60)
                print(f"  crash round {n + 1}/{rounds}: {acked:,} acknowledged so far, all present after restart")
            clients.join(timeout=600)
            acknowledged = clients.acked
            with httpx.Client(base_url=server.url) as api:
                wait_for(lambda: _count(api, slug) >= acknowledged, timeout=60)
                time.sleep(1.0)  # anything extra (a double count) arrives too
                counted = _count(api, slug)
        finally:
            server.stop()
    return {
        "rounds": rounds,
        "acknowledged": acknowledged,
        "counted": counted,
        "lost": max(0, acknowledged - counted),
        "duplicated": max(0, counted - acknowledged),
        "unsent": len(clients.queue) * BATCH,
    }


async def _flood(port: int, seconds: float, connections: int, batch: int) -> dict[str, object]:
    statuses: dict[int, int] = {}
    accepted_latency: list[float] = []
    retry_after_ok = True
    until = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal retry_after_ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < until:
            body = json.dumps([event(uuid.uuid4().hex, type_="flood", data={"n": 1}) for _ in range(batch)]).encode()
            message = request(port, body, "application/cloudevents-batch+json")
            started = time.perf_counter()
            writer.write(message)
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
            statuses[status] = statuses.get(status, 0) + 1
            if status == 204:
                accepted_latency.append(time.perf_counter() - started)
            elif status in (429, 503):
                retry_after_ok = retry_after_ok and retry is not None and int(retry) >= 1
                await asyncio.sleep(0.01)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    accepted_latency.sort()
    p99 = accepted_latency[int(0.99 * (len(accepted_latency) - 1))] * 1000 if accepted_latency else 0.0
    return {"statuses": statuses, "p99_accepted_ms": round(p99, 1), "retry_after_ok": retry_after_ok}


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
        "shed_ratio": round(shed / offered, 3) if offered else 0.0,
        "other_statuses": {k: v for k, v in statuses.items() if k not in (204, 429, 503)},
        "p99_accepted_ms": result["p99_accepted_ms"],
        "retry_after_on_every_shed": result["retry_after_ok"],
        "peak_rss_mib": round(watch.peak_kib / 1024),
        "recovered_s": round(recovered, 2),
        "accepted_events": accepted,
        "counted": counted,
    }


def fuzz(examples: int) -> dict[str, object]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            done = subprocess.run(
                [
                    *(st, "run", f"{server.url}/api/v1/openapi.json", "--checks", "not_a_server_error"),
                    *("--max-examples", str(examples), "--workers", "2", "--no-color", "--seed", "7"),
                ],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
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


def report(args: argparse.Namespace, c: dict[str, object], o: dict[str, object], f: dict[str, object]) -> str:
    rows = [
        ("crash rounds survived (SIGKILL at random moments, 4 clients retrying with the same ids)", c["rounds"]),
        ("events acknowledged", f"{c['acknowledged']:,}"),
        ("events lost / duplicated", f"{c['lost']} / {c['duplicated']}"),
        (
            f"overload: {o['connections']} connections x batches of {args.batch} for {o['seconds']:.0f} s",
            f"{o['requests']:,} requests",
        ),
        ("accepted (durable) events/s", f"{o['accepted_events_per_s']:,}"),
        ("shed ratio (429/503, each with Retry-After)", f"{o['shed_ratio']} ({o['retry_after_on_every_shed']})"),
        ("other statuses", o["other_statuses"] or "none"),
        ("p99 latency of accepted requests", f"{o['p99_accepted_ms']} ms"),
        ("server peak RSS under overload", f"{o['peak_rss_mib']} MiB"),
        ("first request accepted after the flood", f"{o['recovered_s']} s"),
        ("accepted vs counted after overload", f"{o['accepted_events']:,} / {o['counted']:,}"),
        ("fuzz: operations / cases (schemathesis)", f"{f['operations']} / {f['cases']:,}"),
        ("fuzz failures (5xx)", f["failures"]),
    ]
    command = (
        f".venv/bin/python -m bench.reliability --rounds {args.rounds} --overload-seconds {args.overload_seconds:g} "
        f"--connections {args.connections} --fuzz-examples {args.fuzz_examples}"
    )
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        "# Reliability report\n\n"
        f"Generated by `make reliability` (`{command}`) on {time.strftime('%Y-%m-%d')}.\n"
        f"Machine: {_machine()}.\n\n| measure | result |\n|---|---|\n{table}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="SIGKILLs during concurrent ingest")
    parser.add_argument("--batches", type=int, default=400, help=f"batches of {BATCH} events the crash clients send")
    parser.add_argument("--overload-seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=200, help="events per request under overload")
    parser.add_argument("--fuzz-examples", type=int, default=50, help="schemathesis examples per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/reliability.md alone")
    args = parser.parse_args()
    print("crash suite...")
    c = crash(args.rounds, args.batches, args.seed)
    print(f"  {c}")
    print("overload suite...")
    o = overload(args.overload_seconds, args.connections, args.batch)
    print(f"  {o}")
    print("fuzzing...")
    f = fuzz(args.fuzz_examples)
    print(f"  {f}")
    text = report(args, c, o, f)
    print(text)
    if not args.no_write:
        DOC.write_text(text)
    ok = c["lost"] == 0 and c["duplicated"] == 0 and o["accepted_events"] == o["counted"] and f["failures"] == 0
    sys.exit(0 if ok and not o["other_statuses"] else 1)


if __name__ == "__main__":
    main()
