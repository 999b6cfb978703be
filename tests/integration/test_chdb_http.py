"""The ClickHouse HTTP interface on chDB (tests/chdb_http.py), reached by clickhouse-connect's own HTTP client:
what a ClickHouse server answers, meterd's event store over HTTP answering as it does in-process, and
several OS processes sharing one store."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from meterd.backends.clickhouse.store import ClickHouseEventStore
from meterd.core.errors import ValidationError
from meterd.ingest.journal import JournalBatch
from meterd.meters.model import Aggregation, WindowSize
from meterd.usage.builder import EVENTS_TABLE, build
from meterd.usage.query import MeterQuery
from meterd.usage.rollup import build_rollup
from meterd.usage.store import EventFilter
from tests.chdb_http import start_subprocess
from tests.conftest import JOURNAL_SEQ
from tests.integration.test_rollups import BASE, _events, _meter, _same

pytestmark = pytest.mark.slow

_SEQ = JOURNAL_SEQ  # shared with every test writing to the shared store: seqs only grow
REPO = Path(__file__).resolve().parents[2]


def _client(dsn: str, **kwargs: Any) -> Client:
    url = urlsplit(dsn)
    return clickhouse_connect.get_client(host=url.hostname, port=url.port, **kwargs)


def _http(dsn: str, method: str = "POST", body: bytes = b"", **params: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{dsn}/?{urlencode(params)}", data=body if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _wait_until_running(dsn: str, marker: str, thread: threading.Thread) -> None:
    sql = f"SELECT count() FROM system.processes WHERE query LIKE '%/* {marker} */%' AND query NOT LIKE '%system%'"
    while _http(dsn, body=sql.encode())[2] != b"1\n":
        assert thread.is_alive()


@pytest.fixture(scope="module")
def client(clickhouse_http: str) -> Iterator[Client]:
    with _client(clickhouse_http) as c:
        yield c


# -- a plain clickhouse-connect client --------------------------------------------------------------------------

COLUMNS = {
    "k": "UInt32",
    "s": "String",
    "lc": "LowCardinality(String)",
    "t": "DateTime64(6, 'UTC')",
    "u": "UInt64",
    "i": "Int64",
    "f": "Float64",
    "ns": "Nullable(String)",
    "nf": "Nullable(Float64)",
    "lcn": "LowCardinality(Nullable(String))",
    "arr": "Array(String)",
    "m": "Map(String, UInt64)",
    "b": "Bool",
    "d": "Decimal(18, 6)",
    "id": "UUID",
}


def _rows(n: int) -> list[list[Any]]:
    rng = random.Random(n)
    rows: list[list[Any]] = [
        [
            0,
            "",
            "",
            datetime(1970, 1, 1, tzinfo=UTC),
            0,
            0,
            0.0,
            None,
            None,
            None,
            [],
            {},
            False,
            Decimal(0),
            uuid.UUID(int=0),
        ],
        [
            1,
            "tab\t nl\n quote' dq\" back\\ nul\x00 ünïcødé 😀",
            "b",
            datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC),
            2**64 - 1,
            -(2**63),
            -1.5e308,
            "x",
            -0.25,
            "lc",
            ["x'", "", "y\\"],
            {"k": 2**64 - 1, "": 0},
            True,
            Decimal("-123456789012.123456"),
            uuid.uuid4(),
        ],
    ]
    for k in range(2, n):
        moment = BASE + timedelta(microseconds=rng.randrange(-(10**13), 10**13))
        rows.append(
            [
                k,
                uuid.uuid4().hex * rng.randrange(0, 3),
                rng.choice(["a", "b", "c"]),
                moment,
                rng.randrange(2**64),
                rng.randrange(-(2**63), 2**63),
                rng.uniform(-1e6, 1e6),
                rng.choice([None, "v", ""]),
                rng.choice([None, rng.random()]),
                rng.choice([None, "p", "q"]),
                [str(j) for j in range(rng.randrange(4))],
                {str(j): j for j in range(rng.randrange(3))},
                rng.random() < 0.5,
                Decimal(rng.randrange(-(10**15), 10**15)).scaleb(-6),
                uuid.UUID(int=rng.getrandbits(128)),
            ]
        )
    return rows


@pytest.mark.parametrize("compress", [True, "zstd", "gzip", False])  # the client has no deflate writer
def test_rows_of_many_types_come_back_exactly(clickhouse_http: str, compress: bool | str) -> None:
    """Inserts go as Native in a chunked body, compressed per the client's choice (lz4 by default)."""
    table = f"types_{uuid.uuid4().hex[:8]}"
    rows = _rows(3000)
    with _client(clickhouse_http, compress=compress) as c:
        columns = ", ".join(f"{name} {type_}" for name, type_ in COLUMNS.items())
        c.command(f"CREATE TABLE {table} ({columns}) ENGINE = MergeTree ORDER BY k")
        assert c.insert(table, rows, column_names=list(COLUMNS)).written_rows == len(rows)
        got = c.query(f"SELECT * FROM {table} ORDER BY k")
    assert got.column_names == tuple(COLUMNS)
    assert [col.name for col in got.column_types] == list(COLUMNS.values())
    expected = [[*row[:3], row[3].replace(tzinfo=None), *row[4:]] for row in rows]  # naive UTC, the default
    assert [list(row) for row in got.result_rows] == expected


@pytest.mark.parametrize("compress", [True, "zstd", "gzip"])
def test_an_insert_of_many_blocks_arrives_whole(clickhouse_http: str, compress: bool | str) -> None:
    """The client compresses each block on its own (lz4 and zstd: one frame per block)."""
    table = f"blocks_{uuid.uuid4().hex[:8]}"
    n = 200_000  # about 64k rows of this width per block
    with _client(clickhouse_http, compress=compress) as c:
        c.command(f"CREATE TABLE {table} (k UInt64, s String) ENGINE = MergeTree ORDER BY k")
        keys = list(range(n))
        c.insert(table, [keys, [f"{k:040d}" for k in keys]], column_names=["k", "s"], column_oriented=True)
        assert c.command(f"SELECT count(), sum(k), countIf(s = leftPad(toString(k), 40, '0')) FROM {table}") == [
            str(n),
            str(n * (n - 1) // 2),
            str(n),
        ]


def test_a_long_query_does_not_hold_up_other_clients(clickhouse_http: str, client: Client) -> None:
    table = f"busy_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} (k UInt64) ENGINE = MergeTree ORDER BY k")
    marker = uuid.uuid4().hex
    with _client(clickhouse_http) as slow_client:
        slow = threading.Thread(target=slow_client.command, args=(f"SELECT sleep(2) /* {marker} */",))
        slow.start()
        _wait_until_running(clickhouse_http, marker, slow)
        for k in range(5):
            client.insert(table, [[k]], column_names=["k"])
            assert client.command(f"SELECT count() FROM {table}") == k + 1
        assert slow.is_alive()  # five inserts and queries went by while it ran
        slow.join()


def test_raw_inserts_with_the_query_in_the_url_and_compressed_data(client: Client) -> None:
    table = f"raw_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} (k UInt32, s String) ENGINE = MergeTree ORDER BY k")
    client.raw_insert(table, ["k", "s"], gzip.compress(b'1,"a,b"\n2,c\n'), fmt="CSV", compression="gzip")
    client.raw_insert(table, ["k", "s"], zlib.compress(b"3\tx\n"), fmt="TabSeparated", compression="deflate")
    client.raw_insert(table, ["k", "s"], b"3\td\\te\n", fmt="TabSeparated")  # the statement and data in the body
    client.command(f"INSERT INTO {table} (k, s) SETTINGS max_insert_block_size = 1 FORMAT CSV", data="5,g\n6,h\n")
    summary = client.command(f"INSERT INTO {table} FORMAT JSONEachRow", data='{"k": 4, "s": "f"}\n')
    assert summary.written_rows == 1  # type: ignore[union-attr]
    assert client.query(f"SELECT * FROM {table} ORDER BY k, s").result_rows == [
        (1, "a,b"),
        (2, "c"),
        (3, "d\te"),
        (3, "x"),
        (4, "f"),
        (5, "g"),
        (6, "h"),
    ]
    with pytest.raises(DatabaseError) as raised:
        client.raw_insert(table, ["k", "s"], b"7,i\n", fmt="CSV", compression="gzip")  # not gzip at all
    assert raised.value.code == 271  # CANNOT_DECOMPRESS


def test_server_side_parameters(client: Client) -> None:
    hostile = "it's \\ a \t test\n' OR 1=1 --"
    long_list = [f"subject-{i}" for i in range(600)]  # past the URL limit: sent as a multipart form
    result = client.query(
        "SELECT {n:UInt64} + 1, {s:String}, {t:DateTime64(6, 'UTC')}, length({a:Array(String)}), {a:Array(String)}[-1]",
        parameters={"n": 41, "s": hostile, "t": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "a": long_list},
    )
    assert result.result_rows == [(42, hostile, datetime(2026, 1, 2, 3, 4, 5, 678901), 600, "subject-599")]
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT {n:UInt8}", parameters={"n": "not a number"})
    assert raised.value.code in (26, 27, 457)  # the engine's own complaint about the value


def test_commands_return_what_a_server_returns(client: Client) -> None:
    version, tz = client.command("SELECT version(), timezone()")  # type: ignore[misc]
    assert version == client.server_version and tz == "Etc/UTC"
    assert client.command("SELECT 42") == 42
    assert client.command("SELECT 1 WHERE 0") == ""  # a result, empty
    table = f"cmd_{uuid.uuid4().hex[:8]}"
    summary = client.command(f"CREATE TABLE {table} (a UInt8) ENGINE = Memory")
    assert not isinstance(summary, str | int | list)  # no result: a QuerySummary
    assert client.query(f"SELECT a FROM {table} WHERE a > 0").column_names == ("a",)  # an empty result has columns
    assert client.command(f"EXISTS TABLE {table}") == 1


def test_errors_carry_clickhouse_codes(clickhouse_http: str, client: Client) -> None:
    for sql, code, name in [
        ("SELEC 1", 62, "SYNTAX_ERROR"),
        ("SELECT * FROM no_such_table", 60, "UNKNOWN_TABLE"),
        ("SELECT JSON_VALUE('{}', '$[[[')", 36, "BAD_ARGUMENTS"),
    ]:
        with pytest.raises(DatabaseError) as raised:
            client.query(sql)
        assert raised.value.code == code and name in str(raised.value)
    with pytest.raises(DatabaseError) as raised:
        _client(clickhouse_http, database="no_such_db")
    assert raised.value.code == 81

    status, headers, body = _http(clickhouse_http, body=b"SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error") and b"(SYNTAX_ERROR) (version 26." in body
    assert _http(clickhouse_http, body=b"SELECT * FROM nope")[0] == 404
    status, headers, _ = _http(clickhouse_http, "GET", query="CREATE TABLE get_table (a UInt8) ENGINE = Memory")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")  # GET is read-only
    status, headers, body = _http(clickhouse_http, "GET", query="SELECT 1 AS x", default_format="JSONEachRow")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"x":1}\n', "JSONEachRow")
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"


def test_sessions_keep_their_state_and_refuse_concurrent_queries(clickhouse_http: str) -> None:
    with _client(clickhouse_http) as one, _client(clickhouse_http) as two:
        one.command("SET max_threads = 7")
        one.command("CREATE TEMPORARY TABLE scratch (a UInt8)")
        assert one.command("SELECT getSetting('max_threads'), count() FROM scratch") == ["7", "0"]
        assert two.command("SELECT getSetting('max_threads')") != 7
    session, marker = uuid.uuid4().hex, uuid.uuid4().hex
    slow_sql = f"SELECT sleep(1) /* {marker} */".encode()
    slow = threading.Thread(target=_http, args=(clickhouse_http,), kwargs={"body": slow_sql, "session_id": session})
    slow.start()
    _wait_until_running(clickhouse_http, marker, slow)  # the slow query holds the session now
    _, headers, _ = _http(clickhouse_http, body=b"SELECT 1", session_id=session)
    slow.join()
    assert headers["X-ClickHouse-Exception-Code"] == "373"  # SESSION_IS_LOCKED
    assert _http(clickhouse_http, body=b"SELECT 1", session_id=session)[0] == 200


def test_acknowledged_inserts_survive_a_kill(tmp_path: Path) -> None:
    """The server answers an insert only once chDB has it; with the table's fsync settings, a SIGKILL right
    after loses nothing."""
    ddl = (
        "CREATE TABLE t (k UInt64) ENGINE = MergeTree ORDER BY k "
        "SETTINGS fsync_after_insert = 1, fsync_part_directory = 1"
    )
    server = start_subprocess(tmp_path / "data")
    try:
        with _client(server.dsn) as c:
            c.command(ddl)
            for n in range(20):
                c.insert("t", [[n * 100 + j] for j in range(100)], column_names=["k"])
    finally:
        server.process.kill()
        server.process.wait()
    with start_subprocess(tmp_path / "data") as server, _client(server.dsn) as c:
        assert c.command("SELECT count(), uniqExact(k) FROM t") == ["2000", "2000"]
    assert server.process.returncode == 0 and "chdb_http: stopped" in server.log()  # SIGTERM: a clean stop


# -- meterd's event store over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote(clickhouse_http: str) -> Iterator[ClickHouseEventStore]:
    store = ClickHouseEventStore(clickhouse_http)
    yield store
    store.close()


def test_the_store_over_http_answers_as_in_process(remote: ClickHouseEventStore, event_store: Any) -> None:
    rng = random.Random(3)
    namespace, etype = f"ns_{uuid.uuid4().hex[:6]}", "usage"
    meter = _meter(namespace, etype, Aggregation.SUM)
    before, after = _events(namespace, etype, 1500, rng, next(_SEQ)), _events(namespace, etype, 1500, rng, next(_SEQ))
    for store in (remote, event_store):
        store.write(before)
        store.rollups.ensure(meter, wait=True)  # backfilled from `before`, fed `after` by its view
        store.write(after)
        store.write(before)  # a replay: same token, stored once
    assert remote.count_events(namespace, BASE - timedelta(days=1)) == event_store.count_events(
        namespace, BASE - timedelta(days=1)
    )
    assert sum(remote.count_events(namespace, BASE - timedelta(days=1)).values()) == 3000
    rollup = remote.rollup_for(meter)
    assert rollup is not None
    checked = 0
    for _ in range(25):
        start = BASE + timedelta(microseconds=rng.randrange(-3600 * 10**6, 40 * 3600 * 10**6))
        query = MeterQuery(
            namespace=namespace,
            event_type=etype,
            aggregation=Aggregation.SUM,
            value_property="$.v",
            start=start,
            end=start + timedelta(microseconds=rng.randrange(1, 30 * 3600 * 10**6)),
            window_size=rng.choice([None, WindowSize.HOUR, WindowSize.DAY]),
            time_zone=rng.choice(["UTC", "Europe/Budapest"]),
            subjects=("u1", "u3") if rng.random() < 0.3 else None,
            group_by_subject=rng.random() < 0.5,
            group_by={"model": "$.model"} if rng.random() < 0.5 else {},
        )
        raw = remote.run(build(query))
        assert _same(raw, event_store.run(build(query))), query
        fast = build_rollup(query, rollup, EVENTS_TABLE)
        if fast is not None:
            assert _same(remote.run(fast), raw), query
            checked += 1
    assert checked >= 10

    listing = EventFilter(namespace=namespace, limit=5000)
    unstamped = [[replace(e, stored_at=BASE) for e in store.list_events(listing)] for store in (remote, event_store)]
    assert unstamped[0] == unstamped[1] and len(unstamped[0]) == 3000
    assert remote.distinct_values(namespace, etype, "$.model", None, None) == ["", "a", "b", "c"]
    assert remote.distinct_subjects(namespace, etype, None, None) == ["u1", "u2", "u3"]


def test_a_bad_json_path_is_a_validation_error_over_http(remote: ClickHouseEventStore) -> None:
    assert remote.check_json_path("$.a.b") and not remote.check_json_path("$[[[")
    query = MeterQuery(namespace="ns_bad", event_type="usage", aggregation=Aggregation.SUM, value_property="$[[[")
    with pytest.raises(ValidationError):
        remote.run(build(query))
    with pytest.raises(ValidationError):
        remote.distinct_values("ns_bad", "usage", "$[[[", None, None)


def test_the_store_reaches_a_server_with_credentials_from_its_dsn(tmp_path: Path) -> None:
    """User and password come from the DSN, percent-decoded (a password may hold @ : / %)."""
    password = "p@ss:w/rd%"
    with start_subprocess(tmp_path / "data", users={"default": "", "meterd": password}) as server:
        dsn = f"http://meterd:p%40ss%3Aw%2Frd%25@127.0.0.1:{server.port}/meterd"
        store = ClickHouseEventStore(dsn, readers=1)
        try:
            seq = next(_SEQ)
            store.write(JournalBatch(seq, seq, [(seq, "ns_auth", "e1", "s", "t", "u", 0, b"{}", 0)]))
            assert store.count_events("ns_auth", datetime(1970, 1, 1, tzinfo=UTC)) == {"u": 1}
        finally:
            store.close()
        with pytest.raises(DatabaseError) as raised:
            ClickHouseEventStore(f"http://meterd:wrong@127.0.0.1:{server.port}", readers=1)
        assert raised.value.code == 516  # AUTHENTICATION_FAILED


# -- several processes, one store -------------------------------------------------------------------------------


def _worker(dsn: str, namespace: str, seq0: str, batches: str, size: str, flags: str) -> None:
    """One process's sink and API: write batches (replaying some), and after each, read back exact counts."""
    store = ClickHouseEventStore(dsn, readers=2)
    Path(flags, f"ready-{namespace}").touch()
    while not Path(flags, "go").exists():
        time.sleep(0.01)
    since = datetime(1970, 1, 1, tzinfo=UTC)
    written = 0
    for b in range(int(batches)):
        first = int(seq0) + b * int(size)
        rows = [
            (first + j, namespace, f"{b}-{j}", "w", "t", f"u{j % 3}", first + j, b"{}", 0) for j in range(int(size))
        ]
        batch = JournalBatch(first, first + int(size) - 1, rows)
        store.write(batch)
        if b % 4 == 0:
            store.write(batch)  # a replay after a "crash": stored once
        written += int(size)
        counted = sum(store.count_events(namespace, since).values())
        assert counted == written, (namespace, counted, written)
        assert len(store.list_events(EventFilter(namespace=namespace, limit=10_000))) == written
    store.close()


def test_two_processes_insert_and_query_at_once(
    clickhouse_http: str, remote: ClickHouseEventStore, tmp_path: Path
) -> None:
    batches, size = 30, 200
    namespaces = [f"ns_proc_{i}_{uuid.uuid4().hex[:6]}" for i in range(2)]
    seqs = [next(_SEQ) for _ in namespaces]  # each worker takes batches * size (< 10,000) journal seqs
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.integration.test_chdb_http import _worker; _worker(*sys.argv[1:])",
                *(clickhouse_http, ns, str(seq), str(batches), str(size), str(tmp_path)),
            ],
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        for ns, seq in zip(namespaces, seqs, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{ns}").exists() for ns in namespaces):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()[-3000:]
    since = datetime(1970, 1, 1, tzinfo=UTC)
    for ns in namespaces:
        per_batch = Counter(f"u{j % 3}" for j in range(size))
        assert remote.count_events(ns, since) == {subject: batches * n for subject, n in per_batch.items()}
