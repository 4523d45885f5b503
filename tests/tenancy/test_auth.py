import subprocess
import sys

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tenancy.models import APIKey
from tenancy.services import api_key_create, api_key_revoke, api_key_verify

pytestmark = pytest.mark.django_db


def test_missing_key_is_401_with_clear_message(project):
    resp = APIClient().get("/api/v1/jobs/")
    assert resp.status_code == 401
    assert "credentials" in resp.json()["detail"].lower()
    assert resp["WWW-Authenticate"] == "X-API-KEY"


@pytest.mark.parametrize("raw", ["nonsense", "kaapi_abc_def", "kaapi_0123456789ab_" + "x" * 43, "k" * 5000])
def test_wrong_key_is_401(project, raw):
    api_key_create(project=project)
    resp = APIClient().get("/api/v1/jobs/", HTTP_X_API_KEY=raw)
    assert resp.status_code == 401
    assert resp.json()["detail"] == "Invalid API key."


def test_right_prefix_wrong_secret_is_401(project):
    issued = api_key_create(project=project)
    tampered = issued.plaintext[:-4] + ("AAAA" if not issued.plaintext.endswith("AAAA") else "BBBB")
    assert APIClient().get("/api/v1/jobs/", HTTP_X_API_KEY=tampered).status_code == 401


def test_revoked_key_is_401(project):
    issued = api_key_create(project=project)
    api_key_revoke(api_key=issued.api_key)
    resp = APIClient().get("/api/v1/jobs/", HTTP_X_API_KEY=issued.plaintext)
    assert resp.status_code == 401
    assert "revoked" in resp.json()["detail"]


@pytest.mark.parametrize("what", ["project", "organization"])
def test_inactive_project_or_organization_is_403(project, what):
    issued = api_key_create(project=project)
    target = project if what == "project" else project.organization
    target.is_active = False
    target.save()
    resp = APIClient().get("/api/v1/jobs/", HTTP_X_API_KEY=issued.plaintext)
    assert resp.status_code == 403
    assert what in resp.json()["detail"]


def test_valid_key_authenticates(project):
    issued = api_key_create(project=project)
    assert APIClient().get("/api/v1/jobs/", HTTP_X_API_KEY=issued.plaintext).status_code == 200


def test_key_is_stored_only_as_a_hash(project):
    issued = api_key_create(project=project)
    stored = APIKey.objects.get(pk=issued.api_key.pk)
    secret = issued.plaintext.split("_", 2)[2]
    assert secret not in stored.key_hash and secret not in stored.prefix
    assert len(stored.key_hash) == 64
    assert api_key_verify(raw=issued.plaintext).pk == stored.pk


def test_revoke_is_idempotent(project):
    issued = api_key_create(project=project)
    first = api_key_revoke(api_key=issued.api_key).revoked_at
    assert first is not None and first <= timezone.now()
    assert api_key_revoke(api_key=issued.api_key).revoked_at == first


def test_create_api_key_command_creates_what_is_missing(transactional_db):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_key", organization="New Org", project="New Project", stdout=out, stderr=StringIO())
    key = out.getvalue().strip()
    verified = api_key_verify(raw=key)
    assert verified is not None
    assert verified.project.name == "New Project" and verified.project.organization.name == "New Org"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_TASK_MAX_RETRIES", "three"),
        ("DEBUG", "maybe"),
        ("RABBITMQ_URL", "http://x"),
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", "-1"),
        ("DATABASE_URL", "nosuchdb://x"),
    ],
)
def test_malformed_setting_stops_startup_naming_the_variable(name, value):
    env = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x", name: value}
    proc = subprocess.run([sys.executable, "-c", "import kaapi.settings"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and name in proc.stderr


def test_whoami_names_the_callers_project_and_key(api_client, project):
    body = api_client.get("/api/v1/whoami/").json()
    assert body["organization"] == "Org A" and body["project"] == "Project A" and body["project_id"] == project.id
    assert body["api_key_prefix"] and "api_key_name" in body
    assert APIClient().get("/api/v1/whoami/").status_code == 401


def test_whoami_shows_the_project_s_max_concurrent_jobs(api_client, project, settings):
    settings.JOB_MAX_CONCURRENT_JOBS = 7
    assert api_client.get("/api/v1/whoami/").json()["max_concurrent_jobs"] == 7
    project.max_concurrent_jobs = 2
    project.save()
    assert api_client.get("/api/v1/whoami/").json()["max_concurrent_jobs"] == 2


def test_whoami_shows_the_project_s_max_submissions_per_minute(api_client, project, settings):
    settings.JOB_MAX_SUBMISSIONS_PER_MINUTE = 0
    assert api_client.get("/api/v1/whoami/").json()["max_submissions_per_minute"] is None  # no limit
    settings.JOB_MAX_SUBMISSIONS_PER_MINUTE = 600
    assert api_client.get("/api/v1/whoami/").json()["max_submissions_per_minute"] == 600
    project.max_submissions_per_minute = 30
    project.save()
    assert api_client.get("/api/v1/whoami/").json()["max_submissions_per_minute"] == 30


def test_verified_key_comes_with_its_project_and_organization_in_one_query(project, django_assert_num_queries):
    issued = api_key_create(project=project)
    with django_assert_num_queries(1):
        verified = api_key_verify(raw=issued.plaintext)
        assert verified.project.organization.name == project.organization.name
    expected = APIKey.objects.select_related("project__organization").get(pk=issued.api_key.pk)
    for stored, loaded in [
        (expected, verified),
        (expected.project, verified.project),
        (expected.project.organization, verified.project.organization),
    ]:
        for field in type(stored)._meta.concrete_fields:
            assert getattr(loaded, field.attname) == getattr(stored, field.attname), field.name
        assert not loaded._state.adding
    assert verified.created_at.tzinfo is not None


def test_verify_finds_only_the_key_with_that_prefix(project):
    keys = [api_key_create(project=project) for _ in range(3)]
    for issued in keys:
        assert api_key_verify(raw=issued.plaintext).pk == issued.api_key.pk
    prefix = keys[0].plaintext.split("_")[1]
    assert api_key_verify(raw=f"kaapi_{prefix[:-1]}x_{'a' * 43}") is None
