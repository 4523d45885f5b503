from django.contrib import admin, messages
from django.db import transaction

from . import services
from .exceptions import JobStateError
from .models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job_type",
        "status",
        "project",
        "queue",
        "priority",
        "attempts",
        "progress_percent",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "job_type", "queue", "created_at")
    search_fields = ("=id", "=task_id", "=trace_id")
    date_hierarchy = "created_at"
    list_select_related = ("project__organization",)
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ("cancel_jobs", "retry_jobs")
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def _apply(self, request, queryset, operation, verb: str) -> None:
        done, refused = 0, []
        for job in queryset:
            try:
                with transaction.atomic():
                    operation(job=job)
                done += 1
            except JobStateError as exc:
                refused.append(f"{job.id}: {exc}")
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused[:20]), messages.WARNING)

    @admin.action(description="Cancel selected jobs", permissions=["view"])
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_cancel, "Cancelled")

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["view"])
    def retry_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_retry, "Retried")
