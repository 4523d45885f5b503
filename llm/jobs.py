"""The LLM_API job function, run by the high-priority generic task."""

from __future__ import annotations

from typing import Any

from django.db import connection

from jobs.registry import job_function

from . import selectors
from .providers import ProviderError, get_provider


class CredentialsError(ProviderError):
    """The project's credentials for the provider are gone (deleted after submission) or unreadable."""


@job_function(job_type="LLM_API")
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
    credentials = selectors.credentials_for_call(project_id=project_id, provider=provider.name)
    if credentials is None:
        raise CredentialsError(f"this project has no credentials for provider {provider.name!r} any more")

    # Give the database connection back (to the pool, under gevent) before waiting seconds on the provider:
    # hundreds of calls in flight must not hold hundreds of PostgreSQL connections.
    if not connection.in_atomic_block:
        connection.close()

    answer = provider.complete(credentials=credentials, params=completion["params"], query=query)
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
