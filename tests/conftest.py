"""Shared fixtures. The API tests run a real `meterd serve` process over real HTTP, on the real engines
(SQLite journal and metadata, chDB event store), in a temporary data directory."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from tests.chdb_http import clickhouse_http  # noqa: F401
from tests.services.kafka import kafka  # noqa: F401
from tests.services.postgres import postgres  # noqa: F401

# LiteLLM fetches its model price map from GitHub when imported (collection imports it) and retries for ~10 s
# when it cannot; tests use the copy it ships with.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A `meterd serve` child process (a subclass may run another meterd command: `command`, `ready_path`)."""

    ready_path = "/readyz"

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Self:
        env = {**os.environ, "METERD_LOG_LEVEL": "warning", **self.env}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-{self.port}.log"
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "meterd.cli.main", *self.command()]
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"meterd exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"meterd did not become ready: {self.log()}")

    def command(self) -> list[str]:
        return ["serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args]

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """One shared server for the API tests; tests keep out of each other's way with unique names.
    METERD_TEST_METADATA=postgres keeps its metadata in a fresh PostgreSQL database (the `postgres` fixture)."""
    if os.environ.get("METERD_TEST_MODE") == "cluster":
        yield from _cluster_node(tmp_path_factory, request)
        return
    env = {}
    if os.environ.get("METERD_TEST_METADATA") == "postgres":
        env["METERD_STORAGE__METADATA_URL"] = request.getfixturevalue("postgres").create_database()
    srv = Server(tmp_path_factory.mktemp("shared") / "data", env=env).start()
    yield srv
    srv.stop()


def _cluster_node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """METERD_TEST_MODE=cluster: the shared server is an API node of a cluster (Kafka, PostgreSQL, ClickHouse
    over HTTP, one sink, one worker), so the API and compatibility suites run against cluster mode unchanged."""
    from tests.cluster.processes import new_cluster

    root = tmp_path_factory.mktemp("cluster")
    cluster = new_cluster(root, request.getfixturevalue("postgres"), request.getfixturevalue("kafka"), partitions=2)
    try:
        cluster.migrate()
        node = cluster.serve(METERD_NOTIFICATIONS__WORKER="false")
        cluster.sink()
        cluster.worker()
        yield node
    finally:
        cluster.stop()
        cluster.store.stop()


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def unique() -> Callable[[str], str]:
    """unique('tokens') -> 'tokens_3f2a9c1b': names that no other test uses."""
    suffix = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}_{suffix}"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value, or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def event(
    id_: str | None = None,
    *,
    type_: str,
    subject: str = "customer-1",
    source: str = "tests",
    time_: str | None = None,
    data: Any = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_ or uuid.uuid4().hex,
        "source": source,
        "type": type_,
        "subject": subject,
    }
    if time_ is not None:
        body["time"] = time_
    if data is not None:
        body["data"] = data
    return body


# Journal seqs for batches written to the shared `event_store`: one counter for every test, because a store's
# seqs only grow (a rollup's view takes the seqs above its backfill, and dedup tokens are seq ranges).
JOURNAL_SEQ = itertools.count(10**9, 10_000)


@pytest.fixture(scope="session")
def event_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An in-process event store (chDB). chDB hosts one engine path per process: every in-process test
    shares this one and keeps apart by namespace."""
    from meterd.backends.clickhouse.store import ClickHouseEventStore

    store = ClickHouseEventStore(f"chdb://{tmp_path_factory.mktemp('chdb') / 'events'}")
    yield store
    store.close()
