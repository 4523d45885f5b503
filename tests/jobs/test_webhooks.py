"""Signed webhook delivery: signatures verified with the standardwebhooks library, retries, 410, redirects,
the API, and that a webhook never changes a job's outcome."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

import tests.job_functions  # noqa: F401 - registers the test job functions in this process too
from jobs.models import DeliveryStatus, Job, JobStatus, WebhookDelivery
from jobs.services import job_create
from jobs.webhooks import webhook_attempt, webhook_payload, webhook_secret_get
from jobs.webhooks.services import TRACE_HEADER, _claim
from tests.conftest import wait_until
from tests.factories import job_row
from tests.fakes.webhook_receiver import WebhookReceiver

# The worker may deliver to the receiver on 127.0.0.1 over http, and retries quickly.
WORKER_ENV = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "WEBHOOK_RETRY_BASE_DELAY": "0.2",
    "WEBHOOK_RETRY_MAX_DELAY": "1",
    "WEBHOOK_MAX_ATTEMPTS": "3",
}


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def local_callbacks(settings):
    """Let this process accept callback URLs on 127.0.0.1 over http, as the worker does."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def submit_echo(client, url: str, *, request_id: str | None = None, **body) -> str:
    headers = {"HTTP_X_REQUEST_ID": request_id} if request_id else {}
    resp = client.post("/api/v1/jobs/echo/", {"callback_url": url, **body}, format="json", **headers)
    assert resp.status_code == 202, resp.content
    return resp.json()["job_id"]


def delivery_of(job_id) -> WebhookDelivery:
    return WebhookDelivery.objects.get(job_id=job_id)


def finished_delivery(job_id, timeout: float = 30) -> WebhookDelivery:
    return wait_until(
        lambda: WebhookDelivery.objects.filter(job_id=job_id).exclude(status=DeliveryStatus.PENDING).first(),
        timeout=timeout,
        message=f"the webhook of job {job_id} to finish",
    )


# --- In-process ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_submission_with_a_bad_callback_url_is_a_400(api_client):
    for url, message in [
        ("http://example.com/hook", "https"),
        ("https://10.0.0.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ]:
        resp = api_client.post("/api/v1/jobs/echo/", {"callback_url": url}, format="json")
        assert resp.status_code == 400, resp.content
        assert message in json.dumps(resp.json())
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_payload_carries_result_and_request_metadata(project):
    job = job_row(
        project,
        status=JobStatus.SUCCESS,
        params={"request_metadata": {"conversation": "c-1", "job_id": "spoofed"}},
        result={"answer": 42},
        trace_id="trace-1",
    )
    assert webhook_payload(job) == {
        "success": True,
        "data": {"answer": 42},
        "error": None,
        "metadata": {
            "job_id": str(job.id),
            "job_type": "ECHO",
            "status": "SUCCESS",
            "trace_id": "trace-1",
            "conversation": "c-1",
        },
    }


@pytest.mark.django_db
def test_a_due_delivery_is_claimed_once_and_leased(project, settings):
    job = job_row(project, status=JobStatus.SUCCESS)
    now = timezone.now()
    due, later = (
        WebhookDelivery.objects.create(
            job=job, url="https://hooks.test/x", event="job.succeeded", payload={}, next_attempt_at=at
        )
        for at in (now, now + timedelta(minutes=5))
    )
    claimed = _claim(str(due.id))
    assert claimed is not None and claimed.attempts == 1 and claimed.job.project == project
    lease = settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT
    assert claimed.next_attempt_at > now + timedelta(seconds=lease)
    due.refresh_from_db()
    assert (due.attempts, due.next_attempt_at) == (1, claimed.next_attempt_at)
    assert _claim(str(due.id)) is None  # leased: a second message for it does nothing
    assert _claim(str(later.id)) is None  # not due yet
    assert WebhookDelivery.objects.get(id=later.id).attempts == 0


@pytest.mark.django_db
def test_a_callback_resolving_to_loopback_is_refused_under_default_settings(project, receiver, settings):
    """The guard at connect time: 'localhost' passes submission (a name) but is never connected to."""
    settings.WEBHOOK_ALLOW_HTTP = True  # the receiver speaks http; the address policy stays the default
    job = job_row(
        project,
        status=JobStatus.SUCCESS,
        result={},
    )
    delivery = WebhookDelivery.objects.create(
        job=job,
        url=receiver.url("/x", host="localhost"),
        event="job.succeeded",
        payload={},
        next_attempt_at=timezone.now(),
    )
    assert webhook_attempt(delivery_id=str(delivery.id)) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 1
    assert "loopback" in delivery.last_error
    assert receiver.requests() == []
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS


@pytest.mark.django_db
def test_secret_rotation_through_the_api_signs_with_both_secrets_during_the_grace(api_client, other_client, project):
    first = api_client.get("/api/v1/webhooks/secret/").json()["secret"]
    assert first.startswith("whsec_")
    assert other_client.get("/api/v1/webhooks/secret/").json()["secret"] != first

    resp = api_client.post("/api/v1/webhooks/secret/rotate/")
    assert resp.status_code == 200
    second = resp.json()["secret"]
    assert second.startswith("whsec_") and second != first
    assert api_client.get("/api/v1/webhooks/secret/").json()["secret"] == second

    from jobs.webhooks.services import sign, signing_secrets

    now = timezone.now()
    body = '{"success":true}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(
            secrets=signing_secrets(webhook_secret_get(project=project), now=now),
            msg_id="msg_1",
            timestamp=now,
            body=body,
        ),
    }
    assert Webhook(second).verify(body, headers) == {"success": True}
    assert Webhook(first).verify(body, headers) == {"success": True}  # receivers not yet switched

    later = now + timedelta(days=2)
    assert signing_secrets(webhook_secret_get(project=project), now=later) == [second]


@pytest.mark.django_db
def test_job_webhooks_endpoint_is_scoped_to_the_project(api_client, other_client, local_callbacks):
    job_id = submit_echo(api_client, "http://127.0.0.1:9/hook")
    assert api_client.get(f"/api/v1/jobs/{job_id}/webhooks/").json() == []
    assert other_client.get(f"/api/v1/jobs/{job_id}/webhooks/").status_code == 404


# --- End to end: real worker, real receiver -------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_gevent_worker_publishes_and_delivers_webhooks(start_worker, api_client, receiver, local_callbacks):
    """The LLM workers' pool: a finished job's delivery is published from a greenlet (with its task-sent event on
    the process's events connection) and delivered."""
    worker = start_worker(queues="high_priority,default", pool="gevent", concurrency=20, env=WORKER_ENV)
    jobs = [submit_echo(api_client, receiver.url("/green"), params={"n": n}) for n in range(5)]
    receiver.wait_for(5, path="/green")
    assert {finished_delivery(job).status for job in jobs} == {DeliveryStatus.DELIVERED}
    log = worker.log()
    assert "job succeeded" in log and "could not send the" not in log


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_webhooks_end_to_end(start_worker, api_client, receiver, local_callbacks, project):
    # low_priority is not consumed: the job sent there stays PENDING until the test cancels it.
    start_worker(queues="high_priority,default", env=WORKER_ENV)
    receiver.script("/flaky", [500, 500])
    receiver.script("/gone", [410])
    receiver.script("/moved", [(302, {"Location": receiver.url("/elsewhere")})] * 5)

    ok = submit_echo(
        api_client,
        receiver.url("/ok"),
        request_id="abc-123",
        params={"n": 1, "request_metadata": {"conversation": "c-7"}},
    )
    flaky = submit_echo(api_client, receiver.url("/flaky"), params={"n": 2})
    gone = submit_echo(api_client, receiver.url("/gone"))
    moved = submit_echo(api_client, receiver.url("/moved"))
    parked = submit_echo(api_client, receiver.url("/cancelled"), priority="low")
    with transaction.atomic():
        crashed = job_create(
            project=project, function_path="tests.job_functions.crash", callback_url=receiver.url("/crashed")
        ).id
    assert api_client.post(f"/api/v1/jobs/{parked}/cancel/", {}, format="json").status_code == 200

    secret = api_client.get("/api/v1/webhooks/secret/").json()["secret"]

    # A delivery: the signature verifies with the standardwebhooks library; the body is the job's outcome.
    [request] = receiver.wait_for(1, path="/ok")
    job = Job.objects.get(id=ok)
    assert verify(secret, request) == {
        "success": True,
        "data": {"delay": 0.0, "n": 1, "request_metadata": {"conversation": "c-7"}},
        "error": None,
        "metadata": {
            "job_id": ok,
            "job_type": "ECHO",
            "status": "SUCCESS",
            "trace_id": job.trace_id,
            "conversation": "c-7",
        },
    }
    assert request.headers["webhook-id"] == str(delivery_of(ok).id)
    assert request.headers[TRACE_HEADER.lower()] == job.trace_id == "abc-123"  # the client's X-Request-ID
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(request.body, request.headers)
    deliveries = api_client.get(f"/api/v1/jobs/{ok}/webhooks/").json()
    assert [(d["event"], d["status"], d["attempts"], d["last_status_code"]) for d in deliveries] == [
        ("job.succeeded", "DELIVERED", 1, 200)
    ]

    # Failing twice, then succeeding: three attempts of the same message, one recorded success.
    delivery = finished_delivery(flaky)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("DELIVERED", 3, 200)
    attempts = receiver.requests("/flaky")
    assert [r.status for r in attempts] == [500, 500, 200]
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    assert all(verify(secret, r)["metadata"]["job_id"] == flaky for r in attempts)

    # 410 Gone stops at once.
    delivery = finished_delivery(gone)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("FAILED", 1, 410)
    assert len(receiver.requests("/gone")) == 1

    # A redirect is a failure (not followed): retried up to WEBHOOK_MAX_ATTEMPTS, then given up.
    delivery = finished_delivery(moved)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("FAILED", 3, 302)
    assert "redirect" in delivery.last_error
    assert receiver.requests("/elsewhere") == []

    # Failed webhooks left their jobs alone.
    assert Job.objects.get(id=gone).status == JobStatus.SUCCESS
    assert Job.objects.get(id=moved).status == JobStatus.SUCCESS

    # CANCELLED (from the API) and FAILED (in the worker) jobs are announced too.
    [request] = receiver.wait_for(1, path="/cancelled")
    body = verify(secret, request)
    assert (body["success"], body["data"], body["error"], body["metadata"]["status"]) == (
        False,
        None,
        "cancelled",
        "CANCELLED",
    )
    assert delivery_of(parked).event == "job.cancelled"
    [request] = receiver.wait_for(1, path="/crashed")
    body = verify(secret, request)
    assert body["success"] is False and "RuntimeError: boom" in body["error"]
    assert delivery_of(crashed).event == "job.failed"


@pytest.mark.django_db
def test_an_http_callback_is_not_sent_once_http_is_no_longer_allowed(project, receiver, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # the address is fine; the scheme is not
    job = job_row(
        project,
        status=JobStatus.SUCCESS,
    )
    delivery = WebhookDelivery.objects.create(
        job=job, url=receiver.url("/x"), event="job.succeeded", payload={}, next_attempt_at=timezone.now()
    )
    assert webhook_attempt(delivery_id=str(delivery.id)) == "failed"
    delivery.refresh_from_db()
    assert "https" in delivery.last_error
    assert receiver.requests() == []
    settings.WEBHOOK_ALLOW_HTTP = True
    assert webhook_attempt(delivery_id=str(delivery.id)) == "skipped"  # FAILED is final


@pytest.mark.django_db
def test_every_attempt_is_counted_by_its_outcome(project, receiver, local_callbacks, client):
    """``kaapi_webhook_deliveries_total{outcome}`` on /metrics, as operations.md documents it."""
    from tests.kaapi.test_metrics import scrape, value

    def attempt(path: str) -> str:
        delivery = WebhookDelivery.objects.create(
            job=job_row(project, status=JobStatus.SUCCESS),
            url=receiver.url(path),
            event="job.succeeded",
            payload={},
            next_attempt_at=timezone.now(),
        )
        return webhook_attempt(delivery_id=str(delivery.id))

    receiver.script("/gone", [(410, {})])
    before = scrape(client)
    assert attempt("/ok") == "delivered"
    assert attempt("/gone") == "failed"
    after = scrape(client)
    for outcome in ("delivered", "failed"):
        counted = value(after, "kaapi_webhook_deliveries_total", outcome=outcome)
        assert counted - value(before, "kaapi_webhook_deliveries_total", outcome=outcome) == 1, outcome


@pytest.mark.django_db
def test_every_delivery_message_carries_the_job_s_trace_id(project, monkeypatch, django_capture_on_commit_callbacks):
    """The first one, a redelivery's and the sweep's: the worker sets its logging context from the header."""
    from jobs.webhooks import services as webhook_services
    from jobs.webhooks import webhook_deliveries_publish_due, webhook_enqueue_for_job, webhook_redeliver

    sent = []
    monkeypatch.setattr(
        webhook_services, "publish_webhook_delivery", lambda delivery_id, **options: sent.append(options)
    )
    job = job_row(project, status=JobStatus.SUCCESS, callback_url="https://hooks.example.com/k", trace_id="trace-9")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = webhook_enqueue_for_job(job=job)
        webhook_redeliver(delivery=delivery)
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now() - timedelta(hours=1))
    assert webhook_deliveries_publish_due() == 1
    assert sent == [{"trace_id": "trace-9"}] * 3
