"""A credential's limits on the shared counters (Redis in the test suite)."""

import random
import uuid

import pytest

from jobs.exceptions import JobDeferred, RetryableJobError
from llm import limits
from llm.limits import CredentialLimits, call_slot, estimate_tokens
from llm.services import credential_set
from tenancy.services import project_get_or_create

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["redis", "postgres"])
def credential(request, settings):
    """Limits of a fresh credential, counted in Redis or (without REDIS_URL) in PostgreSQL."""
    settings.LLM_LIMIT_MAX_INLINE_WAIT = 0  # defer at once: no test waits here
    settings.CELERY_TASK_RETRY_BACKOFF_MAX = 600
    if request.param == "redis":
        # ids no earlier run used: the counters outlive a run by a minute
        return lambda **kw: CredentialLimits(credential_id=random.randrange(10**9, 2 * 10**9), **kw)
    settings.REDIS_URL = ""

    def make(**kw):
        project = project_get_or_create(organization_name="Org", project_name=uuid.uuid4().hex)
        credential = credential_set(project=project, provider="openai", api_key="sk-test-limits-0123456789")
        return CredentialLimits(credential_id=credential.id, **kw)

    return make


def call(credential_limits, tokens=1, used=None):
    with call_slot(credential_limits, estimated_tokens=tokens) as slot:
        if used is not None:
            slot.used(used)


def test_requests_per_minute_defers_the_call_over_the_limit_until_the_window_frees(credential):
    limited = credential(requests_per_minute=3)
    for _ in range(3):
        call(limited)
    with pytest.raises(JobDeferred) as deferred:
        call(limited)
    assert 59 <= deferred.value.delay <= 63
    assert "requests per minute limit (3)" in str(deferred.value)
    call(credential(requests_per_minute=3))  # another credential has its own window


def test_tokens_per_minute_counts_the_estimate_then_the_usage(credential):
    limited = credential(tokens_per_minute=100)
    call(limited, tokens=90, used=20)  # the estimate is corrected by what the provider counted
    call(limited, tokens=70, used=70)
    with pytest.raises(JobDeferred, match="tokens per minute limit"):
        call(limited, tokens=20)
    call(credential(tokens_per_minute=10), tokens=500)  # alone in its window, a large call still runs


def test_concurrent_calls_are_counted_while_they_wait_on_the_provider(credential):
    limited = credential(max_concurrent_calls=1)
    with call_slot(limited, estimated_tokens=1):
        with pytest.raises(JobDeferred, match="concurrent calls limit"):
            call(limited)
    call(limited)  # freed when the call ended


def test_a_429_pauses_that_credential_only(credential):
    throttled, other = credential(), credential()
    with pytest.raises(RetryableJobError):
        with call_slot(throttled, estimated_tokens=1):
            raise RetryableJobError("openai returned 429", retry_after=30, status=429)
    with pytest.raises(JobDeferred, match="paused") as deferred:
        call(throttled)
    assert 28 <= deferred.value.delay <= 32
    call(other)


def test_a_503_without_retry_after_does_not_pause(credential):
    limited = credential()
    with pytest.raises(RetryableJobError):
        with call_slot(limited, estimated_tokens=1):
            raise RetryableJobError("openai returned 503", status=503)
    call(limited)


def test_a_short_wait_is_waited_in_the_worker(settings, credential):
    settings.LLM_LIMIT_MAX_INLINE_WAIT = 5
    throttled = credential()
    with pytest.raises(RetryableJobError):
        with call_slot(throttled, estimated_tokens=1):
            raise RetryableJobError("openai returned 429", retry_after=0.3, status=429)
    call(throttled)  # no JobDeferred: the pause ended within the inline wait


def test_estimate_counts_text_and_the_output_the_call_may_use():
    assert estimate_tokens({"max_tokens": 64, "instructions": "x" * 40}, "y" * 400) == 64 + 110
    assert estimate_tokens({}, "hello") == 2
    assert limits.CHARS_PER_TOKEN == 4


def test_the_calls_of_a_credential_without_limits_take_no_lock_and_write_nothing(settings, credential):
    from llm.models import CredentialUsage

    unlimited = credential()
    for _ in range(3):
        call(unlimited)
    # in PostgreSQL a count would lock the credential's row for every call: nothing to count, nothing written
    assert not CredentialUsage.objects.filter(credential_id=unlimited.credential_id).exists()
