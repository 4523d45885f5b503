"""Built-in job functions."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from kaapi.registry import dotted_path

from .registry import job_function
from .serializers import EchoResultSerializer
from .services import job_report_progress


@job_function(job_type="ECHO", result=EchoResultSerializer)
def echo(*, project_id: int, job_id: str, task_id: str, task_instance: Any, delay: float = 0, **params: Any) -> dict:
    """Diagnostic job: returns its params after an optional delay (seconds, at most ``ECHO_MAX_DELAY_SECONDS``:
    also for a job stored before the bound or submitted around the API)."""
    if delay:
        seconds = min(float(delay), settings.ECHO_MAX_DELAY_SECONDS)
        job_report_progress(job_id=job_id, percent=0, message=f"sleeping {seconds} s")
        time.sleep(seconds)
    return {"delay": delay, **params}


ECHO_PATH = dotted_path(echo)  # what the echo endpoint and command submit
