"""Hostile request bodies and query strings on every JSON endpoint: a 4xx naming the problem, never a 500, and
never more of a body read than the limit."""

from __future__ import annotations

import io
import json

import pytest

from jobs.models import Job
from llm.services import config_create
from tests.factories import make_job
from tests.llm.conftest import BLOBS

pytestmark = pytest.mark.django_db

# (method, path, a valid body) of every endpoint that parses a JSON body; {config} is a config of the project.
JSON_ENDPOINTS = [
    ("post", "/api/v1/jobs/echo/", {"params": {"a": 1}}),
    ("post", "/api/v1/llm/call", {"config": {"blob": BLOBS["openai"]}, "query": "hi"}),
    ("post", "/api/v1/configs/", {"name": "n", "blob": BLOBS["openai"]}),
    ("patch", "/api/v1/configs/{config}/", {"description": "d"}),
    ("post", "/api/v1/configs/{config}/versions/", {"blob": BLOBS["openai"]}),
    ("put", "/api/v1/credentials/openai/", {"api_key": "sk-abc"}),
    ("post", "/api/v1/jobs/{job}/cancel/", {"terminate": False}),
]


@pytest.fixture
def targets(project):
    config = config_create(project=project, name="bot", blob=BLOBS["openai"])
    return {"config": config.id, "job": make_job(project).id}


def send(client, method, path, raw: bytes, **extra):
    return client.generic(method.upper(), path, raw, content_type="application/json", **extra)


def _ids(endpoints):
    return [f"{method} {path}" for method, path, _ in endpoints]


class CountingStream(io.BytesIO):
    """A request body that records how much of it the server read."""

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read = getattr(self, "bytes_read", 0) + len(data)
        return data


@pytest.mark.parametrize(("method", "path", "body"), JSON_ENDPOINTS, ids=_ids(JSON_ENDPOINTS))
def test_a_body_declared_over_the_limit_is_413_before_it_is_read(api_client, targets, settings, method, path, body):
    settings.API_MAX_JSON_BODY_BYTES = 4096
    raw = json.dumps({**body, "padding": "x" * 5000}).encode()
    stream = CountingStream(raw)
    resp = send(api_client, method, path.format(**targets), b"", **{"wsgi.input": stream, "CONTENT_LENGTH": len(raw)})
    assert resp.status_code == 413, resp.content
    assert "4096" in resp.json()["detail"] and "API_MAX_JSON_BODY_BYTES" in resp.json()["detail"]
    assert getattr(stream, "bytes_read", 0) == 0


def test_a_body_within_the_limit_is_accepted_and_the_default_limit_is_a_few_mib(api_client, settings):
    assert 2 * 1024 * 1024 <= settings.API_MAX_JSON_BODY_BYTES <= 8 * 1024 * 1024
    settings.API_MAX_JSON_BODY_BYTES = 4096
    raw = json.dumps({"params": {"padding": "x" * 3000}}).encode()
    assert send(api_client, "post", "/api/v1/jobs/echo/", raw).status_code == 202


@pytest.mark.parametrize(("method", "path", "body"), JSON_ENDPOINTS, ids=_ids(JSON_ENDPOINTS))
@pytest.mark.parametrize("depth", [100_000, 65])
def test_deeply_nested_json_is_400(api_client, targets, method, path, body, depth):
    raw = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    resp = send(api_client, method, path.format(**targets), raw)
    assert resp.status_code == 400, resp.content
    assert "nested deeper than 64" in resp.json()["detail"]


def test_moderately_nested_json_is_accepted(api_client):
    nested: dict = {}
    for _ in range(60):
        nested = {"n": nested}
    assert api_client.post("/api/v1/jobs/echo/", {"params": nested}, format="json").status_code == 202


UNSTORABLE = ["nul\x00byte", "lone \ud800 surrogate", "\udfff"]
# (method, path, body with {bad} where the text goes, the field the answer must name)
TEXT_FIELDS = [
    (
        "post",
        "/api/v1/llm/call",
        {"config": {"blob": BLOBS["openai"]}, "query": "hi", "request_metadata": {"k": "{bad}"}},
        "request_metadata",
    ),
    ("post", "/api/v1/llm/call", {"config": {"blob": BLOBS["openai"]}, "query": "{bad}"}, "query"),
    (
        "post",
        "/api/v1/llm/call",
        {"config": {"blob": {"completion": {"provider": "openai", "params": {"model": "{bad}"}}}}, "query": "hi"},
        "config",
    ),
    ("post", "/api/v1/configs/", {"name": "{bad}", "blob": BLOBS["openai"]}, "name"),
    ("post", "/api/v1/configs/", {"name": "n", "blob": BLOBS["openai"], "commit_message": "{bad}"}, "commit_message"),
    (
        "post",
        "/api/v1/configs/",
        {
            "name": "n",
            "blob": {"completion": {"provider": "openai", "params": {"model": "gpt", "instructions": "{bad}"}}},
        },
        "blob",
    ),
    ("patch", "/api/v1/configs/{config}/", {"description": "{bad}"}, "description"),
    (
        "post",
        "/api/v1/configs/{config}/versions/",
        {"blob": {"completion": {"provider": "openai", "params": {"model": "{bad}"}}}},
        "blob",
    ),
    ("put", "/api/v1/credentials/openai/", {"api_key": "{bad}"}, "api_key"),
    ("put", "/api/v1/credentials/openai/", {"api_key": "sk-abc", "organization": "{bad}"}, "organization"),
    ("put", "/api/v1/credentials/openai/", {"api_key": "sk-abc", "base_url": "https://example.com/{bad}"}, "base_url"),
    ("post", "/api/v1/jobs/echo/", {"params": {"{bad}": 1}}, "params"),
    ("post", "/api/v1/jobs/echo/", {"params": {"a": ["{bad}"]}}, "params"),
    ("post", "/api/v1/jobs/echo/", {"params": {}, "callback_url": "https://example.com/{bad}"}, "callback_url"),
]


@pytest.mark.parametrize("bad", UNSTORABLE, ids=["nul", "surrogate", "low-surrogate"])
@pytest.mark.parametrize(
    ("method", "path", "body", "field"), TEXT_FIELDS, ids=[f"{m} {p} {f}" for m, p, b, f in TEXT_FIELDS]
)
def test_unstorable_text_is_400_naming_the_field(api_client, targets, method, path, body, field, bad):
    # json.dumps writes both as escapes (\u0000, \ud800), as a client's JSON would
    raw = json.dumps(body).replace("{bad}", json.dumps(bad)[1:-1]).encode()
    resp = send(api_client, method, path.format(**targets), raw)
    assert resp.status_code == 400, resp.content
    assert field in resp.json(), resp.json()
    assert "NUL characters or unpaired surrogates" in str(resp.json())
    assert Job.objects.filter(function_path="llm.jobs.execute_job").count() == 0


def test_an_unstorable_key_is_named_in_a_printable_answer(api_client):
    raw = b'{"\\ud800": 1, "params": {}}'
    resp = send(api_client, "post", "/api/v1/jobs/echo/", raw)
    assert resp.status_code == 400
    assert "\\ud800" in resp.json()


# --- ?limit= and ?offset= -----------------------------------------------------------------------
LISTS = ["/api/v1/jobs/", "/api/v1/configs/", "/api/v1/configs/{config}/versions/", "/api/v1/documents/"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=abc",
        "limit=1.5",
        "limit=" + "9" * 20,
        "limit=" + "9" * 5000,
        "offset=-1",
        "offset=x",
        "offset=100000000000000000000",
        "limit=%00",
    ],
)
def test_malformed_page_numbers_are_400(api_client, targets, path, query):
    resp = api_client.get(f"{path.format(**targets)}?{query}")
    assert resp.status_code == 400, resp.content
    name = query.split("=")[0]
    assert "must be an integer" in resp.json()[name][0]


def test_limit_is_capped_at_api_max_page_size(api_client, project, settings):
    assert settings.API_MAX_PAGE_SIZE == 1000
    settings.API_MAX_PAGE_SIZE = 2
    for _ in range(3):
        make_job(project)
    for limit in ("1000000000", str(2**63 - 1)):
        body = api_client.get(f"/api/v1/jobs/?limit={limit}").json()
        assert body["count"] == 3
        assert len(body["results"]) == 2
        assert "limit=2" in body["next"]
    body = api_client.get("/api/v1/jobs/?limit=1&offset=2").json()
    assert len(body["results"]) == 1
    assert api_client.get("/api/v1/jobs/?offset=1000000").json()["results"] == []


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/api/v1/jobs/echo/", b'{"params": {"x": 1e400}}', "params"),
        ("/api/v1/jobs/echo/", b'{"params": {"x": [-1e400]}}', "params"),
        (
            "/api/v1/configs/",
            b'{"name": "n", "blob": {"completion": {"provider": "openai", "params": {"model": "m", "top_p": 1e999}}}}',
            "blob",
        ),
        (
            "/api/v1/llm/call",
            b'{"config": {"blob": {}}, "query": "q", "request_metadata": {"n": 1e400}}',
            "request_metadata",
        ),
    ],
)
def test_a_number_beyond_a_double_is_400_naming_the_field(api_client, path, raw, field):
    resp = send(api_client, "post", path, raw)
    assert resp.status_code == 400, resp.content
    assert "must be finite" in resp.json()[field][0]


@pytest.mark.parametrize("delay", ["nan", "NaN", "-nan"])
def test_an_echo_delay_that_is_not_a_number_is_400(api_client, delay):
    resp = api_client.post("/api/v1/jobs/echo/", {"delay": delay}, format="json")
    assert resp.status_code == 400, resp.content
    assert "delay" in resp.json()


def test_echo_params_are_bounded_like_request_metadata(api_client):
    """A diagnostic job's params are stored, published and returned as its result: kilobytes, not the megabytes
    a JSON body may carry."""
    from jobs.serializers import ECHO_MAX_PARAMS_BYTES

    assert api_client.post("/api/v1/jobs/echo/", {"params": {"p": "x" * 1000}}, format="json").status_code == 202
    resp = api_client.post("/api/v1/jobs/echo/", {"params": {"p": "x" * ECHO_MAX_PARAMS_BYTES}}, format="json")
    assert resp.status_code == 400
    assert f"at most {ECHO_MAX_PARAMS_BYTES} bytes" in resp.json()["params"][0]
