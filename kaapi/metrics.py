"""Prometheus metrics: the metric objects, the functions the apps call to record, and the /metrics view.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the default), every process — gunicorn workers, Celery prefork children,
a gevent worker, the test process — writes its samples to memory-mapped files in that directory, and /metrics
adds up all the files, so a counter increment made in any worker is seen by whichever web process is scraped.
Files are named by host and pid, so containers may share the directory through a volume.

Queue depths are not recorded by processes: /metrics reads them from the broker (passive declare), cached for
``METRICS_QUEUE_DEPTH_CACHE_SECONDS``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().replace("_", "-") or "localhost"


def _process_identifier() -> str:
    # prometheus-client names a process's file by this id; host + pid stays unique across containers that share
    # the directory (pids restart at 1 in every container). No "_": the collector splits file names on it.
    return f"{_HOST}-{os.getpid()}"


# Chosen here rather than by prometheus-client at its import, which may come before the settings set the variable.
if settings.PROMETHEUS_MULTIPROC_DIR:
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)
else:
    values.ValueClass = values.MutexValue

# --- The metrics ----------------------------------------------------------------------------------
JOBS_SUBMITTED = Counter("kaapi_jobs_submitted", "Jobs created, by type and queue.", ["job_type", "queue"])
JOBS_FINISHED = Counter(
    "kaapi_jobs_finished", "Jobs that reached SUCCESS, FAILED or CANCELLED, by type and status.", ["job_type", "status"]
)
JOB_RUN_SECONDS = Histogram(
    "kaapi_job_run_seconds",
    "Seconds from the start of a job's last attempt to its end, by type and status.",
    ["job_type", "status"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "kaapi_job_queue_wait_seconds",
    "Seconds from a job's creation to the start of its last attempt, by type and queue.",
    ["job_type", "queue"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
WEBHOOK_DELIVERIES = Counter("kaapi_webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"])
PROVIDER_ERRORS = Counter(
    "kaapi_provider_errors",
    "Errors from external providers (LLM APIs, ...), by provider and kind.",
    ["provider", "kind"],
)

BUDGET_THRESHOLDS = Counter(
    "kaapi_budget_threshold_reached",
    "LLM budgets whose soft threshold was reached (once per budget and month), by scope (project, organization).",
    ["scope"],
)
BUDGET_REFUSALS = Counter(
    "kaapi_budget_refusals", "LLM calls refused (402) because a monthly budget was spent, by scope.", ["scope"]
)


# --- Recording (called by the apps; never raises) -------------------------------------------------
def _safely(record, *args) -> None:
    try:
        record(*args)
    except Exception:  # a metric must never break the work it measures
        logger.warning("could not record a metric", exc_info=True)


def count_job_submitted(*, job_type: str, queue: str, count: int = 1) -> None:
    _safely(lambda: JOBS_SUBMITTED.labels(job_type=job_type, queue=queue).inc(count))


def observe_job_finished(
    *,
    job_type: str,
    status: str,
    queue: str,
    created_at: datetime | None,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> None:
    """Count a finished job and observe its run time and queue wait (when it started at all)."""

    def record() -> None:
        JOBS_FINISHED.labels(job_type=job_type, status=status).inc()
        if started_at and finished_at:
            JOB_RUN_SECONDS.labels(job_type=job_type, status=status).observe(
                max(0.0, (finished_at - started_at).total_seconds())
            )
        if created_at and started_at:
            JOB_QUEUE_WAIT_SECONDS.labels(job_type=job_type, queue=queue).observe(
                max(0.0, (started_at - created_at).total_seconds())
            )

    _safely(record)


def count_webhook(outcome: str) -> None:
    """One webhook delivery attempt, by its outcome: "delivered", "retrying", "failed" (given up: permanently
    refused, or the last attempt), "superseded" (a redelivery took the delivery over meanwhile)."""
    _safely(lambda: WEBHOOK_DELIVERIES.labels(outcome=outcome).inc())


def count_provider_error(provider: str, kind: str) -> None:
    """One error from an external provider, e.g. ("openai", "rate_limited"), ("openai", "timeout")."""
    _safely(lambda: PROVIDER_ERRORS.labels(provider=provider, kind=kind).inc())


def count_budget_threshold(scope: str) -> None:
    _safely(lambda: BUDGET_THRESHOLDS.labels(scope=scope).inc())


def count_budget_refusal(scope: str) -> None:
    _safely(lambda: BUDGET_REFUSALS.labels(scope=scope).inc())


# --- Queue depth, read from the broker at scrape time ---------------------------------------------
class QueueDepthCollector:
    """``kaapi_queue_messages`` / ``kaapi_queue_consumers`` per queue and ``kaapi_broker_up``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._depths: dict[str, tuple[int, int]] = {}
        self._up = 0

    def _read(self) -> None:
        from kaapi.celery import app

        depths: dict[str, tuple[int, int]] = {}
        with app.connection_for_read(connect_timeout=settings.READYZ_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=0)  # one attempt, no retry delay
            for queue in app.conf.task_queues:
                # passive: only ask. A queue nobody declared yet closes the channel with 404: skip it.
                try:
                    with conn.channel() as channel:
                        _, messages, consumers = channel.queue_declare(queue=queue.name, passive=True)
                except conn.channel_errors:
                    continue
                depths[queue.name] = (messages, consumers)
        self._depths = depths

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < settings.METRICS_QUEUE_DEPTH_CACHE_SECONDS:
                return
            try:
                self._read()
                self._up = 1
            except Exception as exc:
                logger.warning("could not read queue depths from the broker: %s", exc)
                self._depths, self._up = {}, 0
            self._read_at = time.monotonic()

    def snapshot(self) -> tuple[bool, dict[str, tuple[int, int]]]:
        """(broker reached, {queue: (messages ready, consumers)}), read at most every
        ``METRICS_QUEUE_DEPTH_CACHE_SECONDS`` (the admin dashboard shows the same numbers as /metrics)."""
        self._refresh()
        return bool(self._up), dict(self._depths)

    def collect(self):
        self._refresh()
        up = GaugeMetricFamily("kaapi_broker_up", "1 when the last read of queue depths reached the broker.")
        up.add_metric([], self._up)
        messages = GaugeMetricFamily("kaapi_queue_messages", "Messages ready in the queue.", labels=["queue"])
        consumers = GaugeMetricFamily("kaapi_queue_consumers", "Consumers of the queue.", labels=["queue"])
        for name, (ready, consumer_count) in sorted(self._depths.items()):
            messages.add_metric([name], ready)
            consumers.add_metric([name], consumer_count)
        yield from (up, messages, consumers)


queue_depth_collector = QueueDepthCollector()


class WaitingJobsCollector:
    """``kaapi_jobs_waiting`` per reason: PENDING jobs not yet published (``max_concurrent_jobs``: their project is
    at its limit; ``submission_rate``: their project had its maximum admitted in the last minute; ``retry``: waiting
    for their next attempt; ``dispatching``: on their way), read from the database at scrape time and cached like
    the queue depths."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._counts: dict[str, int] = {}

    def _refresh(self) -> None:
        from django.db.models import Count

        from jobs.models import Job

        with self._lock:
            if time.monotonic() - self._read_at < settings.METRICS_QUEUE_DEPTH_CACHE_SECONDS:
                return
            try:
                rows = Job.objects.undispatched().values_list("waiting_reason").annotate(n=Count("id")).order_by()
                self._counts = {reason or "dispatching": n for reason, n in rows}
            except Exception as exc:
                logger.warning("could not count waiting jobs: %s", exc)
                self._counts = {}
            self._read_at = time.monotonic()

    def collect(self):
        self._refresh()
        waiting = GaugeMetricFamily(
            "kaapi_jobs_waiting", "PENDING jobs not yet published, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self._counts.items()):
            waiting.add_metric([reason], count)
        yield waiting


waiting_jobs_collector = WaitingJobsCollector()


# --- The view ------------------------------------------------------------------------------------
def scrape() -> bytes:
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        registry.register(queue_depth_collector)
        registry.register(waiting_jobs_collector)
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(_single_process_registry)


_single_process_registry = CollectorRegistry()
_single_process_registry.register(queue_depth_collector)
_single_process_registry.register(waiting_jobs_collector)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. Unauthenticated unless ``METRICS_TOKEN`` is set (then a bearer token)."""
    if settings.METRICS_TOKEN:
        supplied = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), settings.METRICS_TOKEN.encode()):
            return HttpResponse("metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=401)
    return HttpResponse(scrape(), content_type=CONTENT_TYPE_LATEST)
