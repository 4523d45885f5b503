"""Publishing job messages after commit, off the request path.

A web request that creates a job commits the row and answers 202; publishing the message (with publisher
confirms, plus Celery's task-sent event) costs a few broker round trips, so it is handed to a background
thread of the process, which publishes in batches and records ``task_id``/``dispatched_at`` with one UPDATE per
batch. Nothing is lost if the process dies first: the job is PENDING and undispatched, and the recovery sweep
(``jobs.services.jobs_dispatch_stalled``) publishes it after ``JOB_DISPATCH_GRACE_SECONDS``. While the broker
refuses messages the thread backs off (``BACKOFF_MIN`` doubling to ``BACKOFF_MAX`` seconds between tries) and a
process holds at most ``MAX_QUEUED`` jobs; the sweep publishes the others.

``JOB_DISPATCH_MODE=inline`` publishes in the committing thread instead, and code running inside a Celery
task always publishes inline (a pool process may be recycled at any moment).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable

import amqp.exceptions
import kombu.exceptions
from celery import current_task
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from . import statements
from .models import Job
from .scheduling import start_high_priority_job, start_low_priority_job

logger = logging.getLogger(__name__)

_STARTERS = {"high_priority": start_high_priority_job, "low_priority": start_low_priority_job}
BATCH_SIZE = 500  # rows per UPDATE that records dispatches
PUBLISH_BATCH_SIZE = 20  # messages the background thread publishes before it looks at its queue again
CONNECTION_CHECK_INTERVAL = 5.0  # seconds between checks of the background thread's database connection
# While the broker refuses job messages the thread waits between tries (doubling), and a process holds at most
# MAX_QUEUED jobs: the ones beyond are committed and undispatched, and the recovery sweep publishes them.
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0
MAX_QUEUED = 10_000
OVERFLOW_LOG_INTERVAL = 10.0  # seconds between warnings about jobs left to the sweep


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
            Job.objects.filter(id=job.id).update(task_id=job.task_id, dispatched_at=now)
    if refused:
        from .services import job_mark_failed  # the services publish through this module: imported when needed

        for job, error in refused:
            job_mark_failed(job_id=job.id, error=f"the job's message could not be published: {error}")
    return len(published) + len(refused)


class BackgroundDispatcher:
    """One daemon thread per process that publishes what committing threads hand it.

    Its queue is ordered by job priority, then arrival: a high-priority job submitted behind a batch of
    thousands of low-priority ones is published after at most one batch in flight, not after the whole batch.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Job]] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._left_to_sweep, self._left_logged_at = 0, -OVERFLOW_LOG_INTERVAL

    def submit(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start()
            room = max(0, MAX_QUEUED - self._pending)
            if len(jobs) > room:
                self._left_to_sweep += len(jobs) - room
                jobs = jobs[:room]
                if time.monotonic() - self._left_logged_at > OVERFLOW_LOG_INTERVAL:  # once in a while, not per job
                    logger.warning(
                        "job dispatcher: %d jobs already wait to be published (is the broker down?); %d more were "
                        "left to the recovery sweep",
                        self._pending,
                        self._left_to_sweep,
                    )
                    self._left_logged_at, self._left_to_sweep = time.monotonic(), 0
            self._pending += len(jobs)
        for job in jobs:
            self._queue.put((-job.priority, next(self._sequence), job))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far was handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _start(self) -> None:
        # After a fork the child has the parent's queue object but not its thread: start afresh.
        self._queue = queue.PriorityQueue()
        self._pending = 0
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="kaapi-job-dispatcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        checked = time.monotonic()
        backoff = 0.0
        while True:
            batch = [self._queue.get()]
            while len(batch) < PUBLISH_BATCH_SIZE:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                # The thread's own connection, checked (CONN_MAX_AGE, and the health check then costs a SELECT 1)
                # every few seconds rather than for every batch; a broken one is closed below and reopened.
                if time.monotonic() - checked > CONNECTION_CHECK_INTERVAL:
                    close_old_connections()
                    checked = time.monotonic()
                handled = publish_and_record([item[2] for item in batch], stop_at_failure=True)
            except Exception:  # the database may be down: the sweep publishes what is left undispatched
                logger.exception("job dispatcher: could not record %d dispatched jobs", len(batch))
                connection.close()
                handled = len(batch)
            if handled < len(batch):
                # The broker refused a message (after the publish retries): the rest go back to the queue, in
                # their places, and the thread waits before it tries again rather than spend the retries on
                # every queued job.
                for item in batch[handled:]:
                    self._queue.put(item)
                backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, 2 * backoff))
                logger.warning(
                    "job dispatcher: the broker refused a job message; %d jobs wait, next try in %.1f s",
                    self._queue.qsize(),
                    backoff,
                )
            else:
                backoff = 0.0
            with self._idle:
                self._pending -= handled
                if not self._pending:
                    self._idle.notify_all()
            if backoff:
                time.sleep(backoff)


dispatcher = BackgroundDispatcher()
atexit.register(dispatcher.flush, 5.0)


def dispatch(jobs: list[Job]) -> None:
    """Publish freshly committed jobs: in the background, or inline (see the module docstring)."""
    if settings.JOB_DISPATCH_MODE == "inline" or current_task:
        try:
            publish_and_record(jobs)
        except Exception:
            logger.exception("could not record the dispatch of %d jobs; the recovery sweep will see to them", len(jobs))
        return
    dispatcher.submit(jobs)
