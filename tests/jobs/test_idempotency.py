"""Idempotency-Key on the submission endpoints (jobs/idempotency.py); 50 concurrent clients under gunicorn:
tests/e2e/test_idempotency_http.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.maintenance import maintenance_retention
from jobs.models import IdempotencyKey, Job, JobStatus
from tests.factories import make_job, set_status

pytestmark = pytest.mark.django_db

ECHO = "/api/v1/jobs/echo/"


def _echo(client, key: str | None = "key-1", **body):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(ECHO, body or {"params": {"n": 1}}, format="json", **headers)


def test_the_same_key_and_body_answer_the_same_job_and_say_so(api_client):
    first = _echo(api_client)
    again = _echo(api_client)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Job.objects.count() == 1


def test_the_order_of_keys_in_the_body_does_not_make_another_request(api_client):
    first = api_client.post(
        ECHO, '{"params": {"a": 1, "b": 2}, "delay": 0}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    again = api_client.post(
        ECHO, '{"delay":0,"params":{"b":2,"a":1}}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert again.json()["job_id"] == first.json()["job_id"]


def test_the_same_key_with_another_body_is_422_and_creates_nothing(api_client):
    _echo(api_client, params={"n": 1})
    other = _echo(api_client, params={"n": 2})
    assert other.status_code == 422
    assert "another body" in other.json()["detail"]
    assert Job.objects.count() == 1


def test_keys_are_scoped_to_the_project(api_client, other_client):
    mine = _echo(api_client).json()["job_id"]
    theirs = _echo(other_client).json()["job_id"]
    assert mine != theirs
    assert Job.objects.count() == 2


def test_without_a_key_every_request_is_a_new_job(api_client):
    _echo(api_client, key=None)
    _echo(api_client, key=None)
    assert Job.objects.count() == 2
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
def test_a_malformed_key_is_400(api_client, key):
    response = api_client.post(ECHO, {}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Job.objects.exists()


def test_a_refused_submission_keeps_no_key(api_client):
    assert _echo(api_client, delay=-1).status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert _echo(api_client, delay=0).status_code == 202  # the corrected request, same key


def test_a_key_in_flight_is_409(api_client, project):
    """A second request while the first holds the key's lock (another connection holds it here)."""
    import threading

    from django.db import connections, transaction

    from jobs.idempotency import _lock_id

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(project.pk, "busy")])
            held.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        response = _echo(api_client, key="busy")
    finally:
        release.set()
        thread.join()
    assert response.status_code == 409
    assert "still being processed" in response.json()["detail"]
    assert not Job.objects.exists()


def test_an_expired_key_is_used_afresh_and_removed_by_retention(api_client, project):
    first = _echo(api_client).json()["job_id"]
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    again = _echo(api_client, params={"other": "body"})
    assert again.status_code == 202 and again.json()["job_id"] != first
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert maintenance_retention(retention_days=0)["idempotency_keys"] == 1
    assert not IdempotencyKey.objects.exists()


def test_ttl_is_the_setting(api_client, settings):
    settings.IDEMPOTENCY_KEY_TTL = 60
    _echo(api_client)
    key = IdempotencyKey.objects.get()
    assert timedelta(seconds=59) < key.expires_at - key.created_at <= timedelta(seconds=61)


def test_retry_with_a_key_is_replayed(api_client, project):
    job = set_status(make_job(project), JobStatus.FAILED)
    path = f"/api/v1/jobs/{job.id}/retry/"
    first = api_client.post(path, HTTP_IDEMPOTENCY_KEY="retry-1")
    again = api_client.post(path, HTTP_IDEMPOTENCY_KEY="retry-1")
    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    # without the key, the second retry of a PENDING job is refused
    assert api_client.post(path).status_code == 409
