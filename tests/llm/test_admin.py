import json

import pytest

from kaapi import crypto
from llm.models import ConfigVersion, ProviderCredential
from llm.services import config_create
from tests.llm.conftest import BLOBS

pytestmark = pytest.mark.django_db


def test_admin_pages_render(admin_client, project):
    config = config_create(project=project, name="bot", blob=BLOBS["openai"])
    for url in [
        "/admin/llm/config/",
        f"/admin/llm/config/{config.id}/change/",
        "/admin/llm/configversion/",
        "/admin/llm/configversion/add/",
        f"/admin/llm/configversion/{config.versions.get().id}/change/",
        "/admin/llm/providercredential/",
        "/admin/llm/providercredential/add/",
    ]:
        assert admin_client.get(url).status_code == 200, url


def test_admin_adds_the_next_version_and_encrypted_credentials(admin_client, project, settings):
    config = config_create(project=project, name="bot", blob=BLOBS["openai"])
    resp = admin_client.post(
        "/admin/llm/configversion/add/",
        {"config": config.id, "blob": json.dumps(BLOBS["anthropic"]), "commit_message": "from admin"},
    )
    assert resp.status_code == 302, resp.content
    assert ConfigVersion.objects.get(config=config, version=2).commit_message == "from admin"
    bad = {"completion": {"provider": "openai", "params": {"model": "m", "temperature": 9}}}
    resp = admin_client.post("/admin/llm/configversion/add/", {"config": config.id, "blob": json.dumps(bad)})
    assert resp.status_code == 200 and b"completion.params.temperature" in resp.content

    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True
    resp = admin_client.post(
        "/admin/llm/providercredential/add/",
        {"project": project.id, "provider": "openai", "api_key": "sk-admin-key-1234567890", "base_url": ""},
    )
    assert resp.status_code == 302, resp.content
    credential = ProviderCredential.objects.get(project=project)
    assert crypto.decrypt(credential.api_key_encrypted) == "sk-admin-key-1234567890"
    page = admin_client.get(f"/admin/llm/providercredential/{credential.id}/change/").content.decode()
    assert "sk-admin-key-1234567890" not in page and "****7890" in page
