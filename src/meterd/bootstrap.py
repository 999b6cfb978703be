"""The only module that names concrete backends: settings -> stores -> services."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, create_engine, event

from meterd.auth.keys import KeyService
from meterd.backends.clickhouse.store import ClickHouseEventStore
from meterd.backends.kafka.journal import KafkaJournal
from meterd.backends.kafka.source import KafkaSource
from meterd.backends.sql.customers import SQLCustomerStore, SQLSubjectStore
from meterd.backends.sql.dialect import guard
from meterd.backends.sql.entitlements import (
    SQLEntitlementStore,
    SQLFeatureStore,
    SQLGrantStore,
    SQLResetStore,
    SQLSnapshotStore,
)
from meterd.backends.sql.keys import SQLApiKeyStore
from meterd.backends.sql.ledger import RollupWriteLock, SinkLedger, StoredWatermark
from meterd.backends.sql.meters import SQLMeterStore
from meterd.backends.sql.migrate import upgrade
from meterd.backends.sql.notifications import SQLNotificationStore
from meterd.backends.sql.revision import require_current
from meterd.backends.sqlite.journal import SQLiteJournal
from meterd.core.errors import ConflictError, NotFoundError
from meterd.core.timeutil import utcnow
from meterd.customers.model import Customer
from meterd.customers.service import CustomerService
from meterd.entitlements.balance import BalanceService, EventRouter, Value
from meterd.entitlements.features import FeatureService
from meterd.entitlements.model import Entitlement
from meterd.entitlements.service import EntitlementService
from meterd.entitlements.snapshot import EntitlementSnapshot
from meterd.ingest.journal import JournalSource
from meterd.meters.model import Meter
from meterd.meters.service import MeterCreateInput, MeterService
from meterd.notifications.model import RULE_TYPES
from meterd.notifications.outbox import DeliveryOutbox, RetryPolicy
from meterd.notifications.service import FeatureLookup, NotificationService
from meterd.settings import Settings
from meterd.usage.service import UsageService
from meterd.workers.balance import BalanceWorker, Publish
from meterd.workers.sink import Sink
from meterd.workers.webhooks import WebhookSender, WebhookWorker

log = logging.getLogger(__name__)


def metadata_engine(settings: Settings, migrate: bool | None = None) -> Engine:
    """The metadata database. Embedded mode brings its schema up to date at start; cluster mode expects
    `meterd migrate` to have done it (one deliberate step per upgrade, not one per node) and refuses to start
    on an older schema."""
    url = settings.storage.metadata_dsn()
    if url.startswith("sqlite"):
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    guard(engine)  # what PostgreSQL cannot store is a 400 on both databases
    if migrate is None:
        migrate = settings.mode == "embedded"
    if migrate:
        upgrade(engine)
    else:
        require_current(engine)
    return engine


def key_service(settings: Settings, engine: Engine) -> KeyService:
    return KeyService(SQLApiKeyStore(engine), settings.api_keys, settings.namespace)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    journal: SQLiteJournal | KafkaJournal | None  # None in `meterd worker`, which takes no events
    store: ClickHouseEventStore
    sink: Sink | None  # None in cluster mode: `meterd sink` processes move events into the store
    meters: MeterService
    customers: CustomerService
    usage: UsageService
    keys: KeyService
    features: FeatureService
    entitlements: EntitlementService
    balances: BalanceService
    balance_worker: BalanceWorker
    notifications: NotificationService
    webhooks: WebhookWorker | None = None  # None: deliveries are sent by `meterd worker` processes
    started: bool = field(default=False)

    @property
    def ingest(self) -> SQLiteJournal | KafkaJournal:
        """The journal of a process that takes events (the HTTP app's)."""
        assert self.journal is not None, "this process takes no events"
        return self.journal

    def start(self) -> None:
        if self.sink is not None:
            self.sink.start()
        self.balance_worker.start()
        if self.webhooks is not None:
            self.webhooks.start()
        self.started = True

    def close(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stop(grace_s=5.0)
        # the server has answered every request by now: drain the journal into the store, then close it
        if self.sink is not None:
            self.sink.stop(drain=True)
        if self.journal is not None:
            self.journal.close()
        self.balance_worker.stop()
        self.store.rollups.stop(timeout=60)  # a build cut short is redone at the next start anyway
        self.store.close()
        self.engine.dispose()


def build_services(settings: Settings, takes_events: bool = True) -> Services:
    """Everything a process runs. `takes_events=False` (cluster mode's `meterd worker`): no journal."""
    cluster = settings.mode == "cluster"
    engine = metadata_engine(settings)
    store = event_store(settings)
    journal: SQLiteJournal | KafkaJournal | None
    sink: Sink | None
    if not takes_events:
        journal, sink = None, None
    elif cluster:
        journal = KafkaJournal(
            settings.kafka,
            max_queued_events=settings.ingest.max_queued_events,
            max_lag_events=settings.sink.max_lag_events,
        )
        sink = None
    else:
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        journal = SQLiteJournal(
            settings.storage.journal_path(),
            dedup_window=settings.ingest.dedup_window,
            max_queued_events=settings.ingest.max_queued_events,
            max_commit_events=settings.ingest.max_commit_events,
            max_lag_events=settings.sink.max_lag_events,
            min_free_bytes=settings.storage.min_free_disk_mb * 2**20,
        )
        sink = _sink(settings, journal, store)
    customers = CustomerService(SQLCustomerStore(engine), SQLSubjectStore(engine))
    meters = MeterService(SQLMeterStore(engine), store.check_json_path, store.rollups, caching=not cluster)
    usage = UsageService(store, customers.subject_map)
    entitlement_store = SQLEntitlementStore(engine)
    features = FeatureService(SQLFeatureStore(engine), entitlement_store, meters)
    meters.in_use = features.meter_in_use
    meters.group_by_in_use = features.group_by_in_use
    customers.in_use = _has_entitlements(entitlement_store)
    entitlements = EntitlementService(
        entitlement_store, SQLGrantStore(engine), SQLResetStore(engine), features, customers, meters.get
    )
    balances = BalanceService(entitlements, usage, meters.get, SQLSnapshotStore(engine), caching=not cluster)
    notification_store = SQLNotificationStore(engine)
    notifications = NotificationService(notification_store, features=_feature_lookup(features))
    listening = _Listening(notification_store, ttl_s=0.0 if cluster else None)
    notifications.rules_changed.append(listening.forget)
    worker = BalanceWorker(
        balances,
        EventRouter(entitlement_store.routes),
        entitlement_store.by_id,
        publish=_publisher(entitlements, notifications),
        wanted=listening,
    )
    if sink is not None:
        sink.on_stored.append(worker.on_stored)
        sink.guards.append(worker)
    entitlements.changed.append(worker.on_changed)
    entitlements.reset_hooks.append(worker.on_reset)
    customers.changed.append(lambda namespace, customer_id: worker.forget_all())
    features.changed.append(lambda namespace: worker.forget_all())
    meters.changed.append(lambda meter: worker.forget_all())
    services = Services(
        settings,
        engine,
        journal,
        store,
        sink,
        meters,
        customers,
        usage,
        key_service(settings, engine),
        features,
        entitlements,
        balances,
        worker,
        notifications,
    )
    if settings.notifications.worker:
        services.webhooks = webhook_worker(settings, engine)
        services.notifications.subscribe(services.webhooks.wake)
    provision_meters(services)
    if cluster:  # other processes use the store too: build what is missing, drop nothing (`meterd migrate` does)
        for meter in _all_live_meters(engine):
            store.rollups.ensure(meter)
    else:
        store.rollups.sync(_all_live_meters(engine))
    return services


def event_store(settings: Settings) -> ClickHouseEventStore:
    storage = settings.storage
    if settings.mode == "embedded":
        return ClickHouseEventStore(storage.event_store_dsn(), cluster=storage.clickhouse_cluster)
    # cluster mode: rollup builds and event listing follow the sinks through the sink ledger
    metadata = storage.metadata_dsn()
    return ClickHouseEventStore(
        storage.event_store_dsn(),
        cluster=storage.clickhouse_cluster,
        rollup_lock=RollupWriteLock(metadata),
        completed_seq=StoredWatermark(metadata),
    )


def _sink(settings: Settings, source: JournalSource, store: ClickHouseEventStore) -> Sink:
    return Sink(
        source,
        store,
        min_batch=settings.sink.min_batch,
        max_wait_s=settings.sink.max_wait.total_seconds(),
        max_batch=settings.sink.max_batch,
    )


@dataclass
class SinkProcess:
    """`meterd sink` (cluster mode): a Kafka consumer-group member moving batches into ClickHouse."""

    settings: Settings
    source: KafkaSource
    store: ClickHouseEventStore
    sink: Sink

    def start(self) -> None:
        self.sink.start()

    def close(self) -> None:
        self.sink.stop(drain=True)
        self.source.close()
        self.store.close()


def build_sink(settings: Settings) -> SinkProcess:
    if settings.mode != "cluster":
        raise ValueError("`meterd sink` runs in cluster mode (mode: cluster); `meterd serve` has its own sink")
    metadata_engine(settings, migrate=False).dispose()  # refuses an old schema
    store = event_store(settings)
    ledger = SinkLedger(settings.storage.metadata_dsn(), settings.kafka.topic)
    ledger.ensure_sequence_above(store.max_seq())
    source = KafkaSource(
        settings.kafka, ledger, dedup_window=settings.ingest.dedup_window, max_buffered=settings.sink.max_batch
    )
    return SinkProcess(settings, source, store, _sink(settings, source, store))


def webhook_worker(settings: Settings, engine: Engine) -> WebhookWorker:
    """The webhook delivery worker (`meterd serve` runs one; so will `meterd worker`)."""
    config = settings.notifications
    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        base_delay=config.retry_base_delay,
        max_delay=config.retry_max_delay,
        lease=config.lease_timeout,
    )
    return WebhookWorker(
        DeliveryOutbox(SQLNotificationStore(engine), policy),
        WebhookSender(config.timeout.total_seconds()),
        concurrency=config.concurrency,
        poll_interval_s=config.poll_interval.total_seconds(),
    )


def _publisher(entitlements: EntitlementService, notifications: NotificationService) -> Publish:
    """Balance worker -> notification rules: the recomputed value with the API shapes of the moment."""
    from meterd.http.entitlement_wire import entitlement_json, feature_json, value_json
    from meterd.http.wire import customer_json

    def publish(entitlement: Entitlement, value: Value, operation: str) -> None:
        if value.balance is None or value.period is None:
            return
        assert entitlement.measure_usage_from is not None
        customer = entitlements.customers.get(entitlement.namespace, entitlement.customer_id)
        feature = entitlements.features.get(entitlement.namespace, entitlement.feature_id)
        shape = entitlement_json(entitlement, customer, value.period, v2=False)
        shape["customerId"] = entitlement.customer_id
        notifications.on_snapshot(
            EntitlementSnapshot(
                namespace=entitlement.namespace,
                operation="reset" if operation == "reset" else "update",
                calculated_at=utcnow(),
                entitlement_id=entitlement.id,
                feature_id=feature.id,
                feature_key=feature.key,
                customer_id=customer.id,
                subject_key=entitlement.subject_key,
                period_from=value.period[0],
                period_to=value.period[1],
                measure_usage_from=entitlement.measure_usage_from,
                balance=value.balance,
                usage=value.usage or Decimal(0),
                overage=value.overage or Decimal(0),
                total_available=value.total_available or Decimal(0),
                has_access=value.has_access,
                entitlement=shape,
                feature=feature_json(feature),
                customer=customer_json(customer),
                subject={"key": entitlement.subject_key},
                value=value_json(value),
            )
        )

    return publish


def _has_entitlements(store: SQLEntitlementStore) -> Callable[[Customer], str | None]:
    def check(customer: Customer) -> str | None:
        _, live = store.list(customer.namespace, customer_ids=[customer.id], limit=1)
        return f"it has {live} active entitlement(s); delete them first" if live else None

    return check


class _Listening:
    """Whether a namespace has live notification rules: remembered until a rule changes there, or, where
    other processes change rules too (cluster mode: `ttl_s=0`), asked every time (a recalculation runs
    queries anyway; a remembered "no rules" would skip the usage that a new rule should see)."""

    def __init__(self, store: SQLNotificationStore, ttl_s: float | None = None) -> None:
        self._store = store
        self._ttl = ttl_s
        self._seen: dict[str, tuple[bool, float]] = {}

    def __call__(self, namespace: str) -> bool:
        now = time.monotonic()
        known = self._seen.get(namespace)
        if known is None or (self._ttl is not None and now - known[1] >= self._ttl):
            known = self._seen[namespace] = (bool(self._store.live_rules(namespace, RULE_TYPES)), now)
        return known[0]

    def forget(self, namespace: str) -> None:
        self._seen.pop(namespace, None)


def _feature_lookup(features: FeatureService) -> FeatureLookup:
    def lookup(namespace: str, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        found = {}
        for name in names:
            try:
                feature = features.get(namespace, name)
            except NotFoundError:
                continue
            found[name] = (feature.id, feature.key)
        return found

    return lookup


def _all_live_meters(engine: Engine) -> list[Meter]:
    return SQLMeterStore(engine).all_live()


def provision_meters(services: Services) -> None:
    """Create the config file's meters in the default namespace; an existing meter that differs is an error."""
    namespace = services.settings.namespace
    for spec in services.settings.meters:
        existing = services.meters.list(namespace)
        current = next((m for m in existing if m.slug == spec.slug), None)
        if current is not None:
            same = (
                current.aggregation.value == spec.aggregation
                and current.event_type == spec.eventType
                and current.value_property == spec.valueProperty
                and current.group_by == spec.groupBy
            )
            if not same:
                raise ConflictError(f"meter {spec.slug!r} from the config differs from the stored meter")
            continue
        services.meters.create(
            namespace,
            MeterCreateInput(
                slug=spec.slug,
                aggregation=spec.aggregation,
                event_type=spec.eventType,
                name=spec.name,
                description=spec.description,
                value_property=spec.valueProperty,
                group_by=spec.groupBy,
                event_from=spec.eventFrom,
            ),
        )
        log.info("provisioned meter %s from the config", spec.slug)
