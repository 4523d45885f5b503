"""The DOC_TRANSFORM job function. Jobs are created by ``services.transformation_job_create`` (low priority)."""

from __future__ import annotations

from typing import Any

from jobs.registry import job_function
from llm import pricing

from . import services
from .serializers import DocumentTransformResultSerializer
from .transformers import MARKDOWN


def usage_columns(result: Any) -> dict[str, Any]:
    """The job's usage columns (jobs.registry ``accounting``) when a vision model read the pages: its provider,
    model, tokens and cost, counted in the project's spend and usage reports like an LLM call's."""
    vision = result.get("vision") if isinstance(result, dict) else None
    if not vision:
        return {}
    return pricing.usage_columns(vision.get("provider"), vision.get("model"), vision.get("usage") or {})


@job_function(job_type="DOC_TRANSFORM", result=DocumentTransformResultSerializer, accounting=usage_columns)
def execute_job(
    *,
    project_id: int,
    job_id: str,
    task_id: str,
    task_instance: Any,
    document_id: str,
    target_format: str = MARKDOWN,
    transformer: str | None = None,
    ocr_languages: list[str] | None = None,
    vision: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Transform one document; the result names the new document and where to download it."""
    return services.document_transform(
        project_id=project_id,
        job_id=job_id,
        document_id=document_id,
        target_format=target_format,
        transformer=transformer,
        ocr_languages=ocr_languages,
        vision=vision,
    )
