"""Admission under faults: a worker killed while its project is at its limit, an admitting process killed mid-batch,
and the broker restarted while jobs wait for admission. Every job ends SUCCESS, its effect happens once, and none
is left waiting."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import transaction

from jobs import services
from jobs.models import Job, JobStatus, WaitingReason
from jobs.services import jobs_dispatch_stalled, jobs_recover_overdue
from kaapi.celery import HIGH_PRIORITY_QUEUE, app
from tests import job_functions
from tests.chaos.conftest import effects_per_job, resilient
from tests.chaos.conftest import services as node
from tests.conftest import LOG_DIR, ROOT, wait_until, worker_environment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EFFECT = f"{job_functions.record_effect.__module__}.record_effect"


def submit(project, count: int, *, seconds: float) -> list[str]:
    """``count`` jobs in one submission (one transaction, admitted after commit as the API's batches are)."""
    with transaction.atomic():
        jobs = services.job_create_many(
            project=project, function_path=EFFECT, params_list=[{"seconds": seconds}] * count, priority="high"
        )
    return [str(job.id) for job in jobs]


def new_jobs(project, count: int, *, seconds: float) -> list[str]:
    """``count`` waiting jobs that nobody admits yet (rows only)."""
    jobs = Job.objects.bulk_create(
        services._new_jobs(
            project=project,
            function_path=EFFECT,
            params_list=[{"seconds": seconds}] * count,
            priority="high",
            trace_id="",
            job_type=None,
        )
    )
    return [str(job.id) for job in jobs]


def all_finished(ids):
    return resilient(lambda: Job.objects.filter(id__in=ids).finished().count() == len(ids))


def assert_all_succeeded_exactly_once(ids) -> list[Job]:
    jobs = list(Job.objects.filter(id__in=ids))
    assert len(jobs) == len(ids), "a job row is missing"
    not_ok = {str(job.id): job.status for job in jobs if job.status != JobStatus.SUCCESS}
    assert not not_ok, f"jobs not SUCCESS: {not_ok}"
    effects = effects_per_job()
    assert set(effects) == set(ids)
    assert all(count == 1 for count in effects.values()), {k: v for k, v in effects.items() if v != 1}
    assert not [job.id for job in jobs if job.waiting_reason], "a finished job still says it waits"
    return jobs


def max_overlap(jobs: list[Job]) -> int:
    """The most jobs PROCESSING at one instant, from their (last) claim and their finish."""
    events = sorted([(job.started_at, 1) for job in jobs] + [(job.finished_at, -1) for job in jobs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def queued_messages(queue: str) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def test_a_worker_killed_while_its_project_is_at_its_limit_frees_the_slot(start_worker, project, effect_table):
    """The two jobs running (the project's limit) die with their worker; their messages come back to the worker
    that replaces it, the jobs run again and finish, and their slots go to the project's waiting jobs."""
    project.max_concurrent_jobs = 2
    project.save()
    first = start_worker(queues="high_priority", concurrency=2)
    ids = submit(project, 8, seconds=3.0)
    running = Job.objects.filter(id__in=ids, status=JobStatus.PROCESSING)
    wait_until(lambda: running.count() == 2, timeout=30, message="the project to run its two jobs")
    killed = set(running.values_list("id", flat=True))
    assert Job.objects.filter(id__in=ids, waiting_reason=WaitingReason.MAX_CONCURRENT_JOBS).count() == 6
    first.kill()  # SIGKILL, the worker and its pool: the two jobs stop mid-run, their messages unacknowledged

    start_worker(queues="high_priority", concurrency=2)
    wait_until(all_finished(ids), timeout=60, interval=0.5, message="every job of the project to finish")
    jobs = assert_all_succeeded_exactly_once(ids)
    assert {job.id for job in jobs if job.worker_lost_count} == killed
    assert {job.id: job.attempts for job in jobs} == {job.id: 2 if job.id in killed else 1 for job in jobs}
    assert max_overlap(jobs) <= 2, "the project ran more than its limit at once"


def test_an_admitting_process_killed_mid_batch_loses_nothing_and_runs_nothing_twice(
    start_worker, project, effect_table
):
    """A process admitting 20 jobs is SIGKILLed after the broker confirmed their messages, before its transaction
    recorded any: its locks go with its connection, the 30 jobs still wait, and the 20 messages are in the queue.
    The recovery sweep admits the jobs again (the 20 get a second message), the workers admit the rest as jobs
    finish, and each job runs once."""
    project.max_concurrent_jobs = 20
    project.save()
    ids = new_jobs(project, 30, seconds=0.05)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "admitting-process.log", "ab") as log:
        admitting = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.admitting_process", str(project.id)],
            cwd=ROOT,
            env=worker_environment(),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        ready, _, _ = select.select([admitting.stdout], [], [], 60)
        assert ready, "the admitting process did not publish in 60 s"
        assert admitting.stdout.readline().strip() == b"published 20"
    finally:
        os.killpg(admitting.pid, signal.SIGKILL)
        admitting.wait(10)
        admitting.stdout.close()
    assert Job.objects.filter(id__in=ids).waiting().count() == 30, "a dispatch was recorded"
    assert queued_messages(HIGH_PRIORITY_QUEUE) == 20

    # What beat's sweep does: the dead process's lock and row locks are gone, and the limit's 20 are admitted: the
    # same 20 (the oldest), a second message each.
    assert jobs_dispatch_stalled(older_than=timedelta(0)) == 20
    assert queued_messages(HIGH_PRIORITY_QUEUE) == 40
    start_worker(queues="high_priority", concurrency=2)
    wait_until(all_finished(ids), timeout=60, interval=0.5, message="every job to finish")
    jobs = assert_all_succeeded_exactly_once(ids)
    assert {job.attempts for job in jobs} == {1}, "a job ran twice"


def test_the_broker_restarted_while_jobs_wait_for_admission_loses_none(start_worker, project, effect_table, settings):
    """At its limit of 2, a project has jobs waiting when RabbitMQ stops; while it is down the running jobs
    finish (their admissions of the next jobs are refused) and more jobs are submitted. Once it is back, every job
    ends SUCCESS once."""
    project.max_concurrent_jobs = 2
    project.save()
    start_worker(queues="high_priority", concurrency=2)
    ids = submit(project, 12, seconds=0.5)
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() >= 2,
        timeout=30,
        message="the first jobs to run",
    )
    assert Job.objects.filter(id__in=ids, waiting_reason=WaitingReason.MAX_CONCURRENT_JOBS).count() >= 4
    node("stop", "rabbitmq")
    try:
        ids += submit(project, 4, seconds=0.5)  # accepted and left waiting: the broker is down
    finally:
        node("start", "rabbitmq")

    # A job whose worker was cut off mid-run by the outage is redelivered by RabbitMQ; in some runs the broker's
    # restart lost those two unacked messages, and the jobs stayed PROCESSING, holding the project's two slots.
    # The periodic recovery requeues such a job once it is overdue (the hard time limit plus a margin, made short
    # here for this process's sweep only: the jobs take 0.5 s).
    settings.CELERY_TASK_TIME_LIMIT, settings.JOB_STALLED_MARGIN_SECONDS = 5, 1

    def swept_and_finished():
        jobs_dispatch_stalled(older_than=timedelta(seconds=0))  # what the periodic recovery sweep does
        jobs_recover_overdue()
        return all_finished(ids)()

    wait_until(swept_and_finished, timeout=90, interval=1, message="every job to finish after the broker restart")
    assert_all_succeeded_exactly_once(ids)
