"""What the generic priority tasks do with one message: look up, claim, run, record."""

from __future__ import annotations

import json
import logging
import random
import time
from functools import partial
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django_celery_results.models import TaskResult

from . import green, services
from .backoff import job_retry_delay
from .exceptions import JobDeferred, RetryableJobError
from .publishing import publish_job_message_again, publish_job_retry
from .registry import RegisteredFunction, get_job_function, reserved_param_names

logger = logging.getLogger(__name__)


DATABASE_ERRORS = (OperationalError, InterfaceError)


class JobFailed(Exception):
    """The job ended FAILED; raised so the Celery result records FAILURE too."""


class ResultNotJSON(Exception):
    """The job function returned something that cannot be stored as JSON."""


class _NotRecorded(Exception):
    def __init__(self, result: Any) -> None:
        self.result = result


def _ensure_json(result: Any) -> None:
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise ResultNotJSON(str(exc)) from exc


def _call_and_record(
    registered: RegisteredFunction, task: Task, *, project_id: int, job_id: str, kwargs: dict[str, Any]
) -> tuple[Any, bool]:
    """Run the function and record SUCCESS; returns (result, recorded).

    For an ``atomic`` function the function's database writes and the SUCCESS commit in one transaction, so a
    worker killed in between leaves neither and the redelivered message runs the function again: its database
    effects happen exactly once per SUCCESS. Long I/O-bound functions (LLM calls) are not atomic: they must not
    hold a transaction open, and the job's status still protects against running a finished job again.
    """
    call = partial(
        registered.function, project_id=project_id, job_id=job_id, task_id=task.request.id, task_instance=task, **kwargs
    )
    if not registered.atomic:
        result = call()
        _ensure_json(result)
        return result, services.job_mark_success(
            job_id=job_id, result=result, task_result=_result_row(task, result), usage=_usage(registered, result)
        )
    try:
        with transaction.atomic():
            result = call()
            _ensure_json(result)
            if not services.job_mark_success(
                job_id=job_id, result=result, task_result=_result_row(task, result), usage=_usage(registered, result)
            ):
                raise _NotRecorded(result)  # roll back the function's writes too
    except _NotRecorded as exc:
        _store_result(task, exc.result)  # the rollback took the result row with it
        return exc.result, False
    return result, True


def _usage(registered: RegisteredFunction, result: Any) -> dict[str, Any] | None:
    """The usage columns the function's ``accounting`` reads from its result (written with the SUCCESS)."""
    return registered.accounting(result) if registered.accounting else None


def _writes_own_result(task: Task) -> bool:
    """Whether the task writes its SUCCESS row itself: Celery does when the task does not ignore its result
    (jobs/tasks.py makes the generic tasks ignore theirs) or with another result backend."""
    return task.ignore_result and hasattr(task.backend, "result_row")


def _result_row(task: Task, result: Any) -> TaskResult | None:
    """The task's SUCCESS row of the result table, for ``job_mark_success`` to write with the job's own UPDATE (one
    round trip instead of two); None when Celery stores the result itself."""
    if not _writes_own_result(task):
        return None
    return task.backend.result_row(task.request.id, result, states.SUCCESS, request=task.request)


def _store_result(task: Task, result: Any) -> None:
    if _writes_own_result(task):
        task.backend.store_result(task.request.id, result, states.SUCCESS, request=task.request)


def _fail(job_id: str, error: str) -> None:
    services.job_mark_failed(job_id=job_id, error=error)
    raise JobFailed(error)


def message_params(params: Any, spread: dict[str, Any]) -> dict[str, Any]:
    """The job's params from a message's keyword arguments.

    A message carries them under ``params``. A message published before that (still in a queue at upgrade time)
    spread them among the keyword arguments: those arrive in ``spread``, and together with ``params`` when the job
    had a param of that name. (Such an old message whose only param was a dict named ``params`` cannot be told
    from a new one; it is read as new.)
    """
    if spread:
        return spread if params is None else {**spread, "params": params}
    if params is None:
        return {}
    return params if isinstance(params, dict) else {"params": params}


def run_job_message(task: Task, *, function_path: str, project_id: int, job_id: str, kwargs: dict[str, Any]) -> Any:
    """Run one job message. Its logging context (trace id, job id, task id) is set by kaapi.logging's task_prerun
    handler, as for every task."""
    try:
        return _run(task, function_path=function_path, project_id=project_id, job_id=job_id, kwargs=kwargs)
    except DATABASE_ERRORS as exc:
        _requeue_after_database_error(exc)


def _requeue_after_database_error(exc: Exception) -> None:
    """The database is unreachable (e.g. restarting): nothing can be recorded, so the message goes back to the
    queue after a pause instead of being acknowledged; the redelivery resumes the job once the database is back."""
    delay = random.uniform(1.0, 3.0)
    logger.warning("database error (%s); the message goes back to the queue in %.1f s", exc, delay)
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:  # a broken connection may fail to close; it is discarded either way
            pass
    time.sleep(delay)
    raise Reject(exc, requeue=True)


def _defer(task: Task, *, job_id: str, exc: JobDeferred) -> None:
    """Put the job back to PENDING and publish its message again ``exc.delay`` seconds later, with the same retry
    count: ``task.retry`` would count the wait as a failed attempt, and enough waiting would fail the job."""
    delay = max(0.0, exc.delay)
    logger.info("job waits %.1f s for its turn: %s", delay, exc)
    services.job_mark_retrying(job_id=job_id, error=f"waiting for its turn: {exc}", delay=delay)
    again = publish_job_message_again(task, job_id=job_id, delay=delay)
    services.job_mark_dispatched(job_id=job_id)
    raise Retry(exc=exc, when=delay, sig=again) from None


def _run(task: Task, *, function_path: str, project_id: int, job_id: str, kwargs: dict[str, Any]) -> Any:
    request = task.request
    try:
        registered = get_job_function(function_path)
    except ValueError as exc:
        logger.error("refused message: %s", exc)
        _fail(job_id, f"refused: {exc}")
    reserved = reserved_param_names(kwargs)
    if reserved:  # the call would raise TypeError; jobs submitted through the services never have these
        _fail(job_id, f"refused: the job's params may not be named {', '.join(reserved)} (standard parameters)")

    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    claim = services.job_claim(job_id=job_id, task_id=request.id, redelivered=redelivered)
    if claim is services.Claim.SKIP:
        logger.info("job is not pending; message ignored")
        raise Ignore()
    if claim is services.Claim.EXHAUSTED:
        raise JobFailed("the worker running this job was lost too many times")

    logger.info("job started: %s", function_path)
    limit = task.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
    try:
        with green.soft_time_limit(limit):  # the gevent pool enforces only the hard limit itself
            result, recorded = _call_and_record(registered, task, project_id=project_id, job_id=job_id, kwargs=kwargs)
    except SoftTimeLimitExceeded:
        logger.error("job timed out after %s s", limit)
        _fail(job_id, f"timed out after {limit} s")
    except JobDeferred as exc:
        _defer(task, job_id=job_id, exc=exc)
    except RetryableJobError as exc:
        if request.retries >= task.max_retries:
            logger.error("job failed after %s retries: %s", request.retries, exc)
            _fail(job_id, f"gave up after {request.retries + 1} attempts: {exc}")
        delay = job_retry_delay(
            request.retries,
            base=settings.CELERY_TASK_DEFAULT_RETRY_DELAY,
            cap=settings.CELERY_TASK_RETRY_BACKOFF_MAX,
            retry_after=exc.retry_after,
        )
        logger.warning("job will retry in %.1f s: %s", delay, exc)
        services.job_mark_retrying(job_id=job_id, error=str(exc), delay=delay)
        retry = publish_job_retry(task, job_id=job_id, delay=delay, exc=exc)
        services.job_mark_dispatched(job_id=job_id)
        raise retry from None
    except ResultNotJSON as exc:
        _fail(job_id, f"the job function returned a value that is not JSON: {exc}")
    except Exception as exc:
        if isinstance(exc, DATABASE_ERRORS):
            raise  # infrastructure, not the job's fault: run_job_message requeues the message
        logger.exception("job failed")
        _fail(job_id, f"{type(exc).__name__}: {exc}")
    except BaseException as exc:
        if green.is_hard_time_limit(exc):  # gevent pool: the greenlet is being killed
            hard = task.time_limit or settings.CELERY_TASK_TIME_LIMIT
            logger.error("job killed by the hard time limit (%s s)", hard)
            services.job_mark_failed(job_id=job_id, error=f"killed by the hard time limit ({hard} s)")
        raise

    if recorded:
        logger.info("job succeeded")
    else:
        logger.info("job finished but is no longer PROCESSING (cancelled or finished elsewhere); result dropped")
    if _writes_own_result(task):
        # The result is stored (the job row and the result table); what the task returns only reaches the
        # task-succeeded event (Flower) and the worker's log line, so it names the job rather than repeat its
        # result: an LLM call's result is the model's answer to a user, as its params are the user's query.
        return {"job_id": job_id, "recorded": recorded}
    return result
