from __future__ import annotations

from django.db import models
from django.db.models import Q

from tenancy.models import Project


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI (Responses API)"
    OPENAI_CHAT = "openai-chat", "OpenAI-compatible (Chat Completions)"
    ANTHROPIC = "anthropic", "Anthropic (Messages API)"


class ConfigQuerySet(models.QuerySet):
    def live(self) -> ConfigQuerySet:
        return self.filter(deleted_at__isnull=True)

    def for_project(self, project) -> ConfigQuerySet:
        return self.filter(project=project)


class Config(models.Model):
    """A named LLM configuration of a project; its content lives in immutable, numbered versions."""

    project = models.ForeignKey("tenancy.Project", on_delete=models.CASCADE, related_name="llm_configs")
    name = models.CharField("name", max_length=200, help_text="Unique among the project's live configs.")
    description = models.TextField("description", blank=True, default="")
    created_at = models.DateTimeField("created at", auto_now_add=True)
    updated_at = models.DateTimeField("updated at", auto_now=True)
    deleted_at = models.DateTimeField(
        "deleted at", null=True, blank=True, help_text="Set when the config was deleted (soft delete)."
    )

    objects = ConfigQuerySet.as_manager()

    class Meta:
        verbose_name = "LLM config"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], condition=Q(deleted_at__isnull=True), name="llm_config_unique_live_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.project})"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class ConfigVersion(models.Model):
    """One immutable version of a config: a validated blob ``{"completion": {"provider", "params"}}``."""

    config = models.ForeignKey(Config, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField("version", help_text="1, 2, 3… in order of creation, per config.")
    blob = models.JSONField("config blob", help_text='{"completion": {"provider": "...", "params": {...}}}')
    commit_message = models.CharField("commit message", max_length=500, blank=True, default="")
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        verbose_name = "LLM config version"
        ordering = ["config", "version"]
        constraints = [models.UniqueConstraint(fields=["config", "version"], name="llm_config_version_unique")]

    def __str__(self) -> str:
        return f"{self.config.name} v{self.version}"

    @property
    def provider(self) -> str:
        return self.blob.get("completion", {}).get("provider", "")


LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_calls")


class ProviderCredential(models.Model):
    """A project's API key for one provider, encrypted at rest (Fernet); never returned in clear."""

    project = models.ForeignKey("tenancy.Project", on_delete=models.CASCADE, related_name="llm_credentials")
    provider = models.CharField("provider", max_length=32, choices=Provider.choices)
    api_key_encrypted = models.TextField("API key (encrypted)", help_text="Fernet token of the API key.")
    api_key_hint = models.CharField(
        "API key hint", max_length=8, blank=True, default="", help_text="Last characters of the key, for display."
    )
    base_url = models.URLField(
        "base URL",
        max_length=500,
        blank=True,
        default="",
        help_text="For OpenAI-compatible servers (vLLM, Ollama, LiteLLM); empty: the provider's public API.",
    )
    organization = models.CharField("organization", max_length=200, blank=True, default="")
    # Limits held by all workers together (llm/limits.py); empty: none of ours (the provider's own still apply).
    requests_per_minute = models.PositiveIntegerField(
        "requests per minute",
        null=True,
        blank=True,
        help_text="Calls started with this key in any minute, across all workers; empty: no limit.",
    )
    tokens_per_minute = models.PositiveIntegerField(
        "tokens per minute",
        null=True,
        blank=True,
        help_text="Tokens (estimated before a call, corrected by its usage after) in any minute; empty: no limit.",
    )
    max_concurrent_calls = models.PositiveIntegerField(
        "concurrent calls",
        null=True,
        blank=True,
        help_text="Calls waiting on the provider at once with this key, across all workers; empty: no limit.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    updated_at = models.DateTimeField("updated at", auto_now=True)

    class Meta:
        verbose_name = "LLM provider credential"
        ordering = ["project", "provider"]
        constraints = [
            models.UniqueConstraint(fields=["project", "provider"], name="llm_credential_unique_provider"),
            models.CheckConstraint(
                condition=Q(requests_per_minute__gt=0) | Q(requests_per_minute__isnull=True),
                name="llm_credential_rpm_positive",
            ),
            models.CheckConstraint(
                condition=Q(tokens_per_minute__gt=0) | Q(tokens_per_minute__isnull=True),
                name="llm_credential_tpm_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_concurrent_calls__gt=0) | Q(max_concurrent_calls__isnull=True),
                name="llm_credential_concurrency_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} ({self.project})"

    @property
    def limits(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}

    @property
    def masked_api_key(self) -> str:
        return f"****{self.api_key_hint}" if self.api_key_hint else "****"


class CredentialUsage(models.Model):
    """A credential's counters when there is no Redis (llm/limits.py): its minute's buckets, its calls in flight
    and its pause, in one row that each call locks for the moment it counts itself."""

    credential = models.OneToOneField(
        ProviderCredential, on_delete=models.CASCADE, primary_key=True, related_name="usage"
    )
    state = models.JSONField(
        "state",
        default=dict,
        help_text='{"r": {second: requests}, "t": {second: tokens}, "calls": {id: expiry}, "paused_until": time}',
    )

    class Meta:
        verbose_name = "LLM credential usage"

    def __str__(self) -> str:
        return f"usage of credential {self.credential_id}"


class ModelPriceQuerySet(models.QuerySet):
    def for_provider(self, provider: str) -> ModelPriceQuerySet:
        return self.filter(provider=provider)


class ModelPrice(models.Model):
    """The list price of one model of one provider, per million tokens (llm/pricing.py matches a call's model to
    a row by name, alias or prefix)."""

    provider = models.CharField(
        "provider",
        max_length=32,
        help_text="openai (also used for openai-chat) or anthropic; another name prices calls of that provider.",
    )
    model = models.CharField(
        "model",
        max_length=200,
        help_text="The model's name; it also prices dated versions (gpt-4o prices gpt-4o-2024-08-06).",
    )
    aliases = models.CharField(
        "aliases",
        max_length=500,
        blank=True,
        default="",
        help_text="Other names of the same model, comma separated (each also matches its dated versions).",
    )
    input_per_million = models.DecimalField(
        "input (USD per 1M tokens)", max_digits=12, decimal_places=6, help_text="Uncached input tokens."
    )
    cached_input_per_million = models.DecimalField(
        "cached input (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Input tokens read from the provider's prompt cache; empty: priced as input.",
    )
    output_per_million = models.DecimalField(
        "output (USD per 1M tokens)",
        max_digits=12,
        decimal_places=6,
        help_text="Output tokens, reasoning tokens included.",
    )
    price_date = models.DateField("price date", help_text="When these prices were read from the source.")
    source_url = models.URLField("source", max_length=500, help_text="Where the prices were read.")
    updated_at = models.DateTimeField("updated at", auto_now=True)

    objects = ModelPriceQuerySet.as_manager()

    class Meta:
        verbose_name = "LLM model price"
        ordering = ["provider", "model"]
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="llm_model_price_unique")]

    def __str__(self) -> str:
        return f"{self.provider} {self.model}"

    @property
    def names(self) -> list[str]:
        return [self.model, *(alias.strip() for alias in self.aliases.split(",") if alias.strip())]


class BudgetAlert(models.Model):
    """A soft-threshold alert sent for one budget in one month: its unique row makes it once per month."""

    project = models.ForeignKey(
        "tenancy.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="budget_alerts"
    )
    organization = models.ForeignKey(
        "tenancy.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="budget_alerts"
    )
    month = models.DateField("month", help_text="The first day of the month (UTC) the alert is about.")
    budget = models.DecimalField("budget (USD)", max_digits=14, decimal_places=2)
    spend = models.DecimalField("spend (USD)", max_digits=18, decimal_places=8, help_text="When the alert was made.")
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        verbose_name = "LLM budget alert"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "month"], name="llm_budget_alert_project_month"),
            models.UniqueConstraint(fields=["organization", "month"], name="llm_budget_alert_org_month"),
            models.CheckConstraint(
                condition=Q(project__isnull=False, organization__isnull=True)
                | Q(project__isnull=True, organization__isnull=False),
                name="llm_budget_alert_one_scope",
            ),
        ]

    def __str__(self) -> str:
        return f"budget alert {self.month:%Y-%m} ({self.project or self.organization})"


class ProjectUsage(Project):
    """Admin's LLM usage page (llm/admin.py): a project seen through its calls' usage and cost."""

    class Meta:
        proxy = True
        verbose_name = "LLM usage"
        verbose_name_plural = "LLM usage"
