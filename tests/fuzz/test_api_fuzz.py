"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis, in-process WSGI).

Every operation gets generated requests (valid and invalid) with a valid API key: no answer may be a 5xx, and
every answer must conform to the schema (documented status code, content type, body and headers). Bounded by
FUZZ_EXAMPLES per operation so that it fits in CI.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kaapi.wsgi import application
from tenancy.services import api_key_create
from tests.factories import make_job

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def keep_test_connection():
    """Calling the WSGI app directly sends request_started/finished, whose handler would close the connection
    that holds the test's transaction; Django's own test client disconnects it the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(project, keep_test_connection):
    make_job(project, hello="fuzz")  # something to list, cancel and retry
    return api_key_create(project=project).plaintext


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.django_db
def test_no_server_error_and_schema_conformance(case, api_key):
    case.call_and_validate(headers={"X-API-KEY": api_key}, checks=CHECKS)
