from __future__ import annotations

from django.db import models
from django.db.models import Q


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
