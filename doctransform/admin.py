from django.contrib import admin, messages
from django.db import transaction

from . import services
from .exceptions import UnsupportedTransformation
from .models import Document
from .transformers import get_transformer


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "content_type", "size", "project", "source", "job", "created_at")
    list_filter = ("content_type", "transformer", "created_at")
    search_fields = ("=id", "filename", "=checksum_sha256", "=storage_key")
    date_hierarchy = "created_at"
    list_select_related = ("project__organization", "source", "job")
    readonly_fields = [f.name for f in Document._meta.fields]
    raw_id_fields = ("source", "job")
    actions = ("transform_documents", "delete_documents")
    show_full_result_count = False

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

    @admin.action(description="Transform selected documents to Markdown again", permissions=["view"])
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
