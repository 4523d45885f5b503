"""Fault injection: these tests stop and restart RabbitMQ and PostgreSQL, so they run only on the "chaos" nodes
(`make chaos`, and the second half of `make test`), never on the nodes other test runs share."""

from __future__ import annotations

import os
import subprocess

import pytest
from django.db import OperationalError, connection

from tests.conftest import ROOT


def pytest_collection_modifyitems(config, items):
    # Selected on the shared nodes, these tests would stop the services under the others' runs; skipping them
    # silently would report a pass that checked nothing. The run is refused instead.
    if os.environ.get("KAAPI_SERVICES_PROFILE") == "chaos":
        return
    if any("tests/chaos/" in str(item.fspath) for item in items):
        raise pytest.UsageError(
            "tests/chaos (fault injection) runs on the chaos nodes only: `make chaos`, or "
            "KAAPI_SERVICES_PROFILE=chaos scripts/test.sh tests/chaos; elsewhere pass --ignore=tests/chaos"
        )


def services(command: str, service: str) -> None:
    subprocess.run([str(ROOT / "scripts/services.sh"), command, "chaos", service], check=True, capture_output=True)


@pytest.fixture
def effect_table(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS chaos_effect (id serial PRIMARY KEY, job_id uuid NOT NULL)")
        cursor.execute("TRUNCATE chaos_effect")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS chaos_effect")


def effects_per_job() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT job_id::text, count(*) FROM chaos_effect GROUP BY job_id")
        return dict(cursor.fetchall())


def resilient(predicate):
    """A wait predicate that survives the database being restarted under it."""

    def check():
        try:
            return predicate()
        except OperationalError:
            connection.close()
            return False

    return check
