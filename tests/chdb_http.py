"""ClickHouse's HTTP interface, served on chDB: cluster-mode tests run several meterd processes against one
event store over clickhouse-connect's own HTTP client, and the SQL runs on the real ClickHouse engine.

Run it: `python -m tests.chdb_http --path DIR --port N [--host 127.0.0.1] [--user U --password P]` (serves
until SIGTERM), `ChdbHttpServer` (in-process, in a thread), `start_subprocess()` (another process: what tests
with several processes need, and what a process already holding a chDB path must use), or the session
fixture `clickhouse_http` (the DSN of a subprocess server).

Supported: GET /ping and GET / ("Ok."); queries in the `query` URL parameter, the body, both (joined by a
newline, as ClickHouse does) or a multipart form; `database`; settings as URL parameters (applied with SET
on the request's chDB connection, so they reach DDL, SELECT and INSERT alike); bound parameters
(`param_<name>`); any output format chDB has (the query's FORMAT clause, else `default_format`, else
TabSeparated), with the header block of an empty Native result as ClickHouse sends it; `INSERT ... FORMAT
<fmt>` with the data in the body, after Content-Encoding lz4/zstd/gzip/deflate/br and chunked transfer
(run as INSERT ... FROM INFILE on a temp file, answered only once chDB has inserted); sessions (`session_id`,
`session_timeout`, `session_check`: one chDB connection per session, a concurrent query in a busy session is
SESSION_IS_LOCKED); a running `query_id` cannot be reused; GET is read-only; optional user/password (Basic
auth, X-ClickHouse-User/Key or URL parameters); errors as ClickHouse writes them (status by error code, body
`Code: N. DB::Exception: ... (NAME) (version V)`, header X-ClickHouse-Exception-Code); response headers
X-ClickHouse-Query-Id, -Format, -Timezone, -Summary, -Server-Display-Name.

Not supported: compressed responses (Accept-Encoding is ignored, which clients must accept), ClickHouse's
own block compression (`compress=1`, `decompress=1`), external data, streaming of results (a result is
buffered whole), progress headers, client_protocol_version (no block info: clickhouse-connect then uses
protocol 0, as with chDB in-process), roles and quotas, multi-statements. A session's own SET of a setting
that its requests also send as URL parameters is not kept apart from them."""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

__all__ = ["ChdbHttpServer", "ServerProcess", "clickhouse_http", "start_subprocess"]

# URL parameters that are not settings; the HTTP-only settings below have no meaning on chDB
_TRANSPORT = {
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "stacktrace", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close", "http_wait_end_of_query",
    "http_response_buffer_size",
}  # fmt: skip
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_READ_KINDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK"}
_WRITE_KINDS = {"INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "OPTIMIZE", "ATTACH", "DETACH", "DELETE",
                "UPDATE", "EXCHANGE", "UNDROP", "GRANT", "REVOKE", "SYSTEM", "KILL", "BACKUP", "RESTORE"}  # fmt: skip
# ClickHouse's HTTPHandler: exception code -> HTTP status (by name; codes come from the engine itself)
_STATUS = {
    400: "CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE "
    "CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 "
    "CANNOT_PARSE_IPV6 CANNOT_PARSE_INPUT_ASSERTION_FAILED CANNOT_PARSE_UUID DUPLICATE_COLUMN ILLEGAL_COLUMN "
    "UNKNOWN_ELEMENT_IN_AST UNKNOWN_TYPE_OF_AST_NODE TOO_DEEP_AST TOO_BIG_AST UNEXPECTED_AST_STRUCTURE SYNTAX_ERROR "
    "INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    401: "REQUIRED_PASSWORD",
    403: "UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED SET_NON_GRANTED_ROLE",
    404: "UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE UNKNOWN_DATABASE "
    "UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE "
    "UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE",
    408: "TIMEOUT_EXCEEDED",
    411: "HTTP_LENGTH_REQUIRED",
    413: "QUERY_IS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
    503: "SOCKET_TIMEOUT CANNOT_OPEN_FILE CANNOT_SCHEDULE_TASK ABORTED",
}
_CONTENT_TYPES = {"Native": "application/octet-stream", "RowBinary": "application/octet-stream", "CSV": "text/csv"}
_UNKNOWN = object()  # a connection setting whose value is not known (a failed SET)


class ServerError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


# -- the shape of a statement ---------------------------------------------------------------------------------

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def _words(sql: bytes) -> Iterator[tuple[bytes, int, int, int]]:
    """Unquoted words (upper-cased) with their span and parenthesis depth; strings, quoted names and comments
    are skipped. A generator, so the caller stops before an insert's data."""
    i, depth, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in b"'\"`":
            i = _skip_quoted(sql, i)
        elif sql.startswith(b"--", i) or sql.startswith(b"# ", i):
            j = sql.find(b"\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith(b"/*", i):
            j = sql.find(b"*/", i + 2)
            i = n if j < 0 else j + 2
        elif (m := _WORD.match(sql, i)) is not None:
            yield m.group().upper(), m.start(), m.end(), depth
            i = m.end()
        else:
            depth += (c == ord("(")) - (c == ord(")"))
            i += 1


def _skip_quoted(sql: bytes, i: int) -> int:
    quote, j, n = sql[i], i + 1, len(sql)
    while j < n:
        if sql[j] == ord("\\"):
            j += 2
        elif sql[j] == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


@dataclass(frozen=True)
class Statement:
    sql: bytes  # a data insert: the INSERT up to its FORMAT clause
    kind: str  # the first keyword
    fmt: str | None = None  # a query's trailing FORMAT, or a data insert's input format
    fmt_at: int | None = None  # where that FORMAT clause starts
    data: bytes | None = None  # a data insert's payload
    settings_at: int | None = None  # a data insert's SETTINGS clause


def parse(text: bytes) -> Statement:
    words = _words(text)
    kind = next((w.decode() for w, _, _, _ in words), "")
    if kind == "INSERT":
        return _parse_insert(text, words)
    fmt: tuple[str, int] | None = None
    previous: tuple[bytes, int] | None = None
    for word, start, end, depth in words:
        if depth == 0 and previous is not None and previous[0] == b"FORMAT":
            rest = text[end:].strip(b" \t\r\n\f;")
            if not rest or rest[:8].upper() == b"SETTINGS":
                fmt = (text[start:end].decode(), previous[1])
        previous = (word, start)
    return Statement(text, kind, fmt[0] if fmt else None, fmt[1] if fmt else None)


def _parse_insert(text: bytes, words: Iterator[tuple[bytes, int, int, int]]) -> Statement:
    """INSERT ... FORMAT <fmt> is followed by data (from the first newline after the format name, as ClickHouse
    reads it); INSERT ... VALUES / SELECT / FROM INFILE are plain statements."""
    settings_at = None
    for word, start, _end, depth in words:
        if depth:
            continue
        if word == b"SETTINGS" and settings_at is None:
            settings_at = start
        elif word in (b"SELECT", b"WITH", b"VALUES", b"FROM"):
            break
        elif word == b"FORMAT":
            name = next(words, None)
            if name is None:
                break
            data_at = name[2]
            while data_at < len(text) and text[data_at] in b" \t\f":
                data_at += 1
            data_at += text.startswith(b"\r", data_at)
            data_at += text.startswith(b"\n", data_at)
            fmt = text[name[1] : name[2]].decode()
            return Statement(text[:start], "INSERT", fmt, start, text[data_at:], settings_at)
    return Statement(text, "INSERT")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# -- the engine: chDB connections, sessions, execution --------------------------------------------------------


@dataclass
class Request:
    method: str
    text: bytes
    query_id: str
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    default_format: str = "TabSeparated"
    session_id: str | None = None
    session_timeout: float = 60.0
    session_check: bool = False


@dataclass
class Response:
    body: bytes
    fmt: str | None  # set for a statement that has a result, even an empty one
    summary: dict[str, str]


class _Conn:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.database: str | None = "default"
        self.settings: dict[str, object] = {}  # what URL settings have SET on it
        self.dirty = False  # a statement changed its state (SET, USE, a temporary table): not for the pool
        self.busy = False
        self.timeout = 60.0
        self.last_used = time.monotonic()


class Engine:
    """One chDB engine (one path); chDB runs queries of different connections in parallel, so every request
    gets a connection of its own: its session's, or an idle one from the pool."""

    def __init__(self, path: str) -> None:
        import chdb

        self._chdb = chdb
        self.path = path
        self._anchor = chdb.connect(path)  # keeps the engine up while request connections come and go
        version, tz, name = self._anchor.query("SELECT version(), timezone(), displayName()", "TSV").bytes().split()
        self.version, self.timezone, self.display_name = version.decode(), tz.decode(), name.decode()
        rows = self._anchor.query(
            "SELECT errorCodeToName(number) AS n, number FROM numbers(2000) WHERE n != ''", "JSONCompactEachRow"
        )
        self.codes: dict[str, int] = dict(json.loads(line) for line in rows.bytes().splitlines())
        self._names = {code: name for name, code in self.codes.items()}
        self.tmp = tempfile.mkdtemp(prefix="chdb-http-")
        self._lock = threading.Condition()
        self._idle: list[_Conn] = []
        self._sessions: dict[str, _Conn] = {}
        self._running: set[str] = set()
        self._closing = False

    # connections

    @contextlib.contextmanager
    def _connection(self, request: Request) -> Iterator[_Conn]:
        with self._lock:
            if self._closing:
                raise ServerError("ABORTED", "The server is shutting down")
            if request.query_id in self._running:
                raise ServerError(
                    "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING", f"Query with id = {request.query_id} is already running"
                )
            now = time.monotonic()
            for sid, stale in list(self._sessions.items()):
                if not stale.busy and now - stale.last_used > stale.timeout:
                    del self._sessions[sid]
                    stale.conn.close()
            conn = self._session(request) if request.session_id else None
            if conn is None:
                conn = self._idle.pop() if self._idle else _Conn(self._chdb.connect(self.path))
            conn.busy = True
            self._running.add(request.query_id)
        try:
            yield conn
        finally:
            with self._lock:
                conn.busy, conn.last_used = False, time.monotonic()
                self._running.discard(request.query_id)
                if not request.session_id:
                    if conn.dirty or len(self._idle) >= 8:
                        conn.conn.close()
                    else:
                        self._idle.append(conn)
                self._lock.notify_all()

    def _session(self, request: Request) -> _Conn:
        assert request.session_id is not None
        conn = self._sessions.get(request.session_id)
        if conn is None:
            if request.session_check:
                raise ServerError("SESSION_NOT_FOUND", f"Session {request.session_id} not found")
            conn = self._sessions[request.session_id] = _Conn(self._chdb.connect(self.path))
            conn.database = None
        if conn.busy:
            raise ServerError("SESSION_IS_LOCKED", f"Session {request.session_id} is locked by a concurrent client")
        conn.timeout = request.session_timeout
        return conn

    def _prepare(self, conn: _Conn, request: Request) -> None:
        database = request.database or (None if request.session_id else "default")
        if database and database != conn.database:
            self._run(conn, "USE `" + database.replace("\\", "\\\\").replace("`", "\\`") + "`", "TSV")
            conn.database = database
        for name in request.settings:
            if not _SETTING_NAME.match(name):
                raise ServerError("UNKNOWN_SETTING", f"Unknown setting '{name}'")
        changes = [f"{k} = {_quote(v)}" for k, v in request.settings.items() if conn.settings.get(k) != v]
        changes += [f"{k} = DEFAULT" for k in conn.settings if k not in request.settings]
        if changes:
            wanted = dict(request.settings)
            try:
                self._run(conn, "SET " + ", ".join(changes), "TSV")
            except ServerError:
                wanted = dict.fromkeys({*conn.settings, *request.settings}, _UNKNOWN)
                raise
            finally:
                conn.settings = wanted

    def _run(self, conn: _Conn, sql: str | bytes, fmt: str, params: dict[str, str] | None = None) -> Any:
        try:
            return conn.conn.query(sql, fmt, params=params or {})
        except Exception as exc:
            text = str(exc)
            match = re.search(r"Code: (\d+)\. ", text)
            if match is None:
                raise ServerError("STD_EXCEPTION", text) from None
            code = int(match.group(1))
            raise ServerError(self._names.get(code, "UNKNOWN_EXCEPTION"), text[match.start() :]) from None

    # execution

    def execute(self, request: Request) -> Response:
        statement = parse(request.text)
        if not statement.kind:
            raise ServerError("SYNTAX_ERROR", "Empty query")
        if request.method == "GET" and statement.kind in _WRITE_KINDS:
            raise ServerError(
                "READONLY",
                "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. "
                "You should use method POST for modifying queries",
            )
        with self._connection(request) as conn:
            self._prepare(conn, request)
            if statement.kind in ("USE", "SET") or b"TEMPORARY" in statement.sql[:40].upper():
                conn.dirty = True
                if statement.kind == "USE":
                    conn.database = None  # a session's next `database` parameter switches again
            if statement.data is not None:
                return self._insert(conn, statement, request)
            return self._query(conn, statement, request)

    def _query(self, conn: _Conn, statement: Statement, request: Request) -> Response:
        sql = statement.sql.decode(errors="surrogateescape")
        try:
            sql.encode()
        except UnicodeEncodeError:
            sql = statement.sql  # type: ignore[assignment]  # chDB takes bytes as they are
        result = self._run(conn, sql, request.default_format, request.params)
        body = result.bytes()
        fmt = statement.fmt or request.default_format
        if not body and fmt == "Native" and statement.kind in ("SELECT", "WITH") and statement.fmt_at is not None:
            body = self._header_block(conn, statement, request)  # ClickHouse sends the columns of an empty result
        return Response(body, fmt if statement.kind in _READ_KINDS else None, self._summary(result, len(body)))

    def _header_block(self, conn: _Conn, statement: Statement, request: Request) -> bytes:
        query = statement.sql[: statement.fmt_at].decode(errors="replace").rstrip().rstrip(";")
        try:
            rows = self._run(conn, f"DESCRIBE TABLE ({query})", "JSONCompactEachRow", request.params).bytes()
        except ServerError:
            return b""
        columns = [json.loads(line)[:2] for line in rows.splitlines()]
        block = bytearray(_leb128(len(columns)) + _leb128(0))
        for name, type_ in columns:
            for text in (name.encode(), type_.encode()):
                block += _leb128(len(text)) + text
        return bytes(block)

    def _insert(self, conn: _Conn, statement: Statement, request: Request) -> Response:
        fd, path = tempfile.mkstemp(dir=self.tmp, suffix=".data")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(statement.data or b"")
            head, at = statement.sql, statement.settings_at
            sql = head[:at].decode() if at is not None else head.decode()
            sql += f" FROM INFILE {_quote(path)}"
            if at is not None:
                sql += " " + head[at:].decode()
            result = self._run(conn, f"{sql} FORMAT {statement.fmt}", "TSV", request.params)
            return Response(b"", None, self._summary(result, 0))
        finally:
            os.unlink(path)

    @staticmethod
    def _summary(result: Any, result_bytes: int) -> dict[str, str]:
        """What chDB reports (no result_rows: counting them would mean parsing the result)."""
        return {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.rows_read()),
            "result_bytes": str(result_bytes),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }

    def close(self, timeout: float = 60.0) -> None:
        """Refuse new requests, wait for those in flight, then close every connection."""
        with self._lock:
            self._closing = True
            self._lock.wait_for(lambda: not self._running, timeout)
            for conn in [*self._idle, *self._sessions.values()]:
                conn.conn.close()
            self._idle.clear()
            self._sessions.clear()
        self._anchor.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- HTTP ------------------------------------------------------------------------------------------------------


def _decompress(data: bytes, encoding: str) -> bytes:
    """The body per Content-Encoding. Every frame of it: clickhouse-connect sends one lz4 or zstd frame per
    block, and lz4.frame.decompress() alone would return the first block only."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return data
        if encoding == "gzip":
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        if encoding == "lz4":
            import lz4.frame

            out = bytearray()
            while data:
                decompressor = lz4.frame.LZ4FrameDecompressor()
                out += decompressor.decompress(data)
                if not decompressor.eof:
                    raise ValueError("truncated lz4 frame")
                data = decompressor.unused_data
            return bytes(out)
        if encoding == "zstd":
            from backports import zstd

            return bytes(zstd.decompress(data))
        if encoding == "br":
            import brotli  # type: ignore[import-not-found]

            return bytes(brotli.decompress(data))
    except Exception as exc:
        raise ServerError("CANNOT_DECOMPRESS", f"Cannot decompress the {encoding} request body: {exc}") from None
    raise ServerError("UNKNOWN_FORMAT", f"Unknown HTTP content encoding '{encoding}'")


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    for part in message.get_payload() if message.is_multipart() else []:
        if part.get_filename():
            raise ServerError("NOT_IMPLEMENTED", "External data is not supported by this test server")
        name, payload = part.get_param("name", header="content-disposition"), part.get_payload(decode=True)
        fields[str(name)] = payload.decode() if isinstance(payload, bytes) else ""
    return fields


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _HttpServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        with self.server.open_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.open_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body()  # read whatever comes, to keep the connection in step
        body = body if method == "POST" else b""
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        engine = self.server.engine
        headers = {"X-ClickHouse-Server-Display-Name": engine.display_name, "X-ClickHouse-Query-Id": query_id}
        if url.path == "/ping" or (url.path == "/" and method == "GET" and "query" not in params):
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        if url.path != "/":
            self._send(404, b"There is no handle " + url.path.encode() + b"\n", {"Content-Type": "text/plain"})
            return
        try:
            request = self._request(method, params, body, query_id)
            response = engine.execute(request)
        except ServerError as exc:
            self._error(exc, headers)
            return
        except Exception as exc:  # a request this server cannot take apart: still ClickHouse's shape
            self._error(ServerError("STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), headers)
            return
        headers["X-ClickHouse-Summary"] = json.dumps(response.summary, separators=(",", ":"))
        headers["X-ClickHouse-Timezone"] = request.settings.get("session_timezone") or engine.timezone
        content_type = "text/plain; charset=UTF-8"
        if response.fmt is not None:
            headers["X-ClickHouse-Format"] = response.fmt
            content_type = _CONTENT_TYPES.get(response.fmt, content_type)
            if response.fmt.startswith("JSON"):
                content_type = "application/json; charset=UTF-8"
            elif response.fmt.startswith(("TabSeparated", "TSV")):
                content_type = "text/tab-separated-values; charset=UTF-8"
        self._send(200, response.body, {**headers, "Content-Type": content_type})

    def _request(self, method: str, params: dict[str, str], body: bytes, query_id: str) -> Request:
        self._authenticate(params)
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise ServerError("NOT_IMPLEMENTED", "ClickHouse block compression is not supported by this test server")
        body = _decompress(body, self.headers.get("Content-Encoding", ""))
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            params = {**params, **_form_fields(content_type, body)}
            body = b""
        query = params.get("query", "").encode()
        text = query + b"\n" + body if query and body else query or body
        request = Request(
            method, text, query_id, database=params.get("database") or self.headers.get("X-ClickHouse-Database")
        )
        request.default_format = (
            params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        )
        request.session_id = params.get("session_id") or None
        request.session_timeout = float(params.get("session_timeout") or 60)
        request.session_check = params.get("session_check") == "1"
        for name, value in params.items():
            if name.startswith("param_"):
                request.params[name[6:]] = value
            elif name not in _TRANSPORT:
                request.settings[name] = value
        return request

    def _authenticate(self, params: dict[str, str]) -> None:
        users = self.server.users
        if users is None:
            return
        user, password = self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user, password = user or params.get("user") or "default", password or params.get("password", "")
        if users.get(user) != password:
            raise ServerError(
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )

    def _error(self, exc: ServerError, headers: dict[str, str]) -> None:
        engine = self.server.engine
        code = engine.codes.get(exc.name, 1001)
        text = str(exc)
        if not text.startswith("Code: "):
            text = f"Code: {code}. DB::Exception: {text}. ({exc.name})"
        text = text.rstrip()
        if "(version " not in text[-40:]:
            text += f" (version {engine.version})"
        status = next((s for s, names in _STATUS.items() if exc.name in names.split()), 500)
        headers = {**headers, "X-ClickHouse-Exception-Code": str(code), "Content-Type": "text/plain; charset=UTF-8"}
        self._send(status, text.encode() + b"\n", headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: Engine, users: dict[str, str] | None, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.engine, self.users, self.verbose = engine, users, verbose
        self.open_lock = threading.Lock()
        self.open_sockets: set[socket.socket] = set()


class ChdbHttpServer:
    """The server in this process, in a thread: `with ChdbHttpServer(path) as server: server.dsn`. chDB hosts
    one path per process: a process that has another chDB path open needs `start_subprocess` instead."""

    def __init__(
        self,
        path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        users: dict[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        self.path, self.host, self.port, self.users, self.verbose = str(path), host, port, users, verbose
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ChdbHttpServer:
        Path(self.path).mkdir(parents=True, exist_ok=True)
        engine = Engine(self.path)
        self._httpd = _HttpServer((self.host, self.port), engine, self.users, self.verbose)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chdb-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dsn(self) -> str:
        return _dsn(self.host, self.port, self.users)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.engine.close()  # waits for requests in flight
        with httpd.open_lock:
            for sock in httpd.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> ChdbHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _dsn(host: str, port: int, users: dict[str, str] | None) -> str:
    if not users:
        return f"http://{host}:{port}"
    user, password = next(iter(users.items()))
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"http://{auth}@{host}:{port}"


# -- in another process -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return bool(response.read() == b"Ok.\n")
    except OSError:
        return False


@dataclass
class ServerProcess:
    path: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    users: dict[str, str] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dsn(self) -> str:
        return _dsn(self.host, self.port, self.users)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_subprocess(
    path: str | Path, *, users: dict[str, str] | None = None, timeout: float = 60.0, verbose: bool = False
) -> ServerProcess:
    """`python -m tests.chdb_http` on a free port; returns once GET /ping answers Ok."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    log_path = path.parent / f"{path.name}-chdb-http.log"
    for _ in range(3):  # a free port can be taken before the child binds it
        port = _free_port()
        cmd = [sys.executable, "-m", "tests.chdb_http", "--path", str(path), "--port", str(port)]
        for user, password in (users or {}).items():
            cmd += ["--user", user, "--password", password]
        cmd += ["--verbose"] if verbose else []
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                cmd, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT
            )
        server = ServerProcess(path, port, process, log_path, users)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if _ping(server.url):
                return server
            time.sleep(0.05)
        server.stop()
        if "Address already in use" not in server.log():
            break
    raise RuntimeError(f"the chDB HTTP server did not start: {server.log()}")


@pytest.fixture(scope="session")
def clickhouse_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DSN (http://127.0.0.1:PORT) of a ClickHouse HTTP server on chDB in another process, on a temp dir."""
    with start_subprocess(tmp_path_factory.mktemp("chdb_http") / "data") as server:
        yield server.dsn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chdb_http", description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="chDB data directory")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", action="append", default=[], help="require this user (with --password)")
    parser.add_argument("--password", action="append", default=[])
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    users = dict(zip(args.user, args.password, strict=True)) or None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ChdbHttpServer(args.path, args.host, args.port, users, args.verbose).start()
    print(f"chdb_http: serving {args.path} on {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print("chdb_http: stopped", flush=True)


if __name__ == "__main__":
    main()
