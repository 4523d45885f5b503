"""Admitting jobs and publishing their messages after commit, off the request path.

A web request that creates a job commits the row and answers 202; the job is then handed to a background thread of
the process, which **admits** the jobs of the project: while the project has fewer than its ``max_concurrent_jobs``
admitted (published and not finished) in that queue, its waiting jobs are published (with publisher confirms, plus
Celery's task-sent event) highest priority first, then in submission order, and their ``dispatched_at`` recorded in
the same transaction; the others wait PENDING with a ``waiting_reason``. A job that finishes frees its slot: the
process that finished it admits the project's next waiting job (``slot_freed``). RabbitMQ thus holds at most each
project's window, and no project's flood delays another project's jobs by more than that window. A project may
also have a ``max_submissions_per_minute``: at most that many of its jobs (both queues) admitted in any 60 seconds,
counted from the jobs' ``dispatched_at`` in PostgreSQL; the background thread comes back when the window frees.

Nothing is lost if a process dies: the job is PENDING and undispatched, and the recovery sweep
(``jobs.services.jobs_dispatch_stalled``) admits it after ``JOB_DISPATCH_GRACE_SECONDS``. While the broker refuses
messages the thread backs off (``BACKOFF_MIN`` doubling to ``BACKOFF_MAX`` seconds between tries). A job that cannot
be published for a reason of its own (not the broker's: ``BROKER_ERRORS``) ends FAILED and the others go on.

``JOB_DISPATCH_MODE=inline`` admits in the committing thread instead, and code running inside a Celery task always
admits inline (a pool process may be recycled at any moment).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import amqp.exceptions
import kombu.exceptions
from celery import current_task
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from kaapi.celery import HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE
from tenancy.models import Project

from . import statements
from .models import Job, WaitingReason
from .scheduling import start_high_priority_job, start_low_priority_job

logger = logging.getLogger(__name__)

_STARTERS = {"high_priority": start_high_priority_job, "low_priority": start_low_priority_job}
BATCH_SIZE = 500  # rows per UPDATE that records dispatches
CONNECTION_CHECK_INTERVAL = 5.0  # seconds between checks of the background thread's database connection
# While the broker refuses job messages the thread waits between tries (doubling). It keeps at most MAX_QUEUED ids of
# new jobs per project, to mark those left waiting (their jobs are read from the table in any case).
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0
MAX_QUEUED = 10_000


def new_task_id() -> str:
    return str(uuid.uuid4())


# The broker being unreachable or refusing messages: every job would fail alike, so publishing stops and waits.
# Anything else raised while publishing one job (a function no longer registered, params that do not encode, ...) is
# that job's own: it ends FAILED and the others go on.
BROKER_ERRORS = (
    OSError,
    kombu.exceptions.OperationalError,
    kombu.exceptions.LimitExceeded,
    amqp.exceptions.AMQPError,
    amqp.exceptions.MessageNacked,
)


class JobNotPublishable(Exception):
    """Publishing this job failed for a reason of its own, not the broker's."""


def publish_job(job: Job) -> bool:
    """Publish ``job``'s message under ``job.task_id`` (confirmed by the broker). False when the broker failed;
    ``JobNotPublishable`` when the job itself cannot be published."""
    try:
        _STARTERS[job.queue](
            job.function_path,
            job.project_id,
            str(job.id),
            job.trace_id,
            task_id=job.task_id,
            priority=job.priority,
            params=job.params,
        )
    except BROKER_ERRORS:
        logger.warning("could not publish job %s; the recovery sweep will publish it", job.id, exc_info=True)
        return False
    except Exception as exc:
        logger.warning("job %s cannot be published", job.id, exc_info=True)
        raise JobNotPublishable(f"{type(exc).__name__}: {exc}") from exc
    return True


def publish_and_record(jobs: list[Job], *, stop_at_failure: bool = False) -> int:
    """Publish ``jobs`` and record the dispatch time of those the broker confirmed; returns how many were handled:
    published, or FAILED because they cannot be published (their own fault, see ``BROKER_ERRORS``).

    With ``stop_at_failure`` the jobs after the first one that the broker refused are not tried (the broker is down:
    each would spend the publish retries for nothing); the handled jobs are then the first ones of ``jobs``. Jobs
    are created with their task id, so recording a batch is one UPDATE; a job without one (requeued by maintenance)
    gets it here, written with its own UPDATE.
    """
    fresh = {job.id for job in jobs if not job.task_id}
    published: list[Job] = []
    refused: list[tuple[Job, str]] = []
    for job in jobs:
        job.task_id = job.task_id or new_task_id()
        try:
            if publish_job(job):
                published.append(job)
            elif stop_at_failure:
                break
        except JobNotPublishable as exc:
            refused.append((job, str(exc)))
    now = timezone.now()
    preassigned = [job.id for job in published if job.id not in fresh]
    for start in range(0, len(preassigned), BATCH_SIZE):
        statements.record_dispatched(job_ids=preassigned[start : start + BATCH_SIZE], now=now)
    for job in published:
        if job.id in fresh:
            Job.objects.filter(id=job.id).update(task_id=job.task_id, dispatched_at=now, waiting_reason="")
    if refused:
        from .services import job_mark_failed  # the services publish through this module: imported when needed

        for job, error in refused:
            job_mark_failed(job_id=str(job.id), error=f"the job's message could not be published: {error}")
    return len(published) + len(refused)


# --- Admission ------------------------------------------------------------------------------------------
ADMIT_BATCH = 50  # jobs one admission transaction publishes at most
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


def max_concurrent_jobs(project_id: int) -> int:
    """The project's limit of admitted jobs per queue: its own, or the setting's."""
    return project_limits(project_id)[0]


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
            handled = publish_and_record(jobs, stop_at_failure=True)
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


class BackgroundDispatcher:
    """One daemon thread per process that admits and publishes the jobs that committing threads hand it.

    It holds which projects have new jobs in which queue, not the jobs: admission reads them from the table.
    High-priority queues are admitted before low-priority ones, so a high-priority job submitted behind a batch of
    thousands of low-priority ones is published after at most one admission pass. A project whose jobs wait for its
    submission rate is admitted again when its window frees a slot (a timer of the thread: lost with the process,
    the recovery sweep then admits them).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._keys: dict[tuple[int, str], set] = {}
        self._due: dict[tuple[int, str], float] = {}  # admissions to try again at a time (time.monotonic())
        self._busy = False

    def submit(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start()
            for job in jobs:
                ids = self._keys.setdefault((job.project_id, job.queue), set())
                if len(ids) < MAX_QUEUED:  # beyond, the jobs are admitted all the same, without a waiting reason
                    ids.add(job.id)
            self._changed.notify_all()

    def request(self, *, project_id: int, queue: str) -> None:
        """Admit the project's waiting jobs of ``queue`` (a slot was freed)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start()
            self._keys.setdefault((project_id, queue), set())
            self._changed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far was handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._keys or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _start(self) -> None:
        # After a fork the child has the parent's state but not its thread: start afresh.
        self._keys = {}
        self._due = {}
        self._busy = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="kaapi-job-dispatcher", daemon=True)
        self._thread.start()

    def _take(self) -> list[tuple[tuple[int, str], set]]:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, due in list(self._due.items()):
                    if due <= now:
                        del self._due[key]
                        self._keys.setdefault(key, set())
                if self._keys:
                    break
                self._busy = False
                self._changed.notify_all()
                self._changed.wait(min(self._due.values()) - now if self._due else None)
            keys, self._keys = self._keys, {}
            self._busy = True
        # high_priority before low_priority; otherwise in the order they came
        return sorted(keys.items(), key=lambda item: item[0][1] != HIGH_PRIORITY_QUEUE)

    def _put_back(self, items: list[tuple[tuple[int, str], set]]) -> None:
        with self._lock:
            for key, ids in items:
                self._keys.setdefault(key, set()).update(ids)

    def _later(self, key: tuple[int, str], delay: float) -> None:
        with self._lock:
            due = time.monotonic() + delay
            self._due[key] = min(due, self._due.get(key, due))

    def _run(self) -> None:
        checked = time.monotonic()
        backoff = 0.0
        while True:
            items = self._take()
            broker_ok = True
            for index, ((project_id, queue_name), ids) in enumerate(items):
                try:
                    # The thread's own connection, checked (CONN_MAX_AGE, and the health check then costs a SELECT
                    # 1) every few seconds rather than for every pass; a broken one is closed below and reopened.
                    if time.monotonic() - checked > CONNECTION_CHECK_INTERVAL:
                        close_old_connections()
                        checked = time.monotonic()
                    admission = admit(project_id=project_id, queue=queue_name, submitted=ids)
                    assert admission is not None  # admit() waits for the lock: it returns an Admission
                    broker_ok = admission.broker_ok
                    if admission.retry_in is not None:
                        self._later((project_id, queue_name), admission.retry_in)
                except Exception:  # the database may be down: the sweep admits what is left waiting
                    logger.exception("job dispatcher: could not admit the jobs of project %s", project_id)
                    connection.close()
                if not broker_ok:
                    # The broker refused a message (after the publish retries): what is left goes back, and the
                    # thread waits before it tries again rather than spend the retries on every project.
                    self._put_back(items[index:])
                    break
            backoff = 0.0 if broker_ok else min(BACKOFF_MAX, max(BACKOFF_MIN, 2 * backoff))
            if backoff:
                logger.warning("job dispatcher: the broker refused a job message; next try in %.1f s", backoff)
                time.sleep(backoff)


dispatcher = BackgroundDispatcher()
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
    """A job of the project finished: admit its next waiting job of ``queue``, if any."""
    if not _inline():
        dispatcher.request(project_id=project_id, queue=queue)
        return
    try:
        if has_waiting(project_id=project_id, queue=queue):  # most finished jobs have none waiting: one query
            # Never wait for another process's admission: under a flood every finishing job of a gevent worker
            # would hold a pooled connection while it waits, and the other projects' jobs in that process would
            # wait for one. The process's dispatcher thread admits later instead: one waiter per process, and
            # the slot freed during the other admission (which counted it taken) is not left unused.
            if admit(project_id=project_id, queue=queue, wait=False) is None:
                dispatcher.request(project_id=project_id, queue=queue)
    except Exception:
        logger.exception("could not admit the next job of project %s; the recovery sweep will", project_id)
