"""Periodic maintenance, run by the ``*_cron_*`` tasks that beat schedules (see ``setup_periodic_tasks``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import GroupResult, TaskResult

from .idempotency import idempotency_keys_expired
from .models import FINISHED_STATUSES, Job
from .services import jobs_dispatch_stalled, jobs_recover_overdue

logger = logging.getLogger(__name__)


def maintenance_recover_stalled(*, limit: int = 100_000) -> dict[str, int]:
    """Publish PENDING jobs whose message never reached the broker; requeue or fail overdue PROCESSING jobs.

    ``limit`` bounds each of the two per run; the publishing also stops after ``DISPATCH_SWEEP_SECONDS``.
    """
    counts = {"dispatched": jobs_dispatch_stalled(limit=limit), **jobs_recover_overdue(limit=limit)}
    if any(counts.values()):
        logger.warning("stalled-job recovery: %s", counts)
    return counts


def delete_in_batches(queryset: QuerySet, *, batch_size: int, max_batches: int) -> int:
    """Delete the rows of ``queryset`` a batch of primary keys at a time (each batch its own statement and
    transaction, so a large table never holds one huge lock or list in memory); returns how many."""
    deleted = 0
    for _ in range(max_batches):
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        queryset.model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < batch_size:
            break
    return deleted


def maintenance_retention(
    *, batch_size: int | None = None, max_batches: int | None = None, retention_days: int | None = None
) -> dict[str, int]:
    """Delete expired task results and idempotency keys, and finished jobs older than ``JOB_RETENTION_DAYS`` (0
    keeps jobs)."""
    batch_size = batch_size or settings.MAINTENANCE_BATCH_SIZE
    max_batches = max_batches or settings.MAINTENANCE_MAX_BATCHES
    days = settings.JOB_RETENTION_DAYS if retention_days is None else retention_days
    now = timezone.now()
    results_cutoff = now - timedelta(seconds=settings.CELERY_RESULT_EXPIRES)
    counts = {
        "task_results": delete_in_batches(
            TaskResult.objects.filter(date_done__lt=results_cutoff), batch_size=batch_size, max_batches=max_batches
        ),
        "group_results": delete_in_batches(
            GroupResult.objects.filter(date_done__lt=results_cutoff), batch_size=batch_size, max_batches=max_batches
        ),
        "idempotency_keys": delete_in_batches(
            idempotency_keys_expired(), batch_size=batch_size, max_batches=max_batches
        ),
        "jobs": 0,
    }
    if days:
        cutoff = now - timedelta(days=days)
        # Served by the partial index on finished_at (job_finished); a finished job is not updated after it finished.
        old_jobs = Job.objects.filter(status__in=FINISHED_STATUSES, updated_at__lt=cutoff, finished_at__lt=cutoff)
        counts["jobs"] = delete_in_batches(old_jobs, batch_size=batch_size, max_batches=max_batches)
    if any(counts.values()):
        logger.info("retention: deleted %s", counts)
    return counts


# --- Default schedules ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    every_seconds: int
    description: str


DEFAULT_SCHEDULES = (
    DefaultSchedule(
        "kaapi: recover stalled jobs",
        "jobs_cron_recover_stalled",
        60,
        "Publish PENDING jobs whose message never reached the broker; requeue or fail overdue PROCESSING jobs.",
    ),
    DefaultSchedule(
        "kaapi: deliver due webhooks",
        "jobs_cron_deliver_due_webhooks",
        30,
        "Publish webhook deliveries whose retry is due (long backoffs, lost messages).",
    ),
    DefaultSchedule(
        "kaapi: publish due scheduled jobs",
        "jobs_cron_publish_scheduled",
        settings.JOB_SCHEDULED_SWEEP_SECONDS,
        "Publish SCHEDULED jobs whose run_after has come (through admission, as if just submitted).",
    ),
    DefaultSchedule(
        "kaapi: retention",
        "jobs_cron_retention",
        3600,
        "Delete expired task results and idempotency keys, and old finished jobs, in batches.",
    ),
)


# Other apps' periodic tasks, registered from their AppConfig.ready: jobs installs them without importing the apps.
_registered_schedules: dict[str, DefaultSchedule] = {}


def register_default_schedule(schedule: DefaultSchedule) -> None:
    """Install ``schedule`` among the default schedules (its task's name must match ``*_cron_*``)."""
    if "_cron_" not in schedule.task:
        raise ValueError(f"periodic task {schedule.task!r} would not run on the cron queue (name it *_cron_*)")
    _registered_schedules[schedule.name] = schedule


def default_schedules() -> tuple[DefaultSchedule, ...]:
    return DEFAULT_SCHEDULES + tuple(_registered_schedules.values())


@transaction.atomic
def periodic_tasks_install(*, reset: bool = False) -> dict[str, str]:
    """Install the default schedules; existing ones are left as operators edited them unless ``reset``.

    Idempotent. Also disables django-celery-beat's ``celery.backend_cleanup`` (one unbatched DELETE), which
    ``jobs_cron_retention`` replaces. Returns ``{name: "created" | "reset" | "kept"}``.
    """
    outcome = {}
    for default in default_schedules():
        # IntervalSchedule has no unique constraint: reuse the oldest match rather than get_or_create.
        interval = (
            IntervalSchedule.objects.filter(every=default.every_seconds, period=IntervalSchedule.SECONDS)
            .order_by("id")
            .first()
        ) or IntervalSchedule.objects.create(every=default.every_seconds, period=IntervalSchedule.SECONDS)
        fields = {
            "task": default.task,
            "interval": interval,
            "crontab": None,
            "solar": None,
            "clocked": None,
            "enabled": True,
            "one_off": False,
            "expire_seconds": default.every_seconds,  # a tick nobody ran in time is dropped, not piled up
            "description": default.description,
            "args": "[]",
            "kwargs": "{}",
        }
        task, created = PeriodicTask.objects.get_or_create(name=default.name, defaults=fields)
        if created:
            outcome[default.name] = "created"
        elif reset:
            for field, value in fields.items():
                setattr(task, field, value)
            task.save()
            outcome[default.name] = "reset"
        else:
            outcome[default.name] = "kept"
    for cleanup in PeriodicTask.objects.filter(task="celery.backend_cleanup", enabled=True):
        cleanup.enabled = False
        cleanup.save()
    return outcome
