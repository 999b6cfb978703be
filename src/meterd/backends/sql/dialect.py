"""What differs between SQLite (embedded) and PostgreSQL (cluster), kept here so the stores stay dialect-neutral.

- `insert_or_skip`/`upsert`: INSERT ... ON CONFLICT, spelled by each dialect's own insert construct.
- `code_point_order`: strings sort by code point on both (PostgreSQL's default collation may be linguistic:
  `en_US` ignores `_` and case on a first pass; SQLite compares bytes).
- `guard`: values PostgreSQL cannot store are refused on both databases alike, as a validation error (400)
  rather than a driver error (500): text with NUL (U+0000) characters, and strings longer than their column
  (PostgreSQL enforces VARCHAR(n), SQLite would keep them). A database that cannot be reached (a lost or
  refused connection, a server restarting) is an UnavailableError (503 with Retry-After), not a bug."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, String, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from meterd.core.errors import Problem, UnavailableError, ValidationError

__all__ = ["code_point_order", "guard", "has_nul", "insert_or_skip", "upsert"]

Insert = postgresql.Insert | sqlite.Insert


def _insert(conn: Connection, table: Table) -> Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"metadata database {conn.dialect.name!r}: use SQLite or PostgreSQL")


def insert_or_skip(conn: Connection, table: Table, conflict: Iterable[str]) -> Any:
    """INSERT that does nothing when a row with the same `conflict` columns (a unique index) exists."""
    return _insert(conn, table).on_conflict_do_nothing(index_elements=list(conflict))


def upsert(
    conn: Connection, table: Table, values: Mapping[str, Any], conflict: Iterable[str], keep: Iterable[str]
) -> Any:
    """INSERT `values`; when a row with the same `conflict` columns exists, update it to `values` except the
    `keep` columns (and the conflict columns). Add `.returning(...)` to read the stored row."""
    statement = _insert(conn, table).values(**values)
    fixed = {*conflict, *keep}
    changes = {name: statement.excluded[name] for name in values if name not in fixed}
    return statement.on_conflict_do_update(index_elements=list(conflict), set_=changes)


class CodePointOrder(ColumnElement[str]):
    """A string column that sorts by code point (see code_point_order)."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[str]) -> None:
        self.column = column
        self.type = column.type


def code_point_order(column: ColumnElement[str]) -> CodePointOrder:
    """ORDER BY `column` in code point order on every database."""
    return CodePointOrder(column)


@compiles(CodePointOrder)
def _as_is(element: CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(CodePointOrder, "postgresql")
def _collate_c(element: CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.column, **kw)} COLLATE "C"'


def has_nul(value: str) -> bool:
    return "\x00" in value


def _nul_anywhere(value: Any) -> bool:
    if isinstance(value, str):
        return has_nul(value)
    if isinstance(value, Mapping):
        return any(_nul_anywhere(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_nul_anywhere(v) for v in value)
    return False


def _field(bind: str) -> str:
    """The request field a bound column value most likely came from: primary_email_1 -> primaryEmail."""
    head, *rest = re.sub(r"_\d+$", "", bind).split("_")
    return head + "".join(part.title() for part in rest)


def _too_long(context: DefaultExecutionContext) -> Problem | None:
    """The first column value (INSERT/UPDATE) longer than its VARCHAR(n), as a problem."""
    compiled = getattr(context, "compiled", None)
    if compiled is None or not (context.isinsert or context.isupdate):
        return None
    for params in context.compiled_parameters:
        for name, value in params.items():
            bind = compiled.binds.get(name)
            column_type = getattr(bind.type, "impl", bind.type) if bind is not None else None  # DecimalText: String
            if not isinstance(column_type, String) or not column_type.length:
                continue
            text = value if isinstance(value, str) else str(value) if isinstance(value, Decimal) else ""
            if len(text) > column_type.length:
                return Problem(_field(name), f"at most {column_type.length} characters (got {len(text)})")
    return None


def _nul_field(context: DefaultExecutionContext) -> str:
    """The request field of the first bound value with a NUL in it."""
    for params in getattr(context, "compiled_parameters", None) or ():
        for name, value in params.items():
            if _nul_anywhere(value):
                return _field(name)
    return ""


def _check(
    _conn: Connection, _cursor: Any, _statement: str, parameters: Any, context: DefaultExecutionContext, _many: bool
) -> None:
    if _nul_anywhere(parameters):
        raise ValidationError(Problem(_nul_field(context), "text must not contain NUL (U+0000) characters"))
    if (problem := _too_long(context)) is not None:
        raise ValidationError(problem)


def _unreachable(context: ExceptionContext) -> None:
    """PostgreSQL's operational errors (connection lost or refused, server shutting down or starting, deadlock,
    statement cancelled) are worth a retry; on SQLite they also cover schema bugs, so only disconnects and a
    full disk count."""
    postgres = context.dialect is not None and context.dialect.name == "postgresql"
    if getattr(context.original_exception, "sqlite_errorname", "") == "SQLITE_FULL":
        raise UnavailableError("the metadata database cannot write: the disk is full") from context.original_exception
    if context.is_disconnect or (postgres and isinstance(context.sqlalchemy_exception, OperationalError)):
        raise UnavailableError("the metadata database is not answering") from context.original_exception


def guard(engine: Engine) -> Engine:
    """Refuse, on either database, the values PostgreSQL cannot store, and report an unreachable database as
    unavailable (see the module docstring)."""
    event.listen(engine, "before_cursor_execute", _check)
    event.listen(engine, "handle_error", _unreachable)
    return engine
