"""An unreachable database is a 503 with Retry-After, not a 500 (tests/chaos stops a real PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import OperationalError

import tenancy.authentication
from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_an_unreachable_database_is_a_503_that_says_to_retry(api_client, monkeypatch):
    def unreachable(**kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    monkeypatch.setattr(tenancy.authentication, "api_key_verify", unreachable)
    resp = api_client.post("/api/v1/jobs/echo/", {"params": {"x": 1}}, format="json")
    assert resp.status_code == 503, resp.content
    assert resp["Retry-After"] == "5"
    assert resp.json() == {"detail": "The database is unavailable; try again shortly."}
    assert not Job.objects.exists()
