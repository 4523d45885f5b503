"""LLM base URLs: a base that the provider's path is appended to carries no query, fragment or user info (else a
tenant picks the URL the workers post to), it is checked again before each call, and the calls go through the
outbound guard (kaapi.outbound) whose error texts never carry what a non-public address answered."""

import pytest

from jobs.exceptions import RetryableJobError
from kaapi.outbound import NON_PUBLIC_BODY
from llm.models import ProviderCredential
from llm.providers import PROVIDERS, Credentials, ProviderError
from tests.llm.conftest import FAKE_API_KEY, unique

pytestmark = pytest.mark.django_db

SMUGGLING = [
    "https://1.1.1.1/v1?",  # + /chat/completions becomes a query: the path is the tenant's
    "https://1.1.1.1/v1#",
    "https://1.1.1.1/v1?to=/admin",
    "https://1.1.1.1/internal#x",
    "https://user:pw@1.1.1.1/v1",
    "https://1.1.1.1\\@10.0.0.1/v1",
    "https://1.1.1.1/v1 x",
]


@pytest.mark.parametrize("url", SMUGGLING)
@pytest.mark.parametrize("allow_private", [False, True])
def test_base_urls_with_query_fragment_or_user_info_are_refused(api_client, settings, url, allow_private):
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = allow_private
    resp = api_client.put("/api/v1/credentials/openai-chat/", {"api_key": "sk-x", "base_url": url}, format="json")
    assert resp.status_code == 400, (url, resp.content)
    assert "base_url" in resp.json()


def test_a_stored_base_url_with_a_query_is_refused_before_any_request(fake_provider, project):
    """A credential stored before the rule: the call fails without posting anywhere."""
    ProviderCredential.objects.create(
        project=project, provider="openai-chat", api_key_encrypted="x", base_url=f"{fake_provider.url}/v1?"
    )
    base_url = ProviderCredential.objects.get(project=project).base_url
    query = unique()
    with pytest.raises(ProviderError, match=r"base URL must not contain '\?'") as info:
        PROVIDERS["openai-chat"].complete(
            credentials=Credentials(api_key=FAKE_API_KEY, base_url=base_url), params={"model": "m"}, query=query
        )
    assert not isinstance(info.value, RetryableJobError)
    assert fake_provider.calls == []


def test_a_provider_on_a_private_address_is_refused_unless_allowed(fake_provider, settings):
    """The base URL's host resolves to loopback: refused when connecting unless LLM_ALLOW_PRIVATE_BASE_URLS."""
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = False
    credentials = Credentials(api_key=FAKE_API_KEY, base_url=fake_provider.url.replace("127.0.0.1", "localhost"))
    with pytest.raises(ProviderError, match="refused to connect to localhost"):
        PROVIDERS["anthropic"].complete(credentials=credentials, params={"model": "m"}, query=unique())
    assert fake_provider.calls == []


@pytest.mark.parametrize("directive", ["[fake:status=400]", "[fake:error=malformed]"])
def test_what_a_non_public_provider_answers_stays_out_of_the_error(fake_provider, directive):
    """With LLM_ALLOW_PRIVATE_BASE_URLS a tenant may point at any internal service: its answers' bodies are never
    handed back in the job's error."""
    credentials = Credentials(api_key=FAKE_API_KEY, base_url=fake_provider.url)
    with pytest.raises(ProviderError) as info:
        PROVIDERS["anthropic"].complete(credentials=credentials, params={"model": "m"}, query=unique(directive))
    assert NON_PUBLIC_BODY in str(info.value)
    assert "temperature" not in str(info.value) and "<html" not in str(info.value).lower()
