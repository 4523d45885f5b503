"""The DOC_TRANSFORM job function. Jobs are created by ``services.transformation_job_create`` (low priority)."""

from __future__ import annotations

from typing import Any

from jobs.registry import job_function

from . import services
from .transformers import MARKDOWN


@job_function(job_type="DOC_TRANSFORM")
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
