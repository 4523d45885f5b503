"""The two generic priority tasks. Routing (queue and priority) comes from kaapi/celery.py by name."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from .execution import JobFailed, run_job_message

# track_started is off for these two only: the Job row already records PROCESSING and started_at, and a STARTED
# row in the result table would cost each job one more upsert (the job-overhead benchmark measures it).
_OPTIONS = {
    "bind": True,
    "max_retries": settings.CELERY_TASK_MAX_RETRIES,
    "throws": (JobFailed,),
    "track_started": False,
}


@shared_task(name="execute_high_priority_task", **_OPTIONS)
def execute_high_priority_task(
    self, function_path: str, project_id: int, job_id: str, trace_id: str = "", **kwargs: Any
) -> Any:
    return run_job_message(
        self, function_path=function_path, project_id=project_id, job_id=job_id, trace_id=trace_id, kwargs=kwargs
    )


@shared_task(name="execute_low_priority_task", **_OPTIONS)
def execute_low_priority_task(
    self, function_path: str, project_id: int, job_id: str, trace_id: str = "", **kwargs: Any
) -> Any:
    return run_job_message(
        self, function_path=function_path, project_id=project_id, job_id=job_id, trace_id=trace_id, kwargs=kwargs
    )
