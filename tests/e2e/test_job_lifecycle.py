"""A job's life as the README promises it, against a real worker, broker, database and webhook receiver: cancel
and retry over the API, the webhooks of each outcome, and the task result rows of a job's retries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult
from standardwebhooks import Webhook

from jobs.models import DeliveryStatus, Job, JobStatus, WebhookDelivery
from jobs.services import job_create
from tests import job_functions  # noqa: F401  - registers the test job functions in this process too
from tests.conftest import WorkerProcess, purge_queues, wait_until
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The worker may deliver to the receiver on 127.0.0.1 over http.
WORKER_ENV = {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker) -> Iterator[WorkerProcess]:
    """One worker for the module's tests (each test's jobs are its own; the database is flushed between them)."""
    with django_db_blocker.unblock():
        purge_queues()
        worker = WorkerProcess(queues="high_priority,low_priority,default", env=WORKER_ENV).start()
        try:
            yield worker
        finally:
            worker.discard()
            purge_queues()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def local_callbacks(settings) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def webhook_bodies(api_client, requests) -> list[dict]:
    secret = api_client.get("/api/v1/webhooks/secret/").json()["secret"]
    return [Webhook(secret).verify(r.body, r.headers) for r in requests]


def test_a_running_job_cancelled_without_terminate_stays_cancelled_then_a_retry_runs_it(
    worker, api_client, project, receiver, local_callbacks, tmp_path
):
    release = tmp_path / "release"
    with transaction.atomic():
        job = job_create(
            project=project,
            function_path="tests.job_functions.wait_for_file",
            params={"path": str(release)},
            callback_url=receiver.url("/hook"),
        )
    wait_until(lambda: Job.objects.get(id=job.id).status == JobStatus.PROCESSING, timeout=30, message="the job to run")
    first_task = Job.objects.get(id=job.id).task_id

    resp = api_client.post(f"/api/v1/jobs/{job.id}/cancel/", {}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
    release.touch()  # the function, not terminated, runs to its end: its result must be dropped
    wait_until(
        lambda: TaskResult.objects.filter(task_id=first_task, status="SUCCESS").exists(),
        timeout=30,
        message="the cancelled job's task to return",
    )
    job.refresh_from_db()
    assert (job.status, job.result) == (JobStatus.CANCELLED, None)
    [cancelled] = receiver.wait_for(1, path="/hook")
    assert webhook_bodies(api_client, [cancelled])[0]["metadata"]["status"] == "CANCELLED"
    assert list(WebhookDelivery.objects.filter(job=job).values_list("event", flat=True)) == ["job.cancelled"]

    resp = api_client.post(f"/api/v1/jobs/{job.id}/retry/")
    assert resp.status_code == 202, resp.content
    wait_until(lambda: Job.objects.get(id=job.id).status == JobStatus.SUCCESS, timeout=30, message="the retry")
    job.refresh_from_db()
    assert job.task_id != first_task and job.result == {"released": True}
    assert TaskResult.objects.get(task_id=job.task_id).status == "SUCCESS"
    requests = receiver.wait_for(2, path="/hook")
    bodies = webhook_bodies(api_client, requests)
    assert [b["metadata"]["status"] for b in bodies] == ["CANCELLED", "SUCCESS"]
    assert bodies[1]["data"] == {"released": True}
    deliveries = WebhookDelivery.objects.filter(job=job).order_by("created_at")
    assert [(d.event, d.status) for d in deliveries] == [
        ("job.cancelled", DeliveryStatus.DELIVERED),
        ("job.succeeded", DeliveryStatus.DELIVERED),
    ]
