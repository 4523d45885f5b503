from __future__ import annotations

from tenancy.models import Project

from .models import Document, DocumentQuerySet


def document_list(*, project: Project) -> DocumentQuerySet:
    return Document.objects.for_project(project).order_by("-created_at")


def document_get(*, project: Project, document_id) -> Document | None:
    return Document.objects.for_project(project).filter(id=document_id).first()
