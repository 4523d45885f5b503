from __future__ import annotations

from django.db.models import Max
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors as job_selectors
from jobs.serializers import JobSubmittedSerializer, submitted_response
from jobs.views import idempotent
from tenancy.authentication import request_project

from . import selectors, services, usage
from .exceptions import ConfigNotFound, CredentialsMissing
from .models import Config, Provider, ProviderCredential
from .serializers import (
    ConfigCreateSerializer,
    ConfigSerializer,
    ConfigUpdateSerializer,
    ConfigVersionCreateSerializer,
    ConfigVersionSerializer,
    CredentialSerializer,
    CredentialSetSerializer,
    LlmBatchSerializer,
    LlmBatchSubmittedSerializer,
    LlmCallBatchSerializer,
    LlmCallSerializer,
    UsageQuerySerializer,
    UsageReportSerializer,
)


class BudgetSpent(exceptions.APIException):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "budget_spent"


BAD_REQUEST = OpenApiResponse(description="invalid input; the body names each bad field")
NOT_FOUND = OpenApiResponse(description="no such config (or version) in your project")


@extend_schema_view(
    list=extend_schema(summary="List the project's LLM configs"),
    retrieve=extend_schema(summary="One LLM config", responses={200: ConfigSerializer, 404: NOT_FOUND}),
    destroy=extend_schema(summary="Delete an LLM config", responses={204: None, 404: NOT_FOUND}),
)
class ConfigViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """LLM configs of the caller's project and their immutable versions."""

    serializer_class = ConfigSerializer
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # OpenAPI schema generation
            return Config.objects.none()
        return selectors.config_list(project=request_project(self.request)).annotate(
            latest_version=Max("versions__version")
        )

    def get_object(self) -> Config:
        config = self.get_queryset().filter(id=self.kwargs["pk"]).first()
        if config is None:
            raise Http404(f"config {self.kwargs['pk']} does not exist in your project")
        return config

    def _config_response(self, config: Config, code: int = status.HTTP_200_OK) -> Response:
        return Response(ConfigSerializer(self.get_queryset().get(id=config.id)).data, status=code)

    @extend_schema(
        summary="Create an LLM config with its first version",
        request=ConfigCreateSerializer,
        responses={201: ConfigSerializer, 400: BAD_REQUEST},
    )
    def create(self, request: Request) -> Response:
        serializer = ConfigCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        config = services.config_create(project=request_project(request), **serializer.validated_data)
        return self._config_response(config, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Rename or describe an LLM config",
        request=ConfigUpdateSerializer,
        responses={200: ConfigSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
    )
    def partial_update(self, request: Request, pk=None) -> Response:
        serializer = ConfigUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        config = services.config_update(config=self.get_object(), **serializer.validated_data)
        return self._config_response(config)

    def perform_destroy(self, instance: Config) -> None:
        services.config_delete(config=instance)

    @extend_schema(
        methods=["GET"], request=None, responses={200: ConfigVersionSerializer(many=True)}, summary="List versions"
    )
    @extend_schema(
        methods=["POST"],
        request=ConfigVersionCreateSerializer,
        responses={201: ConfigVersionSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        summary="Create the next version",
    )
    @action(detail=True, methods=["get", "post"], serializer_class=ConfigVersionSerializer)
    def versions(self, request: Request, pk=None) -> Response:
        config = self.get_object()
        if request.method == "POST":
            serializer = ConfigVersionCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            version = services.config_version_create(config=config, **serializer.validated_data)
            return Response(ConfigVersionSerializer(version).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(selectors.config_version_list(config=config))
        return self.get_paginated_response(ConfigVersionSerializer(page, many=True).data)

    @extend_schema(
        summary="One version of an LLM config",
        responses={200: ConfigVersionSerializer},
        parameters=[OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH)],
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"versions/(?P<version>[0-9]+)",
        url_name="version-detail",
        serializer_class=ConfigVersionSerializer,
    )
    def version(self, request: Request, pk=None, version: str = "") -> Response:
        config = self.get_object()
        found = selectors.config_version_get(config=config, version=int(version))
        if found is None:
            raise Http404(f"config {config.id} has no version {version}")
        return Response(ConfigVersionSerializer(found).data)


@extend_schema_view(
    list=extend_schema(summary="The project's provider credentials (keys masked)"),
    retrieve=extend_schema(summary="The project's credentials for one provider (key masked)"),
    destroy=extend_schema(summary="Delete the project's credentials for one provider"),
)
class CredentialViewSet(viewsets.GenericViewSet):
    """The project's provider credentials; the API key is write-only and shown masked."""

    serializer_class = CredentialSerializer
    queryset = ProviderCredential.objects.none()  # for the OpenAPI schema; views use the selectors
    lookup_field = "provider"
    lookup_value_regex = "[^/]+"
    pagination_class = None

    def _provider(self) -> str:
        provider = self.kwargs["provider"]
        if provider not in Provider.values:
            raise Http404(f"unknown provider {provider!r}; known: {', '.join(Provider.values)}")
        return provider

    def list(self, request: Request) -> Response:
        credentials = selectors.credential_list(project=request_project(request))
        return Response(CredentialSerializer(credentials, many=True).data)

    def retrieve(self, request: Request, provider: str = "") -> Response:
        credential = selectors.credential_get(project=request_project(request), provider=self._provider())
        if credential is None:
            raise Http404(f"no credentials for provider {provider!r} in your project")
        return Response(CredentialSerializer(credential).data)

    @extend_schema(
        summary="Set the project's credentials for one provider",
        request=CredentialSetSerializer,
        responses={200: CredentialSerializer, 400: BAD_REQUEST, 404: OpenApiResponse(description="unknown provider")},
    )
    def update(self, request: Request, provider: str = "") -> Response:
        provider = self._provider()
        serializer = CredentialSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        credential = services.credential_set(
            project=request_project(request), provider=provider, **serializer.validated_data
        )
        return Response(CredentialSerializer(credential).data)

    def destroy(self, request: Request, provider: str = "") -> Response:
        if not services.credential_delete(project=request_project(request), provider=self._provider()):
            raise Http404(f"no credentials for provider {provider!r} in your project")
        return Response(status=status.HTTP_204_NO_CONTENT)


class LlmCallView(APIView):
    """Submit an LLM call: 202 with the job id at once; the call runs on the high-priority queue."""

    @extend_schema(
        summary="Submit an LLM call (202 with the job)",
        request=LlmCallSerializer,
        responses={
            202: JobSubmittedSerializer,
            400: OpenApiResponse(description="invalid request, invalid inline config or no provider credentials"),
            402: OpenApiResponse(description="a monthly budget of the project or its organization is spent"),
            404: OpenApiResponse(description="the config or its version does not exist in your project"),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = LlmCallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        config = data["config"]
        try:
            job = services.llm_call_start(
                project=request_project(request),
                query=data["query"],
                config_id=config.get("id"),
                config_version=config.get("version"),
                blob=config.get("blob"),
                callback_url=data.get("callback_url", ""),
                request_metadata=data["request_metadata"],
                run_after=data["run_after"],
            )
        except ConfigNotFound as exc:
            raise exceptions.NotFound(str(exc)) from None
        except CredentialsMissing as exc:
            raise exceptions.ValidationError({"credentials": [str(exc)]}) from None
        except usage.BudgetExceeded as exc:
            raise BudgetSpent(str(exc)) from None
        return submitted_response(job, request)


class LlmCallSlashView(LlmCallView):
    """``POST /api/v1/llm/call/``: the same, for clients that add a trailing slash (not in the schema)."""

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        return super().post(request)


class LlmCallBatchView(APIView):
    """Submit many LLM calls in one request: validated as a whole, created in one transaction, run as one job
    each on the low-priority queue."""

    @extend_schema(
        summary="Submit many LLM calls at once (a batch)",
        request=LlmCallBatchSerializer,
        responses={
            202: LlmBatchSubmittedSerializer,
            400: OpenApiResponse(
                description='invalid calls, keyed by index: {"calls": {"3": {"query": [...]}}}; nothing was created'
            ),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = LlmCallBatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            batch_id, jobs = services.llm_call_batch_start(
                project=request_project(request), calls=serializer.validated_data["calls"]
            )
        except services.BatchInvalid as exc:
            errors = {str(index): messages for index, messages in exc.errors.items()}
            raise exceptions.ValidationError({"calls": errors}) from None
        url = request.build_absolute_uri(f"/api/v1/llm/batches/{batch_id}/")
        body = {"batch_id": str(batch_id), "status_url": url, "job_ids": [str(job.id) for job in jobs]}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class LlmBatchView(APIView):
    """A batch's progress: how many of its jobs are in each status."""

    @extend_schema(
        summary="A batch's jobs counted per status",
        responses={200: LlmBatchSerializer, 404: OpenApiResponse(description="no such batch in your project")},
    )
    def get(self, request: Request, batch_id) -> Response:
        counts = job_selectors.batch_status_counts(project=request_project(request), batch_id=batch_id)
        if counts is None:
            raise Http404("No batch with this id in your project.")
        return Response({"batch_id": str(batch_id), "total": sum(counts.values()), "counts": counts})


class UsageView(APIView):
    """LLM usage of the caller's project: calls, failures, tokens and cost per day, month, provider, model or
    config, over finished calls (by the time they finished, UTC)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day included (UTC); default: 1st of month"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day included (UTC); default: today"),
            OpenApiParameter("group_by", OpenApiTypes.STR, enum=list(usage.GROUP_BY), description="default: day"),
        ],
        responses={200: UsageReportSerializer, 400: BAD_REQUEST},
        summary="Usage and cost of LLM calls",
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        start, end = usage.day_range(query.validated_data["from"], query.validated_data["to"])
        report = usage.usage_report(
            project_ids=[request_project(request).pk],
            start=start,
            end=end,
            group_by=query.validated_data["group_by"],
        )
        return Response(UsageReportSerializer(report).data)
