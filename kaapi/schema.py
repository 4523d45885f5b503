"""OpenAPI (drf-spectacular): the API-key security scheme, the error bodies, and a hook that documents what
every operation shares — the X-Request-ID header both ways, and 401/403 on every authenticated operation.
Imported by kaapi/urls.py so that the schema generator finds the extension.
"""

from __future__ import annotations

from django.apps import apps
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers

from .logging import TRACE_ID_MAX_LENGTH


class AutoSchema(openapi.AutoSchema):
    """Operations are tagged by the app their view lives in (``extend_schema(tags=...)`` still wins), so that the
    docs group them per app instead of under the path's first segment ("api")."""

    def get_tags(self) -> list[str]:
        app = apps.get_containing_app_config(type(self.view).__module__)
        return [app.label] if app is not None else super().get_tags()


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenancy.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-KEY",
            "description": "A project API key (`manage.py create_api_key`).",
        }


class ErrorSerializer(serializers.Serializer):
    """The body of every error that is not a field validation error."""

    detail = serializers.CharField()


# 400: each invalid field (or "non_field_errors") with its messages, e.g. {"delay": ["Ensure this value ..."]}
# (a nested field's errors are an object of the same shape), or {"detail": "..."} for a body that is not JSON.
VALIDATION_ERRORS = {
    "type": "object",
    "description": "Messages per invalid field, or `detail` for a request that could not be parsed.",
    "additionalProperties": {
        "anyOf": [{"type": "array", "items": {}}, {"type": "string"}, {"type": "object"}],
    },
}

_TRACE_ID_SCHEMA = {"type": "string", "maxLength": TRACE_ID_MAX_LENGTH, "pattern": "^[A-Za-z0-9._-]+$"}
_REQUEST_ID_PARAMETER = {
    "in": "header",
    "name": "X-Request-ID",
    "required": False,
    "schema": _TRACE_ID_SCHEMA,
    "description": "Trace id, stored on the jobs the request creates and in their log lines and webhooks; "
    "generated when absent or invalid.",
}
_REQUEST_ID_HEADER = {"schema": _TRACE_ID_SCHEMA, "description": "The request's trace id."}
_LOCATION_HEADER = {
    "schema": {"type": "string", "format": "uri"},
    "required": True,
    "description": "Where to poll the job: the body's status_url.",
}
# Every submission (an operation that answers 202) takes an Idempotency-Key (jobs/idempotency.py).
_IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    "description": "Makes a retry of this submission safe: the same key with the same body answers the same 202 "
    "(the same job) with Idempotent-Replayed: true, for IDEMPOTENCY_KEY_TTL seconds (24 h by default); with "
    "another body 422; while the first request with the key is still being processed 409.",
}
_REPLAYED_HEADER = {
    "schema": {"type": "string", "enum": ["true"]},
    "required": False,
    "description": "Present on the answer to a repeated Idempotency-Key: the answer recorded for its first request.",
}
_IDEMPOTENCY_ERRORS = {
    "409": "A request with this Idempotency-Key is still being processed (or the job is not in a state for it).",
    "422": "This Idempotency-Key was used for a request with another body.",
}
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_AUTH_ERRORS = {
    "401": "Missing, invalid or revoked API key.",
    "403": "The API key's project or organization is inactive.",
}


def postprocess_common(result, generator, request, public):
    """POSTPROCESSING_HOOKS: add the X-Request-ID header and the authentication errors to every operation, and the
    Location and Idempotent-Replayed headers, the Idempotency-Key parameter and its 409/422 to every 202 (a
    submission)."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Error",
        {
            "type": "object",
            "description": ErrorSerializer.__doc__,
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        },
    )
    for item in result.get("paths", {}).values():
        for operation in item.values():
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "X-Request-ID" for p in parameters):
                parameters.insert(0, dict(_REQUEST_ID_PARAMETER))
            responses = operation.setdefault("responses", {})
            if "202" in responses:
                if not any(p.get("name") == "Idempotency-Key" for p in parameters):
                    parameters.append(dict(_IDEMPOTENCY_KEY_PARAMETER))
                for code, description in _IDEMPOTENCY_ERRORS.items():
                    responses.setdefault(code, {"description": description, "content": _ERROR_BODY})
                responses.setdefault(  # a malformed Idempotency-Key
                    "400",
                    {"description": "Invalid input.", "content": {"application/json": {"schema": VALIDATION_ERRORS}}},
                )
            if any("ApiKeyAuth" in requirement for requirement in operation.get("security", [])):
                for code, description in _AUTH_ERRORS.items():
                    responses.setdefault(code, {"description": description, "content": _ERROR_BODY})
            # Answers every operation can give although its view does not say so: a malformed query or body (400),
            # an unknown or malformed id in the path (404).
            if operation.get("requestBody") or any(p.get("in") == "query" for p in parameters):
                responses.setdefault(
                    "400",
                    {"description": "Invalid input.", "content": {"application/json": {"schema": VALIDATION_ERRORS}}},
                )
            if any(p.get("in") == "path" for p in parameters):
                responses.setdefault("404", {"description": "Not found in your project.", "content": _ERROR_BODY})
            for code, response in responses.items():
                response.setdefault("headers", {})["X-Request-ID"] = _REQUEST_ID_HEADER
                if code == "202":  # every 202 is a submission (jobs.serializers.submitted_response, or a batch)
                    response["headers"]["Location"] = _LOCATION_HEADER
                    response["headers"]["Idempotent-Replayed"] = _REPLAYED_HEADER
    return result
