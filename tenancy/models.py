from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Organization(models.Model):
    name = models.CharField("name", max_length=200, unique=True)
    is_active = models.BooleanField(
        "active", default=True, help_text="Requests of an inactive organization are refused."
    )
    monthly_budget = models.DecimalField(
        "monthly budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="LLM spend of all its projects in a calendar month (UTC); once reached, new LLM calls are "
        "refused (402) until the month ends. Empty: no budget.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Project(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField("name", max_length=200)
    is_active = models.BooleanField("active", default=True, help_text="Requests of an inactive project are refused.")
    max_concurrent_jobs = models.PositiveIntegerField(
        "max concurrent jobs",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Jobs of this project running at once, per queue (high, low); the others wait PENDING. "
        "Empty: the JOB_MAX_CONCURRENT_JOBS setting.",
    )
    max_submissions_per_minute = models.PositiveIntegerField(
        "max submissions per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Jobs of this project admitted to the workers in any 60 seconds, both queues together; the others "
        "wait PENDING. Empty: the JOB_MAX_SUBMISSIONS_PER_MINUTE setting (0 there: no limit).",
    )
    monthly_budget = models.DecimalField(
        "monthly budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="LLM spend of this project in a calendar month (UTC); once reached, new LLM calls are refused "
        "(402) until the month ends. Empty: no budget.",
    )
    budget_callback_url = models.URLField(
        "budget callback URL",
        max_length=2048,
        blank=True,
        default="",
        help_text="Receives the signed budget.threshold webhook (once a month, when spend passes "
        "LLM_BUDGET_THRESHOLD_PERCENT of a budget). Empty: none sent.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="project_unique_name_per_org")]

    def __str__(self) -> str:
        return f"{self.organization.name}/{self.name}"

    @property
    def effective_max_concurrent_jobs(self) -> int:
        return self.max_concurrent_jobs or settings.JOB_MAX_CONCURRENT_JOBS

    @property
    def effective_max_submissions_per_minute(self) -> int | None:
        """None: no submission rate."""
        return self.max_submissions_per_minute or settings.JOB_MAX_SUBMISSIONS_PER_MINUTE or None


class APIKeyQuerySet(models.QuerySet):
    def active(self) -> APIKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class APIKey(models.Model):
    """An API key of a project. Only a keyed hash of the secret is stored; the key is shown once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField("name", max_length=200, blank=True, help_text="What the key is for.")
    prefix = models.CharField(
        "prefix", max_length=16, unique=True, editable=False, help_text="Public part used to look the key up."
    )
    key_hash = models.CharField("key hash", max_length=64, editable=False, help_text="HMAC-SHA256 of the secret.")
    created_at = models.DateTimeField("created at", auto_now_add=True)
    revoked_at = models.DateTimeField("revoked at", null=True, blank=True, help_text="Set when the key was revoked.")

    objects = APIKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=~Q(prefix=""), name="apikey_prefix_not_empty")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.project})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
