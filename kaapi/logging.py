"""Logging context: trace id, job id and task id travel with the code that runs for a request or a job."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

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


class ContextFilter(logging.Filter):
    """Adds trace_id, job_id and task_id (or "-") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get() or "-"
        record.job_id = job_id_var.get() or "-"
        record.task_id = task_id_var.get() or "-"
        return True
