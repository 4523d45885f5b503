"""Periodic maintenance: default schedules, stalled-job recovery, retention in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

import jobs.admission
import jobs.publishing
import jobs.services
from jobs.maintenance import DEFAULT_SCHEDULES, maintenance_retention
from jobs.models import Job, JobStatus, WaitingReason, WebhookDelivery
from jobs.services import _new_jobs, jobs_dispatch_stalled, jobs_recover_overdue
from tests.conftest import purge_queues
from tests.factories import job_row

pytestmark = pytest.mark.django_db


def make_job(project, *, status=JobStatus.SUCCESS, age=timedelta(0), **fields) -> Job:
    job = job_row(
        project,
        status=status,
        **fields,
    )
    when = timezone.now() - age
    finished = when if status in (JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED) else None
    Job.objects.filter(id=job.id).update(created_at=when, updated_at=when, finished_at=finished, started_at=when)
    job.refresh_from_db()
    return job


def test_setup_periodic_tasks_is_idempotent_and_keeps_operator_edits():
    PeriodicTask.objects.create(
        name="celery.backend_cleanup",
        task="celery.backend_cleanup",
        interval=IntervalSchedule.objects.create(every=1, period="days"),
    )
    call_command("setup_periodic_tasks")
    names = [s.name for s in DEFAULT_SCHEDULES]
    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__in=names)}
    assert {t.task for t in tasks.values()} == {
        "jobs_cron_recover_stalled",
        "jobs_cron_deliver_due_webhooks",
        "jobs_cron_publish_scheduled",
        "jobs_cron_retention",
    }
    assert all("_cron_" in t.task and t.enabled and t.interval for t in tasks.values())
    assert not PeriodicTask.objects.get(name="celery.backend_cleanup").enabled

    retention = tasks["kaapi: retention"]
    retention.enabled = False
    retention.interval = IntervalSchedule.objects.create(every=6, period=IntervalSchedule.HOURS)
    retention.save()
    count = PeriodicTask.objects.count()

    call_command("setup_periodic_tasks")
    assert PeriodicTask.objects.count() == count
    retention.refresh_from_db()
    assert (retention.enabled, retention.interval.every) == (False, 6)

    call_command("setup_periodic_tasks", "--reset")
    retention.refresh_from_db()
    assert (retention.enabled, retention.interval.every, retention.interval.period) == (True, 3600, "seconds")


def test_retention_deletes_old_finished_jobs_and_expired_results_in_batches(project, settings):
    old = [make_job(project, age=timedelta(days=40)) for _ in range(5)]
    WebhookDelivery.objects.create(job=old[0], url="https://example.com/", event="job.succeeded", payload={})
    recent = make_job(project, age=timedelta(days=1))
    old_but_pending = make_job(project, status=JobStatus.PENDING, age=timedelta(days=40))
    now = timezone.now()
    for i in range(3):
        TaskResult.objects.create(task_id=f"old-{i}", status="SUCCESS")
    TaskResult.objects.filter(task_id__startswith="old-").update(
        date_done=now - timedelta(seconds=settings.CELERY_RESULT_EXPIRES + 60)
    )
    TaskResult.objects.create(task_id="fresh", status="SUCCESS")

    # A run is bounded: at most max_batches batches, the next run goes on.
    assert maintenance_retention(batch_size=2, max_batches=1, retention_days=30) == {
        "task_results": 2,
        "group_results": 0,
        "idempotency_keys": 0,
        "jobs": 2,
    }
    assert maintenance_retention(batch_size=2, max_batches=10, retention_days=30) == {
        "task_results": 1,
        "group_results": 0,
        "idempotency_keys": 0,
        "jobs": 3,
    }
    assert set(Job.objects.values_list("id", flat=True)) == {recent.id, old_but_pending.id}
    assert not WebhookDelivery.objects.exists()
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["fresh"]
    assert maintenance_retention(batch_size=2, max_batches=10, retention_days=0)["jobs"] == 0


def test_overdue_processing_jobs_are_requeued_then_failed(project, settings, django_capture_on_commit_callbacks):
    overdue = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.JOB_STALLED_MARGIN_SECONDS + 60)
    requeue = make_job(project, status=JobStatus.PROCESSING, age=overdue, task_id="old-task", attempts=1)
    give_up = make_job(
        project,
        status=JobStatus.PROCESSING,
        age=overdue,
        attempts=3,
        worker_lost_count=settings.JOB_MAX_WORKER_LOST - 1,
        callback_url="https://hooks.example.com/kaapi",
    )
    running = make_job(project, status=JobStatus.PROCESSING, age=timedelta(seconds=10))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert jobs_recover_overdue() == {"requeued": 1, "failed": 1}
    # After commit: publish the requeued job; announce the failed one.
    assert sorted(c.func.__name__ for c in callbacks) == ["_job_finished", "job_dispatch"]

    requeue.refresh_from_db()
    assert (requeue.status, requeue.worker_lost_count, requeue.task_id, requeue.dispatched_at) == (
        JobStatus.PENDING,
        1,
        "",
        None,
    )
    give_up.refresh_from_db()
    assert give_up.status == JobStatus.FAILED
    assert "no worker finished this job" in give_up.error
    running.refresh_from_db()
    assert running.status == JobStatus.PROCESSING

    # The failed job's webhook is queued like any other finish.
    with django_capture_on_commit_callbacks(execute=False):
        next(c for c in callbacks if c.func.__name__ == "_job_finished")()
    assert WebhookDelivery.objects.get(job=give_up).event == "job.failed"

    # The requeued job's message goes to the real broker under a new task id.
    purge_queues()
    next(c for c in callbacks if c.func.__name__ == "job_dispatch")()
    requeue.refresh_from_db()
    assert requeue.dispatched_at is not None and requeue.task_id not in ("", "old-task")
    from kaapi.celery import app

    with app.connection_for_write() as conn:
        message = conn.default_channel.basic_get(requeue.queue, no_ack=True)
    assert message is not None and message.headers["id"] == requeue.task_id


@pytest.fixture
def undispatched(project, monkeypatch):
    """120 PENDING jobs whose message never reached the broker, submitted one second apart 10 minutes ago;
    the sweep reads them 50 at a time."""
    monkeypatch.setattr(jobs.services, "DISPATCH_SWEEP_BATCH", 50)
    created = Job.objects.bulk_create(
        _new_jobs(
            project=project,
            function_path="jobs.functions.echo",
            params_list=[{"i": i} for i in range(120)],
            priority="high",
            trace_id="sweep",
            job_type=None,
        )
    )
    monkeypatch.setattr(jobs.admission, "ADMIT_BATCH", 50)
    monkeypatch.setattr(settings, "JOB_MAX_CONCURRENT_JOBS", 1000)
    start = timezone.now() - timedelta(minutes=10)
    for i, job in enumerate(created):
        when = start + timedelta(seconds=i)
        Job.objects.filter(id=job.id).update(created_at=when, updated_at=when)
    yield [job.id for job in created]
    purge_queues()


def test_the_dispatch_sweep_admits_a_backlog_in_batches_oldest_first_up_to_the_project_s_limit(undispatched, project):
    project.max_concurrent_jobs = 110
    project.save()
    assert jobs_dispatch_stalled() == 110  # three batches, the last one cut by the limit
    left = Job.objects.undispatched()
    assert set(left.values_list("id", flat=True)) == set(undispatched[110:])  # the newest ten
    assert set(left.values_list("waiting_reason", flat=True)) == {WaitingReason.MAX_CONCURRENT_JOBS}
    assert jobs_dispatch_stalled() == 0  # nothing finished: still at its limit
    project.max_concurrent_jobs = None  # JOB_MAX_CONCURRENT_JOBS
    project.save()
    assert jobs_dispatch_stalled() == 10
    assert not Job.objects.undispatched().exists()
    assert not Job.objects.exclude(waiting_reason="").exists()


def test_the_dispatch_sweep_publishes_lost_retries_whatever_the_limit(undispatched, project):
    project.max_concurrent_jobs = 1
    project.save()
    Job.objects.filter(id__in=undispatched[:3]).update(waiting_reason=WaitingReason.RETRY)
    assert jobs_dispatch_stalled() == 3  # the three retries, which then hold the project's slot
    assert Job.objects.admitted().count() == 3 and Job.objects.waiting().count() == 117


def test_the_dispatch_sweep_stops_at_the_first_job_the_broker_refuses(undispatched, monkeypatch):
    calls = []

    publish = jobs.publishing.publish_job

    def publish_job(job, **kwargs):
        calls.append(job.id)
        return len(calls) < 3 and publish(job, **kwargs)  # the broker goes away after two jobs

    monkeypatch.setattr(jobs.publishing, "publish_job", publish_job)
    assert jobs_dispatch_stalled() == 2
    # the refused one is sent once more on a fresh connection, and nothing after it
    assert calls == [*undispatched[:3], undispatched[2]]
    assert Job.objects.undispatched().count() == 118


def test_the_dispatch_sweep_stops_after_its_time(undispatched, other_project):
    Job.objects.filter(id__in=undispatched[60:]).update(project=other_project)
    assert jobs_dispatch_stalled(seconds=0) == 60  # one project, then the time is up


def test_recover_jobs_command_publishes_the_backlog_now_and_its_dry_run_only_counts(undispatched, other_project):
    from io import StringIO

    from django.core.management import call_command

    fresh = make_job(other_project, status=JobStatus.PENDING)  # within the grace: not swept
    Job.objects.filter(id=fresh.id).update(dispatched_at=None)
    out = StringIO()
    call_command("recover_jobs", dry_run=True, stdout=out)
    assert out.getvalue().strip() == "undispatched: 120, overdue: 0 (dry run: nothing changed)"
    assert Job.objects.undispatched().count() == 121

    out = StringIO()
    call_command("recover_jobs", stdout=out)  # every batch in one run, however long it takes
    assert out.getvalue().strip() == "published: 120, requeued: 0, failed: 0"
    assert list(Job.objects.undispatched().values_list("id", flat=True)) == [fresh.id]
    call_command("recover_jobs", grace_seconds=0, stdout=StringIO())
    assert not Job.objects.undispatched().exists()


def test_recover_jobs_command_fails_when_the_broker_refuses(undispatched, monkeypatch):
    from django.core.management import CommandError, call_command

    monkeypatch.setattr(jobs.publishing, "publish_job", lambda job, **kwargs: False)
    with pytest.raises(CommandError, match="120 undispatched jobs left"):
        call_command("recover_jobs")
    with pytest.raises(CommandError, match="--grace-seconds"):
        call_command("recover_jobs", grace_seconds=-1)
