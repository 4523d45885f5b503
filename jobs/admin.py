from collections.abc import Sequence
from typing import ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from kaapi.admin_permissions import OperateActionsMixin
from kaapi.celery import HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE

from . import services, webhooks
from .exceptions import JobStateError
from .models import Job, WebhookDelivery, WebhookSecret
from .registry import get_job_function, registered_paths


class ExactSearchMixin:
    """Search by exact identifiers, each served by its index.

    Django's ``=`` search fields compare ``UPPER(column::text)`` with the term, which no index serves: on a large
    table every search read the whole table, several times (the count, the rows, the date bounds). Here each of
    ``search_fields`` is compared exactly, as its own type (a term that is not a UUID is not compared with UUIDs).
    """

    search_fields: ClassVar[Sequence[str]]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q()
        for path in self.search_fields:
            field = get_fields_from_path(queryset.model, path)[-1]
            try:
                value = field.to_python(term)
            except ValidationError:
                continue
            condition |= Q(**{path: value})
        return (queryset.filter(condition) if condition else queryset.none()), False


class ChoicesFilter(admin.SimpleListFilter):
    """A list filter whose choices are known without asking the database (Django's default for a CharField
    without choices is a ``SELECT DISTINCT`` over the whole table on every page)."""

    def queryset(self, request, queryset):
        return queryset.filter(**{str(self.parameter_name): self.value()}) if self.value() else queryset


class JobTypeFilter(ChoicesFilter):
    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request, model_admin):
        types = sorted({get_job_function(path).job_type for path in registered_paths()})
        return [(job_type, job_type) for job_type in types]


class QueueFilter(ChoicesFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(queue, queue) for queue in (HIGH_PRIORITY_QUEUE, LOW_PRIORITY_QUEUE)]


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("id", "event", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "delivered_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(OperateActionsMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "job_type",
        "status",
        "waiting_reason",
        "project",
        "queue",
        "priority",
        "attempts",
        "progress_percent",
        "run_after",
        "created_at",
        "finished_at",
    )
    # No date_hierarchy: it reads the whole table for its date bounds on every page (created_at's list filter
    # offers today, the past 7 days, this month, this year).
    list_filter = ("status", "waiting_reason", JobTypeFilter, QueueFilter, "created_at")
    search_fields = ("id", "task_id", "trace_id")
    search_help_text = "An exact job id, Celery task id or trace id."
    list_select_related = ("project__organization",)
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ("cancel_jobs", "retry_jobs")
    inlines = (WebhookDeliveryInline,)
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

    @admin.action(description="Cancel selected jobs", permissions=["operate"])
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_cancel, "Cancelled")

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["operate"])
    def retry_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_retry, "Retried")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OperateActionsMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "event",
        "status",
        "job",
        "url",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "event", "created_at")
    search_fields = ("id", "job__id")
    search_help_text = "An exact delivery id (the webhook-id header) or job id."
    list_select_related = ("job",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ("redeliver",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Redeliver selected webhooks (same webhook-id and body)", permissions=["operate"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            with transaction.atomic():
                webhooks.webhook_redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"Queued {count} delivery(ies) again.", messages.SUCCESS)


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    list_display = ("project", "created_at", "rotated_at", "previous_valid_until")
    search_fields = ("project__name", "project__organization__name")
    list_select_related = ("project__organization",)
    fields = ("project", "secret", "previous_valid_until", "created_at", "rotated_at")
    actions = ("rotate",)

    def get_readonly_fields(self, request, obj=None):
        readonly = ["secret", "previous_valid_until", "created_at", "rotated_at"]
        return readonly + ["project"] if obj else readonly

    def save_model(self, request, obj, form, change):
        if change:
            return
        secret = webhooks.webhook_secret_get(project=obj.project)
        obj.pk = secret.pk
        obj.secret = secret.secret

    @admin.action(
        description="Rotate selected secrets (the previous one keeps signing for the grace period)",
        permissions=["change"],
    )
    def rotate(self, request, queryset):
        for secret in queryset.select_related("project"):
            webhooks.webhook_secret_rotate(project=secret.project)
        self.message_user(request, f"Rotated {queryset.count()} secret(s).", messages.SUCCESS)
