"""The LLM gateway in-process: fallbacks, the price table, the usage columns written by the SUCCESS, the usage
report and monthly budgets (tests/e2e/test_llm_gateway.py runs fallbacks through a real worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from jobs import services as job_services
from jobs.exceptions import RetryableJobError
from jobs.models import Job, JobStatus, WebhookDelivery
from jobs.webhooks import webhook_attempt, webhook_secret_get
from llm.jobs import execute_job, usage_columns
from llm.models import BudgetAlert, ModelPrice
from llm.pricing import cost_for, price_for
from llm.providers import ProviderError
from llm.services import config_create
from tests.factories import job_row
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.llm.conftest import BLOBS, unique

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("model_prices")]

PRIMARY = BLOBS["openai"]["completion"]  # gpt-4o-mini
FALLBACK = BLOBS["anthropic"]["completion"]  # claude-sonnet-4
WITH_FALLBACK = {"completion": PRIMARY, "fallbacks": [FALLBACK]}


def run(project, blob, query, *, retries: int | None = None) -> dict:
    """The job function as the worker calls it; ``retries``: the delivery's retry count (None: the last one)."""
    task = None if retries is None else SimpleNamespace(request=SimpleNamespace(retries=retries), max_retries=3)
    return execute_job(project_id=project.pk, job_id="j", task_id="t", task_instance=task, blob=blob, query=query)


def call(client, blob, query="What is AI?"):
    return client.post("/api/v1/llm/call", {"config": {"blob": blob}, "query": query}, format="json")


# --- Fallbacks ------------------------------------------------------------------------------------------
def test_a_primary_down_is_answered_by_its_fallback_at_once(provider_credentials, project, fake_provider):
    provider_credentials(project)
    query = unique("[fake:status=503,model=gpt-4o-mini] hello")
    result = run(project, WITH_FALLBACK, query, retries=0)  # not the last delivery: a 5xx does not wait for it
    assert result["response"]["provider"] == "anthropic"
    assert result["response"]["model"] == "claude-sonnet-4"
    assert result["response"]["output"]["text"].startswith("Echo:")
    first, second = result["attempts"]
    assert (first["provider"], first["model"]) == ("openai", "gpt-4o-mini")
    assert first["error"].startswith("openai returned 503")
    assert (second["provider"], second["model"], second["error"]) == ("anthropic", "claude-sonnet-4", None)
    assert first["seconds"] >= 0 and second["seconds"] >= 0


def test_a_rate_limited_primary_is_retried_before_its_fallback(provider_credentials, project, settings):
    settings.LLM_CREDENTIAL_PAUSE_SECONDS = 0  # no pause of the credential after its 429 (llm/limits.py)
    provider_credentials(project)
    query = unique("[fake:status=429,model=gpt-4o-mini]")
    with pytest.raises(RetryableJobError, match="openai returned 429"):
        run(project, WITH_FALLBACK, query, retries=0)
    result = run(project, WITH_FALLBACK, query, retries=3)  # the last delivery: no retry left, the fallback answers
    assert result["response"]["provider"] == "anthropic"
    assert [a["error"] is None for a in result["attempts"]] == [False, True]


def test_all_down_fails_with_every_attempts_error(provider_credentials, project, fake_provider):
    provider_credentials(project)
    fake_provider.down = 503
    blob = {"completion": PRIMARY, "fallbacks": [FALLBACK, BLOBS["openai-chat"]["completion"]]}
    with pytest.raises(RetryableJobError) as caught:
        run(project, blob, unique("hello"))
    message = str(caught.value)
    assert message.startswith("all 3 providers failed: [1] openai gpt-4o-mini: openai returned 503")
    assert "[2] anthropic claude-sonnet-4: anthropic returned 503" in message
    assert "[3] openai-chat llama3: openai-chat returned 503" in message


def test_a_client_error_of_the_primary_is_not_sent_to_a_fallback(provider_credentials, project, fake_provider):
    provider_credentials(project)
    with pytest.raises(ProviderError, match="openai returned 400"):
        run(project, WITH_FALLBACK, unique("[fake:status=400,model=gpt-4o-mini]"))
    assert fake_provider.count(path="/v1/messages") == 0


@pytest.mark.parametrize(
    ("blob", "field"),
    [
        ({"completion": PRIMARY, "fallbacks": [{"provider": "nope", "params": {}}]}, "fallbacks[0].provider"),
        (
            {"completion": PRIMARY, "fallbacks": [FALLBACK, {"provider": "openai", "params": {"temperature": 9}}]},
            "fallbacks[1].params.temperature",
        ),
        (
            {"completion": PRIMARY, "fallbacks": [FALLBACK, {"provider": "openai", "params": {}}]},
            "fallbacks[1].params.model",
        ),
        ({"completion": PRIMARY, "fallbacks": {"provider": "openai"}}, "fallbacks"),
        (
            {"completion": PRIMARY, "fallbacks": [{"provider": "openai-chat", "params": {"model": "x"}}]},
            "fallbacks[0].provider",
        ),
    ],
)
def test_fallbacks_are_validated_at_submission_naming_the_entry(api_client, provider_credentials, project, blob, field):
    provider_credentials(project, ["openai", "anthropic"])  # none for openai-chat
    resp = call(api_client, blob)
    assert resp.status_code == 400, resp.content
    assert field in resp.json(), resp.json()
    assert not Job.objects.exists()


def test_a_stored_config_with_fallbacks_is_checked_too(api_client, provider_credentials, project):
    provider_credentials(project, ["openai"])
    config = config_create(project=project, name="bot", blob=WITH_FALLBACK)
    resp = api_client.post(
        "/api/v1/llm/call", {"config": {"id": config.id, "version": 1}, "query": "hi"}, format="json"
    )
    assert resp.status_code == 400 and "fallbacks[0].provider" in resp.json(), resp.content
    provider_credentials(project, ["anthropic"])
    resp = api_client.post(
        "/api/v1/llm/call", {"config": {"id": config.id, "version": 1}, "query": "hi"}, format="json"
    )
    assert resp.status_code == 202, resp.content
    job = Job.objects.get()
    assert (job.provider, job.model, job.config_id) == ("openai", "gpt-4o-mini", config.id)


# --- Prices ---------------------------------------------------------------------------------------------
def test_a_model_matches_by_name_alias_or_version_the_longest_name_first():
    assert price_for("openai", "gpt-4o").model == "gpt-4o"
    assert price_for("openai", "gpt-4o-2024-08-06").model == "gpt-4o"
    assert price_for("openai", "gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert price_for("openai-chat", "gpt-4o-mini").model == "gpt-4o-mini"  # Chat Completions: OpenAI's prices
    assert price_for("anthropic", "claude-sonnet-4-20250514").model == "claude-sonnet-4"
    assert price_for("anthropic", "claude-sonnet-4-5-20250929").model == "claude-sonnet-4-5"
    assert price_for("anthropic", "claude-4-opus-20250514").model == "claude-opus-4"  # an alias
    assert price_for("openai", "gpt-4omni") is None  # a prefix that is not a version
    assert price_for("anthropic", "gpt-4o") is None
    row = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    assert row.source_url.startswith("https://") and row.price_date


def test_cost_prices_cached_input_and_reasoning_as_output():
    ModelPrice.objects.filter(provider="openai", model="gpt-4o").update(
        input_per_million=Decimal("2.50"), cached_input_per_million=Decimal("1.25"), output_per_million=Decimal("10")
    )
    usage = {
        "input_tokens": 1_000_000,
        "cached_input_tokens": 400_000,
        "output_tokens": 200_000,
        "reasoning_tokens": 150_000,
    }
    # 600k uncached x 2.50 + 400k cached x 1.25 + 200k output (reasoning included) x 10
    assert cost_for("openai", "gpt-4o-2024-08-06", usage) == Decimal("1.5") + Decimal("0.5") + Decimal("2")
    assert cost_for("openai", "no-such-model", usage) is None


def test_cost_and_a_warning_in_the_result(provider_credentials, project):
    provider_credentials(project)
    known = run(project, BLOBS["openai"], unique("one two three"))
    usage = known["usage"]
    expected = cost_for("openai", known["response"]["model"], usage)
    assert expected > 0 and usage["cost"] == str(expected)
    assert known["warnings"] == []
    unknown = run(project, BLOBS["openai-chat"], unique("one two three"))  # llama3: no price
    assert unknown["usage"]["cost"] is None
    assert unknown["warnings"] == ["no price for model 'llama3' of provider 'openai-chat': cost unknown"]


def test_the_success_writes_who_answered_and_the_cost_once(api_client, provider_credentials, project):
    provider_credentials(project)
    resp = call(api_client, WITH_FALLBACK, unique("[fake:status=503,model=gpt-4o-mini] hi"))
    job = Job.objects.get(id=resp.json()["job_id"])
    assert (job.provider, job.model, job.cost) == ("openai", "gpt-4o-mini", None)
    assert job_services.job_claim(job_id=job.id, task_id=job.task_id, redelivered=False) is job_services.Claim.RUN
    result = run(project, job.params["blob"], job.params["query"])
    assert job_services.job_mark_success(job_id=job.id, result=result, usage=usage_columns(result))
    # A redelivered message finishing again is refused by the status transition: nothing is counted twice.
    assert not job_services.job_mark_success(job_id=job.id, result=result, usage=usage_columns(result))
    job.refresh_from_db()
    assert (job.provider, job.model) == ("anthropic", "claude-sonnet-4")
    assert job.cost == Decimal(result["usage"]["cost"]) > 0
    assert job.input_tokens == result["usage"]["input_tokens"]
    assert job.result["attempts"][0]["provider"] == "openai"
    detail = api_client.get(f"/api/v1/jobs/{job.id}/").json()
    assert [a["provider"] for a in detail["result"]["attempts"]] == ["openai", "anthropic"]


# --- Usage report -----------------------------------------------------------------------------------------
def _finished(
    project,
    when: datetime,
    *,
    status=JobStatus.SUCCESS,
    provider="openai",
    model="gpt-4o",
    cost="0.01",
    config_id=None,
    tokens=(10, 5),
) -> Job:
    return job_row(
        project,
        job_type="LLM_API",
        status=status,
        provider=provider,
        model=model,
        config_id=config_id,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=None if cost is None else Decimal(cost),
        finished_at=when,
    )


@pytest.fixture
def calls(project, other_project):
    day1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
    day2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
    _finished(project, day1, config_id=7)
    _finished(project, day1, provider="anthropic", model="claude-sonnet-4", cost="0.02", config_id=7)
    _finished(project, day2, status=JobStatus.FAILED, cost=None, tokens=(None, None))
    _finished(project, day2, model="llama3", provider="openai-chat", cost=None)  # no price
    _finished(project, datetime(2026, 4, 1, tzinfo=UTC), cost="1")  # next month
    _finished(other_project, day1, cost="5")  # another project's
    job_row(project, finished_at=day1, status=JobStatus.SUCCESS)  # not an AI call


def test_the_usage_report_groups_by_day_provider_and_config(api_client, calls):
    def report(group_by, start="2026-03-01", end="2026-03-31"):
        resp = api_client.get(f"/api/v1/usage/?from={start}&to={end}&group_by={group_by}")
        assert resp.status_code == 200, resp.content
        return resp.json()

    body = report("day")
    assert [(g["key"], g["calls"], g["failures"], g["cost"]) for g in body["groups"]] == [
        ("2026-03-01", 2, 0, "0.03000000"),
        ("2026-03-02", 2, 1, "0"),
    ]
    assert body["total"] == {"calls": 4, "failures": 1, "input_tokens": 30, "output_tokens": 15, "cost": "0.03000000"}
    assert body["currency"] == "USD" and body["group_by"] == "day"
    assert [(g["key"], g["calls"]) for g in report("provider")["groups"]] == [
        ("anthropic", 1),
        ("openai", 2),
        ("openai-chat", 1),
    ]
    assert [(g["key"], g["calls"]) for g in report("config")["groups"]] == [(7, 2), (None, 2)]
    assert [g["key"] for g in report("model")["groups"]] == ["claude-sonnet-4", "gpt-4o", "llama3"]
    assert [(g["key"], g["cost"]) for g in report("month", "2026-03-01", "2026-04-30")["groups"]] == [
        ("2026-03", "0.03000000"),
        ("2026-04", "1.00000000"),
    ]


@pytest.mark.parametrize(
    "query",
    ["group_by=week", "from=2026-03-05&to=2026-03-01", "from=2020-01-01&to=2026-01-01", "from=yesterday"],
)
def test_the_usage_report_refuses_bad_queries(api_client, query):
    resp = api_client.get(f"/api/v1/usage/?{query}")
    assert resp.status_code == 400, resp.content


# --- Budgets ------------------------------------------------------------------------------------------
@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with WebhookReceiver() as server:
        yield server


def _spent(project, cost: str) -> None:
    _finished(project, timezone.now(), cost=cost)
    _finished(project, timezone.now() - timedelta(days=40), cost="100")  # last month's: not counted


def test_a_spent_budget_refuses_calls_with_402(api_client, provider_credentials, project):
    provider_credentials(project)
    project.monthly_budget = Decimal("1.00")
    project.save()
    _spent(project, "1.00")
    api_client.credentials(HTTP_X_API_KEY=_key(project))
    resp = call(api_client, BLOBS["openai"])
    assert resp.status_code == 402, resp.content
    detail = resp.json()["detail"]
    assert "monthly LLM budget of 1.00 USD is spent (1.00000000 USD this month)" in detail
    assert "resets at " in detail and "-01T00:00:00+00:00" in detail
    assert not Job.objects.filter(status=JobStatus.PENDING).exists()
    assert api_client.get("/api/v1/whoami/").json()["monthly_budget"] == "1.00"


def test_an_organizations_budget_counts_all_its_projects(api_client, provider_credentials, project):
    provider_credentials(project)
    organization = project.organization
    organization.monthly_budget = Decimal("2.00")
    organization.save()
    sibling = organization.projects.create(name="sibling")
    _spent(sibling, "1.50")
    api_client.credentials(HTTP_X_API_KEY=_key(project))
    assert call(api_client, BLOBS["openai"]).status_code == 202
    _spent(project, "0.50")
    resp = call(api_client, BLOBS["openai"])
    assert resp.status_code == 402 and "organization's monthly LLM budget of 2.00 USD" in resp.json()["detail"]
    assert api_client.get("/api/v1/whoami/").json()["organization_monthly_budget"] == "2.00"


def test_the_threshold_sends_one_signed_webhook_a_month(api_client, provider_credentials, project, receiver):
    provider_credentials(project)
    project.monthly_budget = Decimal("10.00")
    project.budget_callback_url = receiver.url("/budget")
    project.save()
    api_client.credentials(HTTP_X_API_KEY=_key(project))
    _spent(project, "7.99")
    assert call(api_client, BLOBS["openai"]).status_code == 202
    assert not WebhookDelivery.objects.exists()
    _spent(project, "0.01")  # 8.00: 80 %
    for _ in range(3):
        assert call(api_client, BLOBS["openai"]).status_code == 202
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.job_id, delivery.project_id) == ("budget.threshold", None, project.pk)
    assert BudgetAlert.objects.get().spend == Decimal("8")
    assert webhook_attempt(delivery_id=str(delivery.id)) == "delivered"
    [request] = receiver.requests()
    body = Webhook(webhook_secret_get(project=project).secret).verify(request.body, request.headers)
    assert body["type"] == "budget.threshold"
    assert body["data"]["budget"] == "10.00" and body["data"]["threshold_percent"] == 80


def _key(project) -> str:
    from tenancy.services import api_key_create

    project.refresh_from_db()
    return api_key_create(project=project).plaintext


# --- Admin ------------------------------------------------------------------------------------------------
def test_admin_edits_prices_and_shows_usage_per_organization_and_project(admin_client, calls, project):
    assert admin_client.get("/admin/llm/modelprice/").status_code == 200
    row = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    resp = admin_client.get(f"/admin/llm/modelprice/{row.pk}/change/")
    assert resp.status_code == 200 and row.source_url.encode() in resp.content
    assert admin_client.get("/admin/llm/budgetalert/").status_code == 200

    resp = admin_client.get("/admin/llm/projectusage/")  # this month, every project
    assert resp.status_code == 200
    assert b"chart.js/4.4.9/chart.umd.min.js" in resp.content and b'id="cost-per-day"' in resp.content
    query = "start=2026-03-01&end=2026-03-31&group_by=provider"
    for scope in (f"project={project.pk}", f"organization={project.organization_id}"):
        resp = admin_client.get(f"/admin/llm/projectusage/?{query}&{scope}")
        assert resp.status_code == 200
        report = resp.context["report"]
        assert [(g["key"], g["calls"]) for g in report["groups"]] == [
            ("anthropic", 1),
            ("openai", 2),
            ("openai-chat", 1),
        ]
        assert resp.context["chart"] == {"labels": ["2026-03-01", "2026-03-02"], "cost": ["0.03000000", "0"]}
    resp = admin_client.get("/admin/llm/projectusage/?start=2026-03-05&end=2026-03-01")
    assert resp.status_code == 200 and resp.context["report"] is None


def test_a_process_reads_the_price_table_once_a_minute_and_again_after_an_edit(monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from llm import pricing

    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    with CaptureQueriesContext(connection) as queries:
        first = cost_for("openai", "gpt-4o", usage)
        assert cost_for("openai", "gpt-4o-2024-08-06", usage) == first
    assert len(queries) == 1
    row = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    row.input_per_million += 1
    row.save()  # an edit in admin: this process forgets the table
    assert cost_for("openai", "gpt-4o", usage) == first + 1
    ModelPrice.objects.filter(pk=row.pk).update(input_per_million=row.input_per_million + 1)  # another process's
    assert cost_for("openai", "gpt-4o", usage) == first + 1
    later = pricing.monotonic() + pricing.PRICE_CACHE_SECONDS + 1
    monkeypatch.setattr(pricing, "monotonic", lambda: later)
    assert cost_for("openai", "gpt-4o", usage) == first + 2
