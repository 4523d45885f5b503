"""Delayed jobs: a job submitted with a future ``run_after`` is stored SCHEDULED, and published by the platform when
it is due — never as a Celery ETA/countdown message, which RabbitMQ would hold unacknowledged on a worker until
then (past its ``consumer_timeout`` the channel is closed, celery/celery#6760).

A periodic sweep (``jobs_cron_publish_scheduled``, every ``JOB_SCHEDULED_SWEEP_SECONDS``) promotes the due jobs,
SCHEDULED → PENDING, and hands them to admission as if they had just been submitted: the project's limits and
fairness apply to them as to any job. The promotion locks the rows it reads (``SKIP LOCKED``: two sweeps never
take the same job) and updates them only while still SCHEDULED (a job cancelled meanwhile stays cancelled); from
PENDING on, admission publishes a job once (jobs/admission.py). A sweep that dies between its commit and the
admission leaves the jobs PENDING, which the recovery sweep admits after ``JOB_DISPATCH_GRACE_SECONDS``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kaapi import metrics

from .admission import dispatch
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

PROMOTE_BATCH = 1000  # jobs promoted (one transaction, one UPDATE) at a time
PROMOTE_SECONDS = 30.0  # a run of the sweep stops after this; the next run goes on


def schedule_horizon() -> timedelta:
    return timedelta(days=settings.JOB_SCHEDULE_HORIZON_DAYS)


def schedule_jobs(jobs: Sequence[Job], *, run_afters: Sequence[datetime | None]) -> list[Job]:
    """Give unsaved ``jobs`` their ``run_after`` (by position; missing: none): those due later become SCHEDULED.
    Returns the others, to be admitted once committed."""
    now = timezone.now()
    due = []
    for index, job in enumerate(jobs):
        run_after = run_afters[index] if index < len(run_afters) else None
        job.run_after = run_after
        if run_after is not None and run_after > now:
            job.status = JobStatus.SCHEDULED
        else:
            due.append(job)
    return due


def jobs_promote_due(*, limit: int = 100_000, seconds: float = PROMOTE_SECONDS) -> int:
    """Promote the SCHEDULED jobs whose ``run_after`` has come (earliest first) to PENDING and admit them; returns
    how many. Works in batches until none is due, ``limit`` were promoted or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    promoted = 0
    while promoted < limit:
        jobs = _promote_batch(min(PROMOTE_BATCH, limit - promoted))
        if jobs:
            for (job_type, queue), count in Counter((job.job_type, job.queue) for job in jobs).items():
                metrics.count_job_submitted(job_type=job_type, queue=queue, count=count)
            dispatch(jobs)
        promoted += len(jobs)
        if len(jobs) < PROMOTE_BATCH or time.monotonic() > deadline:
            break
    if promoted:
        logger.info("scheduled jobs: %d due, promoted", promoted)
    return promoted


def _promote_batch(size: int) -> list[Job]:
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Job.objects.scheduled_due(now=now)
            .order_by("run_after")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:size]
        )
        if not ids:
            return []
        Job.objects.filter(id__in=ids, status=JobStatus.SCHEDULED).update(status=JobStatus.PENDING, updated_at=now)
        # what admission needs of each: its project, queue and id (dispatch reads the jobs from the table)
        promoted = Job.objects.filter(id__in=ids, status=JobStatus.PENDING)
        return list(promoted.only("id", "project_id", "queue", "job_type"))
