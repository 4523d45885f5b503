"""kaapi.api.ModelSerializer: the model's fields are mapped once per class, and every instance has its own copies."""

from unittest import mock

import pytest
from rest_framework import serializers

from jobs.models import Job
from jobs.serializers import JobSerializer
from kaapi.api import ModelSerializer


def test_fields_are_built_once_per_class_and_copied_for_each_instance():
    class Jobs(ModelSerializer):
        class Meta:
            model = Job
            fields = ["id", "status", "created_at"]

    class MoreJobs(Jobs):
        class Meta(Jobs.Meta):
            fields = ["id", "status", "created_at", "error"]

    with mock.patch.object(
        serializers.ModelSerializer, "get_fields", autospec=True, side_effect=serializers.ModelSerializer.get_fields
    ) as build:
        first, second = Jobs().fields, Jobs().fields
        assert build.call_count == 1
        assert list(first) == list(second) == ["id", "status", "created_at"]
        assert first["status"] is not second["status"] and first["status"].parent is not second["status"].parent
        assert list(MoreJobs().fields) == ["id", "status", "created_at", "error"]  # a subclass builds its own
        assert build.call_count == 2


@pytest.mark.django_db
def test_a_job_serializes_as_the_model_serializer_does(project):
    from jobs.services import job_create

    job = job_create(project=project, function_path="jobs.functions.echo", params={"n": 1})

    class Plain(serializers.ModelSerializer):
        progress = JobSerializer._declared_fields["progress"].__class__(source="*", read_only=True)
        callback_url = serializers.CharField(read_only=True)

        class Meta(JobSerializer.Meta):
            pass

    for _ in range(2):
        assert JobSerializer(job).data == Plain(job).data
