from __future__ import annotations

import json

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from jobs.serializers import ScheduledSubmissionSerializer
from kaapi.api import ModelSerializer

from .models import Config, ConfigVersion, ProviderCredential
from .usage import GROUP_BY

MAX_QUERY_LENGTH = 200_000
MAX_METADATA_BYTES = 16_384
MAX_LIMIT = 1_000_000_000


class ConfigSerializer(ModelSerializer):
    latest_version = serializers.IntegerField(read_only=True, help_text="The highest version number.")

    class Meta:
        model = Config
        fields = ["id", "name", "description", "latest_version", "created_at", "updated_at"]
        read_only_fields = fields


class ConfigCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, default="", allow_blank=True, max_length=10_000)
    blob = serializers.JSONField(help_text='Version 1: {"completion": {"provider": "...", "params": {...}}}')
    commit_message = serializers.CharField(required=False, default="", allow_blank=True, max_length=500)


class ConfigUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class ConfigVersionSerializer(ModelSerializer):
    config_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = ConfigVersion
        fields = ["config_id", "version", "blob", "commit_message", "created_at"]
        read_only_fields = fields


class ConfigVersionCreateSerializer(serializers.Serializer):
    blob = serializers.JSONField(help_text='{"completion": {"provider": "...", "params": {...}}}')
    commit_message = serializers.CharField(required=False, default="", allow_blank=True, max_length=500)


class CredentialSerializer(ModelSerializer):
    api_key = serializers.CharField(source="masked_api_key", read_only=True, help_text="Masked: ****last4.")
    base_url = serializers.CharField(read_only=True, help_text="Empty: the provider's public API.")

    class Meta:
        model = ProviderCredential
        fields = [
            "provider",
            "api_key",
            "base_url",
            "organization",
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_calls",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


def _limit_field(what: str) -> serializers.IntegerField:
    """A credential's optional limit: a positive number, or null for none."""
    return serializers.IntegerField(
        required=False,
        default=None,
        allow_null=True,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"{what}; null: no limit.",
    )


class CredentialSetSerializer(serializers.Serializer):
    api_key = serializers.CharField(max_length=4096, write_only=True, trim_whitespace=True)
    base_url = serializers.URLField(required=False, allow_blank=True, max_length=500)
    organization = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)
    requests_per_minute = _limit_field("Calls started with this key per minute, across all workers")
    tokens_per_minute = _limit_field("Tokens per minute (estimated before a call, corrected by its usage after)")
    max_concurrent_calls = _limit_field("Calls waiting on the provider at once with this key, across all workers")


class ConfigReferenceSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False, min_value=1)
    version = serializers.IntegerField(required=False, min_value=1)
    blob = serializers.JSONField(required=False, help_text="An inline config instead of id and version.")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"id", "version", "blob"})
            if unknown:
                raise serializers.ValidationError(
                    {"non_field_errors": [f"unknown field(s) {', '.join(unknown)}; use id and version, or blob"]}
                )
        return super().to_internal_value(data)

    def validate(self, attrs):
        if "blob" in attrs:
            if "id" in attrs or "version" in attrs:
                raise serializers.ValidationError("give either id and version, or blob, not both")
        elif "id" not in attrs or "version" not in attrs:
            raise serializers.ValidationError('needs both "id" and "version", or "blob"')
        return attrs


class IndexedListSerializer(serializers.ListSerializer):
    """A list whose items' errors are keyed by the index of each bad item ({"3": {"query": [...]}}), not a list as
    long as the input with an empty object for every good one."""

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, list):
                raise serializers.ValidationError(
                    {str(index): errors for index, errors in enumerate(exc.detail) if errors}
                ) from None
            raise


class LlmCallSerializer(ScheduledSubmissionSerializer):
    config = ConfigReferenceSerializer()
    query = serializers.CharField(max_length=MAX_QUERY_LENGTH, trim_whitespace=False)
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2048)
    request_metadata = serializers.DictField(
        required=False, default=None, allow_null=True, help_text="Returned as is in the job's result."
    )

    def validate_query(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("must not be blank")
        return value

    def validate_request_metadata(self, value):
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    class Meta:
        list_serializer_class = IndexedListSerializer


class LlmCallBatchSerializer(serializers.Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        # Built per instance so that the bound (and the schema's maxItems) follow LLM_BATCH_MAX_CALLS.
        return {
            "calls": LlmCallSerializer(
                many=True,
                allow_empty=False,
                max_length=settings.LLM_BATCH_MAX_CALLS,  # type: ignore[call-arg]  # ListSerializer's, through many=True
                help_text="LLM call bodies, as POST /api/v1/llm/call takes them; errors are keyed by each bad "
                "call's index.",
            )
        }


class LlmBatchSubmittedSerializer(serializers.Serializer):
    """The answer to a bulk submission: 202 with the batch and its jobs, in the order of the calls."""

    batch_id = serializers.UUIDField()
    status_url = serializers.CharField(help_text="The batch's counts per status.")
    job_ids = serializers.ListField(child=serializers.UUIDField())


class LlmBatchSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    total = serializers.IntegerField(help_text="Jobs in the batch.")
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Jobs per status (every status, 0 included)."
    )


# --- The LLM_API job's result (documented in the schema of a job's `result`) ---------------------
class _LlmOutputSerializer(serializers.Serializer):
    text = serializers.CharField()


class _LlmResponseSerializer(serializers.Serializer):
    provider_response_id = serializers.CharField(help_text="The provider's id of the response.")
    provider = serializers.CharField()
    model = serializers.CharField(help_text="The model that answered, as the provider names it.")
    output = _LlmOutputSerializer()


class _LlmUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField(allow_null=True)
    total_tokens = serializers.IntegerField()
    cost = serializers.CharField(allow_null=True, help_text="USD, a decimal string; null for a model without a price.")


class _LlmAttemptSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    error = serializers.CharField(allow_null=True, help_text="Null for the attempt that answered.")
    seconds = serializers.FloatField()


class LlmCallResultSerializer(serializers.Serializer):
    """The result of an LLM_API job."""

    response = _LlmResponseSerializer(help_text="What answered: the primary, or the fallback that served the call.")
    usage = _LlmUsageSerializer()
    attempts = _LlmAttemptSerializer(many=True, help_text="Each provider tried, in order (fallbacks).")
    warnings = serializers.ListField(child=serializers.CharField(), help_text="E.g. no price for the model.")
    config = serializers.DictField(allow_null=True, help_text="The config reference of the call, as submitted.")
    request_metadata = serializers.DictField(allow_null=True, help_text="The call's request_metadata, as submitted.")


class UsageQuerySerializer(serializers.Serializer):
    """The query string of ``GET /api/v1/usage/``: two days (both included, UTC) and a grouping."""

    # "from" is a Python keyword: the field is declared under it below.
    to = serializers.DateField(required=False, help_text="Last day included (UTC); default: today.")
    group_by = serializers.ChoiceField(choices=GROUP_BY, required=False, default="day")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateField(
            required=False, help_text="First day included (UTC); default: the first day of the current month."
        )
        return fields

    def validate(self, attrs):
        today = timezone.now().date()
        last = attrs.get("to") or today
        first = attrs.get("from") or last.replace(day=1)
        if first > last:
            raise serializers.ValidationError({"from": ["must not be after 'to'"]})
        if (last - first).days >= settings.LLM_USAGE_MAX_DAYS:
            raise serializers.ValidationError(
                {"from": [f"the period may be at most {settings.LLM_USAGE_MAX_DAYS} days (LLM_USAGE_MAX_DAYS)"]}
            )
        return {"from": first, "to": last, "group_by": attrs["group_by"]}


class UsageGroupSerializer(serializers.Serializer):
    key = serializers.JSONField(
        help_text="The day (YYYY-MM-DD), month (YYYY-MM), provider, model or config id (null: inline configs)."
    )
    calls = serializers.IntegerField(help_text="Finished calls (succeeded, failed or cancelled).")
    failures = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost = serializers.CharField(help_text="USD, a decimal; calls of models without a price count 0.")


class UsageTotalSerializer(serializers.Serializer):
    calls = serializers.IntegerField()
    failures = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost = serializers.CharField()


class UsageReportSerializer(serializers.Serializer):
    to = serializers.DateTimeField(help_text="End of the period (exclusive).")
    group_by = serializers.CharField()
    currency = serializers.CharField()
    groups = UsageGroupSerializer(many=True)
    total = UsageTotalSerializer()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(help_text="Start of the period (inclusive).")
        return fields
