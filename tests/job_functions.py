"""Job functions used only by the tests; a test worker loads them with `-I tests.job_functions`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from jobs.exceptions import RetryableJobError
from jobs.models import Job
from jobs.registry import job_function
from jobs.services import job_report_progress


@job_function(job_type="TEST")
def report_pid_and_sleep(*, project_id, job_id, task_id, task_instance, seconds: float = 2.0, **params):
    """Reports the pid of the process running it (so a test can kill it), then sleeps."""
    job_report_progress(job_id=job_id, percent=10, message=f"pid={os.getpid()}")
    time.sleep(seconds)
    return {"pid": os.getpid(), "attempts": Job.objects.get(id=job_id).attempts}


@job_function(job_type="TEST")
def fail_retryably(*, project_id, job_id, task_id, task_instance, failures: int = 2, **params):
    """Raises a retryable error on its first ``failures`` attempts, then succeeds."""
    attempts = Job.objects.get(id=job_id).attempts
    if attempts <= failures:
        raise RetryableJobError(f"transient failure {attempts}")
    return {"attempts": attempts}


@job_function(job_type="TEST")
def crash(*, project_id, job_id, task_id, task_instance, **params):
    raise RuntimeError("boom")


@job_function(job_type="TEST")
def kill_own_process(*, project_id, job_id, task_id, task_instance, **params):
    """A poison job: every delivery kills the process running it."""
    os.kill(os.getpid(), signal.SIGKILL)


@job_function(job_type="TEST")
def sleep_forever(*, project_id, job_id, task_id, task_instance, **params):
    time.sleep(3600)


@job_function(job_type="TEST")
def touch_file(*, project_id, job_id, task_id, task_instance, path: str, **params):
    """Appends the job id to ``path``: a side effect the tests can count."""
    with Path(path).open("a") as fh:
        fh.write(f"{job_id}\n")
    return {"path": path}


@job_function(job_type="TEST")
def return_unserializable(*, project_id, job_id, task_id, task_instance, **params):
    return {"when": object()}


@job_function(job_type="TEST", atomic=True)
def record_effect(*, project_id, job_id, task_id, task_instance, seconds: float = 0.1, **params):
    """An atomic job with a database side effect: one row in chaos_effect per run that committed."""
    time.sleep(seconds)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO chaos_effect (job_id) VALUES (%s)", [job_id])
    return {"pid": os.getpid()}


@job_function(job_type="TEST")
def ignore_soft_time_limit(*, project_id, job_id, task_id, task_instance, **params):
    """Swallows the soft time limit: only the hard limit can stop it."""
    while True:
        try:
            time.sleep(3600)
        except SoftTimeLimitExceeded:
            pass


@job_function(job_type="TEST")
def database_backend_pid(*, project_id, job_id, task_id, task_instance, **params):
    """The PostgreSQL backend serving this job's connection: the same for consecutive jobs of a process whose
    connection is reused."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return {"backend_pid": cursor.fetchone()[0], "pid": os.getpid()}


@job_function(job_type="TEST")
def wait_for_file(*, project_id, job_id, task_id, task_instance, path: str, **params):
    """Runs until ``path`` exists (the test creates it to let the job finish; bounded so it cannot hang a worker)."""
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.05)
    return {"released": True}


@job_function(job_type="TEST")
def submit_child(*, project_id, job_id, task_id, task_instance, **params):
    """Submits another job from inside the task (published inline: a worker has no dispatcher thread to wait for)."""
    from django.db import transaction

    from jobs.services import job_create
    from tenancy.models import Project

    with transaction.atomic():
        child = job_create(
            project=Project.objects.get(id=project_id), function_path="jobs.functions.echo", params={"parent": job_id}
        )
    return {"child": str(child.id)}
