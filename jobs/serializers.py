from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.status import HTTP_202_ACCEPTED

from kaapi.api import ModelSerializer, storable_json

from .models import Job
from .registry import result_serializers
from .scheduled import schedule_horizon
from .services import PRIORITY_LEVELS


class ProgressSerializer(serializers.Serializer):
    percent = serializers.IntegerField(source="progress_percent")
    message = serializers.CharField(source="progress_message")


class EchoResultSerializer(serializers.Serializer):
    """The result of an ECHO job: its ``delay`` and the submitted params, each under its own key."""

    delay = serializers.FloatField()


# What a finished job's ``result`` is depends on its job_type: each registered job function names a serializer for
# it (jobs.registry.job_function), and the schema offers them all. Read when the schema is built, after every app
# has registered its functions.
_JOB_RESULT = PolymorphicProxySerializer(
    component_name="JobResult",
    serializers=lambda: list(result_serializers().values()),
    resource_type_field_name=None,
)


@extend_schema_field(_JOB_RESULT)
class JobResultField(serializers.JSONField):
    pass


class JobSerializer(ModelSerializer):
    progress = ProgressSerializer(source="*", read_only=True)
    result = JobResultField(
        read_only=True,
        allow_null=True,
        help_text="What the job returned, once SUCCESS: its shape depends on job_type "
        "(ECHO: EchoResult, LLM_API: LlmCallResult, DOC_TRANSFORM: DocumentTransformResult); null before.",
    )
    callback_url = serializers.CharField(read_only=True, help_text="Where the webhook goes; empty for none.")
    waiting_reason = serializers.CharField(
        read_only=True,
        help_text="Why a PENDING job is not on its way to a worker yet: max_concurrent_jobs (the project runs its "
        "maximum of jobs at once), submission_rate (the project had its maximum of jobs admitted in the last "
        "minute), retry (waiting for its next attempt); empty otherwise.",
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "job_type",
            "status",
            "waiting_reason",
            "queue",
            "priority",
            "progress",
            "result",
            "error",
            "attempts",
            "trace_id",
            "task_id",
            "callback_url",
            "run_after",
            "batch_id",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class ScheduledSubmissionSerializer(serializers.Serializer):
    """A submission's ``run_after`` / ``delay_seconds`` (jobs/scheduled.py): validated into ``run_after``, a time
    (None: at once)."""

    run_after = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Run the job at this time (ISO 8601) or later: it is SCHEDULED until then. At most "
        "JOB_SCHEDULE_HORIZON_DAYS (30 by default) ahead; a time past runs at once.",
    )
    delay_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0,
        help_text="Run the job this many seconds from now (instead of run_after).",
    )

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        run_after, delay = attrs.pop("run_after", None), attrs.pop("delay_seconds", None)
        now = timezone.now()
        horizon = schedule_horizon()
        if run_after is not None and delay is not None:
            raise serializers.ValidationError({"delay_seconds": ["give run_after or delay_seconds, not both"]})
        if delay is not None:
            if delay > horizon.total_seconds():
                raise serializers.ValidationError(
                    {"delay_seconds": [f"must be at most {int(horizon.total_seconds())} (JOB_SCHEDULE_HORIZON_DAYS)"]}
                )
            run_after = now + timedelta(seconds=delay)
        elif run_after is not None and run_after - now > horizon:
            raise serializers.ValidationError(
                {"run_after": [f"must be at most {horizon.days} days ahead (JOB_SCHEDULE_HORIZON_DAYS)"]}
            )
        attrs["run_after"] = run_after
        return attrs


class JobSubmittedSerializer(serializers.Serializer):
    """The answer to a submission: 202 with where to poll."""

    job_id = serializers.UUIDField(source="id")
    status = serializers.CharField()
    status_url = serializers.SerializerMethodField()

    def get_status_url(self, job: Job) -> str:
        return status_url(job, self.context.get("request"))


def status_url(job: Job, request=None) -> str:
    """Where to poll ``job``: absolute when there is a request to build it from."""
    path = f"/api/v1/jobs/{job.id}/"
    return request.build_absolute_uri(path) if request else path


def submitted(job: Job, request=None) -> dict:
    """What ``JobSubmittedSerializer(job).data`` is, built directly: every submission answers with it, and the
    serializer's per-instance copies of its fields cost more than the rest of the answer."""
    return {"job_id": str(job.id), "status": str(job.status), "status_url": status_url(job, request)}


def submitted_response(job: Job, request: Request, **extra: Any) -> Response:
    """202 with the body ``JobSubmittedSerializer`` documents (and ``extra`` fields), and the job's status URL in
    ``Location`` as well, where HTTP clients look for the status monitor of an accepted request."""
    body = {**submitted(job, request), **extra}
    return Response(body, status=HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})


class JobCancelSerializer(serializers.Serializer):
    terminate = serializers.BooleanField(default=False, help_text="Also kill the task if it is running.")


# A diagnostic job's params are stored, published and returned as its result: kilobytes are plenty.
ECHO_MAX_PARAMS_BYTES = 65_536


class EchoJobSerializer(ScheduledSubmissionSerializer):
    params = serializers.DictField(default=dict, help_text="Returned as the job's result.", validators=[storable_json])
    priority = serializers.ChoiceField(choices=sorted(PRIORITY_LEVELS), default="high")
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2048)

    def validate_delay(self, value: float) -> float:
        if not math.isfinite(value):  # "nan" passes both bounds, and jsonb cannot store it
            raise serializers.ValidationError("must be a finite number")
        return value

    def get_fields(self) -> dict[str, serializers.Field]:
        # Built per instance so that the bound (and the schema's maximum) follow ECHO_MAX_DELAY_SECONDS.
        fields = super().get_fields()
        delay = serializers.FloatField(
            default=0,
            min_value=0,
            max_value=settings.ECHO_MAX_DELAY_SECONDS,
            help_text="Seconds to wait before returning (a diagnostic job holds a worker that long).",
        )
        return {"params": fields.pop("params"), "delay": delay, **fields}

    def validate_params(self, value: dict) -> dict:
        if "delay" in value:
            raise serializers.ValidationError("use the top-level 'delay' field")
        if len(json.dumps(value)) > ECHO_MAX_PARAMS_BYTES:
            raise serializers.ValidationError(f"must be at most {ECHO_MAX_PARAMS_BYTES} bytes of JSON")
        return value
