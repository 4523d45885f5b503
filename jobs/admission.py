"""Admission: which of a project's jobs are published, and when; after commit, off the request path.

A web request that creates a job commits the row and answers 202; the job is then handed to a background thread of
the process, which **admits** the jobs of the project: while the project has fewer than its ``max_concurrent_jobs``
admitted (published and not finished) in that queue, its waiting jobs are published (with publisher confirms, plus
Celery's task-sent event) highest priority first, then in submission order, and their ``dispatched_at`` recorded in
the same transaction; the others wait PENDING with a ``waiting_reason``. A job that finishes frees its slot: the
dispatcher thread of the process that finished it admits the project's next waiting jobs, those of every slot
freed in the last ``SLOT_LINGER`` seconds at once (``slot_freed``). RabbitMQ thus holds at most each
project's window, and no project's flood delays another project's jobs by more than that window. A project may
also have a ``max_submissions_per_minute``: at most that many of its jobs (both queues) admitted in any 60 seconds,
counted from the jobs' ``dispatched_at`` in PostgreSQL; the background thread comes back when the window frees.

Nothing is lost if a process dies: the job is PENDING and undispatched, and the recovery sweep
(``jobs.services.jobs_dispatch_stalled``) admits it after ``JOB_DISPATCH_GRACE_SECONDS``. While the broker refuses
messages the thread backs off (``BACKOFF_MIN`` doubling to ``BACKOFF_MAX`` seconds between tries). A job that cannot
be published for a reason of its own (not the broker's: ``BROKER_ERRORS``) ends FAILED and the others go on. The
thread, the publish and those constants are ``jobs.publishing``'s.

``JOB_DISPATCH_MODE=inline`` admits in the committing thread instead, and the jobs that code running inside a Celery
task submits are always admitted inline (a pool process may be recycled at any moment).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from celery import current_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from kaapi.celery import HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE
from tenancy.models import Project

from .models import Job, WaitingReason
from .publishing import BackgroundDispatcher, publish_and_record

logger = logging.getLogger(__name__)

ADMIT_BATCH = 50  # jobs one admission transaction publishes at most
# How long a freed slot may wait for the slots other finishing jobs free, to be filled by one admission with them.
# It delays only a project already at its limit (its next job), by a fraction of an LLM call's time; under a flood
# the admission itself takes longer (a gevent worker's busy hub), and the slots freed meanwhile join the next one.
SLOT_LINGER = 0.02
# The second key of the transaction-level advisory lock that serializes the admission of one project's jobs of
# one queue across processes (the first key is the project's id); with a submission rate, the admissions of both
# queues of a project count in one window and take the project's rate lock too, always after the queue's.
_LOCK_KEYS = {HIGH_PRIORITY_QUEUE: 0x6B61_0001, LOW_PRIORITY_QUEUE: 0x6B61_0002}
_RATE_LOCK_KEY = 0x6B61_0003
RATE_WINDOW = timedelta(seconds=60)  # max_submissions_per_minute counts the jobs admitted in the last RATE_WINDOW
# The window is re-read this long after its oldest admission leaves it, so that the next one finds the slot free.
RATE_MARGIN = 0.05


class Admission(NamedTuple):
    handled: int  # jobs published (or FAILED because they cannot be: see BROKER_ERRORS)
    broker_ok: bool
    waiting_reason: str = ""  # the limit that left the project's jobs waiting; empty when none did
    retry_in: float | None = None  # seconds until the submission rate admits again, when it left jobs waiting


def project_limits(project_id: int) -> tuple[int, int | None]:
    """The project's max_concurrent_jobs per queue and max_submissions_per_minute (None: no rate), each its own or
    the setting's, in one query."""
    own = Project.objects.filter(id=project_id).values_list("max_concurrent_jobs", "max_submissions_per_minute").first()
    concurrent, rate = own or (None, None)
    return concurrent or settings.JOB_MAX_CONCURRENT_JOBS, rate or settings.JOB_MAX_SUBMISSIONS_PER_MINUTE or None


def _waiting(project_id: int, queue_name: str):
    return Job.objects.waiting().filter(project_id=project_id, queue=queue_name)


def _advisory_lock(key1: int, key2: int, *, wait: bool = True) -> bool:
    """Take the transaction-level advisory lock; with ``wait=False`` only if it is free (False when it is not)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [key1, key2])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [key1, key2])
        return bool(cursor.fetchone()[0])


def _rate_room(project_id: int, rate: int) -> tuple[int, datetime | None]:
    """How many more jobs the project may have admitted now under ``rate`` per RATE_WINDOW, and the dispatch time of
    the oldest admission still in the window (from the job_project_dispatched index). A job's dispatch time is its
    latest publication: a retry republished later counts from then, which can only hold the project back, never
    let more through."""
    recent = Job.objects.filter(project_id=project_id, dispatched_at__gte=timezone.now() - RATE_WINDOW).aggregate(
        n=Count("id"), oldest=Min("dispatched_at")
    )
    return rate - recent["n"], recent["oldest"]


def _admit_batch(project_id: int, queue_name: str, *, wait: bool = True) -> Admission | None:
    """One admission transaction. Its ``waiting_reason`` is the limit that is now reached (no room left). None when
    ``wait`` is False and another process is admitting the project's jobs of the queue."""
    with transaction.atomic():
        if not _advisory_lock(project_id, _LOCK_KEYS.get(queue_name, 0), wait=wait):
            return None
        concurrent, rate = project_limits(project_id)
        room = concurrent - Job.objects.admitted().filter(project_id=project_id, queue=queue_name).count()
        reason = WaitingReason.MAX_CONCURRENT_JOBS
        oldest = None
        if rate is not None and room > 0:
            _advisory_lock(project_id, _RATE_LOCK_KEY)
            rate_room, oldest = _rate_room(project_id, rate)
            if rate_room <= room:
                room, reason = rate_room, WaitingReason.SUBMISSION_RATE
        handled = 0
        if room > 0:
            jobs = list(
                _waiting(project_id, queue_name)
                .order_by("-priority", "created_at", "id")
                .select_for_update(skip_locked=True)[: min(room, ADMIT_BATCH)]
            )
            handled = publish_and_record(jobs)
            if handled < len(jobs):
                return Admission(handled, False)
            if handled < room:
                return Admission(handled, True)  # no more waiting jobs (or they are being admitted elsewhere)
        if reason == WaitingReason.SUBMISSION_RATE and _waiting(project_id, queue_name).exists():
            return Admission(handled, True, reason, _retry_in(oldest or timezone.now()))
        return Admission(handled, True, reason)


def _retry_in(oldest: datetime) -> float:
    """Seconds until the admission made at ``oldest`` leaves the rate's window."""
    return max(RATE_MARGIN, (oldest + RATE_WINDOW - timezone.now()).total_seconds() + RATE_MARGIN)


def admit(*, project_id: int, queue: str, submitted: Iterable[Any] = (), wait: bool = True) -> Admission | None:
    """Publish the project's waiting jobs of ``queue`` while it has fewer than its ``max_concurrent_jobs`` admitted
    (published and not finished) and, with a ``max_submissions_per_minute``, fewer than that admitted in the last
    minute (both queues), highest priority first, then in submission order.

    Those of ``submitted`` (ids) left waiting because the project is at a limit get it as their waiting reason; when
    it is the submission rate, ``retry_in`` says when the window admits again (someone must come back then: the
    background dispatcher does, and the recovery sweep in any case). Admissions of one project and queue are
    serialized across processes (an advisory lock), and each job is published in the transaction that records it:
    a process killed in between leaves the job waiting, admitted again later (a second message for it is harmless:
    the claim runs a job once). With ``wait=False`` nothing is done, and None returned, while another process
    holds that lock.
    """
    handled = 0
    while True:
        batch = _admit_batch(project_id, queue, wait=wait)
        if batch is None:  # another process is admitting them (from its first batch or a later one)
            return Admission(handled, True) if handled else None
        handled += batch.handled
        if not batch.broker_ok:
            return Admission(handled, False)
        if batch.waiting_reason or batch.handled < ADMIT_BATCH:
            break
    ids = list(submitted)
    if batch.waiting_reason and ids:
        _waiting(project_id, queue).filter(id__in=ids, waiting_reason="").update(waiting_reason=batch.waiting_reason)
    return Admission(handled, True, batch.waiting_reason, batch.retry_in)


def has_waiting(*, project_id: int, queue: str) -> bool:
    return _waiting(project_id, queue).exists()


def _admit_in_background(*, project_id: int, queue: str, submitted: Iterable[Any] = ()) -> Admission:
    """The dispatcher thread's admission. With nothing newly submitted (a freed slot, the rate's timer) most
    projects have no job waiting: one query says so, instead of an admission transaction."""
    if not submitted and not has_waiting(project_id=project_id, queue=queue):
        return Admission(0, True)
    return admit(project_id=project_id, queue=queue, submitted=submitted)  # type: ignore[return-value]


dispatcher = BackgroundDispatcher(_admit_in_background)
atexit.register(dispatcher.flush, 5.0)


def _inline() -> bool:
    return settings.JOB_DISPATCH_MODE == "inline" or bool(current_task)


def dispatch(jobs: list[Job]) -> None:
    """Admit freshly committed jobs: in the background, or inline (see the module docstring)."""
    if not _inline():
        dispatcher.submit(jobs)
        return
    keys: dict[tuple[int, str], list] = {}
    for job in jobs:
        keys.setdefault((job.project_id, job.queue), []).append(job.id)
    for (project_id, queue_name), ids in keys.items():
        try:
            admit(project_id=project_id, queue=queue_name, submitted=ids)
        except Exception:
            logger.exception("could not admit %d jobs; the recovery sweep will see to them", len(ids))


def slot_freed(*, project_id: int, queue: str) -> None:
    """A job of the project finished: admit its next waiting job of ``queue``, if any.

    The process's dispatcher thread does it, SLOT_LINGER seconds later at most: under a flood the jobs of a project
    at its limit finish many to the second in each worker process, and one admission then fills all the slots they
    freed (admitting in each finishing task cost a transaction per job, which held a flooding project to about two
    thirds of its throughput without limits). A process that exits first makes its admissions as it goes
    (``flush``: at exit, and when a pool process of the worker shuts down); one killed leaves them to the other
    processes' finishing jobs and, at the latest, to the recovery sweep.
    """
    if settings.JOB_DISPATCH_MODE != "inline":
        dispatcher.request(project_id=project_id, queue=queue, linger=SLOT_LINGER)
        return
    try:
        if has_waiting(project_id=project_id, queue=queue):  # most finished jobs have none waiting: one query
            # Never wait for another process's admission: the one holding the lock counted this slot taken or
            # not; the dispatcher thread comes back for it.
            if admit(project_id=project_id, queue=queue, wait=False) is None:
                dispatcher.request(project_id=project_id, queue=queue)
    except Exception:
        logger.exception("could not admit the next job of project %s; the recovery sweep will", project_id)
