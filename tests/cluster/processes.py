"""Cluster mode on real parts, for tests/cluster and `bench.ingest --cluster`: `meterd serve` API nodes and
`meterd sink` workers as processes, a Kafka broker (KRaft, from Maven Central), PostgreSQL (Debian's server)
and the ClickHouse HTTP interface served on chDB. Processes read their settings from METERD_* variables, as
an operator's would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chdb_http import ServerProcess, start_subprocess
from tests.conftest import Server
from tests.services.kafka import KafkaService
from tests.services.postgres import Databases


@dataclass
class Sink(Server):
    """A `meterd sink` (or, with name="worker", `meterd worker`) child process; `port` serves its health."""

    ready_path = "/healthz"
    name: str = "sink"

    def command(self) -> list[str]:
        return [self.name, "--health-port", str(self.port)]

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    kafka: KafkaService
    store: ServerProcess
    nodes: list[Server] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    workers: list[Sink] = field(default_factory=list)

    def migrate(self) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "meterd.cli.main", "migrate"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    def serve(self, **env: str) -> Server:
        node = Server(self.root / f"node{len(self.nodes)}", env={**self.env, **env}).start()
        self.nodes.append(node)
        return node

    def sink(self, **env: str) -> Sink:
        worker = Sink(self.root / f"sink{len(self.sinks)}", env={**self.env, **env}).start()
        self.sinks.append(worker)
        return worker

    def worker(self, **env: str) -> Sink:
        process = Sink(self.root / f"worker{len(self.workers)}", env={**self.env, **env}, name="worker").start()
        self.workers.append(process)
        return process

    def stop(self) -> None:
        for process in [*self.nodes, *self.sinks, *self.workers]:
            process.stop()


def new_cluster(root: Path, databases: Databases, kafka: KafkaService, partitions: int = 4, **env: str) -> Cluster:
    """An isolated deployment: its own PostgreSQL database, Kafka topic and consumer group, and event store."""
    name = root.name.replace("-", "_")
    store = start_subprocess(root / "clickhouse")
    settings = {
        "METERD_LOG_LEVEL": "info",
        "METERD_MODE": "cluster",
        "METERD_STORAGE__METADATA_URL": databases.create_database(f"{name}_{uuid.uuid4().hex[:6]}"),
        "METERD_STORAGE__EVENT_STORE": store.dsn,
        "METERD_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "METERD_KAFKA__TOPIC": f"{name}.events",
        "METERD_KAFKA__CONSUMER_GROUP": f"{name}-sink",
        "METERD_KAFKA__PARTITIONS": str(partitions),
        "METERD_KAFKA__REPLICATION_FACTOR": "1",
        "METERD_SINK__MIN_BATCH": "500",
        "METERD_SINK__MAX_WAIT": "0.1",
        **env,
    }
    return Cluster(root, settings, kafka, store)
