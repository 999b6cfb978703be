"""`meterd config validate`: every problem listed, exit status 1; a good file passes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from meterd.cli.main import cli


def _validate(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    config = tmp_path / "meterd.yaml"
    config.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "validate", *args])
    return result.exit_code, result.output


def test_a_cluster_config_lacking_its_services_lists_each(tmp_path: Path) -> None:
    code, out = _validate(tmp_path, "mode: cluster\nstorage:\n  event_store: chdb:///tmp/x\n")
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: kafka.bootstrap_servers is required",
        "problem: storage.event_store must be a ClickHouse server, http(s)://user:password@host:8123",
        "problem: storage.metadata_url must be a PostgreSQL URL, postgresql+psycopg://user:password@host/db",
    ]


def test_field_errors_are_listed_together_with_their_setting(tmp_path: Path) -> None:
    code, out = _validate(
        tmp_path, "server:\n  port: 70000\n  prot: 1\nkafka:\n  security_protocol: SASL_SSL\n  partitions: 0\n"
    )
    assert code == 1
    assert "problem: server.port: Input should be less than or equal to 65535" in out
    assert "problem: server.prot: Extra inputs are not permitted" in out
    assert "problem: kafka.partitions: Input should be greater than or equal to 1" in out


def test_a_cluster_config_with_every_service_is_valid(tmp_path: Path) -> None:
    code, out = _validate(
        tmp_path,
        "mode: cluster\nkafka:\n  bootstrap_servers: k1:9092,k2:9092\n  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: meterd\n  sasl_password: s3cret\n"
        "storage:\n  event_store: https://meterd:pw@clickhouse:8443\n"
        "  metadata_url: postgresql+psycopg://meterd:pw@pg/meterd\n",
    )
    assert (code, out.strip()) == (0, "ok: cluster mode settings are valid (run with --connect to reach the services)")
    assert "s3cret" not in out


def test_an_unreachable_service_is_a_problem_with_connect(tmp_path: Path) -> None:
    code, out = _validate(
        tmp_path,
        "storage:\n  event_store: http://127.0.0.1:1\n  metadata_url: postgresql+psycopg://u@127.0.0.1:1/db\n",
        "--connect",
    )
    assert code == 1
    assert "problem: storage.metadata_url: cannot reach the metadata database" in out
    assert "problem: storage.event_store: cannot reach ClickHouse" in out


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.yaml"), "config", "validate"])
    assert result.exit_code == 1
    assert "config file not found" in result.output
