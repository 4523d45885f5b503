import pytest
from cryptography.fernet import Fernet

from kaapi import crypto
from llm.models import ProviderCredential
from llm.selectors import credentials_for_call
from llm.services import credentials_rotate

pytestmark = pytest.mark.django_db

KEY = "sk-live-abcdefghijklmnop1234"


def put(client, provider="openai", **body):
    return client.put(f"/api/v1/credentials/{provider}/", {"api_key": KEY, **body}, format="json")


def test_key_is_encrypted_at_rest_and_never_returned(api_client, project):
    resp = put(api_client, organization="org-1")
    assert resp.status_code == 200, resp.content
    assert resp.json()["api_key"] == "****1234"
    assert resp.json()["organization"] == "org-1"

    stored = ProviderCredential.objects.get(project=project, provider="openai")
    assert KEY not in stored.api_key_encrypted
    assert crypto.decrypt(stored.api_key_encrypted) == KEY
    assert credentials_for_call(project_id=project.id, provider="openai").api_key == KEY
    assert KEY not in repr(credentials_for_call(project_id=project.id, provider="openai"))

    for resp in (api_client.get("/api/v1/credentials/openai/"), api_client.get("/api/v1/credentials/")):
        assert resp.status_code == 200
        assert KEY not in resp.content.decode()
        assert "****1234" in resp.content.decode()


def test_short_keys_show_no_hint(api_client):
    resp = api_client.put("/api/v1/credentials/anthropic/", {"api_key": "short"}, format="json")
    assert resp.json()["api_key"] == "****"


def test_put_replaces_and_delete_removes(api_client, project):
    put(api_client)
    put(api_client, api_key="sk-second-key-000000009999")
    assert ProviderCredential.objects.filter(project=project).count() == 1
    assert credentials_for_call(project_id=project.id, provider="openai").api_key.endswith("9999")
    assert api_client.delete("/api/v1/credentials/openai/").status_code == 204
    assert api_client.get("/api/v1/credentials/openai/").status_code == 404
    assert api_client.delete("/api/v1/credentials/openai/").status_code == 404


def test_other_projects_and_unknown_providers(api_client, other_client):
    put(api_client)
    assert other_client.get("/api/v1/credentials/openai/").status_code == 404
    assert other_client.delete("/api/v1/credentials/openai/").status_code == 404
    assert other_client.get("/api/v1/credentials/").json() == []
    resp = put(api_client, provider="mistral")
    assert resp.status_code == 404 and "unknown provider" in resp.json()["detail"]
    assert api_client.put("/api/v1/credentials/openai/", {}, format="json").status_code == 400


def test_private_base_urls_need_the_setting(api_client, settings):
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = False
    for url in ("http://127.0.0.1:11434/v1", "http://10.1.2.3/v1", "http://localhost:8000/v1", "http://[::1]/v1"):
        resp = put(api_client, provider="openai-chat", base_url=url)
        assert resp.status_code == 400, url
        assert "base_url" in resp.json()
    assert put(api_client, provider="openai-chat", base_url="ftp://example.com").status_code == 400
    assert put(api_client, provider="openai-chat", base_url="http://u:p@1.1.1.1/v1").status_code == 400
    assert put(api_client, provider="openai-chat", base_url="https://1.1.1.1/v1").status_code == 200
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True
    assert put(api_client, provider="openai-chat", base_url="http://127.0.0.1:11434/v1").status_code == 200


def test_rotation_re_encrypts_under_the_new_key(api_client, project, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = [old]
    put(api_client)
    token = ProviderCredential.objects.get(project=project).api_key_encrypted

    settings.CREDENTIALS_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(token) == KEY  # still readable with the old key listed
    assert credentials_rotate() == 1
    rotated = ProviderCredential.objects.get(project=project).api_key_encrypted
    settings.CREDENTIALS_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(rotated) == KEY
    with pytest.raises(crypto.CredentialDecryptionError):
        crypto.decrypt(token)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api_key", "sk-live-abc\nX-Injected: 1"),
        ("api_key", "sk-live-\rabc"),
        ("api_key", "sk-live\tabc"),
        ("api_key", "sk-live abc"),
        ("api_key", "sk-live-ключ"),
        ("api_key", "sk-live-\x7f"),
        ("organization", "org-1\r\nX-Injected: 1"),
        ("organization", "org-é"),
    ],
)
def test_a_value_that_cannot_be_an_http_header_is_refused(api_client, project, field, value):
    resp = put(api_client, **{field: value})
    assert resp.status_code == 400, resp.content
    assert field in resp.json()
    assert not ProviderCredential.objects.filter(project=project).exists()


def test_the_admin_refuses_a_key_with_a_newline(admin_client, project):
    resp = admin_client.post(
        "/admin/llm/providercredential/add/",
        {"project": project.id, "provider": "openai", "api_key": "sk-admin\nkey", "base_url": "", "organization": ""},
    )
    assert resp.status_code == 200  # the form again, with the error
    assert "api_key" in resp.context["adminform"].form.errors
    assert not ProviderCredential.objects.filter(project=project).exists()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stored_key_with_a_newline_never_reaches_the_error_text(settings, provider):
    from llm.providers import PROVIDERS, Credentials, ProviderError

    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True
    secret = "sk-secret-0123456789\nabc"
    credentials = Credentials(api_key=secret, base_url="http://127.0.0.1:9", organization="")
    with pytest.raises(ProviderError) as raised:
        PROVIDERS[provider].complete(credentials=credentials, params={"model": "m", "max_tokens": 5}, query="hi")
    assert "sk-secret" not in str(raised.value) and "0123456789" not in str(raised.value)
    assert "set them again" in str(raised.value)
