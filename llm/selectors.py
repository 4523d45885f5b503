from __future__ import annotations

from django.db.models import Exists, OuterRef
from django.db.models.fields.json import KT

from kaapi import crypto
from kaapi.sql import PreparedQuery
from tenancy.models import Project

from .limits import CredentialLimits
from .models import LIMIT_FIELDS, Config, ConfigQuerySet, ConfigVersion, ProviderCredential
from .providers import Credentials


def config_list(*, project: Project) -> ConfigQuerySet:
    return Config.objects.live().for_project(project).order_by("-created_at")


def config_get(*, project: Project, config_id: int) -> Config | None:
    """A live config of ``project``; another project's config is None, like an unknown one."""
    return Config.objects.live().for_project(project).filter(id=config_id).first()


def config_version_list(*, config: Config):
    return ConfigVersion.objects.filter(config=config).order_by("version")


def config_version_get(*, config: Config, version: int) -> ConfigVersion | None:
    return ConfigVersion.objects.filter(config=config, version=version).first()


def _config_version_for_call(*, project_id: int, config_id: int, version: int):
    has_credentials = Exists(
        ProviderCredential.objects.filter(project_id=project_id, provider=OuterRef("provider")).order_by()
    )
    return (
        ConfigVersion.objects.filter(
            config_id=config_id, config__project_id=project_id, config__deleted_at__isnull=True, version=version
        )
        .order_by()
        .annotate(provider=KT("blob__completion__provider"))  # type: ignore[no-redef]  # for the OuterRef above
        .values_list("blob", has_credentials)[:1]
    )


# Composed once by the ORM and prepared: it runs on every POST /api/v1/llm/call (bench/submission.py).
_CONFIG_VERSION_FOR_CALL = PreparedQuery(_config_version_for_call, project_id=int, config_id=int, version=int)


def config_version_for_call(*, project: Project, config_id: int, version: int) -> tuple[dict, bool] | None:
    """For an LLM call, in one query: the blob of version ``version`` of a live config of ``project``, and
    whether the project has credentials for the blob's provider. None when there is no such version."""
    rows = _CONFIG_VERSION_FOR_CALL.rows(project_id=project.pk, config_id=config_id, version=version)
    if not rows:
        return None
    blob, has_credentials = rows[0]
    return blob, bool(has_credentials)


def config_latest_version(*, config: Config) -> int | None:
    return ConfigVersion.objects.filter(config=config).order_by("-version").values_list("version", flat=True).first()


def credential_list(*, project: Project):
    return ProviderCredential.objects.filter(project=project).order_by("provider")


def credential_get(*, project: Project, provider: str) -> ProviderCredential | None:
    return ProviderCredential.objects.filter(project=project, provider=provider).first()


def credential_exists(*, project: Project, provider: str) -> bool:
    return ProviderCredential.objects.filter(project=project, provider=provider).exists()


def providers_with_credentials(*, project: Project, providers: list[str]) -> set[str]:
    """Which of ``providers`` the project has credentials for (one query)."""
    return set(
        ProviderCredential.objects.filter(project=project, provider__in=providers)
        .order_by()
        .values_list("provider", flat=True)
    )


def _credentials_for_call(*, project_id: int, provider: str):
    # No ordering: the model's default one joins project and organization, on every LLM call.
    return (
        ProviderCredential.objects.filter(project_id=project_id, provider=provider)
        .order_by()
        .values_list("api_key_encrypted", "base_url", "organization", "id", *LIMIT_FIELDS)[:1]
    )


# Composed once by the ORM and prepared: it runs for every LLM job.
_CREDENTIALS_FOR_CALL = PreparedQuery(_credentials_for_call, project_id=int, provider=str)


def credentials_and_limits_for_call(*, project_id: int, provider: str) -> tuple[Credentials, CredentialLimits] | None:
    """The decrypted credentials a worker sends to the provider and the credential's limits, in one query; None
    when the project has none."""
    rows = _CREDENTIALS_FOR_CALL.rows(project_id=project_id, provider=provider)
    if not rows:
        return None
    encrypted, base_url, organization, credential_id, rpm, tpm, concurrency = rows[0]
    credentials = Credentials(api_key=crypto.decrypt(encrypted), base_url=base_url, organization=organization)
    limits = CredentialLimits(
        credential_id=credential_id, requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent_calls=concurrency
    )
    return credentials, limits


def credentials_for_call(*, project_id: int, provider: str) -> Credentials | None:
    """The decrypted credentials a worker sends to the provider; None when the project has none."""
    found = credentials_and_limits_for_call(project_id=project_id, provider=provider)
    return None if found is None else found[0]
