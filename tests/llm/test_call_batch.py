"""Bulk LLM calls: POST /api/v1/llm/call/batch, GET /api/v1/jobs/?batch_id=, GET /api/v1/llm/batches/{id}/; and
Idempotency-Key and run_after on LLM calls."""

from __future__ import annotations

import uuid

import pytest

from jobs.models import Job, JobStatus, WaitingReason
from llm.services import config_create, credential_set
from tests.conftest import purge_queues
from tests.llm.conftest import BLOBS, FAKE_API_KEY

pytestmark = pytest.mark.django_db

BATCH = "/api/v1/llm/call/batch"


@pytest.fixture
def config(project):
    credential_set(project=project, provider="anthropic", api_key=FAKE_API_KEY)
    return config_create(project=project, name="bot", blob=BLOBS["anthropic"])


def _call(config, query: str = "What is AI?", **extra) -> dict:
    return {"config": {"id": config.id, "version": 1}, "query": query, **extra}


def test_a_batch_creates_one_low_priority_job_per_call_in_order(api_client, config):
    calls = [
        _call(config, "first", callback_url="https://example.com/hook"),
        {"config": {"blob": BLOBS["anthropic"]}, "query": "second", "request_metadata": {"row": 2}},
        _call(config, "third"),
    ]
    response = api_client.post(BATCH, {"calls": calls}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["status_url"]
    assert body["status_url"].endswith(f"/api/v1/llm/batches/{body['batch_id']}/")
    jobs = [Job.objects.get(id=job_id) for job_id in body["job_ids"]]
    assert [job.params["query"] for job in jobs] == ["first", "second", "third"]
    assert {(job.job_type, job.queue, str(job.batch_id)) for job in jobs} == {
        ("LLM_API", "low_priority", body["batch_id"])
    }
    assert [job.callback_url for job in jobs] == ["https://example.com/hook", "", ""]
    assert jobs[1].params["request_metadata"] == {"row": 2}

    listed = api_client.get("/api/v1/jobs/", {"batch_id": body["batch_id"]}).json()
    assert listed["count"] == 3 and {job["batch_id"] for job in listed["results"]} == {body["batch_id"]}
    counts = api_client.get(body["status_url"]).json()
    assert counts["batch_id"] == body["batch_id"] and counts["total"] == 3
    assert counts["counts"]["PENDING"] == 3 and counts["counts"]["SUCCESS"] == 0


def test_a_batch_is_the_projects_own(api_client, other_client, config):
    batch_id = api_client.post(BATCH, {"calls": [_call(config)]}, format="json").json()["batch_id"]
    assert other_client.get(f"/api/v1/llm/batches/{batch_id}/").status_code == 404
    assert other_client.get("/api/v1/jobs/", {"batch_id": batch_id}).json()["count"] == 0
    assert api_client.get(f"/api/v1/llm/batches/{uuid.uuid4()}/").status_code == 404


def test_bad_calls_are_named_by_index_and_field_and_nothing_is_created(api_client, config):
    calls = [_call(config), {"config": {"id": config.id, "version": 1}}, _call(config, " ")]
    response = api_client.post(BATCH, {"calls": calls}, format="json")
    assert response.status_code == 400
    assert set(response.json()["calls"]) == {"1", "2"}
    assert "query" in response.json()["calls"]["1"] and "query" in response.json()["calls"]["2"]

    calls = [
        _call(config),
        {"config": {"id": config.id, "version": 9}, "query": "q"},
        {"config": {"blob": BLOBS["openai"]}, "query": "q"},  # no openai credentials
        _call(config, callback_url="http://127.0.0.1/hook"),
    ]
    response = api_client.post(BATCH, {"calls": calls}, format="json")
    assert response.status_code == 400
    errors = response.json()["calls"]
    assert set(errors) == {"1", "2", "3"}
    assert "no version 9" in errors["1"]["config"][0]
    assert "credentials" in errors["2"]
    assert "callback_url" in errors["3"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("body", [{"calls": []}, {"calls": "x"}, {}, {"calls": [1]}])
def test_malformed_batches_are_400(api_client, body):
    assert api_client.post(BATCH, body, format="json").status_code == 400


def test_the_size_of_a_batch_is_bounded_by_the_setting(api_client, config, settings):
    settings.LLM_BATCH_MAX_CALLS = 2
    response = api_client.post(BATCH, {"calls": [_call(config)] * 3}, format="json")
    assert response.status_code == 400
    assert "calls" in response.json()
    assert api_client.post(BATCH, {"calls": [_call(config)] * 2}, format="json").status_code == 202


def test_a_batch_with_an_idempotency_key_is_replayed(api_client, config):
    body = {"calls": [_call(config), _call(config, "2")]}
    first = api_client.post(BATCH, body, format="json", HTTP_IDEMPOTENCY_KEY="eval-run-7")
    again = api_client.post(BATCH, body, format="json", HTTP_IDEMPOTENCY_KEY="eval-run-7")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Job.objects.count() == 2


def test_a_call_of_a_batch_may_be_scheduled(api_client, config):
    body = {"calls": [_call(config), _call(config, delay_seconds=3600)]}
    job_ids = api_client.post(BATCH, body, format="json").json()["job_ids"]
    assert [Job.objects.get(id=job_id).status for job_id in job_ids] == [JobStatus.PENDING, JobStatus.SCHEDULED]


def test_each_call_of_a_batch_goes_through_the_projects_admission(
    api_client, config, project, settings, django_capture_on_commit_callbacks
):
    """The batch's jobs are admitted like single ones: the project's max_concurrent_jobs holds the rest back."""
    settings.JOB_DISPATCH_MODE = "inline"
    project.max_concurrent_jobs = 2
    project.save()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job_ids = api_client.post(BATCH, {"calls": [_call(config)] * 5}, format="json").json()["job_ids"]
        jobs = [Job.objects.get(id=job_id) for job_id in job_ids]
        assert [job.dispatched_at is not None for job in jobs] == [True, True, False, False, False]
        assert {job.waiting_reason for job in jobs[2:]} == {WaitingReason.MAX_CONCURRENT_JOBS}
    finally:
        purge_queues()


def test_an_llm_call_with_an_idempotency_key_and_a_delay(api_client, config):
    body = _call(config, delay_seconds=120)
    first = api_client.post("/api/v1/llm/call", body, format="json", HTTP_IDEMPOTENCY_KEY="chat-42")
    again = api_client.post("/api/v1/llm/call/", body, format="json", HTTP_IDEMPOTENCY_KEY="chat-42")
    assert first.status_code == 202 and first.json()["status"] == "SCHEDULED"
    assert again.json()["job_id"] == first.json()["job_id"] and again["Idempotent-Replayed"] == "true"
    other = api_client.post("/api/v1/llm/call", _call(config, "other"), format="json", HTTP_IDEMPOTENCY_KEY="chat-42")
    assert other.status_code == 422
    assert Job.objects.count() == 1
