"""Run the metadata migrations (Alembic) against an engine: the only way the schema is made, on SQLite and on
PostgreSQL alike. Embedded `meterd serve` runs them at start, `meterd migrate` in cluster mode; running them again
at head is a no-op."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock key ("meterd" + 1) that every node takes around its upgrade
MIGRATION_LOCK = 0x6D65746572640001


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(engine: Engine) -> None:
    """Upgrade to head in one transaction. On PostgreSQL, nodes starting at once against one database take
    turns: the first migrates, the others wait for its commit and then find the schema at head. (SQLite's
    database lock already serializes writers.)"""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # released when this transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
