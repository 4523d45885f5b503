"""The LLM_API job function, run by the high-priority generic task."""

from __future__ import annotations

from typing import Any

from django.db import connection

from jobs.registry import job_function

from . import limits, selectors
from .providers import ProviderError, get_provider
from .serializers import LlmCallResultSerializer


class CredentialsError(ProviderError):
    """The project's credentials for the provider are gone (deleted after submission) or unreadable."""


@job_function(job_type="LLM_API", result=LlmCallResultSerializer)
def execute_job(
    *,
    project_id: int,
    job_id: str,
    task_id: str,
    task_instance: Any,
    blob: dict[str, Any],
    query: str,
    config: dict[str, Any] | None = None,
    request_metadata: dict[str, Any] | None = None,
    **_: Any,
) -> dict[str, Any]:
    completion = blob["completion"]
    provider = get_provider(completion["provider"])
    found = selectors.credentials_and_limits_for_call(project_id=project_id, provider=provider.name)
    if found is None:
        raise CredentialsError(f"this project has no credentials for provider {provider.name!r} any more")
    credentials, credential_limits = found
    estimated_tokens = limits.estimate_tokens({**provider.defaults(), **completion["params"]}, query)

    # Give the database connection back (to the pool, under gevent) before waiting seconds on the provider:
    # hundreds of calls in flight must not hold hundreds of PostgreSQL connections.
    if not connection.in_atomic_block:
        connection.close()

    # Waits here (briefly) or is deferred (JobDeferred) while the credential is over one of its limits.
    with limits.call_slot(credential_limits, estimated_tokens=estimated_tokens) as slot:
        answer = provider.complete(credentials=credentials, params=completion["params"], query=query)
        slot.used(answer.total_tokens)
    return {
        "response": {
            "provider_response_id": answer.provider_response_id,
            "provider": provider.name,
            "model": answer.model,
            "output": {"text": answer.text},
        },
        "usage": {
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "total_tokens": answer.total_tokens,
        },
        "config": config,
        "request_metadata": request_metadata,
    }
