"""A credential's limits set through the API and admin."""

import pytest

from llm.models import ProviderCredential

pytestmark = pytest.mark.django_db

KEY = "sk-test-0123456789abcdef"


def test_limits_are_set_with_the_credential_and_shown(api_client):
    body = {"api_key": KEY, "requests_per_minute": 60, "tokens_per_minute": 90_000, "max_concurrent_calls": 5}
    resp = api_client.put("/api/v1/credentials/openai/", body, "json")
    assert resp.status_code == 200, resp.content
    shown = api_client.get("/api/v1/credentials/openai/").json()
    assert (shown["requests_per_minute"], shown["tokens_per_minute"], shown["max_concurrent_calls"]) == (60, 90_000, 5)

    resp = api_client.put("/api/v1/credentials/openai/", {"api_key": KEY, "requests_per_minute": None}, "json")
    assert resp.status_code == 200
    assert ProviderCredential.objects.get(provider="openai").limits == {
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "max_concurrent_calls": None,
    }  # PUT replaces: a limit left out is no limit


@pytest.mark.parametrize("value", [0, -1, "many", 10**12])
def test_a_limit_that_is_not_a_positive_integer_is_a_400(api_client, value):
    resp = api_client.put("/api/v1/credentials/openai/", {"api_key": KEY, "max_concurrent_calls": value}, "json")
    assert resp.status_code == 400 and "max_concurrent_calls" in resp.json()


def test_admin_sets_the_limits(admin_client, project):
    resp = admin_client.post(
        "/admin/llm/providercredential/add/",
        {"project": project.id, "provider": "openai", "api_key": KEY, "base_url": "", "requests_per_minute": "30"},
    )
    assert resp.status_code == 302, resp.content
    credential = ProviderCredential.objects.get(project=project)
    assert credential.requests_per_minute == 30 and credential.max_concurrent_calls is None
    resp = admin_client.post(
        f"/admin/llm/providercredential/{credential.id}/change/",
        {"project": project.id, "provider": "openai", "api_key": "", "max_concurrent_calls": "2"},
    )
    assert resp.status_code == 302, resp.content
    credential.refresh_from_db()
    assert (credential.requests_per_minute, credential.max_concurrent_calls) == (None, 2)
