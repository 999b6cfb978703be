"""Rollup tables and their materialized views, one per meter (see meterd.usage.rollup for the semantics;
the SQL is in meterd.backends.clickhouse.rollup_ddl, for one server or a cluster). Building a rollup
holds the event store's write lock: the view is created and the existing events are backfilled while the
sink waits, so no event is missed or counted twice. A rollup is used only once marked ready with the hash of
its meter's definition; a crash mid-build leaves it unready and the next start rebuilds it. A build that fails
(the store or, in a cluster, PostgreSQL is down; a sink's batch waits to be replayed) is tried again, less
and less often, until it is built, its meter changes, or the process stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from meterd.backends.clickhouse.ddl import Layout
from meterd.backends.clickhouse.rollup_ddl import STATE_TABLE, RollupBuild, definition_hash, rollup_names
from meterd.backends.clickhouse.schema import EVENTS_TABLE
from meterd.core.ids import new_ulid
from meterd.meters.model import Meter
from meterd.usage.rollup import Rollup, group_columns

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


@dataclass(frozen=True)
class _Build:
    digest: str  # the meter definition it aggregates
    build: str  # names its table and view
    ready: bool


class RollupManager:
    """`cluster`: the ClickHouse cluster the event store is spread over (None: a single server); the
    statements and table names follow it (meterd.backends.clickhouse.schema)."""

    def __init__(
        self, client: Client, lock: AbstractContextManager[object], database: str, cluster: str | None = None
    ) -> None:
        self._client = client
        self._lock = lock  # the store's write lock: the sink waits while a rollup is built
        self._database = database
        self._layout = Layout(database, cluster)
        self._ready: dict[str, tuple[str, Rollup]] = {}  # meter id -> (definition hash, rollup)
        self._wanted: dict[str, str] = {}  # meter id -> hash of the definition to build
        self._builds: list[threading.Thread] = []
        self._stopping = threading.Event()
        for statement in self._layout.create_table(STATE_TABLE):
            self._client.command(statement)
        self._state = self._layout.name(STATE_TABLE.name)
        rows = self._client.query(f"SELECT meter_id, hash, build, ready FROM {self._state} FINAL").result_rows
        self._recorded = {m: _Build(h, b, bool(r)) for m, h, b, r in rows if h}

    def ready(self, meter: Meter) -> Rollup | None:
        entry = self._ready.get(meter.id)
        if entry is None or entry[0] != definition_hash(meter):
            return None
        return entry[1]

    def sync(self, live: Iterable[Meter], wait: bool = False) -> None:
        """At start-up: build what is missing or stale, and drop every rollup table or view that no live
        meter's current build uses (meters deleted or redefined, builds cut short by a crash). `wait`: build
        here, and raise if a build fails (`meterd migrate`), instead of in the background with retries."""
        live = list(live)
        for meter in live:
            self.ensure(meter, wait=wait)
        with self._lock:
            keep: set[str] = set()
            for meter in live:
                recorded = self._recorded.get(meter.id)
                if recorded is not None:
                    keep.update(rollup_names(self._layout, meter, recorded.build).all())
            rows = self._client.query(
                "SELECT name, engine FROM system.tables WHERE database = {db:String} AND startsWith(name, 'rollup_0')",
                parameters={"db": self._database},
            ).result_rows
            for name, engine in sorted(rows, key=lambda row: row[1] != "MaterializedView"):  # views first
                if f"{self._database}.{name}" not in keep:
                    kind = "VIEW" if engine == "MaterializedView" else "TABLE"
                    self._client.command(self._layout.drop(kind, f"{self._database}.{name}"))
            for meter_id in set(self._recorded) - {m.id for m in live}:
                self._record(meter_id, _Build("", "", False))
                self._recorded.pop(meter_id, None)

    def ensure(self, meter: Meter, wait: bool = False) -> None:
        """Make the meter's rollup current. A build (a backfill over every stored event of the meter's type)
        runs in the background unless `wait`; until it is ready, queries read raw events, which is exact."""
        digest = definition_hash(meter)
        self._wanted[meter.id] = digest
        recorded = self._recorded.get(meter.id)
        if recorded is not None and recorded.digest == digest and recorded.ready:
            table = rollup_names(self._layout, meter, recorded.build).table
            self._ready[meter.id] = (digest, Rollup(table, group_columns(meter.group_by)))
            return
        if wait:
            self._build(meter, digest)
            return
        thread = threading.Thread(target=self._build_logged, args=(meter, digest), name="meterd-rollup", daemon=True)
        self._builds = [t for t in self._builds if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background builds (tests)."""
        for thread in list(self._builds):
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """At shutdown: no more retries; wait for a build under way (one cut short is redone at the next start)."""
        self._stopping.set()
        self.wait(timeout)

    def _build_logged(self, meter: Meter, digest: str) -> None:
        delay = RETRY_FIRST_S
        while not self._stopping.is_set() and self._wanted.get(meter.id) == digest:
            try:
                self._build(meter, digest)
                return
            except Exception as exc:
                log.error(
                    "building the rollup of meter %s failed (trying again in %.0f s; its queries read raw events "
                    "meanwhile): %s",
                    meter.slug,
                    delay,
                    exc,
                    exc_info=delay == RETRY_FIRST_S,  # the traceback once, not every minute
                )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX_S)

    def _build(self, meter: Meter, digest: str) -> None:
        with self._lock:
            recorded = self._recorded.get(meter.id)
            if self._wanted.get(meter.id) != digest:
                return  # deleted or redefined meanwhile
            if recorded is not None and recorded.digest == digest and recorded.ready:
                return  # an earlier request built it already
            build = new_ulid()[-10:].lower()
            rollup = RollupBuild(self._layout, meter, build, EVENTS_TABLE)
            self._record(meter.id, _Build(digest, build, False))
            if recorded is not None and recorded.build:
                # stop feeding the previous build; queries already on its table may finish
                self._drop_view(meter, recorded.build)
            for statement in rollup.create():
                self._client.command(statement)
            # under the write lock: every batch stored so far is in the backfill, every later one in the view
            events = self._layout.name(EVENTS_TABLE.name)
            last = int(self._client.query(f"SELECT max(seq) FROM {events}").result_rows[0][0] or 0)
            for statement in rollup.feed(last):
                self._client.command(statement)
            self._record(meter.id, _Build(digest, build, True))
            self._ready[meter.id] = (digest, Rollup(rollup.names.table, group_columns(meter.group_by)))
        log.info("rollup of meter %s (%s) is ready", meter.slug, meter.id)

    def drop(self, meter: Meter) -> None:
        """Stop feeding the meter's rollup; its table stays for queries in flight until the next start."""
        self._wanted.pop(meter.id, None)
        with self._lock:
            self._ready.pop(meter.id, None)
            recorded = self._recorded.pop(meter.id, None)
            if recorded is not None and recorded.build:
                self._drop_view(meter, recorded.build)
            self._record(meter.id, _Build("", "", False))  # a tombstone: no mutations on the event store
            self._recorded.pop(meter.id, None)

    def _drop_view(self, meter: Meter, build: str) -> None:
        self._client.command(self._layout.drop("VIEW", rollup_names(self._layout, meter, build).view))

    def _record(self, meter_id: str, state: _Build) -> None:
        self._client.insert(
            self._state,
            [[meter_id, state.digest, state.build, int(state.ready)]],
            column_names=["meter_id", "hash", "build", "ready"],
        )
        self._recorded[meter_id] = state
