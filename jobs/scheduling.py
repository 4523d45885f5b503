"""The scheduling API the platform's services call: publish a job message, inspect or revoke a task.

These functions know Celery; services above them (``jobs.services``) know jobs.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery.result import AsyncResult

from kaapi.celery import HIGH_PRIORITY, LOW_PRIORITY, app, confirmed_producer, sent_events

from .registry import get_job_function


def message_summary(*, function_path: str, project_id: int, job_id: str) -> str:
    """What task events, Flower and the result table show of a job message's arguments (its ``kwargsrepr``): which
    job, not its params (an LLM call's query is user data, and the Job row holds the params); also less to repr and
    to send. Every message of a job carries it: the first delivery (``_publish``) and each retry
    (``jobs.execution``), since Celery would otherwise repr the whole arguments again."""
    return repr({"function_path": function_path, "project_id": project_id, "job_id": str(job_id)})


def _publish(
    task_name: str,
    *,
    function_path: str,
    project_id: int,
    job_id: str,
    trace_id: str,
    task_id: str | None,
    priority: int,
    params: dict[str, Any],
) -> str:
    get_job_function(function_path)  # ValueError for an unregistered path: never publish it
    task_id = task_id or str(uuid.uuid4())
    with confirmed_producer() as producer:
        app.send_task(
            task_name,
            # The job's params travel under one argument of their own: spread into the message's keyword
            # arguments, a param named like one of the others (task_id, trace_id, ...) would break the publish
            # call or the task's signature.
            kwargs={
                "function_path": function_path,
                "project_id": project_id,
                "job_id": str(job_id),
                "trace_id": trace_id,
                "params": params,
            },
            task_id=task_id,
            priority=priority,
            headers={"trace_id": trace_id},
            producer=producer,
            # The task writes its own SUCCESS row (jobs/tasks.py); since Celery 5.6 a message's own ignore_result
            # (send_task's default: False) overrides the task's, and Celery would overwrite that row.
            ignore_result=True,
            event_dispatcher=sent_events(),  # the task-sent event, without a confirm of its own
            kwargsrepr=message_summary(function_path=function_path, project_id=project_id, job_id=job_id),
        )
    return task_id


def start_high_priority_job(
    function_path: str,
    project_id: int,
    job_id: str,
    trace_id: str = "",
    *,
    task_id: str | None = None,
    priority: int = HIGH_PRIORITY,
    params: dict[str, Any] | None = None,
) -> str:
    """Publish ``function_path`` on the high_priority queue with the function's ``params``; returns the Celery task
    id."""
    return _publish(
        "execute_high_priority_task",
        function_path=function_path,
        project_id=project_id,
        job_id=job_id,
        trace_id=trace_id,
        task_id=task_id,
        priority=priority,
        params=params or {},
    )


def start_low_priority_job(
    function_path: str,
    project_id: int,
    job_id: str,
    trace_id: str = "",
    *,
    task_id: str | None = None,
    priority: int = LOW_PRIORITY,
    params: dict[str, Any] | None = None,
) -> str:
    """Publish ``function_path`` on the low_priority queue with the function's ``params``; returns the Celery task
    id."""
    return _publish(
        "execute_low_priority_task",
        function_path=function_path,
        project_id=project_id,
        job_id=job_id,
        trace_id=trace_id,
        task_id=task_id,
        priority=priority,
        params=params or {},
    )


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
