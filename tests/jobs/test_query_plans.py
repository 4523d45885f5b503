"""The plans PostgreSQL picks for the statements every job runs and for the maintenance sweeps.

The claim (``UPDATE … WHERE id = %s AND status = 'PENDING'``) once ran from a ``(status, updated_at)`` index whenever
the table's statistics were older than a backlog: each claim then read every PENDING job's index entry (quadratic in
the backlog). Partial indexes serve the sweeps now; these tests hold both halves, and the same for the claim of a
webhook delivery behind a burst of due ones.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import sql as job_sql
from jobs.models import FINISHED_STATUSES, DeliveryStatus, Job, JobStatus, WebhookDelivery
from jobs.services import _new_jobs
from jobs.webhooks import webhook_attempt

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are PostgreSQL's"),
]


def _jobs(project, count: int, status: str) -> list[Job]:
    jobs = _new_jobs(
        project=project,
        function_path="jobs.functions.echo",
        params_list=[{"i": i} for i in range(count)],
        priority="high",
        trace_id="plans",
        job_type=None,
    )
    now = timezone.now()
    for job in jobs:
        job.status = status
        if status in FINISHED_STATUSES:
            job.started_at = job.finished_at = now
    return Job.objects.bulk_create(jobs)


def _plan(sql: str, params) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def backlog_after_stale_statistics(project):
    """Statistics gathered when every job was finished, then a backlog of PENDING jobs: PENDING looks rare."""
    _jobs(project, 2000, JobStatus.SUCCESS)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Job._meta.db_table}")
    return _jobs(project, 500, JobStatus.PENDING)


def test_the_claim_finds_its_job_by_primary_key(backlog_after_stale_statistics):
    job = backlog_after_stale_statistics[250]
    params = (JobStatus.PROCESSING.value, timezone.now(), job.task_id, timezone.now(), job.id, JobStatus.PENDING.value)
    plan = _plan(job_sql._claim_sql("default"), params)
    assert "jobs_job_pkey" in plan, plan


def test_the_success_finds_its_job_by_primary_key(project, backlog_after_stale_statistics):
    running = _jobs(project, 500, JobStatus.PROCESSING)  # none were running when the statistics were gathered
    now = timezone.now()
    usage = (None,) * len(job_sql.USAGE_COLUMNS)
    params = (
        JobStatus.SUCCESS.value,
        '{"ok": true}',
        "",
        100,
        now,
        now,
        *usage,
        running[0].id,
        JobStatus.PROCESSING.value,
    )
    plan = _plan(job_sql._success_sql("default"), params)
    assert "jobs_job_pkey" in plan, plan


@pytest.mark.parametrize(
    ("index", "queryset"),
    [
        ("job_waiting", lambda now: Job.objects.undispatched().filter(updated_at__lt=now)),
        ("job_running_started", lambda now: Job.objects.filter(status=JobStatus.PROCESSING, started_at__lt=now)),
        (
            "job_finished",
            lambda now: Job.objects.filter(status__in=FINISHED_STATUSES, updated_at__lt=now, finished_at__lt=now),
        ),
    ],
)
def test_each_sweep_has_an_index(backlog_after_stale_statistics, index, queryset):
    """The sweeps' queries (jobs_dispatch_stalled, jobs_recover_overdue, retention) match their partial indexes.

    A sequential scan is disallowed so that the test asks whether the index can serve the query at all (on a
    table this small PostgreSQL would rightly read the table)."""
    sql, params = queryset(timezone.now() - timedelta(seconds=1)).values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    assert index in _plan(sql, params)


@pytest.mark.parametrize(
    ("index", "queryset"),
    [
        (
            "job_waiting",
            lambda project: (
                Job.objects.waiting()
                .filter(project=project, queue="high_priority")
                .order_by("-priority", "created_at", "id")[:50]
            ),
        ),
        ("job_admitted", lambda project: Job.objects.admitted().filter(project=project, queue="high_priority")),
    ],
)
def test_admission_reads_a_project_s_waiting_and_admitted_jobs_from_their_indexes(
    project, backlog_after_stale_statistics, index, queryset
):
    sql, params = queryset(project).values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = _plan(sql, params)
    assert index in plan, plan


def test_the_submission_rate_counts_a_project_s_recent_admissions_from_their_index(
    project, backlog_after_stale_statistics
):
    """``max_submissions_per_minute``'s count (jobs/admission.py ``_rate_room``): a project's jobs dispatched in the
    last minute, from the partial index that new (undispatched) jobs add no entry to."""
    from jobs.admission import _rate_room

    with CaptureQueriesContext(connection) as queries:
        _rate_room(project.id, 10)
    [sql] = [q["sql"] for q in queries.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = _plan(sql, None)
    assert "job_project_dispatched" in plan, plan


def test_admin_lists_failed_jobs_newest_first_from_an_index(project, backlog_after_stale_statistics):
    _jobs(project, 300, JobStatus.FAILED)
    sql, params = (
        Job.objects.filter(status=JobStatus.FAILED).order_by("-created_at", "-id")[:100].query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    assert "job_failed" in _plan(sql, params)


def test_a_webhook_attempt_finds_its_delivery_by_primary_key_behind_a_burst_of_due_ones(project, settings):
    """``webhook_attempt``'s statements, with statistics from when no delivery was pending and then 2,000 due ones."""
    settings.WEBHOOK_ALLOWED_NETWORKS = []  # loopback refused: the attempt fails at once, without connecting
    job = _jobs(project, 1, JobStatus.SUCCESS)[0]
    due = timezone.now() - timedelta(seconds=5)

    def deliveries(count: int, status: str) -> list[WebhookDelivery]:
        return WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                job=job,
                url="https://127.0.0.1:9/hook",
                event="job.succeeded",
                payload={},
                status=status,
                next_attempt_at=due if status == DeliveryStatus.PENDING else None,
            )
            for _ in range(count)
        )

    deliveries(1000, DeliveryStatus.DELIVERED)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {WebhookDelivery._meta.db_table}")
    burst = deliveries(2000, DeliveryStatus.PENDING)
    with CaptureQueriesContext(connection) as queries:
        assert webhook_attempt(delivery_id=str(burst[1000].id)) == "failed"
    table = WebhookDelivery._meta.db_table
    ran = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith(("SELECT", "UPDATE")) and table in q["sql"]
    ]
    assert len(ran) >= 2  # the claim's, and the outcome's
    for sql in ran:
        plan = _plan(f"(ANALYZE) {sql}", None)
        assert all(int(n) < 10 for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
