"""A real Apache Kafka broker for the tests: one KRaft node (broker and controller) on 127.0.0.1.

No Docker and no Kafka distribution: the broker's jars come from Maven Central through
tests/services/kafka/pom.xml (`mvn dependency:copy-dependencies`, once, into
~/.cache/meterd-tests/kafka-<version>/libs) and the broker runs as
`java -cp 'libs/*' kafka.Kafka server.properties`. Needs Java 17+ and Maven: `apt-get install -y maven`.

In tests, the session fixture `kafka` (visible everywhere through tests/conftest.py) is a running broker:
`kafka.bootstrap` is "127.0.0.1:PORT", `kafka.create_topic(name, partitions)` makes a topic, and fault tests
call `kafka.stop()`, `kafka.kill()` (SIGKILL), `kafka.start()` and `kafka.restart()`: same ports, same data.
With METERD_TEST_KAFKA=host:port the fixture uses that broker instead, and a test that would stop it is skipped.

By hand (benchmarks, local development), from the repository root:

    .venv/bin/python -m tests.services.kafka start --dir /tmp/kafka [--port 9092]

prints the bootstrap address and runs until Ctrl-C (or SIGTERM), then stops the broker. Starting again on
the same --dir keeps the topics and messages. The broker's log is DIR/broker.log.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["VERSION", "ExternalKafka", "KafkaBroker", "KafkaService", "fetch_jars", "kafka"]

POM = Path(__file__).with_name("kafka") / "pom.xml"
VERSION = re.search(r"<kafka\.version>([^<]+)<", POM.read_text()).group(1)  # type: ignore[union-attr]

# A small JVM that starts fast: serial GC (no GC threads to feed on 2 cores), a small initial heap.
BROKER_HEAP = ["-Xmx512m", "-Xms64m"]
# The client JIT only: starts about 0.5 s sooner and uses less CPU and memory; benchmarks (main) leave it out.
QUICK_JIT = ["-XX:TieredStopAtLevel=1"]
JVM_OPTS = [
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]

# Everything goes to DIR/broker.log (INFO, for debugging a failed test); the noisiest loggers say only warnings.
LOG4J2 = """\
status = warn
# Keep logging until the JVM is gone: the broker's own shutdown hook logs its last steps.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.common.name = org.apache.kafka.common
logger.common.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
# One node: every internal topic has one replica, and one partition (consumer groups get a coordinator at once).
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# No log.flush.interval.messages: a SIGKILLed broker keeps every acknowledged message without it (the OS page
# cache outlives the process; tests/cluster/test_kafka_service.py checks it). Flushing each message measured
# 5-12 ms per synchronous acks=all send instead of 1-2 ms, and a third to three quarters less batched throughput.
# Fault tests kill consumers: let them ask for short session timeouts (the broker's floor is 6 s by default).
group.min.session.timeout.ms=500
# A SIGKILLed broker cannot register again until the controller expires its old session (9 s by default):
# fault tests restart it in about 3 s instead.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
"""


class KafkaService:
    """What tests use: a bootstrap address and topic helpers. Subclasses say whether the broker can be stopped."""

    bootstrap: str

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 2})

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        """Create a topic (one replica) and wait until every partition has a leader."""
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin = self.admin()
        admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meta = admin.list_topics(name, timeout=10).topics.get(name)
            leaders = [p.leader for p in meta.partitions.values()] if meta and meta.error is None else []
            if len(leaders) == partitions and min(leaders) >= 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"topic {name} has no leader for every partition after 30 s")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the broker answers a metadata request and lists itself."""
        admin = self.admin()
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic()))).brokers:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {self.bootstrap} is not ready after {timeout} s{self._log_tail()}")
            time.sleep(0.05)

    def start(self, timeout: float = 60.0) -> KafkaService:
        return self

    def stop(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def _check_alive(self) -> None:
        pass

    def _log_tail(self) -> str:
        return ""


class ExternalKafka(KafkaService):
    """A broker someone else runs (METERD_TEST_KAFKA=host:port): usable, never stopped."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def stop(self, timeout: float = 30.0) -> None:
        pytest.skip("METERD_TEST_KAFKA names an external broker: the tests cannot stop or restart it")

    def kill(self) -> None:
        self.stop()


class KafkaBroker(KafkaService):
    """One KRaft node in `home` (server.properties, data/, broker.log), started as a child `java` process."""

    def __init__(self, home: Path, port: int = 0, controller_port: int = 0, quick_jit: bool = True) -> None:
        self.home = home
        self.port = port
        self.controller_port = controller_port
        self.quick_jit = quick_jit
        self.process: subprocess.Popen[bytes] | None = None
        self._ports_given = bool(port)

    @property
    def bootstrap(self) -> str:  # type: ignore[override]
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "broker.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        """Start the broker (formatting its storage the first time) and wait until it serves; no-op if running."""
        if self.running:
            return self
        libs = fetch_jars()
        for attempt in range(3):
            self._configure()
            self._launch(libs)
            try:
                self.wait_ready(timeout)
                self._ports_given = True  # restarts keep these ports
                return self
            except RuntimeError:
                port_taken = "Address already in use" in self._log_tail()
                if not port_taken or self._ports_given or attempt == 2:
                    raise
                self.kill()
                self.port = self.controller_port = 0  # someone took a free port first: pick others
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL after `timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        while not self.controller_port or self.controller_port == self.port:
            self.controller_port = free_port()
        (self.home / "log4j2.properties").write_text(LOG4J2)
        config = server_properties(self.port, self.controller_port, self.home / "data")
        (self.home / "server.properties").write_text(config)

    def _java(self, libs: Path, main: str, *args: str, heap: list[str]) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java 17+ runs the test Kafka broker: apt-get install -y openjdk-17-jre-headless")
        log4j = f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}"
        jit = QUICK_JIT if self.quick_jit or main != "kafka.Kafka" else []
        return [java, *heap, *JVM_OPTS, *jit, log4j, "-cp", f"{libs}/*", main, *args]

    def _launch(self, libs: Path) -> None:
        config = str(self.home / "server.properties")
        with self.log_path.open("ab") as log:
            if not (self.home / "data" / "meta.properties").exists():
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
                # "=" form: a base64 id may start with "-", which argparse takes for an option (1 id in 64)
                fmt = ["format", f"--cluster-id={cluster_id}", "--config", config, "--ignore-formatted"]
                cmd = self._java(libs, "kafka.tools.StorageTool", *fmt, heap=["-Xmx256m"])
                done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
                if done.returncode:
                    raise RuntimeError(f"formatting Kafka storage failed ({done.returncode}){self._log_tail()}")
            log.write(f"==== meterd tests: starting kafka.Kafka at {time.strftime('%H:%M:%S')} ====\n".encode())
            log.flush()
            cmd = self._java(libs, "kafka.Kafka", config, heap=BROKER_HEAP)
            # --pdeathsig: the broker dies with the process that started it (a killed pytest leaves no broker behind).
            # A new session: Ctrl-C in a terminal reaches us, and we stop the broker gracefully.
            setpriv = shutil.which("setpriv")
            prefix = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
            self.process = subprocess.Popen(
                [*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"the Kafka broker exited ({code}){self._log_tail()}")

    def _log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""
        return f"\n--- {self.log_path} (tail) ---\n{text}" if text else ""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "meterd-tests" / f"kafka-{VERSION}"


def fetch_jars() -> Path:
    """The broker's jars: fetched from Maven Central the first time (and when pom.xml changes), then reused."""
    home = cache_dir()
    libs, stamp = home / "libs", home / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be fetching them right now
        if libs.is_dir() and stamp.exists() and stamp.read_text() == digest:
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) fetches the test Kafka broker's jars: apt-get install -y maven")
        tmp = home / f"libs.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200)
        if done.returncode:
            output = (done.stdout + done.stderr)[-4000:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{output}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        stamp.write_text(digest)
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    """A running Kafka broker for the whole session (or the one METERD_TEST_KAFKA names)."""
    external = os.environ.get("METERD_TEST_KAFKA")
    if external:
        service = ExternalKafka(external)
        service.wait_ready()
        yield service
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start()
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services.kafka", description="A test Kafka broker.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a broker, print its bootstrap address, run until Ctrl-C")
    start.add_argument("--dir", type=Path, required=True, help="the broker's directory (config, data, log)")
    start.add_argument("--port", type=int, default=0, help="the client port (default: a free one)")
    args = parser.parse_args(argv)
    broker = KafkaBroker(args.dir.resolve(), port=args.port, quick_jit=False)
    began = time.monotonic()
    broker.start()
    print(broker.bootstrap, flush=True)
    print(f"Kafka {VERSION} started in {time.monotonic() - began:.1f} s; log: {broker.log_path}", file=sys.stderr)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while broker.running:
            time.sleep(0.5)
        print(f"the broker exited; see {broker.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        broker.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
