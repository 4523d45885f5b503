from django.contrib import admin, messages
from django.utils import timezone

from .models import APIKey, Organization, Project
from .services import api_key_create


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "monthly_budget", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "organization",
        "is_active",
        "max_concurrent_jobs",
        "max_submissions_per_minute",
        "monthly_budget",
        "created_at",
    )
    list_filter = ("is_active", "organization")
    search_fields = ("name", "organization__name")
    list_select_related = ("organization",)


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "project", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "project__name")
    list_select_related = ("project__organization",)
    fields = ("project", "name", "prefix", "created_at", "revoked_at")
    actions = ("revoke_keys",)

    def get_readonly_fields(self, request, obj=None):
        # A key belongs to its project for good: moving it would hand one project's clients another's data.
        readonly = ("prefix", "created_at", "revoked_at")
        return ("project", *readonly) if obj else readonly

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        issued = api_key_create(project=obj.project, name=obj.name)
        obj.pk = issued.api_key.pk
        obj.prefix = issued.api_key.prefix
        self.message_user(
            request,
            f"New API key (shown only once, copy it now): {issued.plaintext}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
