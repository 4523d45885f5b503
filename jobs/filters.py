import datetime

import django_filters
from rest_framework.exceptions import ValidationError

from .models import Job, JobStatus


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 datetime, compared in UTC: PostgreSQL refuses UTC offsets beyond ±15:59, which ISO 8601
    (and so the form field) allows, so the value is converted before it reaches the query."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(datetime.UTC)
            except (OverflowError, ValueError):
                raise ValidationError({self.field_name: ["Datetime out of range."]}) from None
        return super().filter(qs, value)


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    job_type = django_filters.CharFilter(max_length=64)
    created_after = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    batch_id = django_filters.UUIDFilter(help_text="The jobs of one bulk submission (POST /api/v1/llm/call/batch).")

    class Meta:
        model = Job
        fields = ["status", "job_type", "created_after", "created_before", "batch_id"]
