"""API-wide error handling: every client mistake is a 4xx with a clear message, and an unreachable database a 503
that says to retry (a 500 would say the server is broken); and the base of the API's model serializers."""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.core.exceptions import (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .parsers import unstorable_text

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5


def exception_handler(exc, context):
    if isinstance(exc, (OperationalError, InterfaceError)):
        # Restarting, failing over, out of connections, a statement timeout: nothing the client did wrong, and
        # worth a retry. Django closes the broken connection when the request ends.
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return Response(
            {"detail": "The database is unavailable; try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return drf_exception_handler(exc, context)


# Django's own request limits (forms and uploads) fail with these before a view runs; their text names the setting.
_REQUEST_LIMITS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def bad_request(request, exception=None) -> JsonResponse:
    detail = str(exception) if isinstance(exception, _REQUEST_LIMITS) else "Bad request."
    return JsonResponse({"detail": detail}, status=400)


def not_found(request, exception=None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error; it was logged."}, status=500)


def storable_json(value: Any) -> Any:
    """Validator for client JSON that is stored in a JSON column: PostgreSQL's jsonb cannot hold NUL characters
    or unpaired surrogates (valid JSON both), so they are refused with a 400 instead of failing the INSERT."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if unstorable_text(item):
                raise serializers.ValidationError("Text may not contain NUL characters or unpaired surrogates.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


class ModelSerializer(serializers.ModelSerializer):
    """DRF's ModelSerializer, with its fields built from the model once per class instead of once per instance.

    ``ModelSerializer.get_fields()`` maps each model field to a serializer field every time a serializer is made:
    three quarters of the CPU of serializing a job (the answer to a poll, the request clients send most). What it
    builds depends only on the class (its Meta and declared fields), so it is built once and each instance gets a
    deep copy, as DRF gives each instance a deep copy of the declared fields. Subclasses keep their own."""

    def get_fields(self):
        cls = type(self)
        built = cls.__dict__.get("_built_fields")
        if built is None:
            built = super().get_fields()
            cls._built_fields = built  # type: ignore[attr-defined]  # two threads may both build it: the same fields either way
        return copy.deepcopy(built)
