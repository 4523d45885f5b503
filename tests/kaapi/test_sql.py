"""kaapi.sql: hot-path queries composed once by the ORM and run prepared, with the ORM's answers."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job
from kaapi.sql import PreparedQuery, run
from llm.models import ConfigVersion
from llm.services import config_create, config_version_create
from tests.llm.conftest import BLOBS

pytestmark = pytest.mark.django_db


def _versions(*, config_id, version):
    return ConfigVersion.objects.filter(config_id=config_id, version__gte=version).order_by("version")


@pytest.fixture
def config(project):
    config = config_create(project=project, name="bot", blob=BLOBS["anthropic"])
    config_version_create(config=config, blob=BLOBS["openai"], commit_message="two")
    return config


def test_rows_are_the_orm_rows_for_any_values(config):
    query = PreparedQuery(
        lambda **values: _versions(**values).values_list("version", "blob"), config_id=int, version=int
    )
    for version in (1, 2, 3):
        expected = list(_versions(config_id=config.id, version=version).values_list("version", "blob"))
        assert query.rows(config_id=config.id, version=version) == expected
    assert query.rows(config_id=config.id + 1, version=1) == []
    assert query.rows(config_id=config.id, version=1)[1][1] == BLOBS["openai"]  # JSON converted like the ORM


def test_one_statement_per_call_and_out_of_range_values_match_nothing(config):
    query = PreparedQuery(lambda **values: _versions(**values).values_list("version"), config_id=int, version=int)
    query.rows(config_id=config.id, version=1)  # composed on first use
    with CaptureQueriesContext(connection) as queries:
        assert query.rows(config_id=config.id, version=2) == [(2,)]
    assert len(queries) == 1
    assert list(_versions(config_id=config.id, version=2**31)) == []  # the ORM's answer …
    assert query.rows(config_id=config.id, version=2**31) == []  # … is ours, not a database error
    assert query.rows(config_id=2**63, version=1) == []


def test_a_value_that_does_not_reach_the_sql_unchanged_is_refused_at_composition(config):
    query = PreparedQuery(lambda **values: _versions(config_id=values["config_id"] + 1, version=1), config_id=int)
    with pytest.raises(ValueError, match="config_id"):
        query.rows(config_id=config.id)


def test_string_values(config):
    query = PreparedQuery(
        lambda **values: ConfigVersion.objects.filter(
            config_id=values["config_id"], commit_message=values["message"]
        ).values_list("version"),
        config_id=int,
        message=str,
    )
    assert query.rows(config_id=config.id, message="two") == [(2,)]
    assert query.rows(config_id=config.id, message="three") == []
    assert query.rows(config_id=config.id, message="two' OR '1'='1") == []  # a bound parameter, never SQL


def test_a_column_too_small_for_the_sentinels_is_refused_clearly(db):
    query = PreparedQuery(
        lambda **values: Job.objects.filter(priority=values["priority"]).values_list("id"), priority=int
    )
    with pytest.raises(ValueError, match="cannot be composed"):
        query.rows(priority=9)  # priority is a 16-bit column


@pytest.mark.django_db(transaction=True)
def test_a_statement_on_a_connection_the_database_dropped_reconnects_as_the_orm_does():
    """What a process meets after PostgreSQL restarts: its connection is dead until used. Django's cursors check it
    (CONN_HEALTH_CHECKS) once a request or task is over; kaapi.sql.run does too (the job dispatcher's statements)."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements run through kaapi.sql only on PostgreSQL")
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    run("SELECT 1", (), using="default")
    backend = connection.connection.info.backend_pid
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    finally:
        other.close()
    connection.close_if_unusable_or_obsolete()  # what close_old_connections does between requests and tasks
    assert run("SELECT 1", (), using="default", fetch="one") == (1, (1,))
    assert connection.connection.info.backend_pid != backend


def test_uuid_values_as_uuids_or_text(project):
    import uuid

    from jobs.services import job_create

    jobs = [job_create(project=project, function_path="jobs.functions.echo", params={"i": i}) for i in range(3)]
    query = PreparedQuery(
        lambda **values: Job.objects.filter(id=values["job_id"]).values_list("id", "params"), job_id=uuid.UUID
    )
    for job in jobs:
        assert query.rows(job_id=job.id) == [(job.id, job.params)]
        assert query.rows(job_id=str(job.id)) == [(job.id, job.params)]
    assert query.rows(job_id=uuid.uuid4()) == []
    with pytest.raises(ValueError):
        query.rows(job_id="not-a-uuid")


def test_the_result_upsert_writes_what_django_celery_results_writes():
    """kaapi.sql.task_result_upsert against the library's own backend, outcome after outcome on the same task id,
    each from another worker with other arguments: a new row, a STARTED with its start time, a FAILURE with its
    traceback, a SUCCESS over it. A release of django-celery-results that writes other columns, or keeps others of
    an existing row, shows up here."""
    from celery.app.task import Context
    from django_celery_results.backends.database import DatabaseBackend as LibraryBackend
    from django_celery_results.models import TaskResult

    from kaapi.celery import app

    library = LibraryBackend(app=app)
    timestamps = ("id", "task_id", "date_created", "date_done", "date_started")
    outcomes = [
        ("PENDING", None, None),
        ("STARTED", {"pid": 1}, None),
        ("FAILURE", ValueError("boom"), "Traceback: boom"),
        ("SUCCESS", {"answer": [42, "é"]}, None),
    ]
    for step, (status, result, traceback) in enumerate(outcomes):
        request = Context(
            task=f"task.{step}", hostname=f"worker-{step}", args=[step], kwargs={"step": step}, delivery_info={}
        )
        app.backend.store_result("ours", result, status, traceback=traceback, request=request)
        library.store_result("library", result, status, traceback=traceback, request=request)
        rows = {row["task_id"]: row for row in TaskResult.objects.values()}
        assert rows["ours"]["worker"] == f"worker-{step}"
        assert {k: v for k, v in rows["ours"].items() if k not in timestamps} == {
            k: v for k, v in rows["library"].items() if k not in timestamps
        }, status
        assert (rows["ours"]["date_started"] is None) == (rows["library"]["date_started"] is None), status
    assert TaskResult.objects.count() == 2
