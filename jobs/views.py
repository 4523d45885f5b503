from __future__ import annotations

import functools
from collections.abc import Callable

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from kaapi.schema import VALIDATION_ERRORS, ErrorSerializer
from tenancy.authentication import request_project

from . import idempotency, selectors, services
from .exceptions import JobStateError
from .filters import JobFilter
from .functions import ECHO_PATH
from .models import Job
from .serializers import (
    EchoJobSerializer,
    JobCancelSerializer,
    JobSerializer,
    JobSubmittedSerializer,
    submitted_response,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class Unprocessable(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable"


def idempotent(view_method: Callable[..., Response]) -> Callable[..., Response]:
    """A submission view that honours the ``Idempotency-Key`` header (jobs/idempotency.py): with a key, the view
    runs in one transaction with the key's record, and a retry with the key is answered from that record."""

    @functools.wraps(view_method)
    def view(self, request: Request, *args, **kwargs) -> Response:
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        try:
            key = idempotency.validate_key(key)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None
        project = request_project(request)
        fingerprint = idempotency.request_fingerprint(method=str(request.method), path=request.path, data=request.data)
        try:
            with transaction.atomic():
                found = idempotency.idempotency_key_find(project=project, key=key, fingerprint=fingerprint)
                if found is not None:
                    headers = {idempotency.REPLAYED_HEADER: "true"}
                    if found.response_location:
                        headers["Location"] = found.response_location
                    return Response(found.response_body, status=found.response_status, headers=headers)
                response = view_method(self, request, *args, **kwargs)
                if not status.is_success(response.status_code):  # nothing of a refused submission is kept
                    transaction.set_rollback(True)
                    return response
                idempotency.idempotency_key_record(
                    project=project,
                    key=key,
                    fingerprint=fingerprint,
                    status=response.status_code,
                    body=response.data,
                    location=response.headers.get("Location", ""),
                )
                return response
        except idempotency.IdempotencyKeyInFlight as exc:
            raise Conflict(str(exc)) from None
        except idempotency.IdempotencyKeyReused as exc:
            raise Unprocessable(str(exc)) from None
        except IntegrityError:  # another request recorded the key first (no advisory lock: SQLite)
            raise Conflict(f"a request with this {idempotency.HEADER} was processed meanwhile; retry") from None

    return view


# --- OpenAPI: the errors of these operations (401/403 and X-Request-ID: kaapi.schema) ------------
_BAD_REQUEST = {400: OpenApiResponse(VALIDATION_ERRORS, description="Invalid input, per field.")}
_NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="No job with this id in your project.")}
_SUBMITTED = {202: OpenApiResponse(JobSubmittedSerializer, description="Accepted: poll status_url.")}


def _conflict(description: str) -> dict:
    return {409: OpenApiResponse(ErrorSerializer, description=description)}


@extend_schema_view(
    list=extend_schema(
        summary="List the project's jobs, newest first",
        responses={200: JobSerializer(many=True), **_BAD_REQUEST},
    ),
    retrieve=extend_schema(
        summary="One job of the project",
        responses={200: JobSerializer, **_NOT_FOUND},
    ),
)
@extend_schema(tags=["jobs"])
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of the caller's project."""

    serializer_class = JobSerializer
    filterset_class = JobFilter
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # OpenAPI generation: no project
            return Job.objects.none()
        return selectors.job_list(project=request_project(self.request))

    def get_object(self) -> Job:
        job = selectors.job_get(project=request_project(self.request), job_id=self.kwargs["pk"])
        if job is None:
            raise Http404("No job with this id in your project.")
        return job

    @extend_schema(
        summary="Cancel a scheduled, pending or running job",
        request=JobCancelSerializer,
        responses={
            200: JobSerializer,
            **_BAD_REQUEST,
            **_NOT_FOUND,
            **_conflict("The job already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        options = JobCancelSerializer(data=request.data or {})
        options.is_valid(raise_exception=True)
        try:
            job = services.job_cancel(job=self.get_object(), terminate=options.validated_data["terminate"])
        except JobStateError as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data)

    @extend_schema(
        summary="Run a failed or cancelled job again",
        request=None,
        responses={**_SUBMITTED, **_NOT_FOUND, **_conflict("The job is not FAILED or CANCELLED.")},
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def retry(self, request: Request, pk=None) -> Response:
        try:
            with transaction.atomic():
                job = services.job_retry(job=self.get_object())
        except JobStateError as exc:
            raise Conflict(str(exc)) from None
        return submitted_response(job, request)

    @extend_schema(
        summary="Submit a diagnostic echo job",
        request=EchoJobSerializer,
        responses={**_SUBMITTED, **_BAD_REQUEST},
    )
    @action(detail=False, methods=["post"], serializer_class=EchoJobSerializer)
    @idempotent
    def echo(self, request: Request) -> Response:
        """Submit a diagnostic echo job: its result is its params, after an optional delay."""
        serializer = EchoJobSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # One row and no domain rows: autocommit is its own transaction, and the job is published after it.
        job = services.job_create(
            project=request_project(request),
            function_path=ECHO_PATH,
            params={"delay": data["delay"], **data["params"]},
            priority=data["priority"],
            callback_url=data.get("callback_url", ""),
            run_after=data["run_after"],
        )
        return submitted_response(job, request)
