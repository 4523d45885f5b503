"""Document services: store, transform and delete documents."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from jobs.exceptions import RetryableJobError
from jobs.models import Job
from jobs.services import job_create, job_report_progress
from llm import services as llm_services
from llm.exceptions import ConfigNotFound, CredentialsMissing
from tenancy.models import Project

from . import detection, ocr, transformers
from .converter import run_conversion
from .exceptions import (
    DocumentTooLarge,
    EmptyDocument,
    InvalidTransformOptions,
    StorageQuotaExceeded,
    TransformationFailed,
)
from .models import Document, DocumentQuota
from .vision import pages_to_markdown

logger = logging.getLogger(__name__)

EXECUTE_JOB_PATH = "doctransform.jobs.execute_job"
_FILENAME_MAX = 255


def document_storage() -> Storage:
    return storages["documents"]


def document_content_path(document: Document) -> str:
    return reverse("document-content", kwargs={"pk": document.id})


def _digest(content: File) -> tuple[str, int]:
    sha256 = hashlib.sha256()
    size = 0
    content.seek(0)
    for chunk in content.chunks():
        sha256.update(chunk)
        size += len(chunk)
    content.seek(0)
    return sha256.hexdigest(), size


def _clean_filename(filename: str) -> str:
    name = PurePath((filename or "").replace("\\", "/")).name.strip() or "document"
    if len(name) > _FILENAME_MAX:
        suffix = PurePath(name).suffix[:16]
        name = name[: _FILENAME_MAX - len(suffix)] + suffix
    return name


def document_store(
    *,
    project: Project,
    content: File,
    filename: str,
    content_type: str,
    source: Document | None = None,
    job: Job | None = None,
    transformer: str = "",
) -> Document:
    """Write ``content`` to the documents storage and create its row.

    The storage key is made of ids only (never the client's file name). If the row cannot be created,
    the stored file is removed again.
    """
    document_id = uuid.uuid4()
    checksum, size = _digest(content)
    key = f"documents/{project.id}/{document_id}{detection.EXTENSIONS.get(content_type, '.bin')}"
    storage = document_storage()
    stored_key = storage.save(key, content)
    try:
        return Document.objects.create(
            id=document_id,
            project=project,
            filename=_clean_filename(filename),
            content_type=content_type,
            size=size,
            checksum_sha256=checksum,
            storage_key=stored_key,
            source=source,
            job=job,
            transformer=transformer,
        )
    except BaseException:
        storage.delete(stored_key)
        raise


def document_upload(
    *,
    project: Project,
    file: File,
    filename: str,
    target_format: str = transformers.MARKDOWN,
    transformer: str | None = None,
    callback_url: str = "",
    run_after: datetime | None = None,
    ocr_languages: list[str] | None = None,
    config_id: int | None = None,
    config_version: int | None = None,
    config_blob: Any = None,
) -> tuple[Document, Job]:
    """Store an uploaded document and create the job that transforms it (low priority).

    Raises ``EmptyDocument``, ``DocumentTooLarge``, ``StorageQuotaExceeded``, ``UnsupportedTransformation``
    (with the supported pairs), ``PageLimitExceeded`` (an image over DOCUMENT_MAX_PAGE_PIXELS or
    DOCUMENT_MAX_PAGES) or ``InvalidTransformOptions`` (OCR languages, the vision model's config) before anything
    is stored.
    """
    limit = settings.DOCUMENT_MAX_UPLOAD_BYTES
    if file.size is not None and file.size > limit:
        raise DocumentTooLarge(f"the file is larger than the limit of {limit} bytes", limit=limit)
    if not file.size:
        raise EmptyDocument("the file is empty (0 bytes)")
    document_quota_check(project=project, size=file.size, what="this file")
    detected = detection.detect(stream=file, filename=filename)  # type: ignore[arg-type]  # a File reads bytes
    chosen = transformers.get_transformer(
        source_type=detected.content_type, target_format=target_format, name=transformer or None
    )
    options: dict[str, Any] = {"ocr_languages": ocr_languages_validate(ocr_languages) if ocr_languages else None}
    if chosen.vision:
        options["vision"] = _vision_config(
            project=project, config_id=config_id, config_version=config_version, blob=config_blob
        )
    elif config_id is not None or config_blob is not None:
        raise InvalidTransformOptions({"transformer": ["a config is used by the vision-llm transformer only"]})
    if detected.content_type in detection.IMAGES:
        ocr.check_image_limits(
            file, max_pixels=settings.DOCUMENT_MAX_PAGE_PIXELS, max_pages=settings.DOCUMENT_MAX_PAGES
        )
    document = None
    try:
        with transaction.atomic():
            document = document_store(
                project=project, content=file, filename=filename, content_type=detected.content_type
            )
            job = transformation_job_create(
                document=document,
                target_format=chosen.target_format,
                transformer=chosen.name,
                callback_url=callback_url,
                run_after=run_after,
                **options,
            )
    except BaseException:
        if document is not None:  # the rows were rolled back; the file was already written
            _delete_file(document.storage_key)
        raise
    return document, job


def ocr_languages_validate(languages: list[str]) -> list[str]:
    """``languages`` when Tesseract has a model for each; ``InvalidTransformOptions`` naming the installed ones."""
    installed = ocr_languages_installed()
    unknown = [language for language in languages if language not in installed]
    if unknown:
        raise InvalidTransformOptions(
            {"ocr_languages": [f"no OCR model for {', '.join(map(repr, unknown))}; installed: {', '.join(installed)}"]}
        )
    return list(dict.fromkeys(languages))


def ocr_languages_installed() -> list[str]:
    """The languages of the Tesseract models in DOCUMENT_OCR_TESSDATA_PATH (osd is orientation, not a language)."""
    try:
        names = os.listdir(settings.DOCUMENT_OCR_TESSDATA_PATH)
    except OSError:
        return []
    return sorted(
        n.removesuffix(".traineddata") for n in names if n.endswith(".traineddata") and n != "osd.traineddata"
    )


def _vision_config(*, project: Project, config_id: int | None, config_version: int | None, blob: Any) -> dict[str, Any]:
    if blob is None and (config_id is None or config_version is None):
        raise InvalidTransformOptions(
            {"config_id": ["the vision-llm transformer needs config_id and config_version, or config_blob"]}
        )
    try:
        blob, reference = llm_services.config_for_call(
            project=project, config_id=config_id, config_version=config_version, blob=blob
        )
    except ConfigNotFound as exc:
        raise InvalidTransformOptions({"config_id": [str(exc)]}) from None
    except CredentialsMissing as exc:
        raise InvalidTransformOptions({"credentials": [str(exc)]}) from None
    except DjangoValidationError as exc:
        raise InvalidTransformOptions(
            {f"config_blob.{key}": value for key, value in exc.message_dict.items()}
        ) from None
    return {"blob": blob, "config": reference}


def transformation_job_create(
    *,
    document: Document,
    target_format: str,
    transformer: str,
    callback_url: str = "",
    run_after: datetime | None = None,
    ocr_languages: list[str] | None = None,
    vision: dict[str, Any] | None = None,
) -> Job:
    """A PENDING transformation job for ``document`` on the low-priority queue (published after commit; SCHEDULED
    until ``run_after`` when that is ahead)."""
    params: dict[str, Any] = {
        "document_id": str(document.id),
        "target_format": target_format,
        "transformer": transformer,
    }
    if ocr_languages:
        params["ocr_languages"] = ocr_languages
    if vision:
        params["vision"] = vision
    return job_create(
        project=document.project,
        function_path=EXECUTE_JOB_PATH,
        params=params,
        priority="low",
        callback_url=callback_url,
        run_after=run_after,
    )


def document_transform(
    *,
    project_id: int,
    job_id: str,
    document_id: str,
    target_format: str,
    transformer: str | None,
    ocr_languages: list[str] | None = None,
    vision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Transform a stored document and store the result as a new document linked to its source.

    Runs in a worker. The conversion itself runs in the converter process with its own time limit.
    ``TransformationFailed`` (corrupt, password-protected, timed out, converter crashed, the Markdown over
    DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES or over the project's storage quota) ends the job FAILED.
    """
    produced = Document.objects.filter(job_id=job_id).first()
    if produced is not None:  # a redelivery after the output was already stored
        return _transform_result(produced)
    source = Document.objects.select_related("project").filter(id=document_id, project_id=project_id).first()
    if source is None:
        raise TransformationFailed(f"document {document_id} no longer exists (it was deleted)")
    chosen = transformers.get_transformer(
        source_type=source.content_type, target_format=target_format, name=transformer
    )
    data = _read(source)
    charset = detection.detect_bytes(data, filename=source.filename).charset

    job_report_progress(job_id=job_id, percent=10, message=f"converting {source.content_type} with {chosen.name}")
    started = time.monotonic()
    # Page by page: OCR takes 10-85 %; a vision model's pages are rendered in 10-30 % and read in 30-85 %.
    end = 30 if chosen.vision else 85
    converted = run_conversion(
        transformer=chosen,
        data=data,
        charset=charset,
        filename=source.filename,
        options=conversion_options(ocr_languages=ocr_languages),
        on_page=lambda done, total: _report_page(job_id, done, total, start=10, end=end, what="read"),
    )
    output, calls = converted.markdown, None
    if chosen.vision:
        if not vision:
            raise TransformationFailed("the vision-llm transformer needs an LLM config; upload the document again")
        output, calls = pages_to_markdown(
            project_id=project_id,
            blob=vision["blob"],
            images=converted.images,
            max_output_bytes=settings.DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES,
            on_page=lambda done, total: _report_page(job_id, done, total, start=30, end=85, what="transcribed"),
        )
    elapsed = time.monotonic() - started
    logger.info("converted %s (%s bytes) in %.3f s", source.content_type, source.size, elapsed)

    job_report_progress(job_id=job_id, percent=90, message="storing the result")
    target_type = transformers.TARGET_CONTENT_TYPES[chosen.target_format]
    encoded = output.encode("utf-8")
    try:
        document_quota_check(project=source.project, size=len(encoded), what="the Markdown")
    except StorageQuotaExceeded as exc:
        raise TransformationFailed(f"{exc}; delete documents to make room and transform it again") from None
    try:
        document = document_store(
            project=source.project,
            content=ContentFile(encoded),
            filename=f"{PurePath(source.filename).stem or 'document'}{detection.EXTENSIONS[target_type]}",
            content_type=target_type,
            source=source,
            job=Job.objects.get(id=job_id),
            transformer=chosen.name,
        )
    except IntegrityError:  # another delivery of this job stored it meanwhile
        document = Document.objects.get(job_id=job_id)
    result = _transform_result(document)
    result["seconds"] = round(elapsed, 3)
    if converted.pages:
        result["pages"] = converted.pages
        result["ocr_confidence"] = _mean_confidence(converted.pages)
    if calls is not None:
        result["vision"] = {**calls, "config": (vision or {}).get("config")}
        result["usage"] = calls["usage"]
    if not output.strip():
        result["warning"] = "no text was found in the document"
    return result


def conversion_options(*, ocr_languages: list[str] | None = None) -> dict[str, Any]:
    """What the converter process needs to read scans (see ``transformers.conversion_options``)."""
    return {
        "languages": ocr_languages or settings.DOCUMENT_OCR_LANGUAGES,
        "tessdata": settings.DOCUMENT_OCR_TESSDATA_PATH,
        "dpi": settings.DOCUMENT_OCR_DPI,
        "max_pages": settings.DOCUMENT_MAX_PAGES,
        "max_pixels": settings.DOCUMENT_MAX_PAGE_PIXELS,
    }


def _report_page(job_id: str, done: int, total: int, *, start: int, end: int, what: str) -> None:
    percent = start + (end - start) * done // max(total, 1)
    job_report_progress(job_id=job_id, percent=percent, message=f"{what} page {done} of {total}")


def _mean_confidence(pages: list[dict[str, Any]]) -> float | None:
    """Tesseract's mean word confidence (0-100) over the OCRed pages; None when no page was OCRed or had words."""
    read = [page for page in pages if page["method"] == ocr.OCR and page.get("words")]
    words = sum(page["words"] for page in read)
    return round(sum(page["confidence"] * page["words"] for page in read) / words, 1) if words else None


def _read(document: Document) -> bytes:
    try:
        with document_storage().open(document.storage_key, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise TransformationFailed(f"the stored file of document {document.id} is missing") from None
    except Exception as exc:  # S3 and network errors are usually transient
        raise RetryableJobError(f"could not read document {document.id} from storage: {exc}") from exc


def _transform_result(document: Document) -> dict[str, Any]:
    return {
        "document_id": str(document.id),
        "content_url": document_content_path(document),
        "source_document_id": str(document.source_id) if document.source_id else None,
        "content_type": document.content_type,
        "size": document.size,
        "checksum_sha256": document.checksum_sha256,
        "transformer": document.transformer,
    }


def document_delete(*, document: Document) -> None:
    """Delete the row now and the stored file once the transaction commits.

    Documents derived from it stay (their source becomes empty); a pending transformation of it fails.
    """
    key = document.storage_key
    with transaction.atomic():
        document.delete()
        transaction.on_commit(lambda: _delete_file(key))


def _delete_file(key: str) -> None:
    try:
        document_storage().delete(key)
    except Exception:  # the row is gone; a leftover file is only wasted space
        logger.warning("could not delete stored file %s", key, exc_info=True)


# --- Storage quota ---------------------------------------------------------------------------------------
def document_storage_usage(*, project: Project) -> int:
    """Bytes stored for the project's documents, uploaded and derived."""
    return Document.objects.for_project(project).aggregate(total=Sum("size"))["total"] or 0


def document_quota_bytes(*, project: Project) -> int:
    """The project's quota (its own, set in admin, or DOCUMENT_PROJECT_QUOTA_BYTES); 0: no quota."""
    own = DocumentQuota.objects.filter(project=project).values_list("quota_bytes", flat=True).first()
    return settings.DOCUMENT_PROJECT_QUOTA_BYTES if own is None else own


def document_quota_check(*, project: Project, size: int, what: str) -> None:
    """``StorageQuotaExceeded`` when ``size`` more bytes would take the project's documents over its quota.

    Two uploads checked at the same moment may both fit alone and pass together: the quota bounds a project's
    storage to within the uploads it has in flight (each at most DOCUMENT_MAX_UPLOAD_BYTES), not to the byte.
    """
    quota = document_quota_bytes(project=project)
    if not quota:
        return
    usage = document_storage_usage(project=project)
    if usage + size > quota:
        raise StorageQuotaExceeded(quota=quota, usage=usage, size=size, what=what)


# --- Retention ------------------------------------------------------------------------------------------
def documents_delete_expired(
    *, retention_days: int | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> int:
    """Delete documents (uploaded and derived) stored more than ``DOCUMENT_RETENTION_DAYS`` ago, with their files.

    A batch of rows is deleted in one transaction, then its files; a run stops after ``max_batches`` batches (the
    next run goes on). Returns how many documents were deleted. ``DOCUMENT_RETENTION_DAYS = 0`` keeps them.
    """
    days = settings.DOCUMENT_RETENTION_DAYS if retention_days is None else retention_days
    if not days:
        return 0
    batch_size = batch_size or settings.MAINTENANCE_BATCH_SIZE
    max_batches = max_batches or settings.MAINTENANCE_MAX_BATCHES
    expired = Document.objects.filter(created_at__lt=timezone.now() - timedelta(days=days)).order_by()
    deleted = 0
    for _ in range(max_batches):
        batch = list(expired.values_list("id", "storage_key")[:batch_size])
        if not batch:
            break
        with transaction.atomic():
            Document.objects.filter(id__in=[document_id for document_id, _ in batch]).delete()
        for _, key in batch:  # after the commit: a row never points at a deleted file
            _delete_file(key)
        deleted += len(batch)
        if len(batch) < batch_size:
            break
    if deleted:
        logger.info("document retention: deleted %s document(s) older than %s days", deleted, days)
    return deleted
