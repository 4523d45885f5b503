"""Admission (fair sharing between projects) through two real worker processes on the real broker and database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import F

from jobs import admission, publishing, services
from jobs.models import Job, JobStatus, WaitingReason
from tests import job_functions
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SLEEP = f"{job_functions.report_pid_and_sleep.__module__}.{job_functions.report_pid_and_sleep.__qualname__}"
LIMIT = 3


def _submit(project, n: int, seconds: float) -> list[Job]:
    with transaction.atomic():
        return services.job_create_many(
            project=project, function_path=SLEEP, params_list=[{"seconds": seconds}] * n, priority="high"
        )


def _max_overlap(jobs: list[Job]) -> int:
    """The most jobs PROCESSING at one instant, from their claim (started_at) and finish times."""
    events = sorted([(job.started_at, 1) for job in jobs] + [(job.finished_at, -1) for job in jobs])
    running = peak = 0
    for _, step in events:  # at equal times the finish (-1) sorts first: a slot is freed before it is reused
        running += step
        peak = max(peak, running)
    return peak


def test_a_flooding_project_neither_delays_another_nor_exceeds_its_limit_across_workers(
    start_worker, project, other_project
):
    project.max_concurrent_jobs = LIMIT
    project.save()
    workers = [start_worker(queues="high_priority", concurrency=3) for _ in range(2)]
    flood = _submit(project, 200, 0.1)
    flood_ids = [job.id for job in flood]
    wait_until(
        lambda: Job.objects.filter(id__in=flood_ids, status=JobStatus.SUCCESS).count() >= 10,
        timeout=60,
        message="the flood to be under way",
    )
    # The rest of the flood waits in the table, saying why; the broker holds at most the project's limit.
    assert Job.objects.filter(id__in=flood_ids, waiting_reason=WaitingReason.MAX_CONCURRENT_JOBS).count() > 100
    assert Job.objects.admitted().filter(project=project).count() <= LIMIT

    few = _submit(other_project, 5, 0.1)
    few_ids = [job.id for job in few]
    wait_until(
        lambda: Job.objects.filter(id__in=few_ids).finished().count() == 5, timeout=60, message="the other's jobs"
    )
    few = list(Job.objects.filter(id__in=few_ids))
    assert {job.status for job in few} == {JobStatus.SUCCESS}
    first_submitted = min(job.created_at for job in few)
    last_started = max(job.started_at for job in few)
    # Between the other project's submission and the start of its last job, the flood started at most a few jobs
    # (its window in the queue ahead of them, and what the free workers took meanwhile), not its backlog.
    overtaken_by = Job.objects.filter(
        id__in=flood_ids, started_at__gt=first_submitted, started_at__lt=last_started
    ).count()
    assert overtaken_by <= 2 * LIMIT, f"{overtaken_by} flood jobs started before the other project's last one"
    assert Job.objects.filter(id__in=flood_ids, started_at__isnull=True).count() > 100

    wait_until(lambda: Job.objects.filter(id__in=flood_ids).finished().count() == 200, timeout=180, message="the flood")
    flood = list(Job.objects.filter(id__in=flood_ids))
    assert {job.status for job in flood} == {JobStatus.SUCCESS}
    assert {job.attempts for job in flood} == {1}
    assert _max_overlap(flood) == LIMIT  # reached, never exceeded, across both workers
    pids = {job.result["pid"] for job in flood}
    children = [set(worker.child_pids()) for worker in workers]
    assert all(pids & mine for mine in children), "the flood ran on one worker only"
    assert not Job.objects.exclude(waiting_reason="").exists()


def test_an_admission_that_dies_mid_batch_loses_nothing_and_runs_nothing_twice(start_worker, project, monkeypatch):
    """The admitting process dies after publishing some jobs and before recording them: its transaction rolls back,
    the jobs are still waiting, and the sweep admits them again; each job runs once (the second message of a job
    finds it claimed or finished)."""
    project.max_concurrent_jobs = 20
    project.save()
    publish = publishing.publish_job
    published = []

    class Died(Exception):
        pass

    def publish_then_die(job, **kwargs):
        publish(job, **kwargs)
        published.append(job.id)
        if len(published) == 5:
            raise Died()
        return True

    monkeypatch.setattr(publishing, "publish_job", publish_then_die)
    jobs = Job.objects.bulk_create(
        services._new_jobs(
            project=project,
            function_path=SLEEP,
            params_list=[{"seconds": 0.05}] * 30,
            priority="high",
            trace_id="",
            job_type=None,
        )
    )
    ids = [job.id for job in jobs]
    with pytest.raises(Died):
        admission.admit(project_id=project.id, queue="high_priority")
    assert Job.objects.filter(id__in=ids).waiting().count() == 30  # nothing recorded
    monkeypatch.setattr(publishing, "publish_job", publish)

    assert services.jobs_dispatch_stalled(older_than=timedelta(0)) == 20  # the sweep admits up to the limit
    start_worker(queues="high_priority", concurrency=2)
    # and the workers, as each job finishes, admit the next
    wait_until(lambda: Job.objects.filter(id__in=ids).finished().count() == 30, timeout=60, message="the jobs")
    finished = list(Job.objects.filter(id__in=ids))
    assert {job.status for job in finished} == {JobStatus.SUCCESS}
    assert {job.attempts for job in finished} == {1}, "a job ran twice"


def test_a_job_that_keeps_killing_its_worker_frees_its_slot_when_it_fails(start_worker, project):
    """At a limit of one, the next job waits while the first one's deliveries kill the worker; once that job ends
    FAILED (the worker-lost handling), the slot is free and the waiting job runs."""
    project.max_concurrent_jobs = 1
    project.save()
    start_worker(queues="high_priority", concurrency=1)
    kill = f"{job_functions.kill_own_process.__module__}.{job_functions.kill_own_process.__qualname__}"
    with transaction.atomic():
        poison = services.job_create(project=project, function_path=kill)
        normal = services.job_create(project=project, function_path=SLEEP, params={"seconds": 0})
    wait_until(
        lambda: Job.objects.filter(id=normal.id, waiting_reason=WaitingReason.MAX_CONCURRENT_JOBS).exists(),
        timeout=30,
        message="the second job to wait",
    )
    wait_until(lambda: Job.objects.filter(id=normal.id).finished().exists(), timeout=120, message="the second job")
    poison.refresh_from_db()
    normal.refresh_from_db()
    assert poison.status == JobStatus.FAILED and "lost 3 times" in poison.error
    assert normal.status == JobStatus.SUCCESS and normal.started_at > poison.finished_at


def test_jobs_over_the_submission_rate_wait_with_the_reason_then_all_run(start_worker, project):
    """A rate of 3 a minute and 5 jobs: 3 run at once, 2 wait PENDING saying why, and are admitted once the first
    three are out of the window (moved back a minute here rather than waited for: the suite's time is shared; the
    process's timer that comes back then is tested in test_dispatcher.py)."""
    project.max_submissions_per_minute = 3
    project.save()
    start_worker(queues="high_priority", concurrency=2)
    ids = [job.id for job in _submit(project, 5, 0)]
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() == 3,
        timeout=30,
        message="the first three jobs",
    )
    waiting = Job.objects.filter(id__in=ids, status=JobStatus.PENDING)
    assert waiting.count() == 2
    assert {job.waiting_reason for job in waiting} == {WaitingReason.SUBMISSION_RATE}
    assert not waiting.filter(dispatched_at__isnull=False).exists()

    first = Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS)
    assert first.update(dispatched_at=F("dispatched_at") - timedelta(seconds=61)) == 3
    # as the timer does when the window frees
    admission.dispatcher.request(project_id=project.id, queue="high_priority")
    wait_until(
        lambda: Job.objects.filter(id__in=ids).finished().count() == 5,
        timeout=60,
        message="the two waiting jobs, once the window has room",
    )
    jobs = Job.objects.filter(id__in=ids)
    assert {job.status for job in jobs} == {JobStatus.SUCCESS}
    assert {job.attempts for job in jobs} == {1}
    assert not Job.objects.filter(id__in=ids).exclude(waiting_reason="").exists()
