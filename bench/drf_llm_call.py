"""The baseline of bench/llm_call_vs_drf.py: ``POST /api/v1/llm/call`` as a Django team would write it first.

A serializer, the config version looked up in the caller's project, ``Job.objects.create`` and
``transaction.on_commit(task.delay)``: no admission, no credential check, no confirmed publish, no recovery of a
message the broker never got. Same authentication, parser and renderer as the API (the project's DRF settings).
Mounted at ``/bench/drf/llm/call`` beside the whole API, by bench/drf_settings.py only.
"""

from celery import shared_task
from django.db import transaction
from django.urls import include, path
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.models import Job
from kaapi.urls import handler400, handler404, handler500  # noqa: F401  (JSON errors, as the API)
from llm.models import ConfigVersion
from tenancy.authentication import request_project


@shared_task(name="bench.drf_llm_call")
def drf_llm_call(job_id: str) -> None:
    """Never runs: no worker consumes its queue during the benchmark."""


class ConfigReference(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.IntegerField(min_value=1)


class DrfLlmCallSerializer(serializers.Serializer):
    config = ConfigReference()
    query = serializers.CharField(max_length=100_000)
    request_metadata = serializers.DictField(required=False, allow_null=True, default=None)


class DrfLlmCallView(APIView):
    def post(self, request):
        serializer = DrfLlmCallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        project = request_project(request)
        version = ConfigVersion.objects.filter(
            config__project=project, config_id=data["config"]["id"], version=data["config"]["version"]
        ).first()
        if version is None:
            raise NotFound("no such config version in your project")
        with transaction.atomic():
            job = Job.objects.create(
                project=project,
                job_type="LLM_API",
                function_path="llm.jobs.execute_job",
                queue="high_priority",
                priority=9,
                params={"query": data["query"], "config_version_id": version.id, "metadata": data["request_metadata"]},
            )
            transaction.on_commit(lambda: drf_llm_call.delay(str(job.id)))
        return Response({"job_id": str(job.id), "status": job.status}, status=status.HTTP_202_ACCEPTED)


urlpatterns = [
    path("bench/drf/llm/call", DrfLlmCallView.as_view()),
    path("", include("kaapi.urls")),
]
