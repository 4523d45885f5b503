from __future__ import annotations

from tenancy.models import Project

from .models import Job, JobQuerySet


def job_list(*, project: Project) -> JobQuerySet:
    return Job.objects.for_project(project).order_by("-created_at")


def job_get(*, project: Project, job_id) -> Job | None:
    return Job.objects.for_project(project).filter(id=job_id).first()
