"""Operating commands: `meterd migrate`, `meterd sink`, `meterd worker` and `meterd config validate`."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from meterd.ingest.journal import JournalBatch
from meterd.settings import Settings, load_settings

__all__ = ["load", "register"]


def load(ctx: click.Context, **overrides: Any) -> Settings:
    """The settings for a command: file, environment and flags (a bad value is a message, not a traceback)."""
    try:
        return load_settings(ctx.obj.get("config"), **overrides)
    except Exception as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def register(cli: click.Group) -> None:
    cli.add_command(migrate)
    cli.add_command(sink)
    cli.add_command(worker)
    cli.add_command(config)


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring every schema up to date: the metadata database (Alembic), the ClickHouse event store and the
    rollups of every meter, and in cluster mode the Kafka topic. Safe to run again; run it before starting
    upgraded nodes.

    \b
    Example:
      meterd --config cluster.yaml migrate
    """
    from meterd.backends.sql.meters import SQLMeterStore
    from meterd.bootstrap import event_store, metadata_engine

    settings = load(ctx)
    _logging(settings)
    engine = metadata_engine(settings, migrate=True)
    click.echo(f"metadata: at the latest revision ({engine.url.render_as_string(hide_password=True)})", err=True)
    store = event_store(settings)
    try:
        meters = SQLMeterStore(engine).all_live()
        store.rollups.sync(meters, wait=True)
        click.echo(f"event store: schema ready, rollups of {len(meters)} meter(s) current", err=True)
    finally:
        store.close()
        engine.dispose()
    if settings.mode == "cluster":
        from meterd.backends.kafka.admin import ensure_topic

        created, partitions = ensure_topic(settings.kafka)
        state = "created" if created else "exists"
        click.echo(f"kafka: topic {settings.kafka.topic} {state} ({partitions} partitions)", err=True)


_health_host = click.option(
    "--health-host", default="127.0.0.1", show_default=True, help="Address of the /healthz and /metrics endpoints."
)


def _run_until_signalled(starts: list[Callable[[], object]], stop: Callable[[], None]) -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    for start in starts:
        start()
    try:
        done.wait()
    finally:
        stop()


@click.command()
@click.option("--health-port", type=int, default=10000, show_default=True, help="Port of /healthz and /metrics.")
@_health_host
@click.pass_context
def sink(ctx: click.Context, health_port: int, health_host: str) -> None:
    """Run a sink worker (cluster mode): consume the events topic and store batches in ClickHouse.

    Run as many as the topic has partitions, at most; they share the work through the Kafka consumer group.
    SIGTERM stores what was taken, commits, and stops.

    \b
    Example:
      meterd --config cluster.yaml sink --health-port 10001
    """
    from prometheus_client import CollectorRegistry

    from meterd.bootstrap import build_sink
    from meterd.workers.health import HealthServer
    from meterd.workers.sink_metrics import SinkCollector

    settings = load(ctx)
    _logging(settings)
    try:
        process = build_sink(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    registry = CollectorRegistry()
    registry.register(SinkCollector(process))
    health = HealthServer(health_host, health_port, process.sink.healthy, registry)
    click.echo(f"meterd sink consuming {settings.kafka.topic} (health on {health_host}:{health.port})", err=True)

    def stop() -> None:
        process.close()
        health.stop()

    _run_until_signalled([process.start, health.start], stop)


@click.command()
@click.option("--health-port", type=int, default=10002, show_default=True, help="Port of /healthz and /metrics.")
@_health_host
@click.pass_context
def worker(ctx: click.Context, health_port: int, health_host: str) -> None:
    """Run the background workers outside the API nodes: webhook delivery from the notification outbox, and
    in cluster mode the balance worker, which follows the batches the sinks store and raises usage-threshold
    notifications.

    Any number may run: each delivery is claimed under a lease and each notification is raised once. With
    workers running, set `notifications.worker: false` on the API nodes.

    \b
    Example:
      meterd --config cluster.yaml worker
    """
    from prometheus_client import CollectorRegistry

    from meterd.bootstrap import build_services, webhook_worker
    from meterd.workers.health import HealthServer
    from meterd.workers.worker_metrics import WorkerCollector

    settings = load(ctx)
    _logging(settings)
    services = build_services(settings, takes_events=False)
    if services.webhooks is None:
        services.webhooks = webhook_worker(settings, services.engine)
        services.notifications.subscribe(services.webhooks.wake)
    checks = [services.webhooks.healthy, services.balance_worker.healthy]
    starts: list[Callable[[], object]] = [services.start]
    if settings.mode == "cluster":
        from meterd.backends.sql.ledger import StoredWatermark
        from meterd.workers.feed import StoredFeed

        balance_worker = services.balance_worker

        def stored(batch: JournalBatch) -> None:
            balance_worker.refresh_routes()
            balance_worker.on_stored(batch)

        watermark = StoredWatermark(settings.storage.metadata_dsn())
        feed = StoredFeed(settings.storage.metadata_dsn(), services.store, watermark, stored)
        starts.append(feed.start)
        checks.append(feed.healthy)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(services.webhooks, services.balance_worker))
    health = HealthServer(health_host, health_port, lambda: all(check() for check in checks), registry)
    starts.append(health.start)
    click.echo(f"meterd worker running (health on {health_host}:{health.port})", err=True)

    def stop() -> None:
        if settings.mode == "cluster":
            feed.stop()
            watermark.close()
        services.close()
        health.stop()

    _run_until_signalled(starts, stop)


@click.group()
def config() -> None:
    """Check settings."""


@config.command("validate")
@click.option("--connect", is_flag=True, help="Also reach the databases and brokers the settings name.")
@click.pass_context
def validate(ctx: click.Context, connect: bool) -> None:
    """Check the settings (file, METERD_* variables) and list every problem; exit status 1 if there is one.

    \b
    Example:
      meterd --config cluster.yaml config validate --connect
    """
    from meterd.cli.checks import reachability

    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(ctx.obj.get("config"))
    except FileNotFoundError as exc:
        problems.append(str(exc))
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if where:
                problems.append(f"{where}: {message}")
            else:
                problems.extend(part.strip() for part in message.removeprefix("cluster mode: ").split(";"))
    if settings is not None and connect:
        problems.extend(reachability(settings))
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        raise SystemExit(1)
    what = "and every service answers" if connect else "(run with --connect to reach the services)"
    click.echo(f"ok: {settings.mode if settings else ''} mode settings are valid {what}")
