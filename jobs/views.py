from __future__ import annotations

from django.db import transaction
from django.http import Http404
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from tenancy.authentication import request_project

from . import selectors, services
from .exceptions import JobStateError
from .filters import JobFilter
from .functions import echo
from .models import Job
from .serializers import EchoJobSerializer, JobCancelSerializer, JobSerializer, JobSubmittedSerializer

ECHO_PATH = f"{echo.__module__}.{echo.__qualname__}"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def submitted_response(job: Job, request: Request) -> Response:
    return Response(JobSubmittedSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of the caller's project."""

    serializer_class = JobSerializer
    filterset_class = JobFilter
    lookup_value_converter = "uuid"

    def get_queryset(self):
        return selectors.job_list(project=request_project(self.request))

    def get_object(self) -> Job:
        job = selectors.job_get(project=request_project(self.request), job_id=self.kwargs["pk"])
        if job is None:
            raise Http404("No job with this id in your project.")
        return job

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        options = JobCancelSerializer(data=request.data or {})
        options.is_valid(raise_exception=True)
        try:
            job = services.job_cancel(job=self.get_object(), terminate=options.validated_data["terminate"])
        except JobStateError as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data)

    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk=None) -> Response:
        try:
            with transaction.atomic():
                job = services.job_retry(job=self.get_object())
        except JobStateError as exc:
            raise Conflict(str(exc)) from None
        return submitted_response(job, request)

    @action(detail=False, methods=["post"], serializer_class=EchoJobSerializer)
    def echo(self, request: Request) -> Response:
        """Submit a diagnostic echo job: its result is its params, after an optional delay."""
        serializer = EchoJobSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            job = services.job_create(
                project=request_project(request),
                function_path=ECHO_PATH,
                params={"delay": data["delay"], **data["params"]},
                priority=data["priority"],
                callback_url=data["callback_url"],
            )
        return submitted_response(job, request)
