from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from django.db import router
from django.db.models import Count

from kaapi.sql import PreparedQuery
from tenancy.models import Project

from .models import Job, JobQuerySet, JobStatus, WaitingReason

_ATTNAMES = [field.attname for field in Job._meta.concrete_fields]


def job_list(*, project: Project) -> JobQuerySet:
    return Job.objects.for_project(project).order_by("-created_at")


def _job_of_project(*, project_id: int, job_id: uuid.UUID):
    return Job.objects.filter(project_id=project_id, id=job_id).order_by().values_list(*_ATTNAMES)[:1]


# Composed once by the ORM and prepared: it answers every poll of a job (GET /api/v1/jobs/{id}/), the request a
# client sends most; built by the ORM on each request it cost more CPU than the rest of the lookup.
_JOB_OF_PROJECT = PreparedQuery(_job_of_project, project_id=int, job_id=uuid.UUID)


def job_get(*, project: Project, job_id: uuid.UUID | str) -> Job | None:
    """The job ``job_id`` of ``project``; another project's job is None, like an unknown one. ``ValueError`` when
    ``job_id`` is not a UUID."""
    using = router.db_for_read(Job)
    rows = _JOB_OF_PROJECT.rows(project_id=project.pk, job_id=job_id, using=using)
    return Job.from_db(using, _ATTNAMES, rows[0]) if rows else None


def batch_status_counts(*, project: Project, batch_id: uuid.UUID) -> dict[str, int] | None:
    """How many jobs of the project's batch are in each status (every status, 0 included); None when the
    project has no such batch."""
    rows = (
        Job.objects.for_project(project)
        .filter(batch_id=batch_id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    found = dict(rows)
    if not found:
        return None
    return {status: found.get(status, 0) for status in JobStatus.values}


# services.job_mark_retrying writes "retrying in <seconds> s after: <error>" when it puts a job back to PENDING.
_RETRYING = re.compile(r"retrying in (?P<seconds>[0-9]+(?:\.[0-9]+)?) s after")


def job_retry_at(*, job: Job) -> datetime | None:
    """When a job waiting for its next attempt is due to run again; None for any other job."""
    if job.status != JobStatus.PENDING or job.waiting_reason != WaitingReason.RETRY or job.updated_at is None:
        return None
    match = _RETRYING.match(job.error)
    return job.updated_at + timedelta(seconds=float(match["seconds"])) if match else None
