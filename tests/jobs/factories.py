from __future__ import annotations

from django.db import transaction

from jobs import services
from jobs.functions import ECHO_PATH
from jobs.models import Job


def make_job(project, *, function_path: str = ECHO_PATH, priority: str = "high", **params) -> Job:
    """A PENDING job created the way the services create one (published on commit)."""
    with transaction.atomic():
        return services.job_create(project=project, function_path=function_path, priority=priority, params=params)


def set_status(job: Job, status: str, **fields) -> Job:
    """Put a job in a state for a test (tests may bypass the services; the application may not)."""
    Job.objects.filter(id=job.id).update(status=status, **fields)
    job.refresh_from_db()
    return job


def job_row(project, **fields) -> Job:
    """A job row written directly, nothing published: an ECHO job on high_priority unless ``fields`` say else."""
    defaults = {"job_type": "ECHO", "function_path": "jobs.functions.echo", "queue": "high_priority", "priority": 9}
    return Job.objects.create(project=project, **{**defaults, **fields})
