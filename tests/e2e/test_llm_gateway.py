"""The LLM gateway through the API and a real worker: a fallback answers for a primary that is down, a call whose
providers are all down ends FAILED with every attempt's error, and the usage report counts what they cost."""

import pytest
from django.utils import timezone

from jobs.models import Job, JobStatus
from llm.pricing import cost_for
from tests.e2e.test_llm import WORKER, wait_finished
from tests.llm.conftest import BLOBS, unique

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WITH_FALLBACK = {"completion": BLOBS["openai"]["completion"], "fallbacks": [BLOBS["anthropic"]["completion"]]}


def submit(client, query: str) -> str:
    resp = client.post("/api/v1/llm/call", {"config": {"blob": WITH_FALLBACK}, "query": query}, "json")
    assert resp.status_code == 202, resp.content
    return resp.json()["job_id"]


def test_fallbacks_cost_and_usage(start_worker, api_client, provider_credentials, project, model_prices):
    provider_credentials(project)
    # No retries: a call whose providers are all down fails on its first delivery.
    start_worker(**{**WORKER, "env": {**WORKER["env"], "CELERY_TASK_MAX_RETRIES": "0"}})
    served = submit(api_client, unique("[fake:status=503,model=gpt-4o-mini] hello"))
    down = submit(api_client, unique("[fake:status=529] hello"))
    jobs = wait_finished([served, down])

    job = jobs[served]
    assert job.status == JobStatus.SUCCESS, job.error
    assert (job.result["response"]["provider"], job.result["response"]["model"]) == ("anthropic", "claude-sonnet-4")
    assert [(a["provider"], a["error"] is None) for a in job.result["attempts"]] == [
        ("openai", False),
        ("anthropic", True),
    ]
    assert job.attempts == 1  # the outage went to the fallback at once, not through a retry
    expected = cost_for("anthropic", "claude-sonnet-4", job.result["usage"])
    assert job.result["usage"]["cost"] == str(expected) and job.cost == expected
    assert (job.provider, job.model) == ("anthropic", "claude-sonnet-4")

    job = jobs[down]
    assert job.status == JobStatus.FAILED
    assert "all 2 providers failed: [1] openai gpt-4o-mini: openai returned 529" in job.error
    assert "[2] anthropic claude-sonnet-4: anthropic returned 529" in job.error
    assert job.cost is None

    today = timezone.now().date().isoformat()
    report = api_client.get(f"/api/v1/usage/?from={today}&to={today}&group_by=provider").json()
    assert [(g["key"], g["calls"], g["failures"]) for g in report["groups"]] == [("anthropic", 1, 0), ("openai", 1, 1)]
    assert report["total"]["cost"] == str(Job.objects.get(id=served).cost)
