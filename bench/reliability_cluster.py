"""The cluster-mode crash suite: one fault per round while clients ingest, then an exact count.

    .venv/bin/python -m bench.reliability_cluster --rounds 10 [--seed 1] [--clients 4] [--faults api,sink,...]

It starts on this machine what tests/cluster uses: a Kafka broker (KRaft), PostgreSQL, the ClickHouse HTTP
interface on chDB, `meterd migrate`, 2 API nodes and 2 sinks on a 4-partition topic, a COUNT and a SUM meter.
Client threads send batches (50 events, sometimes 1) to the nodes in turn and send a batch that got no 204
again, same ids, to the other node until it gets one. They also resend batches that did get a 204: at once (a
client that missed the answer) and later (an old batch replayed). None of these copies may count.

Each round waits for a random number of newly acknowledged events and a random moment, then causes one fault
while the load flows, drawn from a shuffled deck so that every kind comes up:
- api: SIGKILL an API node (requests in flight), start it again;
- sink: SIGKILL a sink (mid-batch, maybe mid-ledger-transaction), start it again;
- broker: restart the Kafka broker, gracefully (SIGTERM) or after a SIGKILL;
- postgres: SIGKILL PostgreSQL (sink ledger and metadata), start it again (WAL recovery);
- clickhouse: SIGKILL the event store (the ClickHouse HTTP interface on chDB), start it again;
then it waits until everything acknowledged before the fault is counted. After the last round the clients
finish their batches, the sinks drain (the consumer group's lag is 0), and both API nodes must report exactly
the acknowledged events: the COUNT meter the distinct acknowledged ids, the SUM meter their tokens.

`--sabotage` shows the check failing without touching meterd: `dedup` keeps deleting the sink ledger's dedup
claims (resent batches then count twice), `loss` claims a few events' keys in the ledger before they are sent
(the sinks drop those events as duplicates of nothing)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer

from bench.crash_clients import BATCH, Acks, Clients
from meterd.backends.clickhouse.rollup_ddl import STATE_TABLE
from meterd.backends.clickhouse.schema import EVENTS
from meterd.backends.clickhouse.store import database_from
from meterd.backends.kafka.journal import consumer_lag
from meterd.backends.sql.ledger import conninfo, dedup_key
from tests.cluster.processes import Cluster, new_cluster
from tests.services.kafka import KafkaBroker
from tests.services.postgres import PostgresServer, free_port

REPO = Path(__file__).resolve().parent.parent
KINDS = ("api", "sink", "broker", "postgres", "clickhouse")
COUNT, SUM = "crash_calls", "crash_tokens"


class Stuck(RuntimeError):
    """The cluster did not get back to work in time (a hang is a finding too)."""


def wait(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.2,
    status: Callable[[], str] | None = None,
) -> float:
    """Poll until predicate() is truthy (an exception counts as no); return the seconds it took. Every 15 s
    it says what it still waits for, with `status()` (or the last exception)."""
    started = next_note = time.monotonic()
    last = ""
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception as exc:
            last = f"{type(exc).__name__}: {str(exc)[:200]}"
        now = time.monotonic()
        if now - started > timeout:
            raise Stuck(f"{what}: not within {timeout:.0f} s ({last})")
        if now >= next_note + 15:
            next_note = now
            with contextlib.suppress(Exception):
                last = status() if status is not None else last
            print(f"    still waiting for {what} after {now - started:.0f} s: {last}", flush=True)
        time.sleep(interval)


# -- the deployment and its faults ------------------------------------------------------------------------------


@dataclass
class Deployment:
    kafka: KafkaBroker
    postgres: PostgresServer
    cluster: Cluster
    rng: random.Random

    def urls(self) -> list[str]:
        return [node.url for node in self.cluster.nodes if node.process and node.process.poll() is None]

    def fault(self, kind: str) -> str:
        """Cause one fault of `kind` and undo it (restart); says what happened."""
        pause = self.rng.uniform(0.0, 1.5)  # down for a moment: clients meet connection errors and 503s
        if kind == "api" or kind == "sink":
            group = self.cluster.nodes if kind == "api" else self.cluster.sinks
            index = self.rng.randrange(len(group))
            group[index].kill()
            time.sleep(pause)
            group[index].start()
            return f"{kind} {index} SIGKILLed, down {pause:.1f} s"
        if kind == "broker":
            if self.rng.random() < 0.5:
                self.kafka.restart()
                return "broker restarted (SIGTERM)"
            self.kafka.kill()
            time.sleep(pause)
            self.kafka.start()
            return f"broker SIGKILLed, down {pause:.1f} s"
        if kind == "postgres":
            self.postgres.kill()
            time.sleep(pause)
            self.postgres.start()
            return f"postgres SIGKILLed, down {pause:.1f} s"
        if kind == "clickhouse":
            self._restart_store(pause)
            return f"clickhouse SIGKILLed, down {pause:.1f} s"
        raise ValueError(f"unknown fault {kind!r}")

    def _restart_store(self, pause: float) -> None:
        """SIGKILL the event store (the ClickHouse HTTP interface on chDB), start it again on the same port."""
        store = self.cluster.store
        store.process.kill()
        store.process.wait()
        time.sleep(pause)
        command = [sys.executable, "-m", "tests.chdb_http", "--path", str(store.path), "--port", str(store.port)]
        with store.log_path.open("ab") as log:
            store.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait(lambda: httpx.get(f"{store.url}/ping", timeout=2).text == "Ok.\n", 60, "the event store restarting")

    def totals(self, slug: str, urls: list[str] | None = None) -> list[float]:
        """The meter's total on every API node (or on those of `urls`)."""
        out = []
        for url in urls or [node.url for node in self.cluster.nodes]:
            response = httpx.get(f"{url}/api/v1/meters/{slug}/query", timeout=30)
            response.raise_for_status()
            out.append(sum(row["value"] for row in response.json()["data"]))
        return out

    def status(self) -> str:
        """The meter's count per node and each sink's lag, partitions, stored events and failures."""
        counts = []
        for node in self.cluster.nodes:
            try:
                counts.append(f"{self.totals(COUNT, [node.url])[0]:,.0f}")
            except Exception as exc:
                counts.append(type(exc).__name__)
        sinks = []
        for sink in self.cluster.sinks:
            try:
                m = sink.metrics()
                sinks.append(
                    f"lag {m['meterd_sink_lag_events']:,.0f} parts {m['meterd_sink_partitions']:.0f} stored "
                    f"{m['meterd_sink_events_stored_total']:,.0f} failures {m['meterd_sink_failures']:.0f}"
                )
            except Exception as exc:
                sinks.append(type(exc).__name__)
        return f"counts {counts}; sinks {sinks}"

    def lag(self) -> int:
        """Messages of the topic the sinks have not committed yet (not yet stored)."""
        env = self.cluster.env
        consumer = Consumer(
            {"bootstrap.servers": self.kafka.bootstrap, "group.id": env["METERD_KAFKA__CONSUMER_GROUP"]}
        )
        try:
            return consumer_lag(consumer, env["METERD_KAFKA__TOPIC"])
        finally:
            consumer.close()

    def clickhouse(self, query: str) -> list[list[str]]:
        """A query on the event store's database (`{db}`), its rows as text."""
        query = query.replace("{db}", database_from(self.cluster.store.dsn))
        response = httpx.post(self.cluster.store.url, content=f"{query} FORMAT TSV", timeout=120)
        response.raise_for_status()
        return [line.split("\t") for line in response.text.splitlines()]

    def stored(self, etype: str) -> dict[str, int]:
        """Each stored id of `etype` and how many rows it has, read from the event store's table itself."""
        rows = self.clickhouse(f"SELECT id, count() FROM {{db}}.{EVENTS} WHERE type = '{etype}' GROUP BY id")
        return {id_: int(n) for id_, n in rows}

    def rollups_ready(self) -> int:
        return int(self.clickhouse(f"SELECT countIf(ready = 1) FROM {{db}}.{STATE_TABLE.name} FINAL")[0][0])

    def ledger(self) -> psycopg.Connection:
        return psycopg.connect(conninfo(self.cluster.env["METERD_STORAGE__METADATA_URL"]), autocommit=True)


@contextlib.contextmanager
def deployment(root: Path, rng: random.Random, slow_s: float | None = None) -> Iterator[Deployment]:
    """The services and the cluster in `root`; PostgreSQL logs statements slower than `slow_s` with their plans."""
    settings = {}
    if slow_s is not None:
        ms = f"'{slow_s * 1000:.0f}ms'"
        settings = {"session_preload_libraries": "'auto_explain'", "auto_explain.log_min_duration": ms}
    with contextlib.ExitStack() as stack:
        root.chmod(0o755)  # PostgreSQL runs as user postgres, who must reach its directory
        kafka = KafkaBroker(root / "kafka").start()
        stack.callback(kafka.stop)
        postgres = PostgresServer(root / "pg", settings, port=free_port()).start()  # a fixed port: restarts keep it
        stack.callback(postgres.stop)
        cluster = new_cluster(root / "cluster", postgres, kafka, partitions=4)
        stack.callback(cluster.store.stop)
        stack.callback(cluster.stop)
        cluster.migrate()
        for _ in range(2):
            cluster.serve()
        for _ in range(2):
            cluster.sink()  # meterd's own session timeout (10 s): a killed sink's partitions move after it
        yield Deployment(kafka, postgres, cluster, rng)


def _meters(node: str, etype: str) -> None:
    for slug, aggregation in ((COUNT, "COUNT"), (SUM, "SUM")):
        body: dict[str, Any] = {"slug": slug, "eventType": etype, "aggregation": aggregation}
        if aggregation == "SUM":
            body |= {"valueProperty": "$.tokens", "groupBy": {"model": "$.model"}}
        response = httpx.post(f"{node}/api/v1/meters", json=body, timeout=180)
        assert response.status_code == 201, response.text


# -- sabotage: the check must be able to fail ------------------------------------------------------------------


def _forget_claims(d: Deployment, stop: threading.Event) -> None:
    """Dedup disabled from the outside: the sinks' claims are deleted as fast as they are made."""
    while not stop.wait(0.2):
        with contextlib.suppress(psycopg.Error), d.ledger() as conn:
            conn.execute("DELETE FROM dedup_claims")


def _steal_claims(d: Deployment, rng: random.Random) -> Callable[[list[dict[str, Any]]], None]:
    """A ledger that drops events: one batch in fifty has its first event's key claimed before it is sent."""
    lock = threading.Lock()

    def before_send(batch: list[dict[str, Any]]) -> None:
        with lock:
            if rng.random() >= 0.02:
                return
        event = batch[0]
        with contextlib.suppress(psycopg.Error), d.ledger() as conn:
            conn.execute(
                "INSERT INTO dedup_claims (key, topic, part, msg_offset, claimed_at) VALUES (%s, 'nowhere', 0, 0, "
                "now()) ON CONFLICT DO NOTHING",
                (dedup_key("default", event["source"], event["id"]),),
            )

    return before_send


# -- the suite --------------------------------------------------------------------------------------------------


def _reached(value: Callable[[], float], floor: float) -> bool:
    return value() >= floor


@dataclass
class Rounds:
    """What the rounds did: faults per kind, the slowest recovery per kind (fault to counted), why they stopped."""

    kills: Counter[str]
    recovery_s: dict[str, float] = field(default_factory=dict)
    done: int = 0
    failure: str | None = None


def _rounds(d: Deployment, acks: Acks, rounds: int, kinds: tuple[str, ...]) -> Rounds:
    out, rng, deck = Rounds(Counter(dict.fromkeys(kinds, 0))), d.rng, list[str]()
    try:
        for n in range(1, rounds + 1):
            if not deck:
                deck = rng.sample(kinds, len(kinds))
            kind = deck.pop()
            target = acks.count + rng.randint(1, 100) * BATCH
            wait(functools.partial(_reached, lambda: acks.count, target), 180, f"round {n}: load before the fault")
            time.sleep(rng.random() * 0.5)  # a random moment: mid-request, mid-batch, mid-transaction
            before, began, at = acks.count, time.monotonic(), time.strftime("%H:%M:%S")
            what = d.fault(kind)
            out.kills[kind] += 1
            counted = functools.partial(_reached, lambda: min(d.totals(COUNT)), before)
            back = wait(counted, 300, f"round {n}: counts after {what}", 0.5, d.status)
            took = time.monotonic() - began
            out.recovery_s[kind] = round(max(took, out.recovery_s.get(kind, 0.0)), 1)
            out.done = n
            print(
                f"  round {n}/{rounds} at {at}: {what}; the {before:,} events acknowledged before it counted "
                f"{took:.1f} s later ({back:.1f} s after the restart); {acks.count:,} acknowledged",
                flush=True,
            )
    except Stuck as exc:
        out.failure = str(exc)
        print(f"  STUCK: {exc}", flush=True)
    return out


def _final(d: Deployment, acks: Acks, etype: str) -> dict[str, Any]:
    """Once the sinks drained: the meters on every node against the acknowledged events, and the stored rows."""
    drained = wait(lambda: d.lag() == 0, 300, "the sinks draining", 0.5, d.status)
    expected, tokens = acks.count, sum(acks.tokens.values())
    with contextlib.suppress(Stuck):  # settled: every node agrees with the clients (or the timeout says not)
        wait(
            lambda: set(d.totals(COUNT)) == {expected} and set(d.totals(SUM)) == {tokens},
            30,
            "exact counts",
            0.5,
            d.status,
        )
    time.sleep(2.0)  # anything counted twice late arrives too
    counts, sums = [int(c) for c in d.totals(COUNT)], [int(t) for t in d.totals(SUM)]
    stored = d.stored(etype)
    missing = [i for i in acks.tokens if i not in stored]
    twice = [i for i, n in stored.items() if n > 1]
    return {
        "acknowledged": expected,
        "counted": min(counts),  # the lowest node's count; every node's below
        "counted_per_node": counts,
        "lost": max(0, expected - min(counts)),
        "duplicated": max(0, max(counts) - expected),
        "tokens_acknowledged": tokens,
        "tokens_counted_per_node": sums,
        # the event store's own rows: an id missing, an id twice, an id no client was told about
        "stored_rows": sum(stored.values()),
        "stored_missing": len(missing),
        "stored_extra": sum(stored[i] - 1 for i in twice) + sum(1 for i in stored if i not in acks.tokens),
        "examples": {"missing": missing[:3], "twice": twice[:3]},
        "drained_s": round(drained, 1),
    }


def cluster_crash(
    rounds: int,
    seed: int,
    *,
    clients: int = 4,
    kinds: tuple[str, ...] = KINDS,
    sabotage: str | None = None,
    keep: bool = False,
    pg_log_slow: float | None = None,
) -> dict[str, object]:
    """`rounds` faults under load on a local cluster (see the module's docstring); the figures of the run, with
    "exact" true when every node counted every acknowledged event once. The work directory (every process's
    log) is kept when `keep` or when the run was not exact."""
    began, rng = time.monotonic(), random.Random(seed)
    etype, root = f"crash_{uuid.uuid4().hex[:6]}", Path(tempfile.mkdtemp(prefix="meterd-crash-"))
    exact = False
    try:
        with deployment(root, rng, pg_log_slow) as d:
            _meters(d.cluster.nodes[0].url, etype)
            wait(lambda: d.rollups_ready() == 2, 120, "the meters' rollups")  # queries then read the rollups
            stop_sabotage = threading.Event()
            if sabotage == "dedup":
                threading.Thread(target=_forget_claims, args=(d, stop_sabotage), daemon=True).start()
            steal = _steal_claims(d, random.Random(seed)) if sabotage == "loss" else None
            load = Clients(d.urls, etype, clients, seed, before_send=steal)
            print(f"cluster up in {time.monotonic() - began:.0f} s: 2 API nodes, 2 sinks, 4 partitions; "
                  f"{clients} clients; work directory {root}", flush=True)  # fmt: skip
            load.start()
            try:
                done = _rounds(d, load.acks, rounds, kinds)
            finally:
                stuck = load.stop(timeout=120)
                stop_sabotage.set()
            final = _final(d, load.acks, etype)
            tokens_ok = set(final["tokens_counted_per_node"]) == {final["tokens_acknowledged"]}
            exact = (
                done.failure is None
                and not stuck
                and final["lost"] == final["duplicated"] == final["stored_missing"] == final["stored_extra"] == 0
                and tokens_ok
            )
            return {
                "rounds": done.done,
                "kills": dict(done.kills),
                **final,
                "exact": exact,
                "failure": done.failure,
                "slowest_recovery_s": done.recovery_s,
                "resent_events": load.acks.resent,
                "requests": dict(load.acks.outcomes.most_common()),
                "unexpected_responses": load.acks.unexpected,
                "clients_stuck": stuck,
                "elapsed_s": round(time.monotonic() - began, 1),
            }
    finally:
        if keep or not exact:
            print(f"kept {root} (logs: cluster/*.log, kafka/broker.log, pg/postgres.log)", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="faults, one per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"kinds to draw from (of {','.join(KINDS)})")
    parser.add_argument("--sabotage", choices=["dedup", "loss"], help="break dedup or lose events on purpose")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument("--pg-log-slow", type=float, metavar="SECONDS", help="log slower statements with their plans")
    args = parser.parse_args()
    kinds = tuple(k for k in args.faults.split(",") if k)
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    result = cluster_crash(args.rounds, args.seed, clients=args.clients, kinds=kinds, sabotage=args.sabotage,
                           keep=args.keep, pg_log_slow=args.pg_log_slow)  # fmt: skip
    for name, value in result.items():
        print(f"  {name}: {value}")
    sys.exit(0 if result["exact"] else 1)


if __name__ == "__main__":
    main()
