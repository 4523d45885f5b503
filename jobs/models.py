from __future__ import annotations

import uuid

from django.db import models


class JobStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    PROCESSING = "PROCESSING", "Processing"
    SUCCESS = "SUCCESS", "Success"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(models.QuerySet):
    def for_project(self, project) -> JobQuerySet:
        return self.filter(project=project)

    def finished(self) -> JobQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def undispatched(self) -> JobQuerySet:
        return self.filter(status=JobStatus.PENDING, dispatched_at__isnull=True)


class Job(models.Model):
    """One unit of background work, run by a registered job function on a priority queue.

    ``status`` changes only through ``jobs.services``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("tenancy.Project", on_delete=models.CASCADE, related_name="jobs")
    job_type = models.CharField("job type", max_length=64, help_text="What kind of work this is, e.g. LLM_API.")
    function_path = models.CharField(
        "function", max_length=255, help_text="Dotted path of the registered job function."
    )
    queue = models.CharField("queue", max_length=64)
    priority = models.PositiveSmallIntegerField("priority")
    status = models.CharField("status", max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    params = models.JSONField(
        "parameters", default=dict, blank=True, help_text="Keyword arguments of the job function."
    )
    result = models.JSONField("result", null=True, blank=True)
    error = models.TextField("error", blank=True, default="")
    progress_percent = models.PositiveSmallIntegerField("progress (%)", default=0)
    progress_message = models.CharField("progress message", max_length=255, blank=True, default="")
    task_id = models.CharField("Celery task id", max_length=255, blank=True, default="", db_index=True)
    trace_id = models.CharField("trace id", max_length=128, blank=True, default="", db_index=True)
    callback_url = models.URLField("callback URL", max_length=2048, blank=True, default="")
    attempts = models.PositiveIntegerField("attempts", default=0, help_text="How many times a worker started the job.")
    worker_lost_count = models.PositiveSmallIntegerField(
        "worker lost", default=0, help_text="Deliveries that ended with the worker process dying."
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    dispatched_at = models.DateTimeField(
        "dispatched at", null=True, blank=True, help_text="When the broker confirmed the message."
    )
    started_at = models.DateTimeField("started at", null=True, blank=True)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    updated_at = models.DateTimeField("updated at", auto_now=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="job_project_created"),
            models.Index(fields=["project", "status", "-created_at"], name="job_project_status_created"),
            models.Index(fields=["project", "job_type", "-created_at"], name="job_project_type_created"),
            models.Index(fields=["status", "updated_at"], name="job_status_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES
