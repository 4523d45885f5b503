from unittest import mock

import pytest
from django.db import transaction
from django.test import override_settings

from jobs import services, sql
from jobs.admission import dispatcher
from jobs.backoff import backoff_delay
from jobs.exceptions import JobStateError
from jobs.models import Job, JobStatus
from jobs.registry import get_job_function, job_function, registered_paths
from kaapi.celery import app
from tests.conftest import purge_queues
from tests.factories import make_job, set_status

pytestmark = pytest.mark.django_db


def test_job_create_refuses_unregistered_function(project):
    with pytest.raises(ValueError, match="not registered"):
        services.job_create(project=project, function_path="os.system")
    assert Job.objects.count() == 0


def test_job_create_refuses_unknown_priority(project):
    with pytest.raises(ValueError, match="priority"):
        services.job_create(project=project, function_path="jobs.functions.echo", priority="urgent")


@pytest.mark.django_db(transaction=True)
def test_job_create_publishes_only_after_commit(project, monkeypatch):
    purge_queues()  # the count below is of this test's message only
    submit = mock.Mock(wraps=dispatcher.submit)
    monkeypatch.setattr(dispatcher, "submit", submit)
    with transaction.atomic():
        job = services.job_create(project=project, function_path="jobs.functions.echo")
        assert not submit.called  # nothing is handed to the dispatcher before the commit
        assert job.task_id and job.trace_id
    assert submit.call_count == 1 and [j.id for j in submit.call_args.args[0]] == [job.id]
    assert dispatcher.flush(timeout=10)
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING and job.dispatched_at is not None and job.task_id
    with app.connection_for_write() as conn:  # the message is on the broker, and it is this job's
        message = conn.default_channel.basic_get("high_priority", no_ack=True)
        assert message is not None and message.headers["id"] == job.task_id
        assert conn.default_channel.queue_declare(queue="high_priority", passive=True).message_count == 0


def test_claim_is_atomic_and_only_once(project):
    job = make_job(project)
    assert services.job_claim(job_id=job.id, task_id="t1", redelivered=False) is services.Claim.RUN
    assert services.job_claim(job_id=job.id, task_id="t1", redelivered=False) is services.Claim.SKIP
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.attempts == 1 and job.task_id == "t1" and job.started_at


@pytest.mark.parametrize("status", [JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED])
def test_redelivered_message_for_finished_job_does_nothing(project, status):
    job = set_status(make_job(project), status)
    assert services.job_claim(job_id=job.id, task_id="t", redelivered=True) is services.Claim.SKIP
    assert Job.objects.get(id=job.id).attempts == 0


@override_settings(JOB_MAX_WORKER_LOST=2)
def test_redelivery_after_worker_loss_is_bounded(project):
    job = make_job(project)
    assert services.job_claim(job_id=job.id, task_id="t", redelivered=False) is services.Claim.RUN
    assert services.job_claim(job_id=job.id, task_id="t", redelivered=True) is services.Claim.RUN
    assert services.job_claim(job_id=job.id, task_id="t", redelivered=True) is services.Claim.EXHAUSTED
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.worker_lost_count == 2 and job.attempts == 2
    assert "lost 2 times" in job.error


def test_success_after_cancel_is_dropped(project):
    job = make_job(project)
    services.job_claim(job_id=job.id, task_id="t", redelivered=False)
    services.job_cancel(job=job)
    assert services.job_mark_success(job_id=job.id, result={"x": 1}) is False
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.result is None


def test_cancel_twice_raises(project):
    job = make_job(project)
    services.job_cancel(job=job)
    with pytest.raises(JobStateError):
        services.job_cancel(job=job)


def test_progress_only_while_processing(project):
    job = make_job(project)
    assert services.job_report_progress(job_id=job.id, percent=50) is False
    services.job_claim(job_id=job.id, task_id="t", redelivered=False)
    assert services.job_report_progress(job_id=job.id, percent=150, message="almost") is True
    job.refresh_from_db()
    assert job.progress_percent == 100 and job.progress_message == "almost"


def test_retrying_returns_job_to_pending_undispatched(project):
    job = make_job(project)
    Job.objects.filter(id=job.id).update(dispatched_at="2026-01-01T00:00:00Z")
    services.job_claim(job_id=job.id, task_id="t", redelivered=False)
    assert services.job_mark_retrying(job_id=job.id, error="429", delay=2.5)
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING and job.dispatched_at is None and "retrying in 2.5 s" in job.error


def test_backoff_is_exponential_with_jitter_and_capped():
    for retries in range(6):
        ceiling = min(60, 2 * 2**retries)
        delays = [backoff_delay(retries, base=2, cap=60) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert backoff_delay(0, base=1, cap=60, retry_after=30) >= 30
    assert backoff_delay(0, base=1, cap=10, retry_after=3600) <= 10


def test_registry_refuses_a_second_function_under_the_same_path():
    def execute_job(**kwargs):
        return None

    registered = job_function(job_type="X")(execute_job)
    try:
        with pytest.raises(ValueError, match="already registered"):

            def execute_job(**kwargs):  # noqa: F811  same module and name, different function
                return None

            job_function(job_type="X")(execute_job)
        assert get_job_function(f"{__name__}.{registered.__qualname__}").function is registered
    finally:
        from jobs import registry

        registry._registry.pop(f"{__name__}.{registered.__qualname__}")
    assert "jobs.functions.echo" in registered_paths()


def test_update_returning_gives_the_updated_row_in_python_types(project):
    job = make_job(project, a=1)
    updated = sql.finish(
        job_id=job.id,
        from_statuses=[JobStatus.PENDING],
        status=JobStatus.FAILED,
        error="x",
        result={"k": [1, "two"]},
        finished_at=job.created_at,
    )
    assert updated.pk == job.pk and isinstance(updated.pk, type(job.pk))
    assert updated.status == JobStatus.FAILED and updated.error == "x" and updated.result == {"k": [1, "two"]}
    assert updated.params == {"a": 1} and updated.finished_at == job.created_at and updated.created_at == job.created_at
    assert updated.project_id == project.id
    assert sql.finish(job_id=job.id, from_statuses=[JobStatus.PENDING], error="y") is None
    assert Job.objects.get(id=job.id).error == "x"


@pytest.mark.parametrize("vendor", ["postgresql", "other"])
def test_success_writes_the_celery_result_row_with_the_job(project, vendor, monkeypatch):
    """The worker writes a job's SUCCESS and its Celery result row together (jobs/sql.py): on PostgreSQL
    one prepared statement, on other databases (SQLite under `make run`) two in one transaction. AsyncResult
    reads the row back."""
    from django.db import connection
    from django_celery_results.models import TaskResult

    from jobs.publishing import get_task_status
    from kaapi.celery import app

    if vendor != "postgresql":
        monkeypatch.setattr(connection, "vendor", vendor)
    job = make_job(project)
    assert services.job_claim(job_id=str(job.id), task_id=job.task_id, redelivered=False) is services.Claim.RUN
    assert services.job_claim(job_id=str(job.id), task_id=job.task_id, redelivered=False) is services.Claim.SKIP
    row = app.backend.result_row(job.task_id, {"answer": 42}, "SUCCESS")
    assert services.job_mark_success(job_id=str(job.id), result={"answer": 42}, task_result=row)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS and job.result == {"answer": 42} and job.attempts == 1
    assert job.progress_percent == 100 and job.finished_at >= job.started_at
    assert get_task_status(job.task_id)["result"] == {"answer": 42}
    # the job is no longer PROCESSING: not recorded, and the result row is still written (as Celery would)
    row = app.backend.result_row(job.task_id, {"answer": 43}, "SUCCESS")
    assert not services.job_mark_success(job_id=str(job.id), result={"answer": 43}, task_result=row)
    assert Job.objects.get(id=job.id).result == {"answer": 42}
    assert get_task_status(job.task_id)["result"] == {"answer": 43} and TaskResult.objects.count() == 1


def test_the_prepared_job_statements_are_counted_like_any_query(project, django_assert_num_queries):
    """They bypass Django's cursor wrapper on PostgreSQL; DEBUG's query log and query-counting tests still see
    them: a job's INSERT, its claim, and its SUCCESS with the result row (one statement)."""
    from kaapi.celery import app

    with django_assert_num_queries(1):
        job = services.job_create(project=project, function_path="jobs.functions.echo")
    with django_assert_num_queries(1):
        assert services.job_claim(job_id=str(job.id), task_id=job.task_id, redelivered=False) is services.Claim.RUN
    row = app.backend.result_row(job.task_id, {"ok": True}, "SUCCESS")
    with django_assert_num_queries(1) as captured:
        assert services.job_mark_success(job_id=str(job.id), result={"ok": True}, task_result=row)
    assert "django_celery_results_taskresult" in captured.captured_queries[0]["sql"]


def test_the_success_returns_the_job_without_sending_back_its_params_or_result(project, django_assert_num_queries):
    """An LLM job's params hold its whole prompt: the SUCCESS does not read them back; a webhook reads them when it
    needs them (its metadata), with one query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from jobs import sql

    prompt = {"query": "x" * 50_000, "request_metadata": {"conversation": 7}}
    job = make_job(project, **prompt)
    services.job_claim(job_id=str(job.id), task_id=job.task_id, redelivered=False)
    with CaptureQueriesContext(connection) as captured:
        finished = sql.mark_success(job_id=job.id, result=["an", "answer"], now=timezone.now())
    [query] = captured.captured_queries
    returning = query["sql"].rsplit("RETURNING", 1)[1]
    assert '"params"' not in returning and '"result"' not in returning and '"callback_url"' in returning
    assert finished.status == JobStatus.SUCCESS and finished.result == ["an", "answer"]
    assert finished.finished_at and finished.started_at and finished.job_type == "ECHO"
    with django_assert_num_queries(1):
        assert finished.params == prompt
    assert Job.objects.get(id=job.id).result == ["an", "answer"]


def test_the_generic_task_returns_the_job_not_its_result(project):
    """What a generic task returns reaches only the task-succeeded event (Flower) and the worker's log: it names
    the job; the result itself is in the job row and the result table."""
    from jobs.publishing import get_task_status
    from jobs.tasks import execute_high_priority_task as task

    job = make_job(project, secret="a user's words")
    task.push_request(id=job.task_id, delivery_info={"redelivered": False}, hostname="test@localhost")
    try:
        returned = task.run(
            function_path=job.function_path, project_id=project.id, job_id=str(job.id), trace_id="", **job.params
        )
    finally:
        task.pop_request()
    assert returned == {"job_id": str(job.id), "recorded": True}
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS and job.result == {"delay": 0, "secret": "a user's words"}
    assert get_task_status(job.task_id)["result"] == job.result
