"""Built-in job functions."""

from __future__ import annotations

import time
from typing import Any

from .registry import job_function
from .services import job_report_progress

ECHO_MAX_DELAY = 3600.0


@job_function(job_type="ECHO")
def echo(*, project_id: int, job_id: str, task_id: str, task_instance: Any, delay: float = 0, **params: Any) -> dict:
    """Diagnostic job: returns its params after an optional delay (seconds)."""
    if delay:
        job_report_progress(job_id=job_id, percent=0, message=f"sleeping {delay} s")
        time.sleep(float(delay))
    return {"delay": delay, **params}
