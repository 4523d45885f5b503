"""LLM services: configs and their versions, provider credentials, and starting an LLM call."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from jobs.models import Job
from jobs.services import job_create
from kaapi import crypto, outbound
from tenancy.models import Project

from . import selectors
from .exceptions import ConfigNotFound, CredentialsMissing
from .models import Config, ConfigVersion, Provider, ProviderCredential
from .providers.base import base_url_problem
from .validation import validate_blob

EXECUTE_JOB_PATH = "llm.jobs.execute_job"
API_KEY_HINT_MIN_LENGTH = 16  # shorter keys show no hint at all


# --- Configs ------------------------------------------------------------------------------------
def _name_taken(*, project: Project, name: str, exclude_id: int | None = None) -> bool:
    return Config.objects.live().for_project(project).filter(name=name).exclude(id=exclude_id).exists()


def _name_taken_error(name: str) -> ValidationError:
    return ValidationError({"name": [f"a config named {name!r} already exists in this project"]})


@transaction.atomic
def config_create(*, project: Project, name: str, blob: Any, description: str = "", commit_message: str = "") -> Config:
    """A new config with its version 1."""
    blob = validate_blob(blob)
    if _name_taken(project=project, name=name):
        raise _name_taken_error(name)
    try:
        with transaction.atomic():
            config = Config.objects.create(project=project, name=name, description=description)
    except IntegrityError:  # a concurrent create won the name
        raise _name_taken_error(name) from None
    ConfigVersion.objects.create(config=config, version=1, blob=blob, commit_message=commit_message)
    return config


@transaction.atomic
def config_update(*, config: Config, name: str | None = None, description: str | None = None) -> Config:
    if name is not None and name != config.name:
        if _name_taken(project=config.project, name=name, exclude_id=config.id):
            raise _name_taken_error(name)
        config.name = name
    if description is not None:
        config.description = description
    try:
        with transaction.atomic():
            config.save(update_fields=["name", "description", "updated_at"])
    except IntegrityError:
        raise _name_taken_error(config.name) from None
    return config


def config_delete(*, config: Config) -> None:
    """Soft delete: the config disappears from the API and frees its name; its versions stay for the jobs."""
    Config.objects.filter(id=config.id, deleted_at__isnull=True).update(
        deleted_at=timezone.now(), updated_at=timezone.now()
    )


@transaction.atomic
def config_version_create(*, config: Config, blob: Any, commit_message: str = "") -> ConfigVersion:
    """The next version (n + 1). The config row is locked, so concurrent creations get distinct numbers."""
    blob = validate_blob(blob)
    Config.objects.select_for_update().filter(id=config.id).values_list("id", flat=True).get()
    latest = ConfigVersion.objects.filter(config=config).aggregate(n=Max("version"))["n"] or 0
    version = ConfigVersion.objects.create(config=config, version=latest + 1, blob=blob, commit_message=commit_message)
    Config.objects.filter(id=config.id).update(updated_at=timezone.now())
    return version


# --- Credentials ----------------------------------------------------------------------------------
def validate_base_url(url: str) -> str:
    """An http(s) URL that the provider's paths are appended to: no user info, query or fragment. Loopback, private
    and other non-public hosts only with ``LLM_ALLOW_PRIVATE_BASE_URLS``; a host name is resolved here to refuse
    early what the connection-time guard (kaapi.outbound) would refuse anyway."""
    problem = base_url_problem(url)
    if problem:
        raise ValidationError({"base_url": [f"the base URL {problem}"]})
    if settings.LLM_ALLOW_PRIVATE_BASE_URLS:
        return url
    parsed = urlsplit(url)
    host = parsed.hostname
    try:
        infos = socket.getaddrinfo(host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ValidationError({"base_url": [f"the host {host!r} cannot be resolved"]}) from None
    for info in infos:
        reason = outbound.refusal_reason(info[4][0], [])
        if reason:
            message = f"the host {host!r} is on a non-public network, which this server does not allow ({reason})"
            raise ValidationError({"base_url": [message]})
    return url


def _is_header_text(value: str, *, spaces: bool) -> bool:
    return all(0x21 <= ord(char) <= 0x7E or (spaces and char == " ") for char in value)


def validate_credential_headers(*, api_key: str | None = None, organization: str = "") -> None:
    """The key and the organization are sent as HTTP header values: visible ASCII only. A control character
    (a newline) makes the HTTP library refuse the request with an error that quotes the header, key included,
    and a non-ASCII character cannot be sent at all."""
    errors = {}
    if api_key is not None and not _is_header_text(api_key, spaces=False):
        errors["api_key"] = ["may contain only visible ASCII characters: no spaces, newlines or control characters"]
    if organization and not _is_header_text(organization, spaces=True):
        errors["organization"] = ["may contain only ASCII letters, digits, punctuation and spaces"]
    if errors:
        raise ValidationError(errors)


def credential_set(
    *,
    project: Project,
    provider: str,
    api_key: str,
    base_url: str = "",
    organization: str = "",
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    max_concurrent_calls: int | None = None,
) -> ProviderCredential:
    """Create or replace the project's credentials for ``provider``, with their limits (None: no limit); the key
    is stored encrypted."""
    validate_credential_headers(api_key=api_key, organization=organization)
    if provider not in Provider.values:
        raise ValidationError({"provider": [f"must be one of {', '.join(Provider.values)}"]})
    if base_url:
        validate_base_url(base_url)
    hint = api_key[-4:] if len(api_key) >= API_KEY_HINT_MIN_LENGTH else ""
    credential, _ = ProviderCredential.objects.update_or_create(
        project=project,
        provider=provider,
        defaults={
            "api_key_encrypted": crypto.encrypt(api_key),
            "api_key_hint": hint,
            "base_url": base_url,
            "organization": organization,
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
            "max_concurrent_calls": max_concurrent_calls,
        },
    )
    return credential


def credential_delete(*, project: Project, provider: str) -> bool:
    deleted, _ = ProviderCredential.objects.filter(project=project, provider=provider).delete()
    return bool(deleted)


def credentials_rotate() -> int:
    """Re-encrypt every stored credential under the newest key; returns how many were rewritten."""
    count = 0
    for credential in ProviderCredential.objects.only("id", "api_key_encrypted").iterator():
        rotated = crypto.rotate(credential.api_key_encrypted)
        ProviderCredential.objects.filter(id=credential.id).update(api_key_encrypted=rotated)
        count += 1
    return count


# --- The call -------------------------------------------------------------------------------------
def config_for_call(
    *, project: Project, config_id: int | None = None, config_version: int | None = None, blob: Any = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The blob a call will use and the config reference it came from (None for an inline blob).

    ``ConfigNotFound`` for an unknown config or version or another project's, ``ValidationError`` for an invalid
    blob, ``CredentialsMissing`` when the project has no credentials for the blob's provider.
    """
    reference = None
    if blob is None:
        found = selectors.config_version_for_call(project=project, config_id=config_id, version=config_version)  # type: ignore[arg-type]  # None: ConfigNotFound
        if found is None:
            if selectors.config_get(project=project, config_id=config_id) is None:  # type: ignore[arg-type]  # None: ConfigNotFound
                raise ConfigNotFound(f"config {config_id} does not exist in your project")
            raise ConfigNotFound(f"config {config_id} has no version {config_version}")
        blob, has_credentials = found
        reference = {"id": config_id, "version": config_version}
    else:
        blob = validate_blob(blob)
        has_credentials = selectors.credential_exists(project=project, provider=blob["completion"]["provider"])
    provider = blob["completion"]["provider"]
    if not has_credentials:
        raise CredentialsMissing(
            f"this project has no credentials for provider {provider!r}; set them with "
            f"PUT /api/v1/credentials/{provider}/"
        )
    return blob, reference


def llm_call_start(
    *,
    project: Project,
    query: str,
    config_id: int | None = None,
    config_version: int | None = None,
    blob: Any = None,
    callback_url: str = "",
    request_metadata: dict[str, Any] | None = None,
) -> Job:
    """Check everything the worker will need, then create the LLM_API job on the high-priority queue.

    Refused here, not later in the worker (see ``config_for_call``). The resolved blob travels in the job's
    params: versions are immutable.
    """
    blob, reference = config_for_call(project=project, config_id=config_id, config_version=config_version, blob=blob)
    params = {"blob": blob, "query": query, "config": reference, "request_metadata": request_metadata}
    # The job row is the only write: its INSERT is its own transaction, and the job is published after it.
    return job_create(
        project=project,
        function_path=EXECUTE_JOB_PATH,
        params=params,
        priority="high",
        callback_url=callback_url,
    )
