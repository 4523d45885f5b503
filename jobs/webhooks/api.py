"""API of webhooks: a job's deliveries, and the project's signing secret (read and rotate)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kaapi.api import ModelSerializer
from kaapi.schema import ErrorSerializer
from tenancy.authentication import request_project

from .. import selectors
from ..models import WebhookDelivery, WebhookSecret
from .services import webhook_secret_get, webhook_secret_rotate


class WebhookDeliverySerializer(ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "url",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields


class WebhookSecretSerializer(ModelSerializer):
    class Meta:
        model = WebhookSecret
        fields = ["secret", "previous_valid_until", "rotated_at", "created_at"]
        read_only_fields = fields


@extend_schema(tags=["jobs"])
class JobWebhookListView(APIView):
    """``GET /api/v1/jobs/{id}/webhooks/``: the webhook deliveries of one of the caller's jobs."""

    serializer_class = WebhookDeliverySerializer  # for the OpenAPI schema

    @extend_schema(
        summary="The webhook deliveries of a job",
        responses={
            200: WebhookDeliverySerializer(many=True),
            404: OpenApiResponse(ErrorSerializer, description="No job with this id in your project."),
        },
    )
    def get(self, request: Request, pk) -> Response:
        job = selectors.job_get(project=request_project(request), job_id=pk)
        if job is None:
            raise Http404("No job with this id in your project.")
        deliveries = job.webhook_deliveries.order_by("-created_at")
        return Response(WebhookDeliverySerializer(deliveries, many=True).data)


@extend_schema(tags=["webhooks"])
class WebhookSecretView(APIView):
    """``GET /api/v1/webhooks/secret/``: the secret the project's webhooks are signed with."""

    serializer_class = WebhookSecretSerializer

    @extend_schema(summary="The project's webhook signing secret", responses={200: WebhookSecretSerializer})
    def get(self, request: Request) -> Response:
        return Response(WebhookSecretSerializer(webhook_secret_get(project=request_project(request))).data)


@extend_schema(tags=["webhooks"])
class WebhookSecretRotateView(APIView):
    """``POST /api/v1/webhooks/secret/rotate/``: a new secret; the previous one keeps signing for a grace period."""

    serializer_class = WebhookSecretSerializer

    @extend_schema(
        summary="Rotate the project's webhook signing secret", request=None, responses={200: WebhookSecretSerializer}
    )
    def post(self, request: Request) -> Response:
        secret = webhook_secret_rotate(project=request_project(request))
        return Response(WebhookSecretSerializer(secret).data, status=status.HTTP_200_OK)
