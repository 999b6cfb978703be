"""Which metadata schema revision a database is at, against the migrations this meterd carries."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from meterd.backends.sql.migrate import alembic_config


def behind(engine: Engine) -> str | None:
    """None when the database is at this meterd's head revision; else what is wrong, in words."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "the metadata database has no schema: run `meterd migrate`"
    return f"the metadata database is at revision {current}, this meterd needs {head}: run `meterd migrate`"


def require_current(engine: Engine) -> None:
    problem = behind(engine)
    if problem is not None:
        raise RuntimeError(problem)
