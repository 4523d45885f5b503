"""The OpenAPI schema: generated without warnings, valid OpenAPI 3, every operation documents its errors."""

import re

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --fail-on-warn: an endpoint whose request or response drf-spectacular cannot resolve fails here
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_schema_is_valid_openapi_3(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")


def test_every_operation_documents_auth_errors_and_the_request_id(schema):
    operations = {
        (path, method): op
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, op in item.items()
    }
    assert {
        ("/api/v1/jobs/", "get"),
        ("/api/v1/jobs/{id}/", "get"),
        ("/api/v1/jobs/{id}/cancel/", "post"),
        ("/api/v1/jobs/{id}/retry/", "post"),
        ("/api/v1/jobs/echo/", "post"),
    } <= operations.keys()
    for key, op in operations.items():
        assert op["security"] == [{"ApiKeyAuth": []}], key
        assert {"401", "403"} <= op["responses"].keys(), key
        assert any(p["name"] == "X-Request-ID" and p["in"] == "header" for p in op["parameters"]), key
        assert all("X-Request-ID" in r["headers"] for r in op["responses"].values()), key
        if "202" in op["responses"]:  # a submitted job: where to poll it
            assert op["responses"]["202"]["headers"]["Location"]["required"], key
        if "requestBody" in op:  # whatever a client sends can be invalid
            assert "400" in op["responses"], key
    for key in [k for k in operations if k[0].startswith("/api/v1/jobs/")]:
        assert operations[key].get("summary"), key
    assert operations[("/api/v1/jobs/echo/", "post")]["responses"].keys() >= {"202", "400"}
    assert operations[("/api/v1/jobs/{id}/", "get")]["responses"].keys() >= {"200", "404"}
    assert operations[("/api/v1/jobs/{id}/cancel/", "post")]["responses"].keys() >= {"200", "400", "404", "409"}
    assert operations[("/api/v1/jobs/{id}/retry/", "post")]["responses"].keys() >= {"202", "404", "409"}
    assert {key for key, op in operations.items() if "202" in op["responses"]} == {
        ("/api/v1/jobs/echo/", "post"),
        ("/api/v1/jobs/{id}/retry/", "post"),
        ("/api/v1/llm/call", "post"),
        ("/api/v1/llm/call/batch", "post"),
        ("/api/v1/documents/", "post"),
    }
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "X-API-KEY"
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["in"] == "header"
    assert schema["paths"]["/readyz"]["get"]["responses"].keys() == {"200", "503"}
    assert schema["paths"]["/healthz"]["get"]["security"] == [{}]  # no API key


def test_schema_and_docs_are_served_without_api_key(client):
    resp = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    assert "/api/v1/jobs/echo/" in resp.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert b"/api/schema/" in client.get("/api/docs/", {"script": ""}).content  # its set-up script


def test_every_submission_documents_the_idempotency_key_and_its_answers(schema):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if "202" not in op["responses"]:
                continue
            [parameter] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
            assert parameter["in"] == "header" and parameter["schema"]["maxLength"] == 255, (path, method)
            assert "Idempotent-Replayed" in op["responses"]["202"]["headers"], (path, method)
            assert {"400", "409", "422"} <= op["responses"].keys(), (path, method)
    echo = schema["components"]["schemas"]["EchoJobRequest"]["properties"]
    assert {"run_after", "delay_seconds"} <= echo.keys()
    assert {"run_after", "batch_id"} <= schema["components"]["schemas"]["Job"]["properties"].keys()
    assert "SCHEDULED" in schema["components"]["schemas"]["JobStatusEnum"]["enum"]


def test_every_operation_is_tagged_by_its_app_and_has_a_summary(schema):
    tags = {}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), (path, method)
            tags[path, method] = op["tags"]
    assert tags["/api/v1/configs/", "get"] == ["llm"]
    assert tags["/api/v1/llm/call", "post"] == ["llm"]
    assert tags["/api/v1/documents/", "post"] == ["doctransform"]
    assert tags["/api/v1/whoami/", "get"] == ["tenancy"]
    assert tags["/api/v1/jobs/{id}/", "get"] == ["jobs"]
    assert {tag["name"] for tag in schema["tags"]} >= {tag for found in tags.values() for tag in found}


def test_a_jobs_result_is_typed_per_job_type(schema):
    schemas = schema["components"]["schemas"]
    result = schemas["Job"]["properties"]["result"]
    assert result["nullable"] and result["allOf"] == [{"$ref": "#/components/schemas/JobResult"}]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schemas["JobResult"]["oneOf"]} == {
        "EchoResult",
        "LlmCallResult",
        "DocumentTransformResult",
    }
    assert schemas["LlmCallResult"]["properties"]["usage"]
    assert "document_id" in schemas["DocumentTransformResult"]["required"]


@pytest.mark.parametrize(("url", "asset"), [("/api/docs/", "swagger-ui-dist"), ("/api/redoc/", "redoc")])
def test_docs_load_their_assets_from_our_static_files(client, url, asset):
    page = client.get(url).content.decode()
    assert f"/static/drf_spectacular_sidecar/{asset}/" in page
    assert "cdn" not in page.lower() and "https://" not in page
    if url == "/api/docs/":  # no inline script, which a strict Content-Security-Policy would block
        assert not re.findall(r"<script(?![^>]*\bsrc=)", page)
