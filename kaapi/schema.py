"""OpenAPI (drf-spectacular) extensions; imported by kaapi/urls.py so the schema generator finds them."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenancy.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-KEY",
            "description": "A project API key (`manage.py create_api_key`). Missing or wrong: 401; "
            "inactive project or organization: 403.",
        }


class ErrorSerializer(serializers.Serializer):
    """The body of every error that is not a field validation error."""

    detail = serializers.CharField()


# 400: each invalid field (or "non_field_errors") with its messages, e.g. {"delay": ["Ensure this value ..."]}.
VALIDATION_ERRORS = {
    "type": "object",
    "description": "Messages per invalid field.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
