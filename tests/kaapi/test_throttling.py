"""API throttling per API key (submissions and reads apart) and the admin login's guard."""

import uuid

import pytest
import requests
from django.contrib.auth.models import User

from tenancy.services import api_key_create

pytestmark = pytest.mark.django_db


def test_submissions_over_the_rate_get_429_with_retry_after_and_reads_are_counted_apart(
    settings, api_client, other_client
):
    settings.API_THROTTLE_SUBMIT_RATE = "3/min"
    for _ in range(3):
        assert api_client.post("/api/v1/llm/call", {}, "json").status_code == 400  # counted, though refused
    over = api_client.post("/api/v1/llm/call", {}, "json")
    assert over.status_code == 429
    assert 1 <= int(over["Retry-After"]) <= 60
    assert "throttled" in over.json()["detail"].lower()
    assert api_client.get("/api/v1/jobs/").status_code == 200  # reads have their own rate
    assert other_client.post("/api/v1/llm/call", {}, "json").status_code == 400  # another key has its own count


def test_reads_over_the_rate_get_429(settings, api_client):
    settings.API_THROTTLE_READ_RATE = "2/min"
    assert [api_client.get("/api/v1/jobs/").status_code for _ in range(3)] == [200, 200, 429]
    assert api_client.post("/api/v1/llm/call", {}, "json").status_code == 400


def test_off_means_no_limit(settings, api_client):
    settings.API_THROTTLE_READ_RATE = "off"
    assert {api_client.get("/api/v1/jobs/").status_code for _ in range(20)} == {200}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_rate_holds_across_web_processes(start_web, project):
    """Two gunicorn workers answer the requests; one key's count is one, kept in Redis."""
    web = start_web(workers=2, env={"API_THROTTLE_READ_RATE": "10/min"})
    headers = {"X-API-KEY": api_key_create(project=project).plaintext}
    codes = [requests.get(f"{web.url}/api/v1/jobs/", headers=headers, timeout=10) for _ in range(14)]
    assert [r.status_code for r in codes].count(200) == 10, [r.status_code for r in codes]
    assert codes[-1].status_code == 429 and int(codes[-1].headers["Retry-After"]) >= 1


# --- Admin login ----------------------------------------------------------------------------------------
@pytest.fixture
def admin_user():
    name = f"admin-{uuid.uuid4().hex[:8]}"
    User.objects.create_superuser(name, f"{name}@example.com", "right-password")
    return name


def login(client, username: str, password: str):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})


def test_admin_login_is_refused_after_failures_even_with_the_right_password(settings, client, admin_user):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    assert [login(client, admin_user, "wrong").status_code for _ in range(3)] == [200, 200, 200]  # the form again
    refused = login(client, admin_user, "right-password")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert client.get("/admin/").status_code == 302  # not logged in


def test_admin_login_failures_of_one_user_do_not_lock_out_another(settings, client, admin_user):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    other = f"admin-{uuid.uuid4().hex[:8]}"
    User.objects.create_superuser(other, f"{other}@example.com", "other-password")
    for _ in range(3):
        login(client, admin_user, "wrong")
    assert login(client, other, "other-password").status_code == 302  # logged in


def test_a_successful_login_clears_the_failures(settings, client, admin_user):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    login(client, admin_user, "wrong")
    assert login(client, admin_user, "right-password").status_code == 302
    client.logout()
    login(client, admin_user, "wrong")
    assert login(client, admin_user, "right-password").status_code == 302
