from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class DocumentQuerySet(models.QuerySet):
    def for_project(self, project) -> DocumentQuerySet:
        return self.filter(project=project)

    def originals(self) -> DocumentQuerySet:
        return self.filter(source__isnull=True, job__isnull=True)

    def derived(self) -> DocumentQuerySet:
        return self.filter(job__isnull=False)


class Document(models.Model):
    """A file of a project, stored in the "documents" storage: uploaded, or produced by a transformation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("tenancy.Project", on_delete=models.CASCADE, related_name="documents")
    filename = models.CharField(
        "file name", max_length=255, help_text="The name the file was uploaded with (display only, never a path)."
    )
    content_type = models.CharField(
        "content type", max_length=255, help_text="Detected from the bytes, not taken from the client."
    )
    size = models.PositiveBigIntegerField("size (bytes)")
    checksum_sha256 = models.CharField("SHA-256", max_length=64, db_index=True, help_text="Hex digest of the bytes.")
    storage_key = models.CharField(
        "storage key", max_length=512, unique=True, help_text="Name of the file in the 'documents' storage."
    )
    source = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="derived_documents",
        verbose_name="source document",
        help_text="The document this one was transformed from.",
    )
    job = models.ForeignKey(
        "jobs.Job",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="documents",
        verbose_name="produced by job",
        help_text="The transformation job that produced this document.",
    )
    transformer = models.CharField(
        "transformer", max_length=64, blank=True, default="", help_text="The transformer that produced it."
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)

    objects = DocumentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="document_project_created"),
            models.Index(fields=["created_at"], name="document_created"),  # the retention's cutoff
        ]
        constraints = [
            # A job produces at most one document, so a redelivered job does not store its output twice.
            models.UniqueConstraint(fields=["job"], condition=Q(job__isnull=False), name="document_one_per_job"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.content_type}, {self.size} B)"


class DocumentQuota(models.Model):
    """A project's own storage quota for documents, instead of ``DOCUMENT_PROJECT_QUOTA_BYTES``."""

    project = models.OneToOneField(
        "tenancy.Project",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="document_quota",
        verbose_name="project",
    )
    quota_bytes = models.PositiveBigIntegerField(
        "quota (bytes)",
        null=True,
        blank=True,
        help_text="Bytes of documents (uploaded and derived) the project may store; 0: no quota; "
        "empty: DOCUMENT_PROJECT_QUOTA_BYTES.",
    )
    updated_at = models.DateTimeField("updated at", auto_now=True)

    class Meta:
        verbose_name = "document quota"

    def __str__(self) -> str:
        return f"{self.project}: {self.quota_bytes if self.quota_bytes is not None else 'default'}"
