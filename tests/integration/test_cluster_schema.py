"""Cluster mode's store on a real engine, as far as chDB allows: a one-shard cluster declared in chDB's
config, the store built with `cluster=`, every generated statement run except what needs a cluster's
Keeper and DDL worker (see tests/integration/chdb_cluster_child.py). Replication itself and ON CLUSTER
are covered only by the parse checks of tests/unit/test_clickhouse_ddl.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers>
    <meterd_cluster>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica>
      </shard>
    </meterd_cluster>
  </remote_servers>
</clickhouse>
"""


def test_cluster_mode_store_on_a_one_shard_chdb_cluster(tmp_path: Path) -> None:
    # tcp_port only makes chDB see localhost:9000 as itself, so the shard is served in-process (no socket)
    (tmp_path / "config.xml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.chdb_cluster_child", str(tmp_path / "db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-4000:]
