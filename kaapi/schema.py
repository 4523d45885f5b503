"""OpenAPI (drf-spectacular): the API-key security scheme, the error bodies, and a hook that documents what
every operation shares — the X-Request-ID header both ways, and 401/403 on every authenticated operation.
Imported by kaapi/urls.py so that the schema generator finds the extension.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers

from .logging import TRACE_ID_MAX_LENGTH


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
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_AUTH_ERRORS = {
    "401": "Missing, invalid or revoked API key.",
    "403": "The API key's project or organization is inactive.",
}


def postprocess_common(result, generator, request, public):
    """POSTPROCESSING_HOOKS: add the X-Request-ID header and the authentication errors to every operation, and the
    Location header to every 202 (a submitted job)."""
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
                if code == "202":  # every 202 is a submitted job (jobs.serializers.submitted_response)
                    response["headers"]["Location"] = _LOCATION_HEADER
    return result
