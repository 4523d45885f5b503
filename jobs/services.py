"""Job services: the only code that changes a job's status."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_celery_results.models import TaskResult

from kaapi import metrics
from kaapi.celery import HIGH_PRIORITY, HIGH_PRIORITY_QUEUE, LOW_PRIORITY, LOW_PRIORITY_QUEUE
from kaapi.logging import current_trace_id, new_trace_id
from tenancy.models import Project

from . import sql
from .admission import admit, dispatch, slot_freed
from .exceptions import JobStateError
from .models import FINISHED_STATUSES, Job, JobStatus, WaitingReason
from .publishing import new_task_id, publish_and_record, revoke_task
from .registry import get_job_function, reserved_param_names
from .scheduled import schedule_jobs
from .webhooks import validate_callback_url, webhook_enqueue_for_job

logger = logging.getLogger(__name__)

PRIORITY_LEVELS = {"high": (HIGH_PRIORITY_QUEUE, HIGH_PRIORITY), "low": (LOW_PRIORITY_QUEUE, LOW_PRIORITY)}


# --- Creating and dispatching -----------------------------------------------------------------
def job_create(
    *,
    project: Project,
    function_path: str,
    params: dict[str, Any] | None = None,
    priority: str = "high",
    trace_id: str = "",
    callback_url: str = "",
    job_type: str | None = None,
    run_after: datetime | None = None,
    labels: dict[str, Any] | None = None,
) -> Job:
    """Create a PENDING job and publish it once the surrounding transaction commits; with a future ``run_after``
    a SCHEDULED job instead, published when it is due (``jobs.scheduled``).

    Call it inside the transaction that writes the job's domain rows, so both exist or neither does.
    ``labels``: usage columns known at submission (``provider``, ``model``, ``config_id`` of an AI call).
    """
    validate_callback_url(callback_url)  # ValidationError (a 400 in the API) for a URL never deliverable
    [job] = _new_jobs(
        project=project,
        function_path=function_path,
        params_list=[params or {}],
        priority=priority,
        trace_id=trace_id,
        job_type=job_type,
        callback_url=callback_url,
    )
    _label(job, labels)
    due = schedule_jobs([job], run_afters=[run_after])
    sql.insert(job)
    if due:
        transaction.on_commit(partial(_submitted, due))
    return job


def job_create_many(
    *,
    project: Project,
    function_path: str,
    params_list: list[dict[str, Any]],
    priority: str = "low",
    trace_id: str = "",
    job_type: str | None = None,
    callback_urls: list[str] | None = None,
    run_afters: list[datetime | None] | None = None,
    batch_id: uuid.UUID | None = None,
    labels_list: list[dict[str, Any]] | None = None,
) -> list[Job]:
    """Create many PENDING jobs in one INSERT and publish them after commit (batch submissions); each with its
    callback URL and run_after (SCHEDULED when in the future) when given, all with ``batch_id``."""
    jobs = _new_jobs(
        project=project,
        function_path=function_path,
        params_list=params_list,
        priority=priority,
        trace_id=trace_id,
        job_type=job_type,
    )
    for job, url in zip(jobs, callback_urls or [], strict=False):
        job.callback_url = url
    for job in jobs:
        job.batch_id = batch_id
    for job, labels in zip(jobs, labels_list or [], strict=False):
        _label(job, labels)
    due = schedule_jobs(jobs, run_afters=run_afters or [])
    jobs = Job.objects.bulk_create(jobs)
    if due:
        transaction.on_commit(partial(_submitted, due))
    return jobs


_LABELS = ("provider", "model", "config_id")


def _label(job: Job, labels: dict[str, Any] | None) -> None:
    """Set the job's usage columns known at submission (``provider``, ``model``, ``config_id`` of an AI call)."""
    for name, value in (labels or {}).items():
        if name not in _LABELS:
            raise ValueError(f"{name!r} is not a job label")
        setattr(job, name, value)


def _new_jobs(
    *,
    project: Project,
    function_path: str,
    params_list: list[dict[str, Any]],
    priority: str,
    trace_id: str,
    job_type: str | None,
    callback_url: str = "",
) -> list[Job]:
    """Unsaved PENDING jobs, each with its task id; ValueError for an unregistered function or a bad priority,
    ValidationError for params named like a standard parameter of job functions."""
    registered = get_job_function(function_path)
    for params in params_list:
        reserved = reserved_param_names(params)
        if reserved:  # the function receives these already: the call would fail with TypeError in the worker
            raise ValidationError(
                {"params": f"{', '.join(map(repr, reserved))} may not be a param: every job function gets it already"}
            )
    if priority not in PRIORITY_LEVELS:
        raise ValueError(f"priority must be one of {sorted(PRIORITY_LEVELS)}, got {priority!r}")
    queue, level = PRIORITY_LEVELS[priority]
    trace_id = trace_id or current_trace_id() or new_trace_id()
    return [
        Job(
            project=project,
            job_type=job_type or registered.job_type,
            function_path=function_path,
            queue=queue,
            priority=level,
            params=params,
            trace_id=trace_id,
            callback_url=callback_url,
            task_id=new_task_id(),
        )
        for params in params_list
    ]


def _submitted(jobs: list[Job]) -> None:
    """After commit: count the submissions and hand the jobs to the dispatcher (all of one type and queue)."""
    metrics.count_job_submitted(job_type=jobs[0].job_type, queue=jobs[0].queue, count=len(jobs))
    dispatch(jobs)


def job_dispatch(*, job_id: uuid.UUID | str) -> bool:
    """Publish the message of a PENDING job now; True when the broker confirmed it (used by the sweep)."""
    job = Job.objects.filter(id=job_id, status=JobStatus.PENDING).first()
    return bool(job and publish_and_record([job]))


# --- Worker side --------------------------------------------------------------------------------
class Claim(Enum):
    RUN = "run"  # the caller now owns the job and runs it
    SKIP = "skip"  # finished, cancelled or already running elsewhere: do nothing
    EXHAUSTED = "exhausted"  # its deliveries kept killing the worker: now FAILED


def job_claim(*, job_id: str, task_id: str, redelivered: bool) -> Claim:
    """Atomically take a job for running (PENDING → PROCESSING, attempts + 1).

    A redelivered message for a PROCESSING job means the worker that ran it died: the job is taken again,
    until ``JOB_MAX_WORKER_LOST`` lost deliveries, then it ends FAILED instead of looping forever.
    """
    now = timezone.now()
    if sql.claim(job_id=job_id, task_id=task_id, now=now):
        return Claim.RUN
    if not redelivered:
        return Claim.SKIP
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(id=job_id, status=JobStatus.PROCESSING).first()
        if job is None:
            return Claim.SKIP
        if _delivery_lost(job, now=now, giving_up="the worker running this job was lost {count} times; giving up"):
            return Claim.EXHAUSTED
        job.attempts += 1
        job.started_at = now
        job.task_id = task_id
        job.save(update_fields=["worker_lost_count", "attempts", "started_at", "task_id", "updated_at"])
        return Claim.RUN


def job_mark_success(
    *, job_id: str, result: Any, task_result: TaskResult | None = None, usage: dict[str, Any] | None = None
) -> bool:
    """PROCESSING → SUCCESS. False when the job was cancelled meanwhile (the result is dropped).

    ``task_result``, the task's Celery result row (unsaved), is written with it in one round trip. ``usage``: the
    job's usage columns (who served it, tokens, cost), written by the same conditional UPDATE, so spend is counted
    once per SUCCESS whatever the redeliveries (jobs.sql.USAGE_COLUMNS).
    """
    job = sql.mark_success(job_id=job_id, result=result, now=timezone.now(), task_result=task_result, usage=usage)
    if job is not None:
        _job_finished(job=job)
    return job is not None


def job_mark_failed(*, job_id: str, error: str) -> bool:
    """PENDING/PROCESSING → FAILED with ``error``."""
    return _finish(
        job_id=job_id,
        from_statuses=[JobStatus.PENDING, JobStatus.PROCESSING],
        status=JobStatus.FAILED,
        error=error[:10000],
    )


def _finish(*, job_id: str, from_statuses: list[str], **fields: Any) -> bool:
    """Move a job from one of ``from_statuses`` to a finished status (a conditional UPDATE), then run the
    finish hook once with the finished row."""
    now = timezone.now()
    job = sql.finish(
        job_id=job_id, from_statuses=from_statuses, finished_at=now, updated_at=now, waiting_reason="", **fields
    )
    if job is not None:
        _job_finished(job=job)
    return job is not None


def job_mark_retrying(*, job_id: str, error: str, delay: float) -> bool:
    """PROCESSING → PENDING while a retry message waits ``delay`` seconds."""
    now = timezone.now()
    return bool(
        Job.objects.filter(id=job_id, status=JobStatus.PROCESSING).update(
            status=JobStatus.PENDING,
            error=f"retrying in {delay:.1f} s after: {error}"[:10000],
            dispatched_at=None,
            # not admitted again: its retry message is on its way (the sweep publishes it if that got lost)
            waiting_reason=WaitingReason.RETRY,
            updated_at=now,
        )
    )


def job_mark_dispatched(*, job_id: str) -> None:
    Job.objects.filter(id=job_id, status=JobStatus.PENDING).update(dispatched_at=timezone.now(), waiting_reason="")


def job_report_progress(*, job_id: str, percent: int, message: str = "") -> bool:
    """Record progress of a running job (0–100)."""
    percent = max(0, min(100, int(percent)))
    return bool(
        Job.objects.filter(id=job_id, status=JobStatus.PROCESSING).update(
            progress_percent=percent, progress_message=message[:255], updated_at=timezone.now()
        )
    )


# --- Operator and client actions ----------------------------------------------------------------
def job_cancel(*, job: Job, terminate: bool = False) -> Job:
    """Cancel a SCHEDULED, PENDING or PROCESSING job.

    The cancellation is durable (a worker that receives the message later does not run it); with
    ``terminate`` a running task is also killed.
    """
    was_running = job.status == JobStatus.PROCESSING
    now = timezone.now()
    was_published = job.status != JobStatus.SCHEDULED
    done = Job.objects.filter(
        id=job.id, status__in=[JobStatus.SCHEDULED, JobStatus.PENDING, JobStatus.PROCESSING]
    ).update(status=JobStatus.CANCELLED, error="cancelled", finished_at=now, updated_at=now, waiting_reason="")
    job.refresh_from_db()
    if not done:
        raise JobStateError(f"job is already {job.status}")
    if job.task_id and was_published:
        try:
            revoke_task(job.task_id, terminate=terminate and was_running)
        except Exception:  # the DB state already makes the cancellation stick
            logger.warning("could not broadcast revoke for task %s", job.task_id, exc_info=True)
    _job_finished(job=job)
    return job


def job_retry(*, job: Job) -> Job:
    """Run a FAILED or CANCELLED job again, as a new delivery."""
    done = Job.objects.filter(id=job.id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
        status=JobStatus.PENDING,
        error="",
        result=None,
        progress_percent=0,
        progress_message="",
        worker_lost_count=0,
        task_id=new_task_id(),
        dispatched_at=None,
        waiting_reason="",
        started_at=None,
        finished_at=None,
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if not done:
        raise JobStateError(f"only FAILED or CANCELLED jobs can be retried; this job is {job.status}")
    transaction.on_commit(partial(dispatch, [job]))
    return job


# --- Maintenance ------------------------------------------------------------------------------------
DISPATCH_SWEEP_BATCH = 500  # jobs read, published and recorded (one UPDATE) at a time
DISPATCH_SWEEP_SECONDS = 45.0  # a run of the sweep stops after this: less than its schedule's 60 s interval


def dispatch_grace() -> timedelta:
    """How long a PENDING job may stay undispatched before the recovery sweep publishes it."""
    return timedelta(seconds=settings.JOB_DISPATCH_GRACE_SECONDS)


def overdue_after() -> timedelta:
    """How long after its start a PROCESSING job is overdue: no worker will finish it."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.JOB_STALLED_MARGIN_SECONDS)


def jobs_dispatch_stalled(
    *, older_than: timedelta | None = None, limit: int = 100_000, seconds: float = DISPATCH_SWEEP_SECONDS
) -> int:
    """Publish what waits longer than ``older_than`` and should not: jobs waiting for a retry whose message never
    reached the broker, oldest first, and the waiting jobs of each project under its ``max_concurrent_jobs`` and
    ``max_submissions_per_minute`` (admission, as after a submission: the dispatcher that should have admitted them
    died, a finish's admission was lost, or the submission rate's window freed a slot). Returns how many were
    handled (published, or FAILED because they cannot be published: see ``jobs.publishing.BROKER_ERRORS``).

    After a broker outage these are every job submitted during it, so the sweep works in batches until none is
    left, ``limit`` jobs were handled or ``seconds`` have passed, and stops at the first job the broker refuses
    (still down: the next run goes on).
    """
    grace = older_than if older_than is not None else dispatch_grace()
    deadline = time.monotonic() + seconds
    handled = 0
    stalled = Job.objects.stalled_undispatched(older_than=grace)
    while handled < limit:
        batch = list(
            stalled.filter(waiting_reason=WaitingReason.RETRY).order_by("updated_at")[
                : min(DISPATCH_SWEEP_BATCH, limit - handled)
            ]
        )
        done = publish_and_record(batch)
        handled += done
        if done < len(batch):
            return handled  # the broker refused
        if len(batch) < DISPATCH_SWEEP_BATCH or time.monotonic() > deadline:
            break
    waiting = stalled.exclude(waiting_reason=WaitingReason.RETRY)
    # every project with a stalled job, high-priority queue first; each admits at most up to its limit
    pairs = sorted(
        set(waiting.values_list("project_id", "queue")), key=lambda pair: (pair[1] != HIGH_PRIORITY_QUEUE, pair)
    )
    for project_id, queue in pairs:
        admission = admit(project_id=project_id, queue=queue)
        assert admission is not None  # admit() waits for the lock: it returns an Admission
        handled += admission.handled
        if not admission.broker_ok:
            break
        if admission.waiting_reason:  # those left wait for the project's limit
            waiting.filter(project_id=project_id, queue=queue, waiting_reason="").update(
                waiting_reason=admission.waiting_reason
            )
        if handled >= limit or time.monotonic() > deadline:
            break
    return handled


def jobs_recover_overdue(*, limit: int = 1000) -> dict[str, int]:
    """PROCESSING jobs started longer ago than the hard time limit plus a margin: no worker will finish them.

    Each is requeued (PENDING, published again), counting a lost delivery, or — once its deliveries were lost
    ``JOB_MAX_WORKER_LOST`` times — ends FAILED. Returns ``{"requeued": n, "failed": m}``.
    """
    overdue = overdue_after()
    ids = list(Job.objects.overdue(older_than=overdue).values_list("id", flat=True)[:limit])
    counts = {"requeued": 0, "failed": 0}
    for job_id in ids:
        with transaction.atomic():
            job = Job.objects.select_for_update(skip_locked=True).overdue(older_than=overdue).filter(id=job_id).first()
            if job is None:
                continue
            seconds = int(overdue.total_seconds())
            giving_up = f"no worker finished this job within {seconds} s, {{count}} times; giving up"
            if _delivery_lost(job, now=timezone.now(), giving_up=giving_up):
                counts["failed"] += 1
            else:
                job.status = JobStatus.PENDING
                job.error = f"requeued: no worker finished it within {seconds} s"
                job.task_id = ""
                job.dispatched_at = None
                job.save(
                    update_fields=["worker_lost_count", "status", "error", "task_id", "dispatched_at", "updated_at"]
                )
                transaction.on_commit(partial(job_dispatch, job_id=job.id))
                counts["requeued"] += 1
            logger.warning("overdue PROCESSING job %s: %s", job.id, job.error)
    return counts


def _delivery_lost(job: Job, *, now: datetime, giving_up: str) -> bool:
    """Count one more delivery of the locked, PROCESSING ``job`` lost with its worker. True when that was one too
    many (``JOB_MAX_WORKER_LOST``): the job is now FAILED with ``giving_up`` (``{count}``: the lost deliveries)
    and its finish hook runs after commit. False: the caller runs or requeues it, and saves it."""
    job.worker_lost_count += 1
    if job.worker_lost_count < settings.JOB_MAX_WORKER_LOST:
        return False
    job.status = JobStatus.FAILED
    job.error = giving_up.format(count=job.worker_lost_count)
    job.finished_at = now
    job.save(update_fields=["worker_lost_count", "status", "error", "finished_at", "updated_at"])
    transaction.on_commit(partial(_job_finished, job=job))
    return True


def _job_finished(*, job: Job) -> None:
    """Hook run once when a job reaches a finished status: metrics, and its webhook if it has a callback URL.

    A webhook problem is logged and never changes the job's outcome (a savepoint keeps the caller's
    transaction usable).
    """
    metrics.observe_job_finished(
        job_type=job.job_type,
        status=job.status,
        queue=job.queue,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
    logger.info("job %s finished: %s", job.id, job.status)
    # Its slot is free once the finish is committed: the project's next waiting job is admitted then.
    transaction.on_commit(partial(slot_freed, project_id=job.project_id, queue=job.queue))
    if not job.callback_url:
        return
    try:
        with transaction.atomic():
            webhook_enqueue_for_job(job=job)
    except Exception:
        logger.exception("could not queue the webhook of job %s", job.id)


__all__ = [
    "Claim",
    "FINISHED_STATUSES",
    "job_cancel",
    "job_claim",
    "job_create",
    "job_dispatch",
    "job_mark_dispatched",
    "job_mark_failed",
    "job_mark_retrying",
    "job_mark_success",
    "job_report_progress",
    "job_retry",
    "jobs_dispatch_stalled",
    "jobs_recover_overdue",
]
