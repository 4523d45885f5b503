"""The LLM_API job function, run by the high-priority generic task: the primary provider, then its fallbacks."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connection

from jobs.exceptions import RetryableJobError
from jobs.registry import job_function

from . import limits, pricing, selectors
from .pricing import cost_for
from .providers import Completion, ProviderError, get_provider
from .serializers import LlmCallResultSerializer

logger = logging.getLogger(__name__)


class CredentialsError(ProviderError):
    """The project's credentials for the provider are gone (deleted after submission) or unreadable."""


def is_outage(exc: RetryableJobError) -> bool:
    """Whether a retryable error says the provider is down rather than busy: a 5xx (500, 502, 503, 504, and
    Anthropic's 529 overloaded), a refused connection or a timeout (no status). Those go to the next fallback at
    once; a 429 is the provider's quota, which the job's own retries wait out before a fallback is tried."""
    return exc.status is None or exc.status >= 500


def usage_columns(result: Any) -> dict[str, Any]:
    """The job's usage columns from its result (jobs.registry ``accounting``): who answered, tokens and cost."""
    response = result.get("response") or {}
    return pricing.usage_columns(response.get("provider"), response.get("model"), result.get("usage") or {})


@job_function(job_type="LLM_API", result=LlmCallResultSerializer, accounting=usage_columns)
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
    entries = [blob["completion"], *blob.get("fallbacks", [])]
    # On the job's last delivery a 429 goes to the next fallback too: there is no retry left to wait it out.
    last_delivery = task_instance is None or task_instance.request.retries >= task_instance.max_retries
    attempts: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        started = time.monotonic()
        try:
            answer = _call(project_id=project_id, entry=entry, query=query)
        except RetryableJobError as exc:
            attempts.append(_attempt(entry, started, error=str(exc)))
            has_next = index + 1 < len(entries)
            if has_next and (is_outage(exc) or last_delivery):
                logger.warning("%s failed (%s); trying fallback %s", entry["provider"], exc, index + 1)
                continue
            if len(attempts) == 1:
                raise
            # The job retries (or, on its last delivery, fails with) every attempt's error, from the primary again.
            raise RetryableJobError(_summary(attempts), retry_after=exc.retry_after, status=exc.status) from None
        except ProviderError as exc:
            attempts.append(_attempt(entry, started, error=str(exc)))
            if len(attempts) == 1:
                raise
            raise type(exc)(_summary(attempts)) from None
        attempts.append(_attempt(entry, started, model=answer.model))
        return _result(entry["provider"], answer, attempts, config=config, request_metadata=request_metadata)
    raise AssertionError("unreachable: the last entry returns or raises")  # pragma: no cover


def _call(*, project_id: int, entry: dict[str, Any], query: str) -> Completion:
    provider = get_provider(entry["provider"])
    found = selectors.credentials_and_limits_for_call(project_id=project_id, provider=provider.name)
    if found is None:
        raise CredentialsError(f"this project has no credentials for provider {provider.name!r} any more")
    credentials, credential_limits = found
    estimated_tokens = limits.estimate_tokens({**provider.defaults(), **entry["params"]}, query)

    # Give the database connection back (to the pool, under gevent) before waiting seconds on the provider:
    # hundreds of calls in flight must not hold hundreds of PostgreSQL connections.
    if not connection.in_atomic_block:
        connection.close()

    # Waits here (briefly) or is deferred (JobDeferred) while the credential is over one of its limits.
    with limits.call_slot(credential_limits, estimated_tokens=estimated_tokens) as slot:
        answer = provider.complete(credentials=credentials, params=entry["params"], query=query)
        slot.used(answer.total_tokens)
    return answer


def _attempt(entry: dict[str, Any], started: float, *, model: str = "", error: str | None = None) -> dict[str, Any]:
    return {
        "provider": entry["provider"],
        "model": model or entry["params"].get("model", ""),
        "error": error,
        "seconds": round(time.monotonic() - started, 3),
    }


def _summary(attempts: list[dict[str, Any]]) -> str:
    """Every attempt's error, in order: the job's error when all of them failed."""
    return f"all {len(attempts)} providers failed: " + "; ".join(
        f"[{i}] {a['provider']} {a['model']}: {a['error']}" for i, a in enumerate(attempts, 1)
    )


def _result(
    provider: str,
    answer: Completion,
    attempts: list[dict[str, Any]],
    *,
    config: dict[str, Any] | None,
    request_metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": answer.input_tokens,
        "cached_input_tokens": answer.cached_input_tokens,
        "output_tokens": answer.output_tokens,
        "reasoning_tokens": answer.reasoning_tokens,
        "total_tokens": answer.total_tokens,
    }
    warnings = []
    cost = cost_for(provider, answer.model, usage)
    if cost is None:
        # Never an error: the call was made and answered; only its price is unknown (add it in admin).
        warnings.append(f"no price for model {answer.model!r} of provider {provider!r}: cost unknown")
    usage["cost"] = None if cost is None else str(cost)
    return {
        "response": {
            "provider_response_id": answer.provider_response_id,
            "provider": provider,
            "model": answer.model,
            "output": {"text": answer.text},
        },
        "usage": usage,
        "attempts": attempts,
        "warnings": warnings,
        "config": config,
        "request_metadata": request_metadata,
    }
