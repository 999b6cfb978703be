"""`meterd config validate --connect`: reach every service the settings name, and say what is wrong."""

from __future__ import annotations

from meterd.settings import Settings


def reachability(settings: Settings) -> list[str]:
    return [*_metadata(settings), *_event_store(settings), *(_kafka(settings) if settings.mode == "cluster" else [])]


def _metadata(settings: Settings) -> list[str]:
    from sqlalchemy import create_engine

    from meterd.backends.sql.revision import behind

    url = settings.storage.metadata_dsn()
    engine = create_engine(url)
    try:
        problem = behind(engine)
    except Exception as exc:
        return [f"storage.metadata_url: cannot reach the metadata database: {_short(exc)}"]
    finally:
        engine.dispose()
    return [f"storage.metadata_url: {problem}"] if problem else []


def _event_store(settings: Settings) -> list[str]:
    if settings.mode == "embedded" and settings.storage.event_store is None:
        return []  # in-process chDB: nothing to reach (and only one process may open it)
    from meterd.backends.clickhouse.store import client_for

    try:
        client = client_for(settings.storage.event_store_dsn())
        client.query("SELECT 1")
        client.close()
    except Exception as exc:
        return [f"storage.event_store: cannot reach ClickHouse: {_short(exc)}"]
    return []


def _kafka(settings: Settings) -> list[str]:
    from meterd.backends.kafka.admin import topic_partitions

    try:
        partitions = topic_partitions(settings.kafka)
    except Exception as exc:
        return [f"kafka.bootstrap_servers: cannot reach the brokers: {_short(exc)}"]
    if partitions is None:
        return [f"kafka.topic: topic {settings.kafka.topic} does not exist: run `meterd migrate`"]
    return []


def _short(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
