"""Errors of document handling. Pure Python: the converter process raises some of them too."""

from __future__ import annotations


class DocumentError(Exception):
    """Base class; the message is meant for the API client or the job's error."""


# --- Upload (answered with 4xx) ----------------------------------------------------------------
class EmptyDocument(DocumentError):
    pass


class DocumentTooLarge(DocumentError):
    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class StorageQuotaExceeded(DocumentError):
    """The project's documents would use more storage than its quota (an upload: 413; a transformation: FAILED)."""

    def __init__(self, *, quota: int, usage: int, size: int, what: str) -> None:
        super().__init__(
            f"the project's documents may use {quota} bytes of storage and use {usage} bytes: "
            f"{what} ({size} bytes) does not fit"
        )
        self.quota = quota
        self.usage = usage
        self.size = size


class UnsupportedTransformation(DocumentError):
    """No transformer for the (source type, target format[, name]) asked for."""

    def __init__(self, message: str, *, content_type: str, unsupported_type: bool, supported: list[dict]) -> None:
        super().__init__(message)
        self.content_type = content_type
        self.unsupported_type = unsupported_type  # True: the document's type; False: the target or transformer
        self.supported = supported


class InvalidTransformOptions(DocumentError):
    """An upload's OCR languages or vision model config cannot be used (400); ``errors`` by field."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items()))
        self.errors = errors


# --- Transformation (the job ends FAILED with the message) ------------------------------------------
class TransformationFailed(DocumentError):
    pass


class DocumentEncrypted(TransformationFailed):
    pass


class DocumentUnreadable(TransformationFailed):
    pass


class TransformationTimeout(TransformationFailed):
    pass


class ConverterCrashed(TransformationFailed):
    pass


class MarkdownTooLarge(TransformationFailed):
    """The conversion's output passed ``DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES`` (see ``markdown_too_large``)."""


def markdown_too_large(limit: int) -> MarkdownTooLarge:
    return MarkdownTooLarge(f"the Markdown exceeds {limit / 1024 / 1024:g} MiB")


class PageLimitExceeded(TransformationFailed):
    """More pages than ``DOCUMENT_MAX_PAGES``, or a page over ``DOCUMENT_MAX_PAGE_PIXELS``."""
