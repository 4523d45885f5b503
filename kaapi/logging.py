"""Logging context: trace id, job id and task id travel with the code that runs for a request or a job.

The web sets the trace id per request (``kaapi.middleware.RequestIdMiddleware``); a worker sets all three for
every task from its message (the ``task_prerun`` handler below). ``ContextFilter`` puts them on every record,
and ``LOG_FORMAT=json`` writes each record as one JSON object per line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import TypeGuard

import pythonjsonlogger.json
from celery.signals import after_setup_task_logger, task_postrun, task_prerun

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)


@contextlib.contextmanager
def log_context(
    *, trace_id: str | None = None, job_id: str | None = None, task_id: str | None = None
) -> Iterator[None]:
    tokens = [
        (var, var.set(value))
        for var, value in ((trace_id_var, trace_id), (job_id_var, job_id), (task_id_var, task_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _celery_task_id(record: logging.LogRecord) -> str | None:
    # Celery's "Task ... received" line is written by the consumer, outside any task context.
    data = getattr(record, "data", None)
    return data.get("id") if isinstance(data, dict) else None


class ContextFilter(logging.Filter):
    """Adds trace_id, job_id and task_id (or "-") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get() or "-"
        record.job_id = job_id_var.get() or "-"
        record.task_id = task_id_var.get() or _celery_task_id(record) or "-"
        return True


# --- Trace ids ----------------------------------------------------------------------------------
TRACE_ID_MAX_LENGTH = 128
_TRACE_ID_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{TRACE_ID_MAX_LENGTH}}}")


def current_trace_id() -> str | None:
    """The trace id of the request or job this code runs for (None outside one)."""
    return trace_id_var.get()


def is_valid_trace_id(value: object) -> TypeGuard[str]:
    """A trace id a client may choose: 1–128 characters of ``A-Z a-z 0-9 . _ -``."""
    return isinstance(value, str) and _TRACE_ID_RE.fullmatch(value) is not None


def new_trace_id() -> str:
    return uuid.uuid4().hex


# --- JSON lines (LOG_FORMAT=json) ---------------------------------------------------------------
_CONTEXT_FIELDS = ("trace_id", "job_id", "task_id")


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, trace/job/task ids, and any ``extra``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(trace_id)s %(job_id)s %(task_id)s %(process)d", *args, **kwargs
        )

    def process_log_record(self, log_record: dict) -> dict:
        for field in _CONTEXT_FIELDS:
            if log_record.get(field) == "-":
                log_record[field] = None
        return log_record


# --- Celery: every task runs in the logging context of its message ------------------------------
@task_prerun.connect
def _enter_task_context(sender=None, task_id=None, task=None, kwargs=None, **_) -> None:
    """Set trace id (message header, else the ``trace_id`` kwarg), job id (kwarg) and task id for the task."""
    request = getattr(task, "request", None)
    headers = getattr(request, "headers", None) or {}
    kwargs = kwargs or {}
    trace_id = getattr(request, "trace_id", None) or headers.get("trace_id") or kwargs.get("trace_id")
    job_id = kwargs.get("job_id")
    tokens = [task_id_var.set(task_id)]
    if is_valid_trace_id(trace_id):
        tokens.append(trace_id_var.set(trace_id))
    if isinstance(job_id, str) and job_id:
        tokens.append(job_id_var.set(job_id))
    if request is not None:
        request.log_context_tokens = tokens


@task_postrun.connect
def _leave_task_context(sender=None, task_id=None, task=None, **_) -> None:
    request = getattr(task, "request", None)
    tokens: list[Token] = getattr(request, "log_context_tokens", None) or []
    for token in reversed(tokens):
        try:
            token.var.reset(token)
        except ValueError:  # set in another context (should not happen); leave the value
            pass


@after_setup_task_logger.connect
def _task_logger_propagates(logger=None, **_) -> None:
    """Celery gives ``celery.task`` its own handler; send its records through ours (and our context filter)."""
    if logger is not None:
        logger.handlers = []
        logger.propagate = True
