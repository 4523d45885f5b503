"""/metrics: counters and histograms written by real worker processes, queue depths read from the broker."""

import pytest
from django.db import transaction
from prometheus_client.parser import text_string_to_metric_families

import tests.job_functions  # noqa: F401  (registers the test job functions in this process)
from jobs.models import Job, JobStatus
from jobs.services import job_create
from kaapi import metrics
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    resp = client.get("/metrics", **headers)
    assert resp.status_code == 200, resp.content
    assert resp["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.content.decode())
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_metrics_count_jobs_run_by_real_workers(start_worker, api_client, client, settings):
    settings.METRICS_QUEUE_DEPTH_CACHE_SECONDS = 0
    before = scrape(client)
    start_worker(queues="high_priority", concurrency=2)  # prefork: the jobs are counted in two child processes

    ids = [
        api_client.post("/api/v1/jobs/echo/", {"params": {"n": n}}, format="json").json()["job_id"] for n in range(3)
    ]
    with transaction.atomic():
        crashed = job_create(project=api_client.project, function_path="tests.job_functions.crash")
        # nobody consumes low_priority: these two wait in the queue
        for _ in range(2):
            job_create(project=api_client.project, function_path="jobs.functions.echo", priority="low")
    wait_until(
        lambda: (
            Job.objects.filter(id__in=[*ids, crashed.id], status__in=[JobStatus.SUCCESS, JobStatus.FAILED]).count() == 4
        ),
        timeout=60,
    )

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    def settled():
        # a worker records a finished job just after it wrote the job's status: scrape until it did
        nonlocal after
        after = scrape(client)
        return (
            delta("kaapi_jobs_finished_total", job_type="ECHO", status="SUCCESS") >= 3
            and delta("kaapi_jobs_finished_total", job_type="TEST", status="FAILED") >= 1
            and value(after, "kaapi_queue_messages", queue="low_priority") == 2
        )

    after = {}
    wait_until(settled, timeout=20, message="the finished jobs and the two waiting messages to show in /metrics")
    assert delta("kaapi_jobs_submitted_total", job_type="ECHO", queue="high_priority") == 3
    assert delta("kaapi_jobs_submitted_total", job_type="ECHO", queue="low_priority") == 2
    assert delta("kaapi_jobs_submitted_total", job_type="TEST", queue="high_priority") == 1
    assert delta("kaapi_jobs_finished_total", job_type="ECHO", status="SUCCESS") == 3
    assert delta("kaapi_jobs_finished_total", job_type="TEST", status="FAILED") == 1
    assert delta("kaapi_job_run_seconds_count", job_type="ECHO", status="SUCCESS") == 3
    assert delta("kaapi_job_run_seconds_bucket", job_type="ECHO", status="SUCCESS", le="+Inf") == 3
    assert delta("kaapi_job_queue_wait_seconds_count", job_type="ECHO", queue="high_priority") == 3
    assert delta("kaapi_job_queue_wait_seconds_sum", job_type="ECHO", queue="high_priority") > 0
    assert value(after, "kaapi_broker_up") == 1
    assert value(after, "kaapi_queue_messages", queue="high_priority") == 0
    assert value(after, "kaapi_queue_consumers", queue="high_priority") == 1
    assert value(after, "kaapi_queue_consumers", queue="low_priority") == 0


def test_webhook_and_provider_counters_are_exported(client):
    before = scrape(client)
    metrics.count_webhook("delivered")
    metrics.count_provider_error("openai", "rate_limited")
    after = scrape(client)
    delivered = ("kaapi_webhook_deliveries_total", (("outcome", "delivered"),))
    limited = ("kaapi_provider_errors_total", (("kind", "rate_limited"), ("provider", "openai")))
    assert after[delivered] - before.get(delivered, 0) == 1
    assert after[limited] - before.get(limited, 0) == 1


def test_metrics_token_requires_a_bearer(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")


def test_an_unreachable_broker_shows_as_down_not_as_an_error(client, settings, monkeypatch):
    settings.METRICS_QUEUE_DEPTH_CACHE_SECONDS = 0

    def refused(self):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(metrics.QueueDepthCollector, "_read", refused)
    samples = scrape(client)
    assert value(samples, "kaapi_broker_up") == 0
    assert not any(name == "kaapi_queue_messages" for name, _ in samples)


def test_waiting_jobs_are_counted_per_reason(client, settings, project):
    from jobs.models import WaitingReason
    from tests.factories import job_row

    settings.METRICS_QUEUE_DEPTH_CACHE_SECONDS = 0
    for reason in (
        [WaitingReason.MAX_CONCURRENT_JOBS] * 3 + [WaitingReason.SUBMISSION_RATE] * 2 + [WaitingReason.RETRY, ""]
    ):
        job_row(project, waiting_reason=reason)
    job_row(project, waiting_reason="", dispatched_at="2026-01-01T00:00:00Z")  # published: not waiting
    samples = scrape(client)
    assert value(samples, "kaapi_jobs_waiting", reason="max_concurrent_jobs") == 3
    assert value(samples, "kaapi_jobs_waiting", reason="submission_rate") == 2
    assert value(samples, "kaapi_jobs_waiting", reason="retry") == 1
    assert value(samples, "kaapi_jobs_waiting", reason="dispatching") == 1
