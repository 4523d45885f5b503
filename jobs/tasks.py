"""The two generic priority tasks. Routing (queue and priority) comes from kaapi/celery.py by name."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_process_shutdown
from django.conf import settings
from django.db import connections

from . import maintenance, scheduled, webhooks
from .admission import dispatcher
from .execution import JobFailed, message_params, run_job_message

# track_started is off for these two only: the Job row already records PROCESSING and started_at, and a STARTED
# row in the result table would cost each job one more upsert (the job-overhead benchmark measures it).
# ignore_result: a SUCCESS result row is written by the task itself, in the same statement as the job's SUCCESS
# (jobs/execution.py), instead of one more round trip by Celery afterwards; failures and retries are still
# stored by Celery (store_errors_even_if_ignored).
_OPTIONS = {
    "bind": True,
    "max_retries": settings.CELERY_TASK_MAX_RETRIES,
    "throws": (JobFailed,),
    "track_started": False,
    "ignore_result": True,
    "store_errors_even_if_ignored": True,
}
# ``trace_id``: the trace id travels in the message's header (kaapi.logging sets the logging context from it);
# messages published before carried it as an argument too, which is accepted and ignored.


@worker_init.connect
def _worker_database_health_checks(**kwargs: Any) -> None:
    """Django checks a connection (SELECT 1) at the start of every task when CONN_HEALTH_CHECKS is on: one more
    round trip per job. Workers skip it unless CELERY_WORKER_DB_HEALTH_CHECKS is set: a dead connection then
    raises OperationalError in the task, which the generic tasks answer by closing it and putting the message
    back (jobs/execution.py), and which tests/chaos/test_faults.py exercises by restarting PostgreSQL."""
    if not settings.CELERY_WORKER_DB_HEALTH_CHECKS:
        for alias in connections:
            connections.settings[alias]["CONN_HEALTH_CHECKS"] = False
            connections[alias].settings_dict["CONN_HEALTH_CHECKS"] = False


@worker_process_shutdown.connect
def _admit_before_exit(**kwargs: Any) -> None:
    """A prefork pool process leaves without running atexit: the admissions its dispatcher thread still holds
    (slots freed by its last jobs) are made first."""
    dispatcher.flush(5.0)


@shared_task(name="execute_high_priority_task", **_OPTIONS)
def execute_high_priority_task(
    self, function_path: str, project_id: int, job_id: str, trace_id: str = "", params: Any = None, **spread: Any
) -> Any:
    return run_job_message(
        self, function_path=function_path, project_id=project_id, job_id=job_id, kwargs=message_params(params, spread)
    )


@shared_task(name="execute_low_priority_task", **_OPTIONS)
def execute_low_priority_task(
    self, function_path: str, project_id: int, job_id: str, trace_id: str = "", params: Any = None, **spread: Any
) -> Any:
    return run_job_message(
        self, function_path=function_path, project_id=project_id, job_id=job_id, kwargs=message_params(params, spread)
    )


# --- Webhooks and periodic maintenance -----------------------------------------------------------------


@shared_task(name="jobs.deliver_webhook")
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of a webhook delivery; the retry is scheduled by the service."""
    return webhooks.webhook_attempt(delivery_id=delivery_id)


@shared_task(name="jobs_cron_recover_stalled")
def jobs_cron_recover_stalled(limit: int = 100_000) -> dict[str, int]:
    return maintenance.maintenance_recover_stalled(limit=limit)


@shared_task(name="jobs_cron_retention")
def jobs_cron_retention(batch_size: int | None = None, max_batches: int | None = None) -> dict[str, int]:
    return maintenance.maintenance_retention(batch_size=batch_size, max_batches=max_batches)


@shared_task(name="jobs_cron_deliver_due_webhooks")
def jobs_cron_deliver_due_webhooks(limit: int = 500) -> int:
    return webhooks.webhook_deliveries_publish_due(limit=limit)


@shared_task(name="jobs_cron_publish_scheduled")
def jobs_cron_publish_scheduled(limit: int = 100_000) -> int:
    return scheduled.jobs_promote_due(limit=limit)
