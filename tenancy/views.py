from __future__ import annotations

from typing import cast

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import APIKey


class WhoAmISerializer(serializers.Serializer):
    organization = serializers.CharField()
    project = serializers.CharField()
    project_id = serializers.IntegerField()
    api_key_prefix = serializers.CharField()
    api_key_name = serializers.CharField()
    max_concurrent_jobs = serializers.IntegerField(
        help_text="Jobs of the project running at once, per queue (high, low); the others wait PENDING."
    )
    max_submissions_per_minute = serializers.IntegerField(
        allow_null=True,
        help_text="Jobs of the project admitted in any 60 seconds; the others wait PENDING. null: no limit.",
    )
    monthly_budget = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        allow_null=True,
        help_text="USD of LLM calls the project may spend per calendar month (UTC); set by an operator. null: none.",
    )
    organization_monthly_budget = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        allow_null=True,
        help_text="USD of LLM calls all the organization's projects may spend per calendar month (UTC). null: none.",
    )


class WhoAmIView(APIView):
    """Which organization, project and key this request authenticated as (a cheap check of an API key)."""

    @extend_schema(responses={200: WhoAmISerializer}, summary="The caller's organization, project and key")
    def get(self, request: Request) -> Response:
        api_key = cast(APIKey, request.auth)
        project = api_key.project
        return Response(
            WhoAmISerializer(
                {
                    "organization": project.organization.name,
                    "project": project.name,
                    "project_id": project.id,
                    "api_key_prefix": api_key.prefix,
                    "api_key_name": api_key.name,
                    "max_concurrent_jobs": project.effective_max_concurrent_jobs,
                    "max_submissions_per_minute": project.effective_max_submissions_per_minute,
                    "monthly_budget": project.monthly_budget,
                    "organization_monthly_budget": project.organization.monthly_budget,
                }
            ).data
        )
