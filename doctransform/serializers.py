from __future__ import annotations

from rest_framework import serializers

from jobs.serializers import JobSubmittedSerializer, ScheduledSubmissionSerializer
from kaapi.api import ModelSerializer

from .models import Document
from .services import document_content_path
from .transformers import MARKDOWN, TARGET_FORMATS


class DocumentSerializer(ModelSerializer):
    source_document_id = serializers.UUIDField(source="source_id", read_only=True, allow_null=True)
    job_id = serializers.UUIDField(read_only=True, allow_null=True, help_text="The job that produced it.")
    content_url = serializers.SerializerMethodField(help_text="Where to download the file.")

    class Meta:
        model = Document
        fields = [
            "id",
            "filename",
            "content_type",
            "size",
            "checksum_sha256",
            "source_document_id",
            "job_id",
            "transformer",
            "content_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_content_url(self, document: Document) -> str:
        request = self.context.get("request")
        path = document_content_path(document)
        return request.build_absolute_uri(path) if request else path


class DocumentUploadSerializer(ScheduledSubmissionSerializer):
    file = serializers.FileField(allow_empty_file=True, help_text="The document (multipart/form-data).")
    target_format = serializers.CharField(
        default=MARKDOWN, max_length=32, help_text=f"One of {', '.join(TARGET_FORMATS)} (for now: {MARKDOWN})."
    )
    transformer = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=64, help_text="Default: the pair's default."
    )
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2048)
    ocr_languages = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=200,
        help_text="Tesseract languages for scanned pages, e.g. eng,hin (or eng+hin). Default: DOCUMENT_OCR_LANGUAGES.",
    )
    config_id = serializers.IntegerField(
        required=False, min_value=1, help_text="transformer=vision-llm: the LLM config whose model reads the pages."
    )
    config_version = serializers.IntegerField(required=False, min_value=1, help_text="With config_id.")
    config_blob = serializers.JSONField(
        required=False, help_text="transformer=vision-llm: an inline LLM config instead of config_id and version."
    )

    def validate_ocr_languages(self, value: str) -> list[str]:
        languages = [item.strip() for item in value.replace("+", ",").split(",") if item.strip()]
        if len(languages) > 10:
            raise serializers.ValidationError("at most 10 languages")
        return languages


class DocumentSubmittedSerializer(JobSubmittedSerializer):
    """The 202 answer to an upload: the job to poll, and the stored document (schema of the answer)."""

    document = DocumentSerializer()


class SupportedTransformationSerializer(serializers.Serializer):
    source_type = serializers.CharField()
    target_format = serializers.CharField()
    transformers = serializers.ListField(child=serializers.CharField())
    default = serializers.CharField()


class DocumentTransformResultSerializer(serializers.Serializer):
    """The result of a DOC_TRANSFORM job: the document it produced."""

    document_id = serializers.UUIDField()
    content_url = serializers.CharField(help_text="Where to download the produced document.")
    source_document_id = serializers.UUIDField(allow_null=True)
    content_type = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes.")
    checksum_sha256 = serializers.CharField()
    transformer = serializers.CharField()
    seconds = serializers.FloatField(required=False, help_text="How long the conversion took.")
    pages = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="How each page was read: {page, method: text_layer|ocr|vision_model, confidence, words} (PDFs and "
        "images).",
    )
    ocr_confidence = serializers.FloatField(
        required=False, allow_null=True, help_text="Tesseract's mean word confidence (0-100) over the OCRed words."
    )
    vision = serializers.DictField(
        required=False, help_text="vision-llm: {provider, model, calls, usage, config: {id, version} | null}."
    )
    usage = serializers.DictField(
        required=False, help_text="vision-llm: the model calls' tokens and cost, as an LLM call's usage."
    )
    warning = serializers.CharField(required=False, help_text="E.g. no text was found in the document.")
