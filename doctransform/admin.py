import re
import uuid

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import OuterRef, Subquery, Sum

from jobs.admin import job_link
from kaapi.admin_permissions import OperateActionsMixin

from . import services
from .exceptions import UnsupportedTransformation
from .models import Document, DocumentQuota
from .transformers import get_transformer

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@admin.register(Document)
class DocumentAdmin(OperateActionsMixin, admin.ModelAdmin):
    list_display = ("id", "filename", "content_type", "size", "project", "source", "job_id_link", "created_at")
    list_filter = ("content_type", "transformer", "created_at")
    # Searched by get_search_results below; no date_hierarchy (it reads the whole table for its date bounds on every
    # page; created_at's list filter offers today, the past 7 days, this month, this year).
    search_fields = ("id", "checksum_sha256", "storage_key", "filename")
    search_help_text = "A document id, SHA-256 or storage key (exact), or part of a file name."
    list_select_related = ("project__organization", "source", "job")
    readonly_fields = [f.name for f in Document._meta.fields]
    raw_id_fields = ("source", "job")
    actions = ("transform_documents", "delete_documents")
    show_full_result_count = False

    @admin.display(description="produced by job", ordering="job")
    def job_id_link(self, document: Document) -> str:
        return job_link(document.job_id)

    def get_search_results(self, request, queryset, search_term):
        """An identifier from its index (Django's "=" search compares UPPER(column::text), which no index serves): a
        document id, a SHA-256, a storage key (it has a "/", which file names never do); any other text matches a
        part of a file name, the one search that reads the table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=uuid.UUID(term)), False
        except ValueError:
            pass
        if _SHA256.fullmatch(term):
            return queryset.filter(checksum_sha256=term.lower()), False
        if "/" in term:
            return queryset.filter(storage_key=term), False
        return queryset.filter(filename__icontains=term), False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would leave the stored files behind
        return actions

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: Document) -> None:
        services.document_delete(document=obj)

    @admin.action(description="Delete selected documents and their stored files", permissions=["delete"])
    def delete_documents(self, request, queryset):
        count = 0
        for document in queryset:
            services.document_delete(document=document)
            count += 1
        self.message_user(request, f"Deleted {count} document(s).", messages.SUCCESS)

    @admin.action(description="Transform selected documents to Markdown again", permissions=["operate"])
    def transform_documents(self, request, queryset):
        started, refused = 0, []
        for document in queryset.select_related("project"):
            try:
                transformer = get_transformer(source_type=document.content_type)
            except UnsupportedTransformation as exc:
                refused.append(f"{document.filename}: {exc}")
                continue
            with transaction.atomic():
                services.transformation_job_create(
                    document=document, target_format=transformer.target_format, transformer=transformer.name
                )
            started += 1
        if started:
            self.message_user(request, f"Started {started} transformation job(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not started: " + "; ".join(refused[:20]), messages.WARNING)


@admin.register(DocumentQuota)
class DocumentQuotaAdmin(admin.ModelAdmin):
    """A project's own storage quota for documents; projects without one have DOCUMENT_PROJECT_QUOTA_BYTES."""

    list_display = ("project", "quota_bytes", "usage_bytes", "updated_at")
    search_fields = ("project__name", "project__organization__name")
    list_select_related = ("project__organization",)
    autocomplete_fields = ("project",)
    readonly_fields = ("updated_at",)

    def get_queryset(self, request):
        usage = (
            Document.objects.filter(project=OuterRef("project"))
            .order_by()
            .values("project")
            .annotate(total=Sum("size"))
            .values("total")
        )
        return super().get_queryset(request).annotate(usage=Subquery(usage))

    @admin.display(description="stored (bytes)", ordering="usage")
    def usage_bytes(self, obj: DocumentQuota) -> int:
        return obj.usage or 0  # type: ignore[attr-defined]  # annotated by get_queryset
