"""Submission of LLM calls: everything the worker needs is checked before the job exists."""

import pytest

from jobs.models import Job
from llm.services import config_create, config_delete
from tests.llm.conftest import BLOBS

pytestmark = pytest.mark.django_db


@pytest.fixture
def config(project):
    return config_create(project=project, name="bot", blob=BLOBS["anthropic"])


def call(client, config_ref, query="What is AI?", **extra):
    return client.post("/api/v1/llm/call", {"config": config_ref, "query": query, **extra}, format="json")


def test_call_by_config_version_creates_a_high_priority_job(api_client, provider_credentials, project, config):
    provider_credentials(project, ["anthropic"])
    resp = call(
        api_client,
        {"id": config.id, "version": 1},
        callback_url="https://example.com/hook",
        request_metadata={"conversation": 7},
    )
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["status"] == "PENDING"
    assert body["status_url"].endswith(f"/api/v1/jobs/{body['job_id']}/")
    assert resp["Location"] == body["status_url"]
    job = Job.objects.get(id=body["job_id"])
    assert (job.job_type, job.queue, job.priority, job.function_path) == (
        "LLM_API",
        "high_priority",
        9,
        "llm.jobs.execute_job",
    )
    assert job.callback_url == "https://example.com/hook"
    assert job.params == {
        "blob": BLOBS["anthropic"],
        "query": "What is AI?",
        "config": {"id": config.id, "version": 1},
        "request_metadata": {"conversation": 7},
    }
    assert "sk-" not in str(job.params)  # credentials never travel in the message


def test_call_with_inline_blob(api_client, provider_credentials, project):
    provider_credentials(project, ["openai"])
    resp = call(api_client, {"blob": BLOBS["openai"]})
    assert resp.status_code == 202, resp.content
    assert Job.objects.get(id=resp.json()["job_id"]).params["config"] is None
    # the trailing-slash route is the same endpoint: it creates the same job, it does not redirect or 404
    resp = api_client.post("/api/v1/llm/call/", {"config": {"blob": BLOBS["openai"]}, "query": "hi"}, format="json")
    assert resp.status_code == 202, resp.content
    job = Job.objects.get(id=resp.json()["job_id"])
    assert (job.job_type, job.queue, job.params["query"]) == ("LLM_API", "high_priority", "hi")


def test_unknown_or_foreign_config_is_404(
    api_client, other_client, provider_credentials, project, other_project, config
):
    provider_credentials(project)
    provider_credentials(other_project)
    assert call(api_client, {"id": config.id + 100, "version": 1}).status_code == 404
    resp = call(api_client, {"id": config.id, "version": 2})
    assert resp.status_code == 404 and "has no version 2" in resp.json()["detail"]
    resp = call(other_client, {"id": config.id, "version": 1})
    assert resp.status_code == 404 and "does not exist in your project" in resp.json()["detail"]
    # ids and versions no integer column can hold are unknown ones, not a database error
    assert call(api_client, {"id": config.id, "version": 2**31}).status_code == 404
    assert call(api_client, {"id": 2**63, "version": 1}).status_code == 404
    config_delete(config=config)
    assert call(api_client, {"id": config.id, "version": 1}).status_code == 404
    assert not Job.objects.exists()


def test_missing_credentials_are_refused(
    api_client, other_client, provider_credentials, project, other_project, config
):
    provider_credentials(other_project)  # another project's credentials do not count
    resp = call(api_client, {"id": config.id, "version": 1})
    assert resp.status_code == 400
    assert "no credentials for provider 'anthropic'" in resp.json()["credentials"][0]
    resp = call(api_client, {"blob": BLOBS["openai-chat"]})
    assert resp.status_code == 400 and "openai-chat" in resp.json()["credentials"][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {"id": 1}, "query": "q"}, "config"),
        ({"config": {"id": 1, "version": 1, "blob": {}}, "query": "q"}, "config"),
        ({"config": {"id": 1, "version": 1, "extra": 1}, "query": "q"}, "config"),
        ({"config": {"id": "x", "version": 1}, "query": "q"}, "config"),
        ({"config": {"id": 1, "version": 1}, "query": "  "}, "query"),
        ({"config": {"id": 1, "version": 1}}, "query"),
        ({"query": "q"}, "config"),
        ({"config": {"id": 1, "version": 1}, "query": "q", "callback_url": "nope"}, "callback_url"),
        ({"config": {"id": 1, "version": 1}, "query": "q", "request_metadata": [1]}, "request_metadata"),
        (
            {
                "config": {"blob": {"completion": {"provider": "openai", "params": {"model": "m", "seed": 1}}}},
                "query": "q",
            },
            "completion.params.seed",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(api_client, provider_credentials, project, body, field):
    provider_credentials(project)
    resp = api_client.post("/api/v1/llm/call", body, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json()


def test_authentication_is_required(client):
    assert client.post("/api/v1/llm/call", {}, content_type="application/json").status_code == 401
