"""Provider rate limits end to end: Retry-After honoured, and a credential's limits held across worker processes."""

import re

import pytest

from jobs.models import Job, JobStatus
from llm.models import CredentialUsage
from tests.conftest import wait_until
from tests.llm.conftest import BLOBS, FAKE_API_KEY, base_url_for, unique

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The production backoff (60 s base): a retry that waited for it instead of the Retry-After would take minutes.
PRODUCTION_BACKOFF = {"CELERY_TASK_DEFAULT_RETRY_DELAY": "60", "CELERY_TASK_RETRY_BACKOFF_MAX": "600"}
WORKER = {"queues": "high_priority", "pool": "gevent", "concurrency": 20}
RETRYING = re.compile(r"^retrying in ([0-9.]+) s after: ")


def submit(client, provider: str, query: str) -> str:
    resp = client.post("/api/v1/llm/call", {"config": {"blob": BLOBS[provider]}, "query": query}, "json")
    assert resp.status_code == 202, resp.content
    return resp.json()["job_id"]


def retries_until_finished(job_id: str, timeout: float = 60) -> list[tuple[float, str]]:
    """The delays and reasons the job recorded for its retries ("retrying in X s after: …" while it waits), until
    it finishes."""
    retries: dict[int, tuple[float, str]] = {}  # by the attempt that failed

    def finished() -> bool:
        status, error, attempts = Job.objects.filter(id=job_id).values_list("status", "error", "attempts").get()
        match = RETRYING.match(error)
        if match and status == JobStatus.PENDING:
            retries[attempts] = (float(match.group(1)), error[match.end() :])
        return status in (JobStatus.SUCCESS, JobStatus.FAILED)

    wait_until(finished, timeout=timeout, interval=0.02, message="the job to finish")
    return [retries[attempt] for attempt in sorted(retries)]


def retry_delays_until_finished(job_id: str, timeout: float = 60) -> list[float]:
    return [delay for delay, _ in retries_until_finished(job_id, timeout)]


@pytest.mark.parametrize("header", ["retry_after=1", "retry_after_ms=1000"])
def test_a_429_with_retry_after_is_retried_after_it_not_after_the_backoff(
    header, start_worker, api_client, provider_credentials, project
):
    provider_credentials(project, ["openai"])
    start_worker(**WORKER, env=PRODUCTION_BACKOFF)
    job_id = submit(api_client, "openai", unique(f"[fake:status=429,{header},times=2]"))

    delays = retry_delays_until_finished(job_id)

    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.SUCCESS, job.error
    assert job.attempts == 3
    assert len(delays) == 2 and all(1.0 <= delay <= 1.2 for delay in delays), delays
    assert (job.finished_at - job.created_at).total_seconds() < 15


# The PostgreSQL counters run the same decisions (tests/llm/test_limits.py runs each limit on both); end to end,
# a minute of the suite's time goes to the Redis ones, the production layout.
@pytest.mark.parametrize("counters", ["redis"])
def test_a_credentials_requests_per_minute_hold_across_two_workers(counters, start_worker, api_client, fake_provider):
    """Eight calls against a limit of four a minute, on two worker processes: four reach the provider, the other
    four wait PENDING for the minute to pass (not counted as retries: with none allowed, a counted wait would fail
    them). The provider, which answers 429 above four a minute, never has to. The minute itself is not waited for
    here (the suite's time is shared): bench/fairness.py runs 2 x N calls against a limit of N to the end, and
    tests/llm/test_limits.py the window's arithmetic. The counters are in Redis, or in PostgreSQL when the workers
    have no REDIS_URL."""
    fake_provider.rate_limit = 4
    resp = api_client.put(
        "/api/v1/credentials/openai/",
        {"api_key": FAKE_API_KEY, "base_url": base_url_for(fake_provider, "openai"), "requests_per_minute": 4},
        "json",
    )
    assert resp.status_code == 200 and resp.json()["requests_per_minute"] == 4, resp.content
    env = {"CELERY_TASK_MAX_RETRIES": "0", **({"REDIS_URL": ""} if counters == "postgres" else {})}
    workers = [start_worker(**WORKER, env=env) for _ in range(2)]
    ids = [submit(api_client, "openai", unique("limited")) for _ in range(8)]

    wait_until(
        lambda: Job.objects.filter(id__in=ids, error__startswith="retrying in").count() == 4,
        timeout=30,
        message="four jobs waiting for their turn",
    )
    waiting = Job.objects.filter(id__in=ids, status=JobStatus.PENDING)
    assert {job.error.split(" after: ")[1] for job in waiting} == {
        "waiting for its turn: the credential's requests per minute limit (4) is reached"
    }
    assert all(59 <= float(RETRYING.match(job.error).group(1)) <= 63 for job in waiting)
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() == 4,
        timeout=30,
        message="the four calls within the limit to succeed",
    )

    assert Job.objects.filter(id__in=ids, status=JobStatus.PENDING).count() == 4  # still waiting their turn
    assert fake_provider.rate_limited == 0
    assert fake_provider.count(text="limited") == 4
    assert fake_provider.max_calls_in_window(60) == 4
    assert sum("job started" in worker.log() for worker in workers) >= 1
    assert CredentialUsage.objects.exists() == (counters == "postgres")


def test_a_429_pauses_that_credentials_calls_and_not_another_projects(
    start_worker, api_client, other_client, provider_credentials, project, other_project, fake_provider
):
    provider_credentials(project, ["openai"])
    provider_credentials(other_project, ["openai"])
    start_worker(**WORKER, env=PRODUCTION_BACKOFF)
    refused = submit(api_client, "openai", unique("[fake:status=429,retry_after=4,times=1]"))
    wait_until(  # the worker has had the 429 (and paused the credential) once the job waits for its retry
        lambda: Job.objects.filter(id=refused, status=JobStatus.PENDING, error__startswith="retrying in").exists(),
        timeout=30,
        message="the 429",
    )
    paused = submit(api_client, "openai", unique("same credential"))
    other = submit(other_client, "openai", unique("other credential"))

    paused_waits = retries_until_finished(paused)
    wait_until(lambda: Job.objects.get(id=refused).status == JobStatus.SUCCESS, timeout=30, message="the retry")

    assert Job.objects.get(id=paused).status == JobStatus.SUCCESS
    assert len(paused_waits) == 1, paused_waits
    ((delay, reason),) = paused_waits
    assert 1 <= delay <= 4.5 and "the provider rate-limited this credential" in reason  # the rest of the pause
    calls = {c["text"].split(" #")[0]: c["at"] for c in fake_provider.calls if c["n"] == 1}
    job = Job.objects.get(id=other)
    assert job.status == JobStatus.SUCCESS and job.attempts == 1 and job.error == ""
    assert calls["same credential"] - calls["[fake:status=429,retry_after=4,times=1]"] >= 3.9
    assert calls["other credential"] < calls["same credential"]  # not paused: it went while the other waited


def test_a_credentials_concurrent_calls_hold_across_two_workers(start_worker, api_client, fake_provider):
    fake_provider.latency = 0.5
    resp = api_client.put(
        "/api/v1/credentials/openai/",
        {"api_key": FAKE_API_KEY, "base_url": base_url_for(fake_provider, "openai"), "max_concurrent_calls": 2},
        "json",
    )
    assert resp.status_code == 200, resp.content
    for _ in range(2):
        start_worker(**WORKER, env={"CELERY_TASK_MAX_RETRIES": "0"})
    ids = [submit(api_client, "openai", unique("concurrent")) for _ in range(10)]
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status__in=[JobStatus.SUCCESS, JobStatus.FAILED]).count() == 10,
        timeout=120,
        message="the ten calls to finish",
    )
    assert set(Job.objects.filter(id__in=ids).values_list("status", flat=True)) == {JobStatus.SUCCESS}
    assert fake_provider.count(text="concurrent") == 10
    assert fake_provider.peak_in_flight == 2
