"""LLM calls through the API and a real gevent worker against the fake provider."""

import pytest

import tests.job_functions  # noqa: F401  registers sleep_forever in this process too
from jobs.models import Job, JobStatus
from jobs.services import job_create
from kaapi.outbound import NON_PUBLIC_BODY
from tests.conftest import wait_until
from tests.llm.conftest import BLOBS, unique

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORKER = {"queues": "high_priority", "pool": "gevent", "concurrency": 50, "env": {"LLM_READ_TIMEOUT": "1"}}


def submit(client, provider: str, query: str, **extra) -> str:
    resp = client.post("/api/v1/llm/call", {"config": {"blob": BLOBS[provider]}, "query": query, **extra}, "json")
    assert resp.status_code == 202, resp.content
    return resp.json()["job_id"]


def wait_finished(ids: list[str], timeout: float = 60) -> dict[str, Job]:
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status__in=[JobStatus.SUCCESS, JobStatus.FAILED]).count() == len(ids),
        timeout=timeout,
        message=f"{len(ids)} LLM jobs to finish",
    )
    return {str(job.id): job for job in Job.objects.filter(id__in=ids)}


def test_each_provider_succeeds_and_errors_retry_or_fail(start_worker, api_client, provider_credentials, project):
    provider_credentials(project)
    start_worker(**WORKER)
    ok = {p: submit(api_client, p, unique("What is AI?"), request_metadata={"p": p}) for p in BLOBS}
    retried = {
        kind: submit(api_client, provider, unique(directive))
        for kind, provider, directive in [
            ("429", "openai", "[fake:status=429,retry_after=1,times=1]"),
            ("500", "anthropic", "[fake:status=500,times=1]"),
            ("timeout", "openai-chat", "[fake:error=timeout,sleep=3,times=1]"),
        ]
    }
    failed = {
        "400": submit(api_client, "anthropic", unique("[fake:status=400]")),
        "malformed": submit(api_client, "openai", unique("[fake:error=malformed]")),
    }
    jobs = wait_finished([*ok.values(), *retried.values(), *failed.values()])

    for provider, job_id in ok.items():
        job = jobs[job_id]
        assert job.status == JobStatus.SUCCESS, job.error
        result = job.result
        assert result["response"]["provider"] == provider
        assert result["response"]["output"]["text"].startswith("Echo: What is AI?")
        assert result["response"]["provider_response_id"]
        assert result["response"]["model"].startswith(BLOBS[provider]["completion"]["params"]["model"])
        assert set(result["usage"]) == {
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost",
        }
        assert result["request_metadata"] == {"p": provider}
        assert job.attempts == 1

    for kind, job_id in retried.items():
        job = jobs[job_id]
        assert job.status == JobStatus.SUCCESS, (kind, job.error)
        assert job.attempts == 2, kind

    job = jobs[failed["400"]]
    assert job.status == JobStatus.FAILED and job.attempts == 1
    # The fake provider is on loopback: what a non-public address answers never reaches the tenant.
    assert job.error == f"ProviderError: anthropic returned 400: {NON_PUBLIC_BODY}"
    job = jobs[failed["malformed"]]
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert job.error.startswith("ProviderResponseError: openai returned a malformed response (not JSON)")


def test_many_calls_are_in_flight_at_once(start_worker, api_client, provider_credentials, project, fake_provider):
    """One gevent worker process keeps far more calls waiting on the provider than a prefork pool could."""
    provider_credentials(project, ["openai-chat"])
    fake_provider.gate.clear()  # every call waits at the provider until 25 of them wait there together
    start_worker(**{**WORKER, "env": {"LLM_READ_TIMEOUT": "60"}})
    ids = [submit(api_client, "openai-chat", unique(f"call {i}")) for i in range(100)]
    try:
        wait_until(lambda: fake_provider.in_flight >= 25, timeout=60, message="25 calls waiting on the provider")
    finally:
        fake_provider.gate.set()
    jobs = wait_finished(ids, timeout=90)
    assert all(job.status == JobStatus.SUCCESS for job in jobs.values())
    assert all(job.attempts == 1 for job in jobs.values())


def test_gevent_worker_keeps_time_limits_and_warm_shutdown(
    start_worker, api_client, provider_credentials, project, fake_provider
):
    """The soft time limit still ends a stuck job FAILED, and SIGTERM lets calls in flight finish."""
    provider_credentials(project, ["anthropic"])
    fake_provider.latency = 2.0
    env = {"CELERY_TASK_SOFT_TIME_LIMIT": "3", "CELERY_TASK_TIME_LIMIT": "6", "LLM_READ_TIMEOUT": "2.5"}
    env["DOCUMENT_TRANSFORM_TIMEOUT"] = "1"  # must stay below the soft limit too
    worker = start_worker(queues="high_priority", pool="gevent", concurrency=10, env=env)
    stuck = job_create(project=project, function_path="tests.job_functions.sleep_forever", priority="high")
    calls = [submit(api_client, "anthropic", unique("slow")) for _ in range(3)]
    wait_until(lambda: fake_provider.in_flight == 3, timeout=30, message="3 calls in flight")
    wait_until(lambda: Job.objects.get(id=stuck.id).status == JobStatus.PROCESSING, timeout=10)
    worker.stop()  # SIGTERM: warm shutdown
    assert worker.process.returncode == 0
    jobs = {str(j.id): j for j in Job.objects.filter(id__in=[*calls, stuck.id])}
    assert all(jobs[c].status == JobStatus.SUCCESS for c in calls), [jobs[c].error for c in calls]
    assert jobs[str(stuck.id)].status == JobStatus.FAILED
    assert jobs[str(stuck.id)].error == "timed out after 3 s"


def test_gevent_hard_time_limit_ends_the_job_failed(start_worker, project):
    env = {"CELERY_TASK_SOFT_TIME_LIMIT": "2", "CELERY_TASK_TIME_LIMIT": "3", "LLM_READ_TIMEOUT": "0.5"}
    env["DOCUMENT_TRANSFORM_TIMEOUT"] = "1"
    start_worker(queues="high_priority", pool="gevent", concurrency=5, env=env)
    job = job_create(project=project, function_path="tests.job_functions.ignore_soft_time_limit", priority="high")
    wait_until(lambda: Job.objects.get(id=job.id).status == JobStatus.FAILED, timeout=30, message="hard limit")
    assert Job.objects.get(id=job.id).error == "killed by the hard time limit (3 s)"
