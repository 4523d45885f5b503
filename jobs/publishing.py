"""Publishing messages: the job messages of the two generic tasks, webhook deliveries, and the background thread.

Every message goes out with a publisher confirm and Celery's task-sent event: an admission's job messages together,
confirmed together (``kaapi.celery.ConfirmBatch``), a retry's message and a webhook delivery one by one
(``kaapi.celery.confirmed_producer``).
A job's message carries its params under one argument and its trace id in a header; the Job row holds the rest.
``start_high_priority_job`` / ``start_low_priority_job``, ``get_task_status`` and ``revoke_task`` are the scheduling
API; which of a project's jobs are published, and when, is admission's (``jobs.admission``), which runs in the
committing thread or in the process's ``BackgroundDispatcher``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from contextlib import nullcontext
from functools import partial
from typing import Any

import amqp.exceptions
import kombu.exceptions
from celery import Signature, Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.result import AsyncResult
from django.db import close_old_connections, connection
from django.utils import timezone

from kaapi.celery import (
    HIGH_PRIORITY,
    HIGH_PRIORITY_QUEUE,
    LOW_PRIORITY,
    LOW_PRIORITY_QUEUE,
    ConfirmBatch,
    app,
    confirm_batch,
    confirmed_producer,
    sent_events,
)

from .models import Job
from .registry import get_job_function

logger = logging.getLogger(__name__)

BATCH_SIZE = 500  # rows per UPDATE that records dispatches
CONNECTION_CHECK_INTERVAL = 5.0  # seconds between checks of the background thread's database connection
# While the broker refuses job messages the thread waits between tries (doubling). It keeps at most MAX_QUEUED ids of
# new jobs per project, to mark those left waiting (their jobs are read from the table in any case).
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0
MAX_QUEUED = 10_000
DELIVER_WEBHOOK_TASK = "jobs.deliver_webhook"


# --- Job messages --------------------------------------------------------------------------------
def new_task_id() -> str:
    return str(uuid.uuid4())


def message_summary(*, function_path: str, project_id: int, job_id: str) -> str:
    """What task events, Flower and the result table show of a job message's arguments (its ``kwargsrepr``): which
    job, not its params (an LLM call's query is user data, and the Job row holds the params); also less to repr and
    to send. Every message of a job carries it: the first delivery (``publish_job_message``) and each retry or wait
    (``publish_job_retry``, ``publish_job_message_again``), since Celery would otherwise repr the whole arguments
    again."""
    return repr({"function_path": function_path, "project_id": project_id, "job_id": str(job_id)})


# The generic task of each priority queue (routed to its queue by name: kaapi/celery.py).
JOB_TASKS = {HIGH_PRIORITY_QUEUE: "execute_high_priority_task", LOW_PRIORITY_QUEUE: "execute_low_priority_task"}


def publish_job_message(
    queue: str,
    function_path: str,
    project_id: int,
    job_id: str,
    trace_id: str = "",
    *,
    task_id: str | None = None,
    priority: int,
    params: dict[str, Any] | None = None,
    producer: Any = None,
) -> str:
    """Publish ``function_path``'s message to the generic task of ``queue`` with the function's ``params``
    (confirmed by the broker; or, with a ``ConfirmBatch``'s ``producer``, sent for the batch to confirm); returns
    the Celery task id. ValueError for a function that is not registered."""
    get_job_function(function_path)  # never publish an unregistered path
    task_id = task_id or new_task_id()
    # A batch's message is sent once, on the batch's channel: kombu's retry would reconnect and send it on another.
    options = {"retry": False} if producer is not None else {}
    with nullcontext(producer) if producer is not None else confirmed_producer() as producer:
        app.send_task(
            JOB_TASKS[queue],
            # The job's params travel under one argument of their own: spread into the message's keyword
            # arguments, a param named like one of the others (task_id, job_id, ...) would break the publish
            # call or the task's signature.
            kwargs={
                "function_path": function_path,
                "project_id": project_id,
                "job_id": str(job_id),
                "params": params or {},
            },
            task_id=task_id,
            priority=priority,
            # The trace id travels in a header only; the worker's task_prerun handler (kaapi.logging) puts it in
            # the logging context, and retries carry the message's headers along.
            headers={"trace_id": trace_id},
            producer=producer,
            # The task writes its own SUCCESS row (jobs/tasks.py); since Celery 5.6 a message's own ignore_result
            # (send_task's default: False) overrides the task's, and Celery would overwrite that row.
            ignore_result=True,
            event_dispatcher=sent_events(),  # the task-sent event, without a confirm of its own
            kwargsrepr=message_summary(function_path=function_path, project_id=project_id, job_id=job_id),
            **options,
        )
    return task_id


def _summary_of(task: Task, job_id: str) -> str:
    message = task.request.kwargs or {}
    return message_summary(
        function_path=message.get("function_path"),  # type: ignore[arg-type]  # every job message has both
        project_id=message.get("project_id"),  # type: ignore[arg-type]
        job_id=job_id,
    )


def publish_job_retry(task: Task, *, job_id: str, delay: float, exc: Exception) -> Retry:
    """Publish the running job message again ``delay`` seconds later as its next attempt (``task.retry``: the
    retry count goes up); returns the ``Retry`` for the task to raise."""
    with confirmed_producer() as producer:
        return task.retry(
            countdown=delay,
            exc=exc,
            throw=False,
            producer=producer,
            event_dispatcher=sent_events(),
            kwargsrepr=_summary_of(task, job_id),
        )


def publish_job_message_again(task: Task, *, job_id: str, delay: float) -> Signature:
    """Publish the running job message again ``delay`` seconds later with the same retry count (a wait, not a
    failed attempt); returns the message's signature."""
    request = task.request
    again = task.signature_from_request(request, countdown=delay, retries=request.retries)
    with confirmed_producer() as producer:
        again.apply_async(producer=producer, event_dispatcher=sent_events(), kwargsrepr=_summary_of(task, job_id))
    return again


# The scheduling API: ``start_high_priority_job(function_path, project_id, job_id, trace_id="", *, task_id=None,
# priority=HIGH_PRIORITY, params=None)`` publishes a job message to that queue's generic task and returns the Celery
# task id; ``start_low_priority_job`` likewise (priority LOW_PRIORITY).
start_high_priority_job = partial(publish_job_message, HIGH_PRIORITY_QUEUE, priority=HIGH_PRIORITY)
start_low_priority_job = partial(publish_job_message, LOW_PRIORITY_QUEUE, priority=LOW_PRIORITY)


def get_task_status(task_id: str) -> dict[str, Any]:
    """The task's state from the result table (PENDING when nothing is stored yet)."""
    result = AsyncResult(task_id, app=app)
    ready = result.ready()
    return {
        "task_id": task_id,
        "status": result.status,
        "result": result.result if ready and result.successful() else None,
        "error": str(result.result) if ready and not result.successful() else None,
        "date_done": result.date_done.isoformat() if result.date_done else None,
        "ready": ready,
    }


def revoke_task(task_id: str, terminate: bool = False) -> None:
    """Tell workers not to run ``task_id``; with ``terminate`` also kill it if it runs (prefork pool)."""
    app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")


def publish_webhook_delivery(delivery_id, *, trace_id: str = "", countdown: float | None = None) -> None:
    """Publish one attempt of a webhook delivery, with its job's trace id in a header as a job message has it;
    never raises (the webhook sweep publishes what did not go out)."""
    try:
        with confirmed_producer() as producer:
            app.send_task(
                DELIVER_WEBHOOK_TASK,
                kwargs={"delivery_id": str(delivery_id)},
                countdown=countdown,
                headers={"trace_id": trace_id},
                producer=producer,
                event_dispatcher=sent_events(),
            )
    except Exception:
        logger.warning("could not publish webhook delivery %s; the sweep will", delivery_id, exc_info=True)


# --- Jobs: publish and record ---------------------------------------------------------------------------
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


def publish_job(job: Job, *, producer: Any = None) -> bool:
    """Publish ``job``'s message under ``job.task_id`` (confirmed by the broker, or sent on a ``ConfirmBatch``'s
    ``producer`` for the batch to confirm). False when the broker failed; ``JobNotPublishable`` when the job itself
    cannot be published."""
    try:
        publish_job_message(
            job.queue,
            job.function_path,
            job.project_id,
            str(job.id),
            job.trace_id,
            task_id=job.task_id,
            priority=job.priority,
            params=job.params,
            producer=producer,
        )
    except BROKER_ERRORS:
        logger.warning("could not publish job %s; the recovery sweep will publish it", job.id, exc_info=True)
        return False
    except SoftTimeLimitExceeded:  # the time limit of the task that publishes, not the job's fault
        raise
    except Exception as exc:
        logger.warning("job %s cannot be published", job.id, exc_info=True)
        raise JobNotPublishable(f"{type(exc).__name__}: {exc}") from exc
    return True


def _publish_batch(jobs: list[Job]) -> tuple[list[Job], list[tuple[Job, str]], bool]:
    """Publish ``jobs`` in one ``ConfirmBatch``: (those the broker confirmed, those that cannot be published and
    why, whether the broker took every message). Nothing is sent after a message the broker failed to take."""
    by_id: dict[Hashable, Job] = {job.id: job for job in jobs}
    refused: list[tuple[Job, str]] = []
    broker_ok = True
    try:
        with confirm_batch() as batch:
            for job in jobs:
                try:
                    if not _send(batch, job):
                        # The messages sent before may have been taken: their confirms are read all the same (a
                        # dead connection fails at once), then the connection is dropped.
                        broker_ok, batch.broken = False, True
                        break
                except JobNotPublishable as exc:
                    if batch.broken:  # it failed half sent: the channel's fault, not the job's
                        broker_ok = False
                        break
                    refused.append((job, str(exc)))
            try:
                batch.wait()
            except BROKER_ERRORS:
                logger.warning("the broker did not confirm every job message", exc_info=True)
                broker_ok = False
            confirmed = [by_id[job_id] for job_id in batch.confirmed]
            return confirmed, refused, broker_ok and not batch.refused
    except BROKER_ERRORS:  # no connection to the broker
        logger.warning("could not publish %d job messages", len(jobs), exc_info=True)
        return [], refused, False


def _send(batch: ConfirmBatch, job: Job) -> bool:
    """Send ``job``'s message in ``batch`` (``publish_job`` on the batch's producer); False when the broker
    failed."""
    sent = True

    def send(producer) -> None:
        nonlocal sent
        sent = publish_job(job, producer=producer)

    batch.publish(job.id, send)
    return sent


def publish_and_record(jobs: list[Job]) -> int:
    """Publish ``jobs`` and record the dispatch time of those the broker confirmed; returns how many were handled:
    published, or FAILED because they cannot be published (their own fault, see ``BROKER_ERRORS``). Fewer than
    ``jobs`` means the broker failed; those left are published again by the next admission or the recovery sweep.

    The messages go out together and are confirmed together (``kaapi.celery.ConfirmBatch``). When the broker
    fails, nothing more is sent on that connection; what it did not confirm is sent once more on a fresh one (a
    pooled connection may have died with a broker restart), and no further. Jobs are created with their task id,
    so recording a batch is one UPDATE; a job without one (requeued by maintenance) gets it here, written with its
    own UPDATE.
    """
    if not jobs:
        return 0  # without a word to the broker, which may be down
    fresh = {job.id for job in jobs if not job.task_id}
    for job in jobs:
        job.task_id = job.task_id or new_task_id()
    published: list[Job] = []
    refused: list[tuple[Job, str]] = []
    remaining = jobs
    for _attempt in range(2):
        confirmed, cannot, broker_ok = _publish_batch(remaining)
        published += confirmed
        refused += cannot
        if broker_ok:
            break
        handled = {job.id for job in confirmed} | {job.id for job, _ in cannot}
        remaining = [job for job in remaining if job.id not in handled]
    _record_dispatch(published, fresh=fresh)
    if refused:
        from .services import job_mark_failed  # the services publish through this module: imported when needed

        for job, error in refused:
            job_mark_failed(job_id=str(job.id), error=f"the job's message could not be published: {error}")
    return len(published) + len(refused)


def _record_dispatch(published: list[Job], *, fresh: set) -> None:
    """Record the dispatch of the ``published`` jobs (their task id too, for those in ``fresh``)."""
    now = timezone.now()
    preassigned = [job.id for job in published if job.id not in fresh]
    for start in range(0, len(preassigned), BATCH_SIZE):
        Job.objects.filter(id__in=preassigned[start : start + BATCH_SIZE]).update(dispatched_at=now, waiting_reason="")
    for job in published:
        if job.id in fresh:
            Job.objects.filter(id=job.id).update(task_id=job.task_id, dispatched_at=now, waiting_reason="")


# --- The background thread ------------------------------------------------------------------------------
class BackgroundDispatcher:
    """One daemon thread per process that admits and publishes the jobs that committing threads hand it.

    It holds which projects have new jobs in which queue, not the jobs: admission reads them from the table.
    High-priority queues are admitted before low-priority ones, so a high-priority job submitted behind a batch of
    thousands of low-priority ones is published after at most one admission pass. A project whose jobs wait for its
    submission rate is admitted again when its window frees a slot (a timer of the thread: lost with the process,
    the recovery sweep then admits them).
    """

    def __init__(self, admit: Callable[..., Any]) -> None:
        self._admit = admit  # jobs.admission.admit: whose jobs go out, and when
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._keys: dict[tuple[int, str], set] = {}
        self._due: dict[tuple[int, str], float] = {}  # admissions to try again at a time (time.monotonic())
        self._freed: dict[tuple[int, str], float] = {}  # freed slots to fill by a time (time.monotonic())
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

    def request(self, *, project_id: int, queue: str, linger: float = 0.0) -> None:
        """Admit the project's waiting jobs of ``queue`` (a slot was freed): at once, or within ``linger`` seconds,
        so that the slots its other jobs free meanwhile are filled by the same admission (one transaction for
        all of them, rather than one for each finished job)."""
        key = (project_id, queue)
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start()
            if linger <= 0:
                self._keys.setdefault(key, set())
            elif key in self._keys or key in self._freed:
                return  # an admission of the project's queue is already coming
            else:
                self._freed[key] = time.monotonic() + linger
            self._changed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far was handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            for key in self._freed:  # lingering admissions are made now, not dropped with the process
                self._keys.setdefault(key, set())
            self._freed.clear()
            self._changed.notify_all()
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
        self._freed = {}
        self._busy = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="kaapi-job-dispatcher", daemon=True)
        self._thread.start()

    def _take(self) -> list[tuple[tuple[int, str], set]]:
        with self._changed:
            while True:
                now = time.monotonic()
                for timers in (self._due, self._freed):
                    for key, due in list(timers.items()):
                        if due <= now:
                            del timers[key]
                            self._keys.setdefault(key, set())
                if self._keys:
                    break
                self._busy = False
                self._changed.notify_all()
                dues = [*self._due.values(), *self._freed.values()]
                self._changed.wait(min(dues) - now if dues else None)
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
                    admission = self._admit(project_id=project_id, queue=queue_name, submitted=ids)
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
