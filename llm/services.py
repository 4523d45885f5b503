"""LLM services: configs and their versions, provider credentials, and starting an LLM call."""

from __future__ import annotations

import socket
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from jobs.models import Job
from jobs.services import job_create, job_create_many
from jobs.webhooks import validate_callback_url
from kaapi import crypto, outbound
from tenancy.models import Project

from . import selectors, usage
from .exceptions import ConfigNotFound, CredentialsMissing
from .models import Config, ConfigVersion, Provider, ProviderCredential
from .providers.base import base_url_problem
from .validation import blob_providers, validate_blob

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
        reason = outbound.refusal_reason(str(info[4][0]), [])
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
def llm_call_start(
    *,
    project: Project,
    query: str,
    config_id: int | None = None,
    config_version: int | None = None,
    blob: Any = None,
    callback_url: str = "",
    request_metadata: dict[str, Any] | None = None,
    run_after: datetime | None = None,
) -> Job:
    """Check everything the worker will need (``config_for_call``) and the project's budget (``BudgetExceeded``),
    then create the LLM_API job on the high-priority queue (SCHEDULED until ``run_after`` when that is ahead). The
    resolved blob travels in the job's params: versions are immutable."""
    params = _call_params(
        project=project,
        query=query,
        config_id=config_id,
        config_version=config_version,
        blob=blob,
        request_metadata=request_metadata,
    )
    usage.budget_check(project=project)  # BudgetExceeded (402); no query without a budget
    # The job row is the only write: its INSERT is its own transaction, and the job is published after it.
    return job_create(
        project=project,
        function_path=EXECUTE_JOB_PATH,
        params=params,
        priority="high",
        callback_url=callback_url,
        run_after=run_after,
        labels=_labels(params),
    )


def config_for_call(
    *,
    project: Project,
    config_id: int | None = None,
    config_version: int | None = None,
    blob: Any = None,
    lookups: dict | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The blob a call will use and the config reference it came from (None for an inline blob), refused here
    rather than later in the worker: ``ConfigNotFound`` for an unknown config or version or another project's,
    ``ValidationError`` for an invalid blob or a fallback without credentials, ``CredentialsMissing`` when the
    project has no credentials for the blob's provider. ``lookups`` keeps what was looked up (versions,
    credentials) for the next calls of a batch."""
    lookups = {} if lookups is None else lookups
    reference = None
    if blob is None:
        version_key = ("version", config_id, config_version)
        if version_key not in lookups:
            lookups[version_key] = selectors.config_version_for_call(
                project=project,
                config_id=config_id,  # type: ignore[arg-type]  # the serializer requires it without a blob
                version=config_version,  # type: ignore[arg-type]  # None: ConfigNotFound
            )
        found = lookups[version_key]
        if found is None:
            if selectors.config_get(project=project, config_id=config_id) is None:  # type: ignore[arg-type]  # None: ConfigNotFound
                raise ConfigNotFound(f"config {config_id} does not exist in your project")
            raise ConfigNotFound(f"config {config_id} has no version {config_version}")
        blob, has_credentials = found
        reference = {"id": config_id, "version": config_version}
    else:
        blob = validate_blob(blob)
        credentials_key = ("credentials", blob["completion"]["provider"])
        if credentials_key not in lookups:
            lookups[credentials_key] = selectors.credential_exists(
                project=project, provider=blob["completion"]["provider"]
            )
        has_credentials = lookups[credentials_key]
    provider = blob["completion"]["provider"]
    if not has_credentials:
        raise CredentialsMissing(
            f"this project has no credentials for provider {provider!r}; set them with "
            f"PUT /api/v1/credentials/{provider}/"
        )
    _check_fallback_credentials(project=project, blob=blob)
    return blob, reference


def _call_params(
    *,
    project: Project,
    query: str,
    config_id: int | None,
    config_version: int | None,
    blob: Any,
    request_metadata: dict[str, Any] | None,
    lookups: dict | None = None,
) -> dict[str, Any]:
    """The params of a call's job: its blob resolved and checked (``config_for_call``), its query and metadata."""
    blob, reference = config_for_call(
        project=project, config_id=config_id, config_version=config_version, blob=blob, lookups=lookups
    )
    return {"blob": blob, "query": query, "config": reference, "request_metadata": request_metadata}


def _labels(params: dict[str, Any]) -> dict[str, Any]:
    """The intended provider, model and config in the job's own columns, for the usage reports (a fallback that
    answers replaces provider and model at SUCCESS)."""
    completion = params["blob"]["completion"]
    return {
        "provider": completion["provider"],
        "model": completion["params"]["model"],
        "config_id": (params["config"] or {}).get("id"),
    }


class BatchInvalid(Exception):
    """Calls of a batch that cannot run: ``errors`` maps each bad call's index to its messages per field."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]) -> None:
        super().__init__(f"{len(errors)} invalid call(s)")
        self.errors = errors


@transaction.atomic
def llm_call_batch_start(*, project: Project, calls: list[dict[str, Any]]) -> tuple[uuid.UUID, list[Job]]:
    """Create the LLM_API jobs of a bulk submission in one transaction, in order, all with one batch id, on the
    low-priority queue (background work: a batch does not hold up the project's single calls); they are admitted
    after commit like any job, so the project's limits and fairness apply to each call.

    ``calls`` are validated LLM call bodies (``config`` with ``id``/``version`` or ``blob``, ``query``, ...).
    Checked as a whole first: ``BatchInvalid`` names every call that would be refused alone, and nothing is
    created then.
    """
    errors: dict[int, dict[str, list[str]]] = {}
    params_list = []
    lookups: dict = {}
    for index, call in enumerate(calls):
        config = call["config"]
        try:
            validate_callback_url(call.get("callback_url", ""))
            params_list.append(
                _call_params(
                    project=project,
                    query=call["query"],
                    config_id=config.get("id"),
                    config_version=config.get("version"),
                    blob=config.get("blob"),
                    request_metadata=call.get("request_metadata"),
                    lookups=lookups,
                )
            )
        except ConfigNotFound as exc:
            errors[index] = {"config": [str(exc)]}
        except CredentialsMissing as exc:
            errors[index] = {"credentials": [str(exc)]}
        except ValidationError as exc:
            errors[index] = exc.message_dict
    if errors:
        raise BatchInvalid(errors)
    usage.budget_check(project=project)  # BudgetExceeded (402) for the whole batch
    batch_id = uuid.uuid4()
    jobs = job_create_many(
        project=project,
        function_path=EXECUTE_JOB_PATH,
        params_list=params_list,
        priority="low",
        callback_urls=[call.get("callback_url", "") for call in calls],
        run_afters=[call.get("run_after") for call in calls],
        batch_id=batch_id,
        labels_list=[_labels(params) for params in params_list],
    )
    return batch_id, jobs


def _check_fallback_credentials(*, project: Project, blob: dict[str, Any]) -> None:
    """A fallback without credentials is refused at submission like the primary, naming the entry."""
    fallbacks = blob.get("fallbacks") or []
    if not fallbacks:
        return
    present = selectors.providers_with_credentials(project=project, providers=blob_providers(blob))
    errors = {
        f"fallbacks[{i}].provider": [
            f"this project has no credentials for provider {entry['provider']!r}; set them with "
            f"PUT /api/v1/credentials/{entry['provider']}/"
        ]
        for i, entry in enumerate(fallbacks)
        if entry["provider"] not in present
    }
    if errors:
        raise ValidationError(errors)
