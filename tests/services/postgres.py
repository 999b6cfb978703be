"""A real PostgreSQL for the tests and the benches: installed from Debian packages when missing, initdb'd into a
throwaway directory, started on 127.0.0.1 on a free port, stopped (or killed) at the end.

    server = PostgresServer(Path(tempfile.mkdtemp())).start()
    url = server.create_database("meters_test")   # postgresql+psycopg://postgres@127.0.0.1:PORT/meters_test
    server.stop()

The session fixture `postgres` yields one running server for the whole test run. With
METERD_TEST_POSTGRES_URL=postgresql+psycopg://user@host:port/db it uses that server instead (fast local
iteration: start one once, point the runs at it); the databases it creates there are dropped at the end.
By hand, from the repository root:

    .venv/bin/python -m tests.services.postgres start --dir /tmp/pg [--port 5433]

prints the URL and runs until Ctrl-C (or SIGTERM), then stops the server; the same --dir keeps the data.

Durability is the real one: fsync and synchronous_commit stay on (crash tests kill this server). initdb refuses
to run as root, so as root the cluster is made and run by user postgres (the Debian package creates it)."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

ENV_URL = "METERD_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_children(parent: int) -> list[int]:
    """`parent` and its direct children (for PostgreSQL: the postmaster and every backend and helper)."""
    out = [parent]
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(Path(stat).read_text().rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(stat.split("/")[2]))
    return out


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; installs the Debian package first when none is (as root)."""

    def found() -> list[str]:
        return sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))

    if not found():
        if os.geteuid() != 0:
            raise RuntimeError(
                "PostgreSQL is not installed: run `apt-get install -y postgresql` as root, or point "
                f"{ENV_URL} at a running server"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)
    return Path(found()[-1]).parent


class Databases:
    """Fresh databases on a reachable server."""

    def __init__(self) -> None:
        self.created: list[str] = []

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the server's maintenance database."""
        raise NotImplementedError

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def conninfo(self, database: str | None = None) -> str:
        """A libpq URI (psycopg.connect) for `database` (default: the maintenance database)."""
        url = make_url(self.url).set(drivername="postgresql")
        return (url.set(database=database) if database else url).render_as_string(hide_password=False)

    def create_database(self, name: str | None = None, *, icu_locale: str | None = None) -> str:
        """Create an empty database (default name: a unique one) and return its SQLAlchemy URL. The server's
        collation is C.UTF-8 (code point order); `icu_locale="en-US"` gives the linguistic order operators'
        databases often have (PostgreSQL 15+)."""
        name = name or f"meterd_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if icu_locale:
            statement += sql.SQL(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE {} LOCALE 'C.UTF-8'").format(
                sql.Literal(icu_locale)
            )
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(statement)
        self.created.append(name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)


class ExternalPostgres(Databases):
    """A server someone else runs (METERD_TEST_POSTGRES_URL)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def drop_created(self) -> None:
        for name in list(self.created):
            self.drop_database(name)


class PostgresServer(Databases):
    """A throwaway cluster in `root` (created if missing; as root it is handed to user postgres, so every
    directory above it must be traversable by that user: pytest's 0700 temp dirs are not)."""

    def __init__(self, root: Path, settings: dict[str, str] | None = None, port: int = 0) -> None:
        super().__init__()
        self.bin, self.root, self.port, self._port_given = pg_bin(), root, port or free_port(), bool(port)
        self.data, self.log = root / "pgdata", root / "postgres.log"
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "timezone": "'UTC'",
            "fsync": "on",  # durability tests rely on both
            "synchronous_commit": "on",
            **(settings or {}),
        }

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """libpq keywords for the maintenance database (psycopg.connect)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[bytes]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def _check(self, *cmd: str) -> None:
        done = self._run(*cmd)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {done.stdout.decode()[-4000:]}")

    def _initdb(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._check(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/services/postgres.py\n" + "".join(f"{k} = {v}\n" for k, v in self.settings.items()))

    def start(self) -> PostgresServer:
        """initdb on first start, then start on self.port (a new free port if a free one was taken meanwhile)."""
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        for _ in range(5):
            done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o",
                             f"-p {self.port}", "-w", "-t", "120", "start")  # fmt: skip
            if done.returncode == 0:
                return self
            if self._port_given or "could not bind" not in self.log_tail():
                break
            self.port = free_port()
        raise RuntimeError(f"PostgreSQL did not start: {done.stdout.decode()}\n{self.log_tail()}")

    def stop(self) -> None:
        """A clean (fast) shutdown: sessions are disconnected, everything committed is kept."""
        if self.running:
            self._check(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "300", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes (a crash); start() recovers from the WAL."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        pids = self.pids()
        return bool(pids) and Path(f"/proc/{pids[0]}").exists()

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer, autovacuum, parallel workers)."""
        try:
            return with_children(int((self.data / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return []

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Databases]:
    """A running PostgreSQL for the session: ours (in a temp dir outside pytest's 0700 ones), or the one
    METERD_TEST_POSTGRES_URL names. Tests take a fresh database each: `postgres.create_database()`."""
    external = os.environ.get(ENV_URL)
    if external:
        server = ExternalPostgres(external)
        yield server
        server.drop_created()
        return
    root = Path(tempfile.mkdtemp(prefix="meterd-pg-"))
    with PostgresServer(root) as pg:
        yield pg
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services.postgres", description="A test PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a server, print its URL, run until Ctrl-C")
    start.add_argument("--dir", type=Path, required=True, help="the cluster's directory (data, log, socket)")
    start.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    args = parser.parse_args(argv)
    server = PostgresServer(args.dir.resolve(), port=args.port).start()
    print(server.url, flush=True)
    print(f"{ENV_URL}={server.url}; log: {server.log}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.running:
            time.sleep(1)
        print(f"the server exited; see {server.log}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
