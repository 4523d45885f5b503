"""The echo job's delay is bounded (ECHO_MAX_DELAY_SECONDS): a diagnostic job must not hold a worker for long."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.functions import echo
from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_a_delay_above_the_bound_is_400_and_creates_nothing(api_client, settings):
    assert settings.ECHO_MAX_DELAY_SECONDS == 10  # the default
    for delay in (10.5, 11, 600, 3600):
        resp = api_client.post("/api/v1/jobs/echo/", {"delay": delay}, format="json")
        assert resp.status_code == 400, (delay, resp.content)
        assert "10" in str(resp.json()["delay"]), resp.json()
    assert Job.objects.count() == 0
    resp = api_client.post("/api/v1/jobs/echo/", {"delay": 10}, format="json")
    assert resp.status_code == 202, resp.content


def test_the_bound_follows_the_setting(api_client, settings):
    settings.ECHO_MAX_DELAY_SECONDS = 2
    assert api_client.post("/api/v1/jobs/echo/", {"delay": 3}, format="json").status_code == 400
    assert api_client.post("/api/v1/jobs/echo/", {"delay": 2}, format="json").status_code == 202


def test_the_schema_documents_the_bound(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    delay = schema["components"]["schemas"]["EchoJobRequest"]["properties"]["delay"]
    assert delay["maximum"] == 10 and delay["minimum"] == 0


def test_submit_job_refuses_a_delay_above_the_bound(project):
    with pytest.raises(CommandError, match="--delay"):
        call_command("submit_job", organization="Org A", project="Project A", delay=11.0, stdout=StringIO())
    assert Job.objects.count() == 0


def test_an_echo_job_queued_with_a_longer_delay_sleeps_only_the_bound(settings, monkeypatch):
    """A job stored before the bound existed (or by a path without it) still cannot hold the worker longer."""
    slept = []
    monkeypatch.setattr("jobs.functions.time.sleep", slept.append)
    monkeypatch.setattr("jobs.functions.job_report_progress", lambda **kwargs: None)
    result = echo(project_id=1, job_id="j", task_id="t", task_instance=None, delay=3600)
    assert slept == [10] and result == {"delay": 3600}
