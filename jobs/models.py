from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache

from django.db import connections, models
from django.db.models.sql import Query
from django.utils import timezone

from kaapi.crypto import EncryptedCharField
from kaapi.sql import Converters, convert_row, row_converters


class JobStatus(models.TextChoices):
    SCHEDULED = "SCHEDULED", "Scheduled"  # waits for its run_after; then PENDING (jobs.scheduled)
    PENDING = "PENDING", "Pending"
    PROCESSING = "PROCESSING", "Processing"
    SUCCESS = "SUCCESS", "Success"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED)


class WaitingReason(models.TextChoices):
    MAX_CONCURRENT_JOBS = "max_concurrent_jobs", "the project runs its maximum of jobs at once"
    RETRY = "retry", "waiting for its next attempt"
    SUBMISSION_RATE = "submission_rate", "the project had its maximum of jobs admitted in the last minute"


class JobQuerySet(models.QuerySet):
    def for_project(self, project) -> JobQuerySet:
        return self.filter(project=project)

    def finished(self) -> JobQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def scheduled_due(self, *, now) -> JobQuerySet:
        """SCHEDULED jobs whose ``run_after`` has come (jobs/scheduled.py promotes them)."""
        return self.filter(status=JobStatus.SCHEDULED, run_after__lte=now)

    def undispatched(self) -> JobQuerySet:
        return self.filter(status=JobStatus.PENDING, dispatched_at__isnull=True)

    def waiting(self) -> JobQuerySet:
        """PENDING jobs waiting for admission (jobs/admission.py): not published, not waiting for a retry."""
        return self.undispatched().exclude(waiting_reason=WaitingReason.RETRY)

    def admitted(self) -> JobQuerySet:
        """Jobs published and not finished: what counts against a project's max_concurrent_jobs."""
        return self.filter(status__in=[JobStatus.PENDING, JobStatus.PROCESSING], dispatched_at__isnull=False)

    def stalled_undispatched(self, *, older_than: timedelta) -> JobQuerySet:
        """PENDING jobs whose message has not reached the broker for ``older_than`` (the recovery sweep's)."""
        return self.undispatched().filter(updated_at__lt=timezone.now() - older_than)

    def overdue(self, *, older_than: timedelta) -> JobQuerySet:
        """PROCESSING jobs started more than ``older_than`` ago: no worker is running them any more."""
        return self.filter(status=JobStatus.PROCESSING, started_at__lt=timezone.now() - older_than)


class Job(models.Model):
    """One unit of background work, run by a registered job function on a priority queue.

    ``status`` changes only through ``jobs.services``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # not db_index: the (project, -created_at) index below serves lookups by project
    project = models.ForeignKey("tenancy.Project", on_delete=models.CASCADE, related_name="jobs", db_index=False)
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
    task_id = models.CharField("Celery task id", max_length=255, blank=True, default="")
    trace_id = models.CharField("trace id", max_length=128, blank=True, default="")
    callback_url = models.URLField("callback URL", max_length=2048, blank=True, default="")
    attempts = models.PositiveIntegerField("attempts", default=0, help_text="How many times a worker started the job.")
    worker_lost_count = models.PositiveSmallIntegerField(
        "worker lost", default=0, help_text="Deliveries that ended with the worker process dying."
    )
    waiting_reason = models.CharField(
        "waiting reason",
        max_length=32,
        blank=True,
        default="",
        choices=WaitingReason.choices,
        help_text="Why a PENDING job is not yet on its way to a worker; empty otherwise.",
    )
    run_after = models.DateTimeField(
        "run after",
        null=True,
        blank=True,
        help_text="Not published before this time: the job is SCHEDULED until then; empty to run at once.",
    )
    batch_id = models.UUIDField(
        "batch", null=True, blank=True, help_text="The bulk submission that created this job; empty for one alone."
    )
    # Who served an AI call, its tokens and what it cost: written at submission (the intended provider and model)
    # and by the SUCCESS itself (who answered, the usage, the cost) from the function's registered ``accounting``.
    # Usage reports and budgets read these columns (the job_usage index), never the result's JSON.
    provider = models.CharField("provider", max_length=32, blank=True, default="")
    model = models.CharField("model", max_length=200, blank=True, default="")
    config_id = models.PositiveIntegerField(
        "config", null=True, blank=True, help_text="The config the call was made with; empty: an inline one."
    )
    input_tokens = models.PositiveIntegerField("input tokens", null=True, blank=True)
    output_tokens = models.PositiveIntegerField("output tokens", null=True, blank=True)
    cost = models.DecimalField(
        "cost (USD)",
        max_digits=18,
        decimal_places=8,
        null=True,
        blank=True,
        help_text="From the price table at the time of the call; empty: unknown model or not an AI call.",
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
            # The maintenance sweeps' indexes are partial, on the rows each sweep looks at, with conditions that no
            # update of one job by id (``id = … AND status = …``: the claim, the SUCCESS) implies, so that none of
            # those can be served from them: from a status-leading index, a planner whose statistics predated a
            # backlog (PENDING rare when the table was analyzed) read every PENDING job's entry for each claim.
            models.Index(
                fields=["started_at"],
                condition=models.Q(status=JobStatus.PROCESSING, started_at__isnull=False),
                name="job_running_started",
            ),
            models.Index(fields=["finished_at"], condition=models.Q(finished_at__isnull=False), name="job_finished"),
            # Admission (jobs/admission.py): a project's waiting jobs in the order they are admitted (the dispatch
            # sweep reads them from here too), and its admitted ones (counted against its max_concurrent_jobs).
            # Neither condition is implied by an update of one job by id, and no other index has the waiting jobs'
            # condition: with stale statistics the planner would read a whole backlog from it for one project.
            models.Index(
                "project",
                "queue",
                models.F("priority").desc(),
                "created_at",
                condition=models.Q(status=JobStatus.PENDING, dispatched_at__isnull=True),
                name="job_waiting",
            ),
            models.Index(
                fields=["project", "queue"],
                condition=models.Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING], dispatched_at__isnull=False),
                name="job_admitted",
            ),
            # A project's jobs admitted in the last minute, counted against its max_submissions_per_minute. Partial:
            # a new job (not dispatched yet) adds no entry, so the submission's INSERT does not write it.
            models.Index(
                fields=["project", "dispatched_at"],
                condition=models.Q(dispatched_at__isnull=False),
                name="job_project_dispatched",
            ),
            # The due-job sweep (jobs/scheduled.py) reads the SCHEDULED jobs by time; a project's batch by its id.
            models.Index(
                fields=["run_after"], condition=models.Q(status=JobStatus.SCHEDULED), name="job_scheduled_run_after"
            ),
            models.Index(
                fields=["project", "batch_id"], condition=models.Q(batch_id__isnull=False), name="job_project_batch"
            ),
            # Admin's most used filter, FAILED jobs newest first; no by-id update implies status = 'FAILED'.
            models.Index(fields=["-created_at"], condition=models.Q(status=JobStatus.FAILED), name="job_failed"),
            # plain indexes: db_index on a CharField adds a second, LIKE-only index on PostgreSQL that every
            # status change would update too (the job path is measured by bench/job_overhead.py)
            models.Index(fields=["task_id"], name="job_task_id"),
            # Usage reports and budget spend (llm/usage.py): a project's finished AI calls by finish time, with
            # every column they add up, so a month's report is an index-only scan.
            models.Index(
                fields=["project", "finished_at"],
                include=["status", "provider", "model", "config_id", "input_tokens", "output_tokens", "cost"],
                # provider > '' rather than NOT provider = '': PostgreSQL proves a query's "provider > ''" implies
                # the former, while its NOT (=) and a query's <> do not match.
                condition=models.Q(finished_at__isnull=False, provider__gt=""),
                name="job_usage",
            ),
            models.Index(fields=["trace_id"], name="job_trace_id"),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.id} ({self.status})"

    @classmethod
    def from_row(cls, row: tuple, *, using: str, attnames: tuple[str, ...] | None = None) -> Job:
        """A job from a row of its concrete columns in model order (a RETURNING), converted as the ORM converts
        query results: all of them, or those of ``attnames`` (the others are deferred: loaded on first access)."""
        names, converters = _row_converters(cls, using, attnames)
        if len(row) != len(names):
            raise ValueError(f"a {cls.__name__} row has {len(names)} columns, not {len(row)}")
        return cls.from_db(using, names, convert_row(row, converters, connections[using]))


@cache
def _row_converters(
    model: type[models.Model], using: str, attnames: tuple[str, ...] | None = None
) -> tuple[list[str], Converters]:
    """The attribute names of the concrete fields (all, or those of ``attnames``) and the converters of their
    columns, found once per database (every job's SUCCESS builds a Job from a row)."""
    fields = [field for field in model._meta.concrete_fields if attnames is None or field.attname in attnames]
    compiler = Query(model).get_compiler(using=using)
    columns = [field.get_col(model._meta.db_table) for field in fields]
    return [field.attname for field in fields], row_converters(compiler, columns)


# --- Webhooks ------------------------------------------------------------------------------------------
class WebhookSecret(models.Model):
    """The secret a project's webhooks are signed with (Standard Webhooks, ``whsec_…``).

    After a rotation the previous secret keeps signing too (a second signature) until ``previous_valid_until``,
    so receivers can switch without dropping deliveries.
    """

    project = models.OneToOneField(
        "tenancy.Project", on_delete=models.CASCADE, related_name="webhook_secret", verbose_name="project"
    )
    # Stored encrypted like provider credentials (kaapi/crypto.py): a database dump does not give away the keys
    # that sign the project's webhooks.
    secret = EncryptedCharField("secret", max_length=512, help_text="Current signing secret (whsec_…).")
    previous_secret = EncryptedCharField(
        "previous secret", max_length=512, blank=True, default="", help_text="Secret before the last rotation."
    )
    previous_valid_until = models.DateTimeField(
        "previous valid until", null=True, blank=True, help_text="Until then deliveries carry both signatures."
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    rotated_at = models.DateTimeField("rotated at", null=True, blank=True)

    class Meta:
        verbose_name = "webhook secret"

    def __str__(self) -> str:
        return f"webhook secret of {self.project_id}"


class WebhookEvent(models.TextChoices):
    SUCCEEDED = "job.succeeded", "job succeeded"
    FAILED = "job.failed", "job failed"
    CANCELLED = "job.cancelled", "job cancelled"
    BUDGET_THRESHOLD = "budget.threshold", "budget threshold reached"


class DeliveryStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"  # waiting for its first attempt or a retry
    DELIVERED = "DELIVERED", "Delivered"
    FAILED = "FAILED", "Failed"  # gave up (attempts exhausted, 410 Gone, or address refused)


class WebhookDeliveryQuerySet(models.QuerySet):
    def pending(self) -> WebhookDeliveryQuerySet:
        return self.filter(status=DeliveryStatus.PENDING)

    def due(self, *, before) -> WebhookDeliveryQuerySet:
        return self.pending().filter(next_attempt_at__lte=before)


class WebhookDelivery(models.Model):
    """One webhook message about one job event (or one project event), and how its delivery went.

    Its id is the ``webhook-id`` header: the same on every attempt and redelivery, so receivers can drop
    duplicates. The body is frozen when the job finishes.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A job's event has its job; a project's own event (budget.threshold) has its project and no job.
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="webhook_deliveries", verbose_name="job", null=True, blank=True
    )
    project = models.ForeignKey(
        "tenancy.Project",
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
        verbose_name="project",
        null=True,
        blank=True,
        help_text="For an event about the project rather than a job; the job's project otherwise.",
    )
    url = models.URLField("URL", max_length=2048)
    event = models.CharField("event", max_length=32, choices=WebhookEvent.choices)
    payload = models.JSONField("payload", help_text="The JSON body sent on every attempt.")
    status = models.CharField("status", max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField("attempts", default=0)
    last_status_code = models.PositiveSmallIntegerField("last status code", null=True, blank=True)
    last_error = models.TextField("last error", blank=True, default="")
    next_attempt_at = models.DateTimeField(
        "next attempt at", null=True, blank=True, help_text="When the next attempt is due (while PENDING)."
    )
    delivered_at = models.DateTimeField("delivered at", null=True, blank=True)
    created_at = models.DateTimeField("created at", auto_now_add=True)
    updated_at = models.DateTimeField("updated at", auto_now=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_status_next_attempt")]

    def __str__(self) -> str:
        return f"{self.event} {self.id} ({self.status})"


# --- Idempotency ---------------------------------------------------------------------------------------
class IdempotencyKeyQuerySet(models.QuerySet):
    def expired(self, *, now=None) -> IdempotencyKeyQuerySet:
        return self.filter(expires_at__lte=now or timezone.now())


class IdempotencyKey(models.Model):
    """A submission made with an ``Idempotency-Key`` header, and the answer it got (jobs/idempotency.py).

    The unique (project, key) makes the database hold the guarantee: two requests with one key create one job.
    """

    project = models.ForeignKey(
        "tenancy.Project", on_delete=models.CASCADE, related_name="idempotency_keys", verbose_name="project"
    )
    key = models.CharField("key", max_length=255, help_text="The client's Idempotency-Key header.")
    fingerprint = models.CharField(
        "request fingerprint", max_length=64, help_text="SHA-256 of the method, path and body of the request."
    )
    response_status = models.PositiveSmallIntegerField("response status")
    response_body = models.JSONField("response body", help_text="Answered again, as is, to a replay.")
    response_location = models.CharField("Location header", max_length=2048, blank=True, default="")
    created_at = models.DateTimeField("created at", auto_now_add=True)
    expires_at = models.DateTimeField("expires at", help_text="Removed by the retention task after this.")

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "idempotency key"
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="idempotency_key_unique")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_key_expires")]

    def __str__(self) -> str:
        return f"{self.key} ({self.project_id})"
