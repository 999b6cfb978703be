"""Fixtures for cluster-mode tests (the processes: tests/cluster/processes.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.processes import Cluster, new_cluster
from tests.services.kafka import KafkaService
from tests.services.postgres import Databases


@pytest.fixture
def cluster_factory(
    postgres: Databases, kafka: KafkaService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(partitions: int = 4, **env: str) -> Cluster:
        root = tmp_path_factory.mktemp(f"c{uuid.uuid4().hex[:10]}")
        cluster = new_cluster(root, postgres, kafka, partitions, **env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
        cluster.store.stop()
