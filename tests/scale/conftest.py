"""The scale-out suite (issue 8): one scaled-out cluster per module (``cluster.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import server_env
from tests.fixtures.servers import fresh_postgres_database
from tests.scale.cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A scaled-out cluster on a fresh PostgreSQL database, RabbitMQ and a new S3 bucket."""
    for database in fresh_postgres_database():
        env = server_env("postgres-rabbitmq-s3", request, database)
        yield from start_cluster(tmp_path_factory.mktemp("scale"), env)
