"""A job's life as the README promises it, against a real worker, broker, database and webhook receiver: cancel
and retry over the API, the webhooks of each outcome, and the task result rows of a job's retries."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from django.db import transaction
from django.utils import timezone
from django_celery_results.models import TaskResult
from standardwebhooks import Webhook

from jobs.models import DeliveryStatus, Job, JobStatus, WebhookDelivery
from jobs.services import job_create
from jobs.webhooks.services import SWEEP_GRACE
from kaapi.celery import app
from tenancy.services import api_key_create
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
        worker = WorkerProcess(queues="high_priority,low_priority,default,cron", env=WORKER_ENV).start()
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


def test_inline_dispatch_publishes_before_the_answer_through_gunicorn(worker, start_web, project):
    web = start_web(workers=1, env={"JOB_DISPATCH_MODE": "inline"})
    headers = {"X-API-KEY": api_key_create(project=project).plaintext}
    resp = requests.post(f"{web.url}/api/v1/jobs/echo/", json={"params": {"n": 1}}, headers=headers, timeout=30)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    # Published in the request, before the 202: no dispatcher thread is left to do it after the answer.
    assert Job.objects.get(id=job_id).dispatched_at is not None
    wait_until(lambda: Job.objects.get(id=job_id).status == JobStatus.SUCCESS, timeout=30, message="the job")
    assert Job.objects.get(id=job_id).result == {"delay": 0.0, "n": 1}


def test_a_job_submitted_from_inside_a_task_runs(worker, project):
    with transaction.atomic():
        parent = job_create(project=project, function_path="tests.job_functions.submit_child")
    wait_until(lambda: Job.objects.get(id=parent.id).status == JobStatus.SUCCESS, timeout=30, message="the parent")
    child_id = Job.objects.get(id=parent.id).result["child"]
    wait_until(lambda: Job.objects.get(id=child_id).status == JobStatus.SUCCESS, timeout=30, message="the child")
    assert Job.objects.get(id=child_id).result == {"delay": 0.0, "parent": str(parent.id)}


def test_a_retried_job_leaves_one_task_result_row_with_its_outcome(worker, project):
    with transaction.atomic():
        job = job_create(project=project, function_path="tests.job_functions.fail_retryably", params={"failures": 2})
    wait_until(lambda: Job.objects.get(id=job.id).status == JobStatus.SUCCESS, timeout=60, message="the retries")
    job.refresh_from_db()
    assert (job.attempts, job.result) == (3, {"attempts": 3})
    # The retries are deliveries of the same task id: one row, its final state, not a row per attempt
    row = TaskResult.objects.get(task_id=job.task_id)
    assert row.status == "SUCCESS" and row.date_done >= job.finished_at.replace(microsecond=0)
    assert TaskResult.objects.filter(task_kwargs__contains=str(job.id)).count() == 1


def test_webhook_failures_through_a_real_worker(worker, project, receiver, local_callbacks):
    """503 with Retry-After: the next attempt is stored that far away (beyond the 10 minutes a message's countdown is
    trusted with), and the cron sweep delivers it when due; a closed port is a failed attempt retried later."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    receiver.script("/busy", [(503, {"Retry-After": "900"})])
    before = timezone.now()
    with transaction.atomic():
        busy = job_create(project=project, function_path="jobs.functions.echo", callback_url=receiver.url("/busy"))
        refused = job_create(
            project=project,
            function_path="jobs.functions.echo",
            callback_url=f"http://127.0.0.1:{closed.getsockname()[1]}/hook",
        )
    try:

        def attempted(job) -> WebhookDelivery | None:
            return WebhookDelivery.objects.filter(job=job, attempts=1).exclude(last_error="").first()

        delivery = wait_until(lambda: attempted(busy), timeout=30, message="the 503 attempt")
        assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.PENDING, 503)
        assert delivery.next_attempt_at >= before + timedelta(seconds=900)
        delivery = wait_until(lambda: attempted(refused), timeout=30, message="the refused attempt")
        assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code is None
        assert delivery.next_attempt_at > timezone.now()
    finally:
        closed.close()

    # Its time come and gone (moved back rather than waited for), the cron sweep as beat runs it delivers it.
    WebhookDelivery.objects.filter(job=busy).update(next_attempt_at=timezone.now() - SWEEP_GRACE * 2)
    app.send_task("jobs_cron_deliver_due_webhooks")
    wait_until(
        lambda: WebhookDelivery.objects.filter(job=busy, status=DeliveryStatus.DELIVERED).exists(),
        timeout=30,
        message="the due delivery to be sent by the sweep",
    )
    assert [r.status for r in receiver.requests("/busy")] == [503, 200]
