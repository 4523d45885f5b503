"""The operator's dashboard in admin: what the platform is doing now and over the last hour and day.

Everything is read from indexes (the partial indexes of jobs/models.py: finished, running, waiting, failed) or from
the broker, so that the page stays fast with millions of jobs (bench/dashboard.py measures it):

- queue depths and consumers: from the broker, cached (``kaapi.metrics``, like /metrics);
- workers online: a broadcast ping, cached for ``DASHBOARD_WORKERS_CACHE_SECONDS``;
- jobs finished per minute by status over the last day (the last hour is its tail), the failure rate: by
  ``finished_at`` (index ``job_finished``);
- p50/p95 queue wait and run time per job type: the jobs finished in the last hour;
- the busiest projects: running (index ``job_running_started``), waiting (``job_waiting``), failed in the last day
  (``job_failed``).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, Func
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from kaapi.metrics import queue_depth_collector
from tenancy.models import Project

from .models import FINISHED_STATUSES, Job, JobStatus, WaitingReason

logger = logging.getLogger(__name__)

BUSIEST_PROJECTS = 10


def dashboard_data(*, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready values."""
    now = now or timezone.now()
    minutes, per_minute = _finished_per_minute(now=now)
    hour = {status: counts[-60:] for status, counts in per_minute.items()}
    broker_up, depths = queue_depth_collector.snapshot()
    return {
        "generated_at": now.isoformat(),
        "broker": {
            "up": broker_up,
            "queues": [
                {"name": name, "messages": messages, "consumers": consumers}
                for name, (messages, consumers) in sorted(depths.items())
            ],
        },
        "workers": workers_online(),
        "throughput": {
            "day": {"minutes": minutes, "series": per_minute},
            "hour": {"minutes": minutes[-60:], "series": hour},
        },
        "failure_rate": {"hour": _failure_rate(hour), "day": _failure_rate(per_minute)},
        "timings": _timings(since=now - timedelta(hours=1)),
        "projects": _busiest_projects(now=now),
    }


def _finished_per_minute(*, now: datetime) -> tuple[list[str], dict[str, list[int]]]:
    """Jobs finished in each minute of the last day, by status (zeros included); the minutes as ISO strings.

    A whole hour that ended more than ``_SETTLED`` ago is counted once and kept in the cache for a day: the job
    counts of a past minute do not change (a FAILED job retried later moves to its new minute; retention removes
    jobs older than the chart). So a refresh reads only the last hour or so from the database, not the ~day of
    rows: with a million jobs the day's aggregate is most of the dashboard's time (bench/dashboard.py)."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(days=1)
    first_hour = start.replace(minute=0)
    settled_until = (now - _SETTLED).replace(minute=0, second=0, microsecond=0)  # hours before it are settled
    counts: dict[tuple[datetime, str], int] = {}
    hours = [first_hour + timedelta(hours=i) for i in range(int((settled_until - first_hour) / timedelta(hours=1)))]
    # named after the database too: the cache (Redis) may serve several deployments or test runs
    prefix = f"jobs:dashboard:{connection.settings_dict['NAME']}:finished"
    keys = {hour: f"{prefix}:{hour.isoformat()}" for hour in hours}
    cached = cache.get_many(list(keys.values()))
    missing = [hour for hour in hours if keys[hour] not in cached]
    for hour in hours:
        for minute, status, count in cached.get(keys[hour], []):
            counts[minute, status] = count
    if missing:  # the hours not cached yet (all of them at first), in one query
        fresh: dict[datetime, list[tuple[datetime, str, int]]] = {hour: [] for hour in missing}
        for minute, status, count in _count_per_minute(missing[0], missing[-1] + timedelta(hours=1)):
            hour = minute.replace(minute=0)
            if hour in fresh:
                fresh[hour].append((minute, status, count))
                counts[minute, status] = count
        cache.set_many({keys[hour]: rows for hour, rows in fresh.items()}, timeout=_SETTLED_CACHE_SECONDS)
    for minute, status, count in _count_per_minute(max(settled_until, first_hour), end):
        counts[minute, status] = count

    slots = [start + timedelta(minutes=i) for i in range(24 * 60)]
    series = {str(status): [counts.get((slot, status), 0) for slot in slots] for status in FINISHED_STATUSES}
    return [slot.isoformat() for slot in slots], series


_SETTLED = timedelta(minutes=5)
_SETTLED_CACHE_SECONDS = 25 * 3600


def _count_per_minute(since: datetime, until: datetime):
    """(minute, status, jobs) of the jobs finished in [since, until), from the ``job_finished`` index."""
    return (
        Job.objects.filter(finished_at__gte=since, finished_at__lt=until)
        .annotate(minute=TruncMinute("finished_at", tzinfo=UTC))
        .values_list("minute", "status")
        .annotate(count=Count("*"))
        .order_by()
    )


def _failure_rate(series: dict[str, list[int]]) -> float | None:
    failed = sum(series[JobStatus.FAILED])
    finished = sum(sum(counts) for counts in series.values())
    return round(failed / finished, 4) if finished else None


def _percentiles(values: list[float]) -> tuple[float, float]:
    """The 50th and 95th percentiles as PostgreSQL's percentile_cont interpolates them."""
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=20, method="inclusive")  # cuts[9]: the median, cuts[18]: the 95th
    return cuts[9], cuts[18]


class _Percentile(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _seconds_between(earlier: str, later: str) -> Func:
    difference = ExpressionWrapper(F(later) - F(earlier), output_field=DurationField())
    return Func(difference, template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


def _timings(*, since: datetime) -> list[dict[str, Any]]:
    """p50/p95 queue wait (creation to the start of the last attempt) and run time per job type, of the jobs
    finished since ``since``. PostgreSQL computes them (an hour of a busy platform is many thousand rows, which cost
    far more to turn into Python objects than to sort); other databases (SQLite for ``make run``) here."""
    jobs = Job.objects.filter(finished_at__gte=since, started_at__isnull=False)
    if connection.vendor == "postgresql":
        wait, run = _seconds_between("created_at", "started_at"), _seconds_between("started_at", "finished_at")
        rows = (
            jobs.values("job_type")
            .annotate(
                count=Count("*"),
                wait_p50=_Percentile(wait, fraction=0.5),
                wait_p95=_Percentile(wait, fraction=0.95),
                run_p50=_Percentile(run, fraction=0.5),
                run_p95=_Percentile(run, fraction=0.95),
            )
            .order_by("job_type")
        )
        keys = ("wait_p50", "wait_p95", "run_p50", "run_p95")
        return [{**row, **{key: round(max(0.0, row[key]), 3) for key in keys}} for row in rows]  # type: ignore[literal-required]
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for job_type, created_at, started_at, finished_at in jobs.values_list(
        "job_type", "created_at", "started_at", "finished_at"
    ):
        assert started_at is not None and finished_at is not None  # the query keeps finished jobs that started
        waits[job_type].append(max(0.0, (started_at - created_at).total_seconds()))
        runs[job_type].append(max(0.0, (finished_at - started_at).total_seconds()))
    timings = []
    for job_type in sorted(waits):
        wait_p50, wait_p95 = _percentiles(waits[job_type])
        run_p50, run_p95 = _percentiles(runs[job_type])
        timings.append(
            {
                "job_type": job_type,
                "count": len(waits[job_type]),
                "wait_p50": round(wait_p50, 3),
                "wait_p95": round(wait_p95, 3),
                "run_p50": round(run_p50, 3),
                "run_p95": round(run_p95, 3),
            }
        )
    return timings


def _busiest_projects(*, now: datetime) -> list[dict[str, Any]]:
    """The projects with the most jobs running, then waiting, then failed in the last day."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"running": 0, "waiting": 0, "retrying": 0, "failed": 0})
    running = Job.objects.filter(status=JobStatus.PROCESSING, started_at__isnull=False)
    for project_id, n in running.values_list("project_id").annotate(n=Count("*")).order_by():
        counts[project_id]["running"] = n
    for project_id, reason, n in (
        Job.objects.undispatched().values_list("project_id", "waiting_reason").annotate(n=Count("*")).order_by()
    ):
        counts[project_id]["retrying" if reason == WaitingReason.RETRY else "waiting"] += n
    failed = Job.objects.filter(status=JobStatus.FAILED, created_at__gte=now - timedelta(days=1))
    for project_id, n in failed.values_list("project_id").annotate(n=Count("*")).order_by():
        counts[project_id]["failed"] = n
    top = sorted(counts.items(), key=lambda item: (-item[1]["running"], -item[1]["waiting"], -item[1]["failed"]))
    top = top[:BUSIEST_PROJECTS]
    names = {
        project.pk: f"{project.organization.name} / {project.name}"
        for project in Project.objects.select_related("organization").filter(pk__in=[pk for pk, _ in top])
    }
    return [{"project_id": pk, "project": names.get(pk, str(pk)), **numbers} for pk, numbers in top]


# --- Workers online: a broadcast ping, cached ---------------------------------------------------------
class _WorkersOnline:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._value: dict[str, Any] = {"reached": False, "names": []}

    def get(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._read_at >= settings.DASHBOARD_WORKERS_CACHE_SECONDS:
                self._value = self._ping()
                self._read_at = time.monotonic()
            return self._value

    @staticmethod
    def _ping() -> dict[str, Any]:
        from kaapi.celery import app

        try:
            replies = app.control.ping(timeout=settings.DASHBOARD_WORKERS_PING_TIMEOUT_SECONDS)
        except Exception as exc:  # the broker is down: the page says so instead of failing
            logger.warning("could not ping the workers: %s", exc)
            return {"reached": False, "names": []}
        return {"reached": True, "names": sorted(name for reply in replies for name in reply)}


workers_online = _WorkersOnline().get


# --- The page (admin/dashboard/) and its data (admin/dashboard/data/, fetched by the page to refresh itself) -----
def _allowed(request: HttpRequest) -> None:
    if not request.user.has_perm("jobs.view_job"):
        raise PermissionDenied


def dashboard_view(request: HttpRequest) -> HttpResponse:
    _allowed(request)
    # The numbers come from dashboard_data_view, fetched by the page at once and then every few seconds.
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS,
    }
    return TemplateResponse(request, "admin/jobs/dashboard.html", context)


def dashboard_data_view(request: HttpRequest) -> JsonResponse:
    _allowed(request)
    return JsonResponse(dashboard_data())
