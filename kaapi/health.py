"""Liveness (/healthz, no I/O) and readiness (/readyz: database and broker reachable). No API key needed."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from kombu import Connection
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=settings.READYZ_TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=0)  # one attempt, no retry delay


CHECKS = {"database": check_database, "broker": check_broker}


def readiness() -> dict[str, str]:
    """Each check's outcome: "ok" or "error". The endpoint needs no key, so why a dependency is down (host names,
    ports, user names in a driver's message) goes to the log only."""
    outcomes = {}
    for name, check in CHECKS.items():
        try:
            check()
            outcomes[name] = "ok"
        except Exception:
            logger.warning("readiness check %s failed", name, exc_info=True)
            outcomes[name] = "error"
    return outcomes


_HealthSerializer = inline_serializer("Health", {"status": serializers.CharField()})
_ReadinessSerializer = inline_serializer(
    "Readiness",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checks": serializers.DictField(
            child=serializers.CharField(), help_text='"ok" or "error" per check (the reason is logged)'
        ),
        "failed": serializers.ListField(child=serializers.CharField(), help_text="names of the failed checks"),
    },
)


class _OpsView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]


class HealthzView(_OpsView):
    @extend_schema(
        operation_id="healthz", tags=["operations"], summary="Liveness: the process answers (no I/O)",
        responses={200: _HealthSerializer},
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyzView(_OpsView):
    @extend_schema(
        operation_id="readyz",
        tags=["operations"],
        summary="Readiness: the database and the broker answer",
        responses={200: _ReadinessSerializer, 503: _ReadinessSerializer},
        examples=[
            OpenApiExample(
                "broker down",
                status_codes=["503"],
                response_only=True,
                value={
                    "status": "unavailable",
                    "checks": {"database": "ok", "broker": "error"},
                    "failed": ["broker"],
                },
            )
        ],
    )
    def get(self, request: Request) -> Response:
        checks = readiness()
        failed = [name for name, outcome in checks.items() if outcome != "ok"]
        return Response(
            {"status": "unavailable" if failed else "ok", "checks": checks, "failed": failed},
            status=503 if failed else 200,
        )
