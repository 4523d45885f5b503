"""How long a failed attempt waits before the next one: a job's retry, a webhook delivery's."""

from __future__ import annotations

import random


def backoff_delay(retries: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; never shorter than the server's Retry-After."""
    ceiling = min(cap, base * (2**retries))
    delay = random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


# Fraction of a Retry-After added at random (at least up to RETRY_AFTER_MIN_JITTER seconds).
RETRY_AFTER_JITTER = 0.1
RETRY_AFTER_MIN_JITTER = 0.1


def job_retry_delay(retries: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """How long a job waits before its next attempt.

    A Retry-After (or retry-after-ms) is the provider saying when it takes calls again: the job waits that long
    plus a little jitter (so the calls it refused together do not all come back in the same instant), not the
    generic backoff, which is for failures that say nothing of when they end and would wait minutes.
    """
    if retry_after is None:
        return backoff_delay(retries, base=base, cap=cap)
    wait = min(max(retry_after, 0.0), cap)
    return wait + random.uniform(0, max(RETRY_AFTER_MIN_JITTER, RETRY_AFTER_JITTER * wait))
